//! Notes and warnings: what is not carried over, and what the operator must check.

use super::importer::*;
use super::keys::*;

use super::*;

impl Importer<'_> {
    /// One note per key that is not carried over, with the reason.
    pub(super) fn list_dropped_keys(&mut self) {
        let ids: BTreeSet<u64> = self.ids.iter().copied().collect();
        let ids_key = show_key(self.ids_key);
        for (kind, key, _) in self.keys.all() {
            let shown = show_key(key);
            let reason = match kind {
                Kind::RestartDaemon(_) => {
                    "systemd's Restart= and the watchdog replace it: promd.service restarts promd \
                     (Restart=always) and kills a hung one (WatchdogSec=); no ssh between hosts"
                        .to_owned()
                }
                Kind::MonitorSleep => {
                    "promd follows signals (store watches, systemd job results), it does not \
                     poll. PROM also re-ran ensure-active every so often; the generated oneshot \
                     runs it once per promotion, so rewrite the script as a unit with Restart= \
                     for the app to be restarted"
                        .to_owned()
                }
                Kind::Credential => {
                    "a MUSIC credential: etcd has its own authentication; never copied into \
                     promd's files"
                        .to_owned()
                }
                Kind::MusicVersion => {
                    "the MUSIC REST API version; promd speaks etcd's v3 API only".to_owned()
                }
                Kind::EnsureActive(id) | Kind::EnsurePassive(id) | Kind::StartActive(id)
                    if !ids.contains(&id) =>
                {
                    format!("replica {id} is not in {ids_key}; ignored")
                }
                Kind::Unknown => "unknown key, not carried over".to_owned(),
                _ => continue,
            };
            if kind == Kind::Unknown {
                self.notes.push(format!("{shown}: {reason}"));
            } else {
                self.notes
                    .push(format!("{shown}: not carried over: {reason}"));
            }
        }
    }
}
