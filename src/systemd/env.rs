//! What a group's units see: `/run/promd/GROUP.env`, rewritten atomically before a target starts.

use std::path::Path;

use super::{SystemdError, write_atomically};

/// What a group's units see in `/run/promd/GROUP.env` (for `EnvironmentFile=-`).
pub struct UnitEnv<'a> {
    /// `PROMD_GROUP`: the group's name, also the file's name.
    pub group: &'a str,
    /// `PROMD_NODE`: this host's node name.
    pub node: &'a str,
    /// `PROMD_ROLE`: the role whose target is about to start (`active` or `passive`).
    pub role: &'a str,
    /// `PROMD_TERM`: the fencing token; only grows across the cluster.
    pub term: u64,
    /// `PROMD_LEADER`: the node holding the role, empty when none is known.
    pub leader: &'a str,
    /// `PROMD_SLOT`, only for a group with several active hosts (docs/slots.md): the slot
    /// this host holds, or empty for none. `None`: no such line.
    pub slot: Option<&'a str>,
}

impl UnitEnv<'_> {
    /// The file's text: one `NAME=value` line per variable, in the order above, unquoted.
    pub fn render(&self) -> String {
        let mut text = format!(
            "PROMD_GROUP={}\nPROMD_NODE={}\nPROMD_ROLE={}\nPROMD_TERM={}\nPROMD_LEADER={}\n",
            self.group, self.node, self.role, self.term, self.leader
        );
        if let Some(slot) = self.slot {
            text.push_str(&format!("PROMD_SLOT={slot}\n"));
        }
        text
    }

    /// Writes `RUN_DIR/GROUP.env` atomically (a unit starting meanwhile reads the old file or
    /// the new one). Errors: [`SystemdError::Io`].
    pub fn write(&self, run_dir: &Path) -> Result<(), SystemdError> {
        write_atomically(
            &run_dir.join(format!("{}.env", self.group)),
            self.render().as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_has_every_variable() {
        let dir = tempfile::tempdir().unwrap();
        let env = UnitEnv {
            group: "web",
            node: "a",
            role: "active",
            term: 42,
            leader: "a",
            slot: None,
        };
        env.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("web.env")).unwrap();
        assert_eq!(
            text,
            "PROMD_GROUP=web\nPROMD_NODE=a\nPROMD_ROLE=active\nPROMD_TERM=42\nPROMD_LEADER=a\n"
        );
    }

    #[test]
    fn a_group_with_slots_says_which_one_this_host_holds() {
        let dir = tempfile::tempdir().unwrap();
        for (slot, line) in [("1", "PROMD_SLOT=1\n"), ("", "PROMD_SLOT=\n")] {
            let env = UnitEnv {
                group: "web",
                node: "a",
                role: "active",
                term: 7,
                leader: "a",
                slot: Some(slot),
            };
            env.write(dir.path()).unwrap();
            let text = std::fs::read_to_string(dir.path().join("web.env")).unwrap();
            assert!(text.ends_with(&format!("PROMD_LEADER=a\n{line}")), "{text}");
        }
    }
}
