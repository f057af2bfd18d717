//! Checks of single keys: the keys with their own rules, then plain TOML types.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::names::{Endpoint, UNIT_SUFFIXES, parse_endpoint};

/// The longest duration any key accepts: 365 days.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
use super::validate::*;
use super::*;

impl Checker<'_> {
    pub(super) fn store_kind(&mut self, key: &str, value: &Value<'_>) -> Option<StoreKind> {
        match self.string(key, value)?.as_str() {
            "etcd" => Some(StoreKind::Etcd),
            "dir" => Some(StoreKind::Dir),
            other => {
                self.error(
                    &value.span(),
                    format!("unknown store kind {other:?}: use \"etcd\" or \"dir\""),
                );
                None
            }
        }
    }

    pub(super) fn endpoints(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<Spanned<Endpoint>>> {
        let endpoints = self.string_array(key, value)?;
        if endpoints.is_empty() {
            self.error(
                &value.span(),
                "`endpoints` is empty: list at least one, e.g. [\"http://10.0.0.1:2379\"]",
            );
            return None;
        }
        let mut parsed: Vec<Spanned<Endpoint>> = Vec::new();
        let mut ok = true;
        for endpoint in &endpoints {
            match parse_endpoint(endpoint.get_ref()) {
                Ok(e) => {
                    let same = parsed.iter().find(|p| p.get_ref().same_member(&e));
                    if let Some(first) = same {
                        let (line, column) = position(self.text, first.span().start);
                        self.error(
                            &endpoint.span(),
                            format!(
                                "endpoint {:?} is the same member as {:?} (line {line}, column \
                                 {column}): list each once",
                                e.written,
                                first.get_ref().written
                            ),
                        );
                        ok = false;
                    }
                    parsed.push(Spanned::new(endpoint.span(), e));
                }
                Err(why) => {
                    ok = false;
                    self.error(
                        &endpoint.span(),
                        format!("endpoint {:?}: {why}", endpoint.get_ref()),
                    );
                }
            }
        }
        ok.then_some(parsed)
    }

    pub(super) fn server_name(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let name = self.string(key, value)?;
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            // `[::1]` as in an endpoint; rustls takes an IPv6 address bare.
            let hint = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
                Some(bare) if bare.parse::<std::net::Ipv6Addr>().is_ok() => {
                    format!(": write an IPv6 address without brackets, {bare:?}")
                }
                _ => String::new(),
            };
            self.error(
                &value.span(),
                format!("`server-name` = {name:?} is not a DNS name or an IP address{hint}"),
            );
            return None;
        }
        Some(name)
    }

    pub(super) fn user(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let user = self.string(key, value)?;
        if user.is_empty() || user.chars().any(char::is_control) {
            self.error(
                &value.span(),
                format!("`user` = {user:?} is not an etcd user name: it must not be empty or hold control characters"),
            );
            return None;
        }
        Some(user)
    }

    pub(super) fn password_file(&mut self, key: &str, value: &Value<'_>) -> Option<PasswordFile> {
        let text = self.string(key, value)?;
        match PasswordFile::parse(&text) {
            Ok(file) => Some(file),
            Err(why) => {
                self.error(&value.span(), why);
                None
            }
        }
    }

    pub(super) fn prefix(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let prefix = self.string(key, value)?;
        if !prefix.starts_with('/') || (prefix != "/" && prefix.ends_with('/')) {
            self.error(
                &value.span(),
                format!("`prefix` = {prefix:?} must start with `/` and not end with `/` (unless it is \"/\")"),
            );
            return None;
        }
        Some(prefix)
    }

    pub(super) fn absolute_path(&mut self, key: &str, value: &Value<'_>) -> Option<PathBuf> {
        let path = PathBuf::from(self.string(key, value)?);
        if !path.is_absolute() {
            self.error(
                &value.span(),
                format!("`{key}` = {path:?} must be an absolute path"),
            );
            return None;
        }
        Some(path)
    }

    pub(super) fn group_name(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let name = self.string(key, value)?;
        if !valid_group_name(&name) {
            // `GROUP@k` is how promd names slot k of a group with several active hosts.
            let slot = if name.contains('@') {
                " (`@` is promd's: slot k of a group is GROUP@k; see `actives`)"
            } else {
                ""
            };
            self.error(
                &value.span(),
                format!(
                    "group name {name:?} is not valid: use [a-z0-9_-], 1 to 64 characters{slot}"
                ),
            );
            return None;
        }
        Some(name)
    }

    pub(super) fn unit(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let name = self.string(key, value)?;
        if !valid_unit_name(&name) {
            self.error(&value.span(), unit_name_message(key, &name));
            return None;
        }
        Some(name)
    }

    /// `active-target`: a unit name, or a template `NAME@.SUFFIX` (whether the group has the
    /// slots a template needs is checked with `actives`, `slot_relations`).
    pub(super) fn active_unit(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let name = self.string(key, value)?;
        if !valid_unit_name(&name) && !is_unit_template(&name) {
            self.error(&value.span(), unit_name_message(key, &name));
            return None;
        }
        Some(name)
    }

    pub(super) fn members(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let members = self.string_array(key, value)?;
        if members.is_empty() {
            self.error(
                &value.span(),
                "`members` is empty, so no node could be active: list the nodes or omit the key",
            );
            return None;
        }
        let mut ok = self.each_valid(&members, |m| {
            (!valid_node_name(m))
                .then(|| format!("member {m:?} is not a valid node name: use {NODE_NAME_RULE}"))
        });
        ok &= self.no_duplicates(key, &members);
        ok.then(|| members.into_iter().map(Spanned::into_inner).collect())
    }

    /// `addresses`: each entry `ADDRESS/PREFIX dev INTERFACE` ([`Address::parse`]), no address
    /// twice (whatever its prefix or interface: one address has one owner).
    pub(super) fn addresses(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<Spanned<Address>>> {
        // The strings even beside an item that is none: checked here and across groups.
        let (entries, _) = self.strings_of_array(key, value)?;
        let mut parsed: Vec<Spanned<Address>> = Vec::new();
        for entry in &entries {
            match Address::parse(entry.get_ref()) {
                Ok(a) => {
                    if let Some(first) = parsed.iter().find(|f| f.get_ref().ip == a.ip) {
                        let (line, column) = position(self.text, first.span().start);
                        let (ip, here, there) = (a.ip, &a.interface, &first.get_ref().interface);
                        // Only the interface differs: "twice" would read as a repeated line.
                        let message = if here == there {
                            format!(
                                "address {ip} appears twice in `{key}` (first at line {line}, \
                                 column {column})"
                            )
                        } else {
                            format!(
                                "address {ip} is on two interfaces in `{key}`: {here} here and \
                                 {there} at line {line}, column {column}; an address floats on \
                                 one interface of its host: keep the entry of the interface \
                                 that faces its clients"
                            )
                        };
                        self.error(&entry.span(), message);
                        continue;
                    }
                    parsed.push(Spanned::new(entry.span(), a));
                }
                Err(e) => self.error(&entry.span(), format!("`{key}`: {e}")),
            }
        }
        // The valid entries even when others are not: the group is refused all the same (its
        // problems are counted), and the check across groups still sees these, so that one
        // run of check-config reports a clash beside a typo.
        Some(parsed)
    }

    pub(super) fn watch(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let units = self.string_array(key, value)?;
        let mut ok = self.each_valid(&units, |u| {
            (!valid_unit_name(u)).then(|| unit_name_message(key, u))
        });
        ok &= self.no_duplicates(key, &units);
        ok.then(|| units.into_iter().map(Spanned::into_inner).collect())
    }

    pub(super) fn health_command(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let argv = self.string_array(key, value)?;
        let Some(program) = argv.first() else {
            self.error(
                &value.span(),
                "`health-command` is empty: give the program and its arguments, e.g. [\"/usr/lib/web/check\"]",
            );
            return None;
        };
        if !program.get_ref().starts_with('/') {
            self.error(
                &program.span(),
                format!(
                    "`health-command` must start with an absolute path, not {:?}",
                    program.get_ref()
                ),
            );
            return None;
        }
        Some(argv.into_iter().map(Spanned::into_inner).collect())
    }

    /// `actives`: 1 to [`MAX_ACTIVES`].
    pub(super) fn actives(&mut self, key: &str, value: &Value<'_>) -> Option<u32> {
        let n = self.integer(key, value)?;
        if !(1..=i64::from(MAX_ACTIVES)).contains(&n) {
            let why = if n < 1 {
                "a group has at least one active host"
            } else {
                "each slot is a leader key and a machine on every host"
            };
            self.error(
                &value.span(),
                format!("`actives` = {n} is out of range: it must be between 1 and {MAX_ACTIVES} ({why})"),
            );
            return None;
        }
        u32::try_from(n).ok()
    }

    /// `standbys`: 0 (no limit) or more; `None` for 0.
    pub(super) fn standbys(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Option<std::num::NonZeroU32>> {
        let n = self.integer(key, value)?;
        let n: u32 = self.in_range(key, value, n)?;
        Some(std::num::NonZeroU32::new(n))
    }

    pub(super) fn lease(&mut self, key: &str, value: &Value<'_>) -> Option<Duration> {
        let lease = self.duration(key, value)?;
        if lease < MIN_LEASE {
            self.error(
                &value.span(),
                format!(
                    "`lease` = {} is too short: it must be at least 1s",
                    humantime::format_duration(lease)
                ),
            );
            return None;
        }
        Some(lease)
    }

    pub(super) fn nonzero_duration(&mut self, key: &str, value: &Value<'_>) -> Option<Duration> {
        let duration = self.duration(key, value)?;
        if duration.is_zero() {
            self.error(&value.span(), format!("`{key}` must be longer than zero"));
            return None;
        }
        Some(duration)
    }

    /// Reports every repeated entry at the repetition, naming where it first appeared.
    pub(super) fn no_duplicates(&mut self, key: &str, items: &[Spanned<String>]) -> bool {
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            if let Some(first) = items[..i].iter().find(|f| f.get_ref() == item.get_ref()) {
                let (line, column) = position(self.text, first.span().start);
                self.error(
                    &item.span(),
                    format!(
                        "{:?} appears twice in `{key}` (first at line {line}, column {column})",
                        item.get_ref()
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    // --- plain types ----------------------------------------------------------------------

    pub(super) fn wrong_type(&mut self, key: &str, value: &Value<'_>, expected: &str) {
        self.error(
            &value.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                value.get_ref().type_str()
            ),
        );
    }

    pub(super) fn table<'v, 'i>(
        &mut self,
        key: &str,
        value: &'v Value<'i>,
        header: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(key, value, &format!("a table, written {header}"));
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, value, "true or false");
                None
            }
        }
    }

    pub(super) fn integer(&mut self, key: &str, value: &Value<'_>) -> Option<i64> {
        let DeValue::Integer(int) = value.get_ref() else {
            self.wrong_type(key, value, "an integer");
            return None;
        };
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(&value.span(), format!("`{key}` = {int} is out of range"));
                None
            }
        }
    }

    pub(super) fn i32_value(&mut self, key: &str, value: &Value<'_>) -> Option<i32> {
        let n = self.integer(key, value)?;
        self.in_range(key, value, n)
    }

    pub(super) fn u32_value(&mut self, key: &str, value: &Value<'_>) -> Option<u32> {
        let n = self.integer(key, value)?;
        self.in_range(key, value, n)
    }

    pub(super) fn in_range<T>(&mut self, key: &str, value: &Value<'_>, n: i64) -> Option<T>
    where
        T: TryFrom<i64> + Bounded,
    {
        match T::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    &value.span(),
                    format!(
                        "`{key}` = {n} is out of range: it must be between {} and {}",
                        T::MIN,
                        T::MAX
                    ),
                );
                None
            }
        }
    }

    /// A duration string; errors (positioned) for anything else, and for more than
    /// [`MAX_DURATION`].
    pub(super) fn duration(&mut self, key: &str, value: &Value<'_>) -> Option<Duration> {
        match value.get_ref() {
            DeValue::String(s) => match humantime::parse_duration(s) {
                // Far beyond any sane setting, and far from where adding it to a clock
                // reading could overflow.
                Ok(duration) if duration > MAX_DURATION => {
                    self.error(
                        &value.span(),
                        format!("`{key}` = {s:?} is too long: at most 365 days"),
                    );
                    None
                }
                Ok(duration) => Some(duration),
                Err(err) => {
                    self.error(
                        &value.span(),
                        format!("`{key}` = {s:?} is not a duration ({err}): {DURATION_HINT}"),
                    );
                    None
                }
            },
            DeValue::Integer(int) => {
                // A bare number is the likeliest slip; say what to write instead.
                self.error(
                    &value.span(),
                    format!(
                        "`{key}` must be a duration string, found integer: write e.g. \"{int}s\""
                    ),
                );
                None
            }
            _ => {
                self.wrong_type(key, value, &format!("a duration string ({DURATION_HINT})"));
                None
            }
        }
    }

    /// An array of strings, each with its position for element-level messages.
    /// Checks every item of a list, reporting each problem `problem` finds at the item's
    /// position (not just the first). True if there was none.
    fn each_valid(
        &mut self,
        items: &[Spanned<String>],
        problem: impl Fn(&str) -> Option<String>,
    ) -> bool {
        let mut ok = true;
        for item in items {
            if let Some(message) = problem(item.get_ref()) {
                self.error(&item.span(), message);
                ok = false;
            }
        }
        ok
    }

    pub(super) fn string_array(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<Spanned<String>>> {
        let (strings, ok) = self.strings_of_array(key, value)?;
        ok.then_some(strings)
    }

    /// The strings of an array, and whether it held nothing else (each other item is a
    /// problem already); `None` if `value` is no array.
    fn strings_of_array(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<(Vec<Spanned<String>>, bool)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, "an array of strings");
            return None;
        };
        let mut strings = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => strings.push(Spanned::new(item.span(), s.to_string())),
                other => {
                    self.error(
                        &item.span(),
                        format!("`{key}` must hold only strings, found {}", other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        Some((strings, ok))
    }
}

/// Integer types whose bounds range errors quote.
pub(super) trait Bounded: fmt::Display + Sized {
    const MIN: Self;
    const MAX: Self;
}

impl Bounded for i32 {
    const MIN: Self = i32::MIN;
    const MAX: Self = i32::MAX;
}

impl Bounded for u32 {
    const MIN: Self = u32::MIN;
    const MAX: Self = u32::MAX;
}

pub(super) fn unit_name_message(key: &str, name: &str) -> String {
    format!(
        "{name:?} in `{key}` is not a valid systemd unit name: NAME[@INSTANCE].SUFFIX, \
         made of [A-Za-z0-9:_.\\-], at most 255 characters, SUFFIX one of {}",
        UNIT_SUFFIXES.join(", ")
    )
}
