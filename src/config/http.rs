//! `[http]`: the read-only state endpoint ([`crate::http`]). Off unless `listen` names an
//! address: an HA agent opens no port that nobody asked for.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Value, position};

/// The keys `[http]` takes.
pub(super) const HTTP_KEYS: &[&str] = &["listen"];

/// `[http]`, defaults filled in. Kept in `/run/promd/running.json` with [`super::Fixed`]: the
/// listener is opened once, so a change needs `systemctl restart promd`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpConfig {
    /// `listen`: the socket addresses to serve on, e.g. `127.0.0.1:8008`, `[::1]:8008`,
    /// without duplicates; empty (the default, also with no `[http]` table): no listener.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
}

impl HttpConfig {
    /// Whether any listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

impl Checker<'_> {
    /// The `[http]` table; every problem positioned.
    pub(super) fn http(&mut self, value: &Value<'_>) -> Option<HttpConfig> {
        let table = self.table("http", value, "[http]")?;
        let before = self.problems.len();
        let mut listen = Vec::new();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "listen" => listen = self.listen(value).unwrap_or_default(),
                _ => self.unknown_key(key, "in [http]", HTTP_KEYS),
            }
        }
        (self.problems.len() == before).then_some(HttpConfig { listen })
    }

    /// `listen`: socket addresses (`IP:PORT`, an IPv6 address in brackets), each once.
    fn listen(&mut self, value: &Value<'_>) -> Option<Vec<SocketAddr>> {
        let items = self.string_array("listen", value)?;
        let mut addrs: Vec<(SocketAddr, std::ops::Range<usize>)> = Vec::new();
        let mut ok = true;
        for item in &items {
            let text = item.get_ref();
            let addr = match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.error(&item.span(), listen_message(text));
                    ok = false;
                    continue;
                }
            };
            if addr.port() == 0 {
                self.error(
                    &item.span(),
                    format!("{text:?} in `listen` has port 0: name the port, e.g. 8008"),
                );
                ok = false;
            }
            if let Some((_, first)) = addrs.iter().find(|(a, _)| *a == addr) {
                let (line, column) = position(self.text, first.start);
                self.error(
                    &item.span(),
                    format!(
                        "{text:?} appears twice in `listen` (first at line {line}, column {column})"
                    ),
                );
                ok = false;
            }
            addrs.push((addr, item.span()));
        }
        ok.then(|| addrs.into_iter().map(|(a, _)| a).collect())
    }
}

/// Why `text` is not a socket address, with the likeliest fix.
fn listen_message(text: &str) -> String {
    let hint = if text.contains("://") {
        "write the address without a scheme, e.g. \"127.0.0.1:8008\""
    } else if text.matches(':').count() > 1 && !text.starts_with('[') {
        "write an IPv6 address in brackets and the port after them, e.g. \"[::1]:8008\""
    } else if text.parse::<std::net::IpAddr>().is_ok() {
        "add the port, e.g. \"127.0.0.1:8008\" or \"[::1]:8008\""
    } else {
        "write IP:PORT, e.g. \"127.0.0.1:8008\" or \"[::1]:8008\" (an IP address, not a host name)"
    };
    format!("{text:?} in `listen` is not a socket address: {hint}")
}
