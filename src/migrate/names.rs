//! promd's names for PROM's: group, node and etcd endpoints.

use std::net::Ipv6Addr;

use super::ETCD_PORT;
use crate::config::valid_group_name;

/// Lowercase; every run of characters outside `keep` becomes one `-`; no `-` at either end.
pub(super) fn sanitise(name: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii() && keep(c) {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// The group: the application name in `[a-z0-9_-]`, at most 64 characters.
pub(super) fn group_name(app: &str) -> Option<String> {
    let name = sanitise(app, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    });
    let name: String = name.chars().take(64).collect();
    let name = name.trim_end_matches('-').to_owned();
    valid_group_name(&name).then_some(name)
}

/// A replica's node name: `GROUP-ID` (valid by construction: the group name is, and `-ID` is).
pub(super) fn node_name(group: &str, id: u64) -> String {
    let suffix = format!("-{id}");
    let keep = 64usize.saturating_sub(suffix.len());
    let base: String = group.chars().take(keep).collect();
    let base = base.trim_end_matches('-');
    format!("{base}{suffix}")
}

/// An etcd endpoint on the host of a MUSIC location (`10.0.0.5`, `music-1:8080`,
/// `http://music-1:8080/MUSIC/rest`, `[fe80::1]`, `fe80::1`): `http://HOST:2379`.
pub(super) fn endpoint(location: &str) -> Option<String> {
    let rest = location.trim();
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))
        .unwrap_or(rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, _) = bracketed.split_once(']')?;
        ip.parse::<Ipv6Addr>().ok()?;
        return Some(format!("http://[{ip}]:{ETCD_PORT}"));
    } else if authority.matches(':').count() > 1 {
        let ip: Ipv6Addr = authority.parse().ok()?;
        return Some(format!("http://[{ip}]:{ETCD_PORT}"));
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let valid = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| format!("http://{}:{ETCD_PORT}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_node_name;

    #[test]
    fn endpoints_from_music_locations() {
        assert_eq!(
            endpoint("10.0.0.5").as_deref(),
            Some("http://10.0.0.5:2379")
        );
        assert_eq!(
            endpoint(" localhost ").as_deref(),
            Some("http://localhost:2379")
        );
        assert_eq!(
            endpoint("http://Music-1.example:8080/MUSIC/rest").as_deref(),
            Some("http://music-1.example:2379")
        );
        assert_eq!(
            endpoint("fe80::1").as_deref(),
            Some("http://[fe80::1]:2379")
        );
        assert_eq!(
            endpoint("[fe80::1]:8080").as_deref(),
            Some("http://[fe80::1]:2379")
        );
        for bad in ["", "a b", "-x", "http://", "[zz]", "a:b:c"] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(group_name("votingApp").as_deref(), Some("votingapp"));
        assert_eq!(group_name("My App.v2").as_deref(), Some("my-app-v2"));
        assert_eq!(group_name("--x__y--").as_deref(), Some("x__y"));
        assert_eq!(group_name("日本"), None);
        let long = "a".repeat(100);
        let group = group_name(&long).unwrap();
        assert_eq!(group.len(), 64);
        let node = node_name(&group, 12);
        assert!(valid_node_name(&node) && node.ends_with("-12") && node.len() == 64);
    }
}
