//! The closure of a group's active target: every unit the role starts, transitively.
//!
//! The walk follows the dependencies that *start* or *stop with* a unit — `Wants=`,
//! `Requires=`, `Requisite=`, `BindsTo=`, `Upholds=`, `PartOf=` (as `ConsistsOf`) and what
//! sockets, timers and paths trigger — through nested targets, services pulled in by
//! services, mounts and so on. It does not enter the system's own plumbing: slices, devices,
//! swaps, scopes, the root mount, the bus, promd itself, the special targets of
//! systemd.special(7), and every unit that one of the system's boot targets pulls in
//! ([`BOOT_TARGETS`]: an fstab mount under `local-fs.target`, a socket under
//! `sockets.target`): a `RequiresMountsFor=` on `/var` must never unmount it on demotion.
//!
//! The walk is sans-I/O: [`Walk`] says which unit it needs next and is fed what systemd says
//! about it, so the rules are tested without a bus.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::PROMD_UNIT;

/// What the walk needs to know about one unit (from its `org.freedesktop.systemd1.Unit`
/// properties, and for services `Type` and `RemainAfterExit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitInfo {
    /// The unit's name as systemd gave it (`Id`).
    pub name: String,
    /// `loaded`, `not-found`, `masked`, `error`, ...
    pub load_state: String,
    /// Units this one starts with it: Wants, Requires, Requisite, BindsTo, Upholds, and
    /// ConsistsOf (the units that are `PartOf=` it).
    pub pulls: Vec<String>,
    /// Units a socket, timer or path starts when it fires.
    pub triggers: Vec<String>,
    /// Units that pull this one in: WantedBy, RequiredBy, RequisiteOf, BoundBy, UpheldBy.
    pub pulled_by: Vec<String>,
    /// `KillMode=` of a unit with processes (service, socket, mount); empty otherwise.
    pub kill_mode: String,
    /// A service that is done once it has run (`Type=oneshot` without `RemainAfterExit=`):
    /// inactive after success is its normal state.
    pub runs_once: bool,
    /// How many commands PID 1 runs to stop the unit: a service's `ExecStop=` and
    /// `ExecStopPost=`, a socket's `ExecStopPre=` and `ExecStopPost=`, a mount's unmount.
    /// Each costs PID 1 a fork and a reap at a fence (`Timing::fence_load_for`).
    pub stop_commands: usize,
}

/// How a unit came into the closure, which decides how it is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Started with the target: it must stay up while the role runs (unless it runs once).
    Pulled,
    /// Started by a socket, timer or path of the role when it fires: inactive is normal.
    Triggered,
}

/// The units of a role, as found by a [`Walk`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Every unit of the role (not the active target itself), with how it was reached.
    pub units: BTreeMap<String, Reach>,
    /// Units that are expected to stay active while the role runs: pulled in, not a target,
    /// not a run-once service.
    pub steady: BTreeSet<String>,
    /// Units named by a dependency that systemd cannot find (`Wants=` on a missing unit):
    /// nothing to stop, worth saying once.
    pub missing: BTreeSet<String>,
    /// `KillMode=` of each unit of the closure that has one, for its binding drop-in.
    pub kill_modes: BTreeMap<String, String>,
    /// The commands each unit's stop runs ([`UnitInfo::stop_commands`]), for the units that
    /// have any: the fence load counts them.
    pub stop_commands: BTreeMap<String, usize>,
    /// Units the walk left out because the system itself uses them (early boot, special
    /// targets), so that `promd` can say why they are not stopped.
    pub shared: BTreeSet<String>,
    /// PID 1's count of foreign reloads ([`super::Systemd::foreign_reloads`]) when the walk
    /// began: a closure walked before a later `daemon-reload` may lack units that reload
    /// added to the role, so a fence's kill does not count it as complete
    /// (`runtime::jobs::kill_once`). 0 for a closure no walk found.
    pub reloads: u64,
}

impl Closure {
    /// Whether `other` has the same units, reaches and stop facts, whichever reload either
    /// was walked after ([`Closure::reloads`]).
    pub fn same_role(&self, other: &Closure) -> bool {
        // Destructured, so that a new field is compared too (or said not to be).
        let Closure {
            units,
            steady,
            missing,
            kill_modes,
            stop_commands,
            shared,
            reloads: _,
        } = self;
        *units == other.units
            && *steady == other.steady
            && *missing == other.missing
            && *kill_modes == other.kill_modes
            && *stop_commands == other.stop_commands
            && *shared == other.shared
    }

    /// Every unit of the role, in name order.
    pub fn names(&self) -> Vec<String> {
        self.units.keys().cloned().collect()
    }

    /// The units a demotion stops and the fence kills: the closure and the target itself.
    pub fn with_target(&self, target: &str) -> Vec<String> {
        let mut all = self.names();
        if !all.iter().any(|u| u == target) {
            all.push(target.to_string());
        }
        all
    }

    /// Whether a watched unit must be up while the role runs: a steady unit of the closure,
    /// or a unit the closure does not hold (named by `watch`, so the operator expects it up).
    pub fn expects_up(&self, unit: &str) -> bool {
        self.steady.contains(unit) || !self.units.contains_key(unit)
    }

    /// The watched units that must be up while the role runs: those of the configured
    /// `watch` list that [`Closure::expects_up`], or without one the steady units.
    pub fn expected_up(&self, watch: &Option<Vec<String>>) -> Vec<String> {
        match watch {
            Some(w) => w.iter().filter(|u| self.expects_up(u)).cloned().collect(),
            None => self.steady.iter().cloned().collect(),
        }
    }

    /// The default `watch` list: what must stay up, and what the role may trigger (watched
    /// for failures only). Targets are left out: they do not fail on their own.
    pub fn watchable(&self) -> Vec<String> {
        self.units
            .keys()
            .filter(|u| !u.ends_with(".target"))
            .cloned()
            .collect()
    }
}

/// The special targets of systemd.special(7) besides [`BOOT_TARGETS`]: the system's
/// synchronisation points. A walk never enters them, nor the boot targets (a service's
/// `Wants=network-online.target` is not the role's).
pub const SPECIAL_TARGETS: &[&str] = &[
    "nss-user-lookup.target",
    "time-set.target",
    "multi-user.target",
    "graphical.target",
    "default.target",
    "shutdown.target",
    "umount.target",
    "final.target",
    "emergency.target",
    "rescue.target",
    "getty.target",
    "getty-pre.target",
    "cryptsetup-pre.target",
    "veritysetup.target",
    "integritysetup.target",
    "remote-cryptsetup.target",
    "initrd.target",
    "initrd-fs.target",
    "initrd-root-fs.target",
    "sleep.target",
    "suspend.target",
    "hibernate.target",
    "halt.target",
    "poweroff.target",
    "reboot.target",
    "kexec.target",
    "ctrl-alt-del.target",
    "system-update.target",
    "first-boot-complete.target",
    "machines.target",
    "rpcbind.target",
    "printer.target",
    "sound.target",
    "bluetooth.target",
    "smartcard.target",
    "usb-gadget.target",
    "factory-reset.target",
    "exit.target",
    "emergency.service",
    "rescue.service",
];

/// The targets of the system's own boot: a unit one of them pulls in directly belongs to the
/// system, not to a role that also names it. (`multi-user.target` is not one: a protected
/// service enabled there by mistake is still the role's, and promd stops it where the role
/// is not.)
pub const BOOT_TARGETS: &[&str] = &[
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "timers.target",
    "paths.target",
    "slices.target",
    "swap.target",
    "local-fs.target",
    "local-fs-pre.target",
    "remote-fs.target",
    "remote-fs-pre.target",
    "network.target",
    "network-online.target",
    "network-pre.target",
    "nss-lookup.target",
    "time-sync.target",
    "cryptsetup.target",
];

/// Plumbing never belongs to a role, whoever pulls it in.
pub fn is_plumbing(unit: &str) -> bool {
    const KINDS: [&str; 4] = [".slice", ".device", ".swap", ".scope"];
    unit == PROMD_UNIT
        || unit == "-.mount"
        || unit.starts_with("dbus.")
        || KINDS.iter().any(|k| unit.ends_with(k))
        || SPECIAL_TARGETS.contains(&unit)
        || BOOT_TARGETS.contains(&unit)
}

/// A breadth-first walk from a group's active target, fed one unit at a time.
#[derive(Debug)]
pub struct Walk {
    root: String,
    queue: VecDeque<(String, Reach)>,
    seen: BTreeSet<String>,
    closure: Closure,
}

impl Walk {
    /// The closure of a group's active target.
    pub fn role(target: &str) -> Walk {
        Walk {
            root: target.to_string(),
            queue: VecDeque::from([(target.to_string(), Reach::Pulled)]),
            seen: BTreeSet::from([target.to_string()]),
            closure: Closure::default(),
        }
    }

    /// The next unit whose [`UnitInfo`] the walk needs, or `None` when it is complete.
    pub fn next(&self) -> Option<&str> {
        self.queue.front().map(|(u, _)| u.as_str())
    }

    /// What systemd says about the unit [`Walk::next`] named. A unit systemd could not be
    /// asked about is fed as `not-found` (it is left out, and said to be missing).
    pub fn feed(&mut self, info: UnitInfo) {
        let Some((name, reach)) = self.queue.pop_front() else {
            return;
        };
        if info.load_state == "not-found" || info.load_state.is_empty() {
            self.closure.missing.insert(name);
            return;
        }
        if name != self.root {
            if info
                .pulled_by
                .iter()
                .any(|u| BOOT_TARGETS.contains(&u.as_str()))
            {
                self.closure.shared.insert(name);
                return;
            }
            self.closure.units.insert(name.clone(), reach);
            if !info.kill_mode.is_empty() {
                self.closure
                    .kill_modes
                    .insert(name.clone(), info.kill_mode.clone());
            }
            if info.stop_commands > 0 {
                self.closure
                    .stop_commands
                    .insert(name.clone(), info.stop_commands);
            }
            if reach == Reach::Pulled && !name.ends_with(".target") && !info.runs_once {
                self.closure.steady.insert(name.clone());
            }
        }
        let next = info
            .pulls
            .iter()
            .map(|u| (u, reach))
            .chain(info.triggers.iter().map(|u| (u, Reach::Triggered)));
        for (unit, r) in next {
            if !self.seen.insert(unit.clone()) || is_plumbing(unit) {
                continue;
            }
            self.queue.push_back((unit.clone(), r));
        }
    }

    /// The result, once [`Walk::next`] is `None`.
    pub fn finish(self) -> Closure {
        self.closure
    }
}

/// Whether a unit of this kind can have processes to kill (`KillUnit` refuses the others).
pub fn has_processes(unit: &str) -> bool {
    [".service", ".socket", ".mount", ".swap", ".scope"]
        .iter()
        .any(|k| unit.ends_with(k))
}

/// Escape a string for use as a unit instance name (systemd-escape(1) without `--path`):
/// `/` becomes `-`, and every byte outside `[A-Za-z0-9:_.]` (or a leading `.`) becomes `\xNN`.
pub fn escape_instance(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn unit(name: &str, pulls: &[&str], triggers: &[&str]) -> UnitInfo {
        UnitInfo {
            name: name.into(),
            load_state: "loaded".into(),
            pulls: pulls.iter().map(|s| s.to_string()).collect(),
            triggers: triggers.iter().map(|s| s.to_string()).collect(),
            pulled_by: Vec::new(),
            runs_once: false,
            kill_mode: String::new(),
            stop_commands: 0,
        }
    }

    fn run(mut walk: Walk, graph: &HashMap<&str, UnitInfo>) -> Closure {
        let mut asked = 0;
        while let Some(next) = walk.next() {
            asked += 1;
            assert!(asked < 1000, "the walk does not end");
            let info = graph.get(next).cloned().unwrap_or(UnitInfo {
                name: next.into(),
                load_state: "not-found".into(),
                ..UnitInfo::default()
            });
            walk.feed(info);
        }
        walk.finish()
    }

    /// A zoo like the one the system tests boot, with the system's own units around it.
    fn zoo() -> HashMap<&'static str, UnitInfo> {
        let mut once = unit("web-setup.service", &["sysinit.target"], &[]);
        once.runs_once = true;
        [
            unit(
                "web-active.target",
                &["web-stack.target", "web-extra.service", "web-setup.service"],
                &[],
            ),
            unit(
                "web-stack.target",
                &[
                    "web.service",
                    "web-api.socket",
                    "srv-web.mount",
                    "web-rotate.timer",
                ],
                &[],
            ),
            unit(
                "web.service",
                &[
                    "web-worker.service",
                    "sysinit.target",
                    "system.slice",
                    "dbus.socket",
                    "network-online.target",
                    "-.mount",
                    "var.mount",
                    "promd.service",
                ],
                &[],
            ),
            {
                let mut worker = unit("web-worker.service", &["web.service"], &[]);
                worker.kill_mode = "process".into();
                worker.stop_commands = 2;
                worker
            },
            unit("web-api.socket", &["sysinit.target"], &["web-api.service"]),
            unit("web-api.service", &["web-api.socket"], &[]),
            unit("web-rotate.timer", &[], &["web-rotate.service"]),
            unit("web-rotate.service", &[], &[]),
            {
                let mut mount = unit("srv-web.mount", &["-.mount"], &[]);
                mount.stop_commands = 1;
                mount
            },
            once,
            unit(
                "sysinit.target",
                &["local-fs.target", "systemd-journald.service"],
                &[],
            ),
            unit("basic.target", &["sysinit.target", "sockets.target"], &[]),
            unit("sockets.target", &["dbus.socket"], &[]),
            unit("dbus.socket", &[], &["dbus.service"]),
            unit("local-fs.target", &["var.mount", "-.mount"], &[]),
            {
                let mut var = unit("var.mount", &[], &[]);
                var.pulled_by = vec!["local-fs.target".into(), "web.service".into()];
                var
            },
            unit("systemd-journald.service", &[], &[]),
        ]
        .into_iter()
        .map(|u| (graph_key(&u.name), u))
        .collect()
    }

    fn graph_key(name: &str) -> &'static str {
        Box::leak(name.to_string().into_boxed_str())
    }

    #[test]
    fn the_closure_follows_nested_targets_services_sockets_timers_and_mounts() {
        let g = zoo();
        let c = run(Walk::role("web-active.target"), &g);
        assert_eq!(
            c.names(),
            [
                "srv-web.mount",
                "web-api.service",
                "web-api.socket",
                "web-rotate.service",
                "web-rotate.timer",
                "web-setup.service",
                "web-stack.target",
                "web-worker.service",
                "web.service",
            ]
        );
        assert_eq!(c.units["web-api.service"], Reach::Triggered);
        assert_eq!(c.units["web-rotate.service"], Reach::Triggered);
        assert_eq!(c.units["web-worker.service"], Reach::Pulled);
        assert_eq!(
            c.kill_modes.iter().collect::<Vec<_>>(),
            [(&"web-worker.service".to_string(), &"process".to_string())],
            "the walk keeps the kill mode the binding drop-in needs"
        );
        assert_eq!(
            c.stop_commands.iter().collect::<Vec<_>>(),
            [
                (&"srv-web.mount".to_string(), &1),
                (&"web-worker.service".to_string(), &2)
            ],
            "the walk keeps the stop commands the fence load counts"
        );
        assert_eq!(
            c.steady.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "srv-web.mount",
                "web-api.socket",
                "web-rotate.timer",
                "web-worker.service",
                "web.service",
            ],
            "targets, triggered and run-once units are not expected to stay up"
        );
        assert_eq!(c.missing.iter().collect::<Vec<_>>(), ["web-extra.service"]);
        assert!(
            c.shared.contains("var.mount"),
            "an fstab mount is the system's"
        );
        for system in [
            "var.mount",
            "dbus.socket",
            "dbus.service",
            "-.mount",
            "promd.service",
        ] {
            assert!(!c.units.contains_key(system), "{system} is the system's");
        }
        assert_eq!(
            c.with_target("web-active.target").last().unwrap(),
            "web-active.target"
        );
        assert!(!c.watchable().contains(&"web-stack.target".to_string()));
        let watch = Some(vec![
            "web.service".to_string(),
            "web-api.service".to_string(),
            "elsewhere.service".to_string(),
        ]);
        assert_eq!(
            c.expected_up(&watch),
            ["web.service", "elsewhere.service"],
            "a triggered unit may be down; a watched unit outside the closure may not"
        );
        assert_eq!(
            c.expected_up(&None),
            c.steady.iter().cloned().collect::<Vec<_>>()
        );
    }

    #[test]
    fn cycles_end_and_each_unit_is_asked_about_once() {
        let g: HashMap<&str, UnitInfo> = [
            unit("a.target", &["b.service"], &[]),
            unit("b.service", &["c.service", "a.target"], &[]),
            unit("c.service", &["b.service"], &[]),
        ]
        .into_iter()
        .map(|u| (graph_key(&u.name), u))
        .collect();
        let c = run(Walk::role("a.target"), &g);
        assert_eq!(c.names(), ["b.service", "c.service"]);
    }

    #[test]
    fn plumbing_is_never_part_of_a_role() {
        for u in [
            "promd.service",
            "system.slice",
            "dev-sda.device",
            "-.mount",
            "network-online.target",
            "dbus.socket",
            "session-1.scope",
        ] {
            assert!(is_plumbing(u), "{u}");
        }
        for u in [
            "web.service",
            "web.socket",
            "srv-web.mount",
            "web-stack.target",
        ] {
            assert!(!is_plumbing(u), "{u}");
        }
    }

    #[test]
    fn only_units_with_processes_are_killed() {
        assert!(has_processes("web.service") && has_processes("srv-web.mount"));
        assert!(!has_processes("web-active.target") && !has_processes("web.timer"));
    }

    #[test]
    fn instance_names_are_escaped_like_systemd_escape() {
        assert_eq!(escape_instance("web.service"), "web.service");
        assert_eq!(escape_instance("web@1.service"), "web\\x401.service");
        assert_eq!(escape_instance("srv-web.mount"), "srv\\x2dweb.mount");
    }
}
