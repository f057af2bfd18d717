//! Name rules: node, group and unit names, and etcd endpoints.

use std::net::Ipv6Addr;

pub(super) const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// Node names: `[a-z0-9_.-]`, 1 to 64 characters, not starting with `.` or `-`.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Group names: `[a-z0-9_-]`, 1 to 64 characters (they appear in store keys and D-Bus paths).
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
}

/// The store name of a group or of one of its slots: a group name, or `GROUP@k` with
/// `1 <= k < MAX_ACTIVES` written without leading zeros (`config::slot_name`).
pub fn valid_slot_name(name: &str) -> bool {
    match name.split_once('@') {
        None => valid_group_name(name),
        Some((group, k)) => {
            valid_group_name(group)
                && !k.starts_with('0')
                && k.parse::<u32>()
                    .is_ok_and(|k| (1..super::MAX_ACTIVES).contains(&k))
        }
    }
}

/// A template unit name, `PREFIX@.SUFFIX` (what `active-target` may name with `actives`
/// above 1: slot k starts `PREFIX@k.SUFFIX`, docs/slots.md).
pub fn is_unit_template(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, _)| stem.ends_with('@'))
        && valid_unit_name(&instantiate(name, 0))
}

/// The instance of template `name` for slot `k` (`web-active@.target`, 1 →
/// `web-active@1.target`); any other name unchanged.
pub fn instantiate(name: &str, k: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, suffix)) if stem.ends_with('@') => format!("{stem}{k}.{suffix}"),
        _ => name.to_owned(),
    }
}

/// A systemd unit name: `PREFIX[@INSTANCE].SUFFIX`, prefix and instance non-empty and made of
/// `[A-Za-z0-9:_.\-]`, at most 255 characters, with one of systemd's unit suffixes.
pub fn valid_unit_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return false;
    }
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, Some(instance)),
        None => (stem, None),
    };
    let valid_part = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_.\\-".contains(&b))
    };
    valid_part(prefix) && instance.is_none_or(valid_part)
}

/// The scheme of an etcd endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    /// `http://`: plain TCP.
    Http,
    /// `https://`: TLS.
    Https,
}

impl Scheme {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An etcd endpoint as an operator wrote it, checked: the scheme if one was written (a bare
/// `HOST:PORT` takes its scheme from the rest of `[store]`, as etcdctl does), the host (a DNS
/// name, an IPv4 address, or an IPv6 address written in brackets) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// The endpoint as written, for messages.
    pub(super) written: String,
    pub(super) scheme: Option<Scheme>,
    /// As written, but an IPv6 address in its canonical form, in brackets.
    pub(super) host: String,
    pub(super) port: u16,
}

impl Endpoint {
    /// Whether `other` names the same etcd member: the same port, and the same host compared
    /// without case and without the one trailing dot of a fully qualified name (`a.` is `a`).
    pub(super) fn same_member(&self, other: &Endpoint) -> bool {
        let host = |e: &Endpoint| {
            let host = e.host.strip_suffix('.').unwrap_or(&e.host);
            host.to_ascii_lowercase()
        };
        self.port == other.port && host(self) == host(other)
    }

    /// `SCHEME://HOST:PORT`, the form promd hands to the etcd client.
    pub(super) fn url(&self, scheme: Scheme) -> String {
        format!("{}://{}:{}", scheme.as_str(), self.host, self.port)
    }
}

/// Reads an etcd endpoint: `http(s)://HOST:PORT` or `HOST:PORT`, one trailing `/` allowed.
/// The error says which part is wrong, without the endpoint itself (the caller names it).
pub(super) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    if text.contains(',') {
        // etcdctl's `--endpoints=a,b` spelling.
        return Err(
            "a `,` in an endpoint: write each endpoint as its own string, \
             [\"http://a:2379\", \"http://b:2379\"]"
                .to_owned(),
        );
    }
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let (scheme, rest) = match trimmed.split_once("://") {
        // Schemes are case-insensitive (RFC 3986).
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Some(Scheme::Http), rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Some(Scheme::Https), rest),
        Some((other, _)) => {
            return Err(format!(
                "unknown scheme \"{other}://\": etcd endpoints are http:// or https://"
            ));
        }
        None => (None, trimmed),
    };
    if let Some(at) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "{:?} after the port: an endpoint is only [http(s)://]HOST:PORT",
            &rest[at..]
        ));
    }
    if rest.contains('@') {
        return Err(
            "user information (USER@) in an endpoint is not supported: set `user` and \
             `password-file` in [store]"
                .to_owned(),
        );
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err("no `]` after the IPv6 address: write [ADDRESS]:PORT".to_owned());
        };
        if let Some((_, zone)) = address.split_once('%') {
            return Err(format!(
                "an IPv6 zone (%{zone}) is not supported: use an address that needs no zone \
                 (not a link-local fe80:: one)"
            ));
        }
        let Ok(ip) = address.parse::<Ipv6Addr>() else {
            return Err(format!("[{address}] is not an IPv6 address"));
        };
        let host = format!("[{ip}]");
        match after.strip_prefix(':') {
            Some(port) => (host, port),
            None if after.is_empty() => return Err(format!("no port: write {host}:2379")),
            None => return Err(format!("{after:?} after {host}: write {host}:PORT")),
        }
    } else {
        if rest.matches(':').count() > 1 {
            // `fd00::1:2379` is also an address; a port is the likelier intent.
            let address = match rest.rsplit_once(':') {
                Some((ip, port))
                    if ip.parse::<Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok() =>
                {
                    format!("[{ip}]:{port}")
                }
                _ if rest.parse::<Ipv6Addr>().is_ok() => format!("[{rest}]:2379"),
                _ => "[ADDRESS]:PORT".to_owned(),
            };
            return Err(format!(
                "an IPv6 address must be written in brackets: write {address}"
            ));
        }
        match rest.split_once(':') {
            Some((host, port)) => (host.to_owned(), port),
            None if rest.is_empty() => return Err("no host: write HOST:PORT".to_owned()),
            None => return Err(format!("no port: write {rest}:2379")),
        }
    };
    if host.is_empty() {
        return Err("no host: write HOST:PORT".to_owned());
    }
    if !host.starts_with('[') && !valid_dns_name(&host) {
        return Err(format!("host {host:?} is not a DNS name or an IP address"));
    }
    // A name whose last label is all digits is no DNS name (no top-level domain is numeric):
    // it was meant as an IPv4 address, and is not one (`10.0.0.256`, `1.2.3`).
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    if !host.starts_with('[')
        && last.bytes().all(|b| b.is_ascii_digit())
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(format!(
            "host {host:?} is not an IPv4 address (four numbers of 0 to 255, like 10.0.0.1)"
        ));
    }
    if port.is_empty() {
        return Err(format!("no port after the `:`: write {host}:2379"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    let port = match port.parse::<u16>() {
        Ok(0) => return Err("port 0 is not a port: use 1 to 65535".to_owned()),
        Ok(port) => port,
        Err(_) => return Err(format!("port {port} is out of range: use 1 to 65535")),
    };
    Ok(Endpoint {
        written: text.to_owned(),
        scheme,
        host,
        port,
    })
}

/// A DNS name (or an IPv4 address, which is written the same way): dot-separated labels of
/// `[A-Za-z0-9-]`, 1 to 63 characters, not starting or ending with `-`; at most 253 in all.
fn valid_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
