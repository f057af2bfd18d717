//! The runtime files promd writes for systemd under `/run/systemd/system`: a drop-in per unit
//! of a role that binds it to promd and makes its stop leave no process behind, and the
//! `promd-stop-UNIT.target` that stops a unit refusing manual stops.
//!
//! Runtime files are gone on reboot, like the state they describe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{PROMD_UNIT, SystemdError, address};
use crate::config::Address;

/// Where runtime units and drop-ins live.
pub const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

/// The prefix of the runtime targets that stop a unit as a dependency (`Conflicts=`), not as a
/// manual stop: a unit with `RefuseManualStop=yes` refuses `StopUnit`, but not a conflicting
/// start. `After=` orders our start after the unit's stop, so the start job ends once the
/// unit is down; `StopWhenUnneeded=` takes the target itself away again at once. (Literal
/// names, not a template: systemd 252 does not resolve `%I` in `Conflicts=`.)
pub const STOP_PREFIX: &str = "promd-stop-";

fn stop_unit_text(unit: &str) -> String {
    format!(
        "# Written by promd: starting this target stops {unit} by dependency\n\
         # (a unit with RefuseManualStop=yes refuses a plain stop, not a conflict).\n\
         [Unit]\nDescription=promd: stop {unit}\nDefaultDependencies=no\n\
         Conflicts={unit}\nAfter={unit}\nStopWhenUnneeded=yes\n"
    )
}

/// The unit-file section that holds kill settings for this unit's type, if it has any.
fn kill_section(unit: &str) -> Option<&'static str> {
    [
        (".service", "Service"),
        (".socket", "Socket"),
        (".mount", "Mount"),
        (".swap", "Swap"),
    ]
    .into_iter()
    .find(|(suffix, _)| unit.ends_with(suffix))
    .map(|(_, section)| section)
}

/// The drop-in that ties a unit of the role to promd.
///
/// - `BindsTo=` + `After=`: the unit stops when promd stops, crashes or is killed by the
///   watchdog, and a stop of promd stops it first.
/// - `SendSIGKILL=yes` and `FinalKillSignal=SIGKILL`: a stop that times out ends in SIGKILL,
///   whatever the unit says.
/// - `KillMode=control-group` where the unit had `process` or `none`: no process of the
///   unit survives its stop (the other modes end with SIGKILL to the whole cgroup already).
///   `kill_mode` is the unit's `KillMode=` as systemd reports it (empty if unknown).
///   `previous` is the drop-in already there: an override promd made stays, since the mode
///   systemd reports then is promd's own.
pub fn binding_text(group: &str, unit: &str, kill_mode: &str, previous: Option<&str>) -> String {
    let mut text = format!(
        "# Written by promd for group {group}: this unit must not outlive promd, and no\n\
         # process of it may survive its stop.\n\
         [Unit]\nBindsTo={PROMD_UNIT}\nAfter={PROMD_UNIT}\n"
    );
    if let Some(section) = kill_section(unit) {
        text.push_str(&format!(
            "[{section}]\nSendSIGKILL=yes\nFinalKillSignal=SIGKILL\n"
        ));
        let overridden = previous.is_some_and(|p| p.contains("\nKillMode=control-group\n"));
        if overridden || matches!(kill_mode, "process" | "none") {
            text.push_str("KillMode=control-group\n");
        }
    }
    text
}

/// `text` (a [`binding_text`]) with the unit ordered before each of `units`: the group's
/// address units, which so come up after every other unit of the role and go down before
/// them (see [`super::address`]).
pub fn order_before(text: String, units: &[String]) -> String {
    if units.is_empty() {
        return text;
    }
    let after = format!("After={PROMD_UNIT}\n");
    let before: String = units.iter().map(|u| format!("Before={u}\n")).collect();
    text.replacen(&after, &format!("{after}{before}"), 1)
}

/// The drop-in on promd.service that keeps the groups' active targets loaded in PID 1: one
/// `Before=TARGET` per group (`targets`: group → active target). A dependency from a running
/// unit is what keeps a unit loaded; without one, an inactive target (and the units only it
/// pulls in) is unloaded right after each call that names it and loaded from disk again for
/// the next. At 200 groups PID 1 so loaded units 14,000 to 19,000 times in one start-up,
/// each load statting every unit folder and, after promd had made a drop-in folder, reading
/// them all again (~140 times per host), and answered calls 10 s late. The ordering is the
/// one the binding drop-ins already give the role's units (`After=promd.service`): no start
/// or stop of its own, no cycle.
pub fn keep_text(targets: &BTreeMap<String, String>) -> String {
    let mut text = String::from(
        "# Written by promd: keeps each group's active target loaded (ordering only).\n[Unit]\n",
    );
    for target in targets.values() {
        text.push_str(&format!("Before={target}\n"));
    }
    text
}

/// The path of the drop-in that keeps the groups' active targets loaded ([`keep_text`]). Not
/// a binding (its name does not match one): `promd fence` must never kill promd.service.
pub fn keep_path(dir: &Path) -> PathBuf {
    dir.join(format!("{PROMD_UNIT}.d"))
        .join("40-promd-keep.conf")
}

/// The path of a unit's binding drop-in for a group.
pub fn binding_path(dir: &Path, group: &str, unit: &str) -> PathBuf {
    dir.join(format!("{unit}.d"))
        .join(format!("50-promd-{group}.conf"))
}

/// Write `text` to `path` atomically unless it is there already; true if it changed.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool, SystemdError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    write_atomically(path, text.as_bytes())?;
    Ok(true)
}

/// Write the target that stops `unit` by dependency under `dir`; true if it changed.
pub fn write_stop_unit(dir: &Path, unit: &str) -> Result<bool, SystemdError> {
    write_if_changed(&dir.join(stop_unit(unit)), &stop_unit_text(unit))
}

/// The name of the target that stops `unit` by dependency.
pub fn stop_unit(unit: &str) -> String {
    format!(
        "{STOP_PREFIX}{}.target",
        super::closure::escape_instance(unit)
    )
}

/// Every unit bound to promd under `dir` (any group): the units `promd fence` kills.
pub fn bound_units(dir: &Path) -> Vec<String> {
    let mut units: Vec<String> = scan(dir).into_values().flatten().collect();
    units.sort();
    units.dedup();
    units
}

/// The group whose binding drop-in `file` (a file name in a unit's `.d` folder) is.
fn group_of(file: &str) -> Option<&str> {
    file.strip_prefix("50-promd-")?.strip_suffix(".conf")
}

/// Which units each group has bound under a folder, read from it once and then kept up to
/// date by the binds and removals made through it, so that binding a group costs what its own
/// units cost. Scanning every unit's folder on each bind instead cost O(groups) per group:
/// at 200 groups that held promd's one loop for most of a take-over, and the groups it took
/// over were elected a second late. promd is the only writer of these files (one promd per
/// host); one removed by hand is simply found gone.
#[derive(Debug)]
pub struct Bindings {
    dir: PathBuf,
    /// Group → the units it bound; `None` until the folder is first read.
    by_group: Option<HashMap<String, BTreeSet<String>>>,
    /// Group → the active target [`keep_text`] keeps loaded.
    kept: BTreeMap<String, String>,
    /// Group → its address units; `None` until the folder is first read.
    addressed: Option<HashMap<String, BTreeSet<String>>>,
}

impl Bindings {
    /// The bindings under `dir` (usually [`RUNTIME_UNIT_DIR`]), read at first use.
    pub fn new(dir: impl Into<PathBuf>) -> Bindings {
        Bindings {
            dir: dir.into(),
            by_group: None,
            kept: BTreeMap::new(),
            addressed: None,
        }
    }

    fn groups(&mut self) -> &mut HashMap<String, BTreeSet<String>> {
        let dir = &self.dir;
        self.by_group.get_or_insert_with(|| scan(dir))
    }

    /// Bind `unit` to promd for `group` ([`binding_text`] with the unit's `kill_mode`, as
    /// the walk read it, ordered [`order_before`] the units in `before`), atomically and only
    /// if the drop-in there differs; true if it did. The drop-in there is read once: it is
    /// also what [`binding_text`] keeps an override of.
    pub fn bind(
        &mut self,
        group: &str,
        unit: &str,
        kill_mode: &str,
        before: &[String],
    ) -> Result<bool, SystemdError> {
        let path = binding_path(&self.dir, group, unit);
        let previous = std::fs::read_to_string(&path).ok();
        let text = binding_text(group, unit, kill_mode, previous.as_deref());
        let text = order_before(text, before);
        let changed = previous.as_deref() != Some(text.as_str());
        if changed {
            write_atomically(&path, text.as_bytes())?;
        }
        self.groups()
            .entry(group.to_string())
            .or_default()
            .insert(unit.to_string());
        Ok(changed)
    }

    /// Keep exactly these groups' active targets loaded (group → target; [`keep_text`]),
    /// forgetting any other (a group removed while promd was down); true if the drop-in
    /// changed.
    pub fn keep_all(&mut self, targets: BTreeMap<String, String>) -> Result<bool, SystemdError> {
        self.kept = targets;
        self.write_kept()
    }

    /// Keep `group`'s active `target` loaded too; true if the drop-in changed.
    pub fn keep(&mut self, group: &str, target: &str) -> Result<bool, SystemdError> {
        if self.kept.get(group).is_some_and(|t| t == target) {
            return Ok(false);
        }
        self.kept.insert(group.to_string(), target.to_string());
        self.write_kept()
    }

    fn write_kept(&self) -> Result<bool, SystemdError> {
        write_if_changed(&keep_path(&self.dir), &keep_text(&self.kept))
    }

    /// Write `group`'s address units (one per address, [`super::address::unit_text`]) and the
    /// drop-in on its active `target` that pulls them in, and remove the group's address units
    /// no longer configured (all of them, and the drop-in, for none); true if anything
    /// changed. `promd`: the binary the units run `promd announce` from.
    pub fn addresses(
        &mut self,
        group: &str,
        target: &str,
        addresses: &[Address],
        promd: &Path,
    ) -> Result<bool, SystemdError> {
        let mut changed = false;
        let units: Vec<String> = addresses
            .iter()
            .map(|a| address::unit_name(group, a))
            .collect();
        for a in addresses {
            let path = address::unit_path(&self.dir, group, a);
            changed |= write_if_changed(&path, &address::unit_text(group, a, promd))?;
        }
        let wants = address::wants_path(&self.dir, group, target);
        if units.is_empty() {
            if std::fs::remove_file(&wants).is_ok() {
                changed = true;
                let _ = wants.parent().map(std::fs::remove_dir);
            }
        } else {
            changed |= write_if_changed(&wants, &address::wants_text(group, &units))?;
        }
        let dir = &self.dir;
        let addressed = self.addressed.get_or_insert_with(|| scan_addresses(dir));
        let before = addressed.remove(group).unwrap_or_default();
        for stale in before.iter().filter(|u| !units.contains(u)) {
            changed |= std::fs::remove_file(dir.join(stale)).is_ok();
        }
        if !units.is_empty() {
            addressed.insert(group.to_string(), units.into_iter().collect());
        }
        Ok(changed)
    }

    /// Remove the group's binding drop-ins of every unit but those in `keep` (units that left
    /// the role's closure: an operator edited the target, so they are not the role's any
    /// more and must not be stopped with promd or killed by its fence); true if any was
    /// removed.
    pub fn remove_except(&mut self, group: &str, keep: &[String]) -> bool {
        let dir = self.dir.clone();
        let Some(units) = self.groups().get_mut(group) else {
            return false;
        };
        let mut removed = false;
        units.retain(|unit| {
            if keep.contains(unit) {
                return true;
            }
            let path = binding_path(&dir, group, unit);
            if std::fs::remove_file(&path).is_ok() {
                removed = true;
                // The folder goes too once empty; another drop-in keeps it.
                let _ = path.parent().map(std::fs::remove_dir);
            }
            false
        });
        if units.is_empty() {
            self.groups().remove(group);
        }
        removed
    }

    /// Remove a group's drop-ins (a reload removed the group); true if any was removed.
    pub fn remove(&mut self, group: &str) -> bool {
        let target = self.kept.get(group).cloned().unwrap_or_default();
        let addresses = self
            .addresses(group, &target, &[], Path::new(""))
            .unwrap_or(false);
        let kept = self.kept.remove(group).is_some() && self.write_kept().unwrap_or(false);
        self.remove_except(group, &[]) | kept | addresses
    }
}

/// Every binding drop-in under `dir`: group → units.
fn scan(dir: &Path) -> HashMap<String, BTreeSet<String>> {
    let mut by_group: HashMap<String, BTreeSet<String>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return by_group;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Some(unit) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".d"))
            .map(str::to_string)
        else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for f in files.filter_map(|f| f.ok()) {
            if let Some(group) = f.file_name().to_str().and_then(group_of) {
                by_group
                    .entry(group.to_string())
                    .or_default()
                    .insert(unit.clone());
            }
        }
    }
    by_group
}

/// Every address unit under `dir`: group → unit names.
fn scan_addresses(dir: &Path) -> HashMap<String, BTreeSet<String>> {
    let mut by_group: HashMap<String, BTreeSet<String>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return by_group;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if let Some((group, _)) = address::is_address_unit(&name)
            .then(|| name.strip_prefix(address::UNIT_PREFIX))
            .flatten()
            .and_then(|rest| rest.split_once('.'))
        {
            by_group
                .entry(group.to_string())
                .or_default()
                .insert(name.clone());
        }
    }
    by_group
}

/// Write a file so that readers see the old or the new content, never a mix.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), SystemdError> {
    let io = |error| SystemdError::Io {
        path: path.to_path_buf(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("promd-tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(content).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_written_once_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = binding_path(dir.path(), "web", "web.service");
        let text = binding_text("web", "web.service", "control-group", None);
        assert!(write_if_changed(&path, &text).unwrap());
        assert!(
            !write_if_changed(&path, &text).unwrap(),
            "unchanged: no reload"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("BindsTo=promd.service\n") && text.contains("After=promd.service\n"));
        assert!(text.contains("[Service]\nSendSIGKILL=yes\nFinalKillSignal=SIGKILL\n"));
        assert!(
            !text.contains("KillMode="),
            "control-group stays the unit's own"
        );
        assert!(!path.with_extension("promd-tmp").exists());
        assert_eq!(bound_units(dir.path()), ["web.service"]);
    }

    #[test]
    fn processes_left_by_kill_mode_process_or_none_are_not_allowed() {
        for mode in ["process", "none"] {
            let t = binding_text("web", "web.service", mode, None);
            assert!(t.ends_with("KillMode=control-group\n"), "{mode}: {t}");
        }
        let t = binding_text("web", "web.service", "mixed", None);
        assert!(
            !t.contains("KillMode="),
            "mixed ends in SIGKILL to the cgroup already"
        );
        // Once overridden, systemd reports promd's own control-group: the override stays.
        let first = binding_text("web", "web.service", "process", None);
        let again = binding_text("web", "web.service", "control-group", Some(&first));
        assert_eq!(first, again);
    }

    #[test]
    fn kill_settings_go_in_the_section_of_the_unit_type() {
        let k = "process";
        assert!(binding_text("web", "srv-web.mount", k, None).contains("[Mount]\n"));
        assert!(binding_text("web", "web.socket", k, None).contains("[Socket]\n"));
        for u in ["web-stack.target", "web.timer", "web.path"] {
            let t = binding_text("web", u, k, None);
            assert!(
                !t.contains("KillMode") && !t.contains("SIGKILL"),
                "{u}: {t}"
            );
        }
    }

    #[test]
    fn a_stop_target_stops_its_unit_by_dependency() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_stop_unit(dir.path(), "web@1.service").unwrap());
        assert!(!write_stop_unit(dir.path(), "web@1.service").unwrap());
        let name = stop_unit("web@1.service");
        assert_eq!(name, "promd-stop-web\\x401.service.target");
        let t = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        assert!(
            t.contains("Conflicts=web@1.service\nAfter=web@1.service\n"),
            "{t}"
        );
    }

    #[test]
    fn removing_a_group_keeps_the_other_groups_bindings() {
        let dir = tempfile::tempdir().unwrap();
        let k = "control-group";
        for (g, u) in [
            ("web", "web.service"),
            ("db", "db.service"),
            ("web", "shared.service"),
            ("db", "shared.service"),
        ] {
            write_if_changed(
                &binding_path(dir.path(), g, u),
                &binding_text(g, u, k, None),
            )
            .unwrap();
        }
        let mut bindings = Bindings::new(dir.path());
        assert!(bindings.keep("web", "web-active.target").unwrap());
        assert!(!bindings.keep("web", "web-active.target").unwrap());
        assert!(bindings.keep("db", "db-active.target").unwrap());
        assert_eq!(
            bound_units(dir.path()),
            ["db.service", "shared.service", "web.service"],
            "promd.service is never a unit to fence"
        );
        assert!(bindings.remove("web"));
        let kept = std::fs::read_to_string(keep_path(dir.path())).unwrap();
        assert!(
            kept.ends_with("[Unit]\nBefore=db-active.target\n"),
            "{kept}"
        );
        // At start-up: exactly the configured groups, whatever an earlier run kept.
        let only = BTreeMap::from([("api".to_string(), "api-active.target".to_string())]);
        assert!(bindings.keep_all(only.clone()).unwrap());
        assert!(!bindings.keep_all(only).unwrap(), "unchanged: no reload");
        let kept = std::fs::read_to_string(keep_path(dir.path())).unwrap();
        assert!(
            kept.ends_with("[Unit]\nBefore=api-active.target\n"),
            "{kept}"
        );
        assert_eq!(bound_units(dir.path()), ["db.service", "shared.service"]);
        assert!(!bindings.remove("web"), "nothing left to remove");
        assert!(!dir.path().join("web.service.d").exists());
    }

    #[test]
    fn address_units_are_written_pulled_in_and_removed_with_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let promd = Path::new("/usr/bin/promd");
        let v4 = Address::parse("192.0.2.10/24 dev eth0").unwrap();
        let v6 = Address::parse("2001:db8::10/64 dev eth0").unwrap();
        let mut bindings = Bindings::new(dir.path());
        let both = [v4.clone(), v6.clone()];
        let target = "web-active.target";
        assert!(bindings.addresses("web", target, &both, promd).unwrap());
        assert!(
            !bindings.addresses("web", target, &both, promd).unwrap(),
            "unchanged"
        );
        // Another group's units are its own, even under a name that starts alike.
        assert!(
            bindings
                .addresses("web-2", "w2.target", &both[..1], promd)
                .unwrap()
        );
        let wants = address::wants_path(dir.path(), "web", target);
        assert!(
            std::fs::read_to_string(&wants)
                .unwrap()
                .contains("Wants=promd-address-web.2001:db8::10.service\n")
        );
        // A promd that starts again finds the units of its earlier run in the folder.
        let mut bindings = Bindings::new(dir.path());
        assert!(
            bindings
                .addresses("web", target, &both[..1], promd)
                .unwrap()
        );
        assert!(!address::unit_path(dir.path(), "web", &v6).exists());
        assert!(address::unit_path(dir.path(), "web", &v4).exists());
        assert!(bindings.addresses("web", target, &[], promd).unwrap());
        assert!(!address::unit_path(dir.path(), "web", &v4).exists());
        assert!(!wants.exists() && !wants.parent().unwrap().exists());
        assert!(address::unit_path(dir.path(), "web-2", &v4).exists());
        assert!(
            bound_units(dir.path()).is_empty(),
            "no address unit is a binding"
        );
    }

    #[test]
    fn every_unit_of_the_role_comes_up_before_its_addresses() {
        let units = ["promd-address-web.192.0.2.10.service".to_string()];
        let t = order_before(
            binding_text("web", "web.service", "control-group", None),
            &units,
        );
        assert!(
            t.contains(
                "After=promd.service\nBefore=promd-address-web.192.0.2.10.service\n[Service]"
            ),
            "{t}"
        );
        let plain = binding_text("web", "web.service", "control-group", None);
        assert_eq!(order_before(plain.clone(), &[]), plain);
    }

    #[test]
    fn a_unit_that_left_the_closure_is_unbound_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let k = "control-group";
        for (g, u) in [
            ("web", "web.service"),
            ("web", "old-helper.service"),
            ("db", "old-helper.service"),
        ] {
            write_if_changed(
                &binding_path(dir.path(), g, u),
                &binding_text(g, u, k, None),
            )
            .unwrap();
        }
        let keep = ["web.service".to_string()];
        // Read from the folder (a previous run's drop-ins), then kept by its own writes.
        let mut bindings = Bindings::new(dir.path());
        assert!(bindings.remove_except("web", &keep));
        assert!(binding_path(dir.path(), "web", "web.service").exists());
        assert!(!binding_path(dir.path(), "web", "old-helper.service").exists());
        assert!(binding_path(dir.path(), "db", "old-helper.service").exists());
        assert!(
            !bindings.remove_except("web", &keep),
            "nothing left to remove"
        );
        assert!(bindings.bind("web", "new.service", k, &[]).unwrap());
        assert!(
            !bindings.bind("web", "new.service", k, &[]).unwrap(),
            "unchanged"
        );
        assert!(
            bindings.remove_except("web", &keep),
            "a unit bound since is known"
        );
        assert!(!binding_path(dir.path(), "web", "new.service").exists());
        assert!(binding_path(dir.path(), "web", "web.service").exists());
    }
}
