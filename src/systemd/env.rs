//! What a group's units see: `/run/promd/GROUP.env`, rewritten atomically before a target starts.

use std::path::Path;

use super::{SystemdError, write_atomically};

/// What a group's units see in `/run/promd/GROUP.env` (for `EnvironmentFile=-`).
pub struct UnitEnv<'a> {
    pub group: &'a str,
    pub node: &'a str,
    pub role: &'a str,
    pub term: u64,
    pub leader: &'a str,
}

impl UnitEnv<'_> {
    pub fn render(&self) -> String {
        format!(
            "PROMD_GROUP={}\nPROMD_NODE={}\nPROMD_ROLE={}\nPROMD_TERM={}\nPROMD_LEADER={}\n",
            self.group, self.node, self.role, self.term, self.leader
        )
    }

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
        };
        env.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("web.env")).unwrap();
        assert_eq!(
            text,
            "PROMD_GROUP=web\nPROMD_NODE=a\nPROMD_ROLE=active\nPROMD_TERM=42\nPROMD_LEADER=a\n"
        );
    }
}
