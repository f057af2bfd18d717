//! The packages' removal scripts, as far as they can be checked without root and without
//! installing anything: `debian/promd.postrm` and the `%postun` scriptlet of `rpm/promd.spec`
//! delete promd's nftables table (`table inet promd`, see `promd refuse`) when the package
//! is removed, not when it is upgraded, and never fail because nft or the table is missing.
//! They run under `/bin/sh` with a PATH of their own that holds only a stand-in `nft`, which
//! records what it is asked: nothing of the host's is run or changed.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What the stand-in nft finds.
#[derive(Clone, Copy)]
enum Nft {
    /// Not installed: no `nft` on the PATH.
    Missing,
    /// Installed, without promd's table.
    NoTable,
    /// Installed, with promd's table.
    Table,
    /// With the table, and `nft delete` fails (no nf_tables any more, say).
    DeleteFails,
}

/// A PATH directory with the stand-in `nft` (if any), and the file it records its calls in.
fn stand_in(nft: Nft) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = dir.path().join("calls");
    std::fs::write(&log, "").expect("write the log");
    let (list, delete) = match nft {
        Nft::Missing => return (dir, log),
        Nft::NoTable => (1, 0),
        Nft::Table => (0, 0),
        Nft::DeleteFails => (0, 1),
    };
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\ncase \"$*\" in\n\
         'list table inet promd') exit {list} ;;\n\
         'delete table inet promd') exit {delete} ;;\nesac\nexit 1\n",
        log = log.display()
    );
    let path = dir.path().join("nft");
    std::fs::write(&path, script).expect("write the stand-in nft");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, log)
}

/// Run the shell code `code` as a maintainer script with `arg` as its `$1`, with `nft` as
/// given: whether it succeeded, and the nft calls it made, one per line.
fn run(code: &str, arg: &str, nft: Nft, env: &[(&str, &str)]) -> (bool, String) {
    let (dir, log) = stand_in(nft);
    let status = Command::new("/bin/sh")
        .args(["-c", code, "script", arg])
        .env_clear()
        .env("PATH", dir.path())
        .envs(env.iter().copied())
        .status()
        .expect("run /bin/sh");
    let calls = std::fs::read_to_string(&log).expect("read the log");
    (status.success(), calls)
}

fn deb_postrm() -> String {
    let path = Path::new(ROOT).join("debian/promd.postrm");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shell lines of `rpm/promd.spec`'s `%postun`, without its macro lines (systemd's own
/// `%systemd_postun_with_restart`, not run here).
fn rpm_postun() -> String {
    let path = Path::new(ROOT).join("rpm/promd.spec");
    let spec = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body: Vec<&str> = spec
        .lines()
        .skip_while(|l| *l != "%postun")
        .skip(1)
        .take_while(|l| !(l.starts_with('%') && l[1..].bytes().all(|b| b.is_ascii_lowercase())))
        .filter(|l| !l.starts_with('%'))
        .collect();
    assert!(!body.is_empty(), "rpm/promd.spec has no %postun");
    body.join("\n")
}

const DELETED: &str = "list table inet promd\ndelete table inet promd\n";

#[test]
fn the_deb_deletes_promds_table_on_remove_and_purge_only() {
    let script = deb_postrm();
    for arg in ["remove", "purge"] {
        assert_eq!(
            run(&script, arg, Nft::Table, &[]),
            (true, DELETED.into()),
            "{arg}"
        );
        assert_eq!(
            run(&script, arg, Nft::NoTable, &[]),
            (true, "list table inet promd\n".into()),
            "{arg}: no table, no delete"
        );
        assert_eq!(
            run(&script, arg, Nft::DeleteFails, &[]),
            (true, DELETED.into()),
            "{arg}: a failed delete does not fail the removal"
        );
        assert_eq!(
            run(&script, arg, Nft::Missing, &[]),
            (true, String::new()),
            "{arg}"
        );
    }
    // An upgrade's new promd goes on using the table; dpkg --root must not touch this host's.
    for arg in [
        "upgrade",
        "failed-upgrade",
        "abort-install",
        "abort-upgrade",
        "disappear",
    ] {
        assert_eq!(
            run(&script, arg, Nft::Table, &[]),
            (true, String::new()),
            "{arg}"
        );
    }
    assert_eq!(
        run(
            &script,
            "purge",
            Nft::Table,
            &[("DPKG_ROOT", "/srv/chroot")]
        ),
        (true, String::new())
    );
}

#[test]
fn the_rpm_deletes_promds_table_on_erase_only() {
    let script = rpm_postun();
    // %postun's $1: 0 on erase, 1 or more on an upgrade.
    assert_eq!(run(&script, "0", Nft::Table, &[]), (true, DELETED.into()));
    assert_eq!(
        run(&script, "0", Nft::NoTable, &[]),
        (true, "list table inet promd\n".into())
    );
    assert_eq!(
        run(&script, "0", Nft::DeleteFails, &[]),
        (true, DELETED.into())
    );
    assert_eq!(run(&script, "0", Nft::Missing, &[]), (true, String::new()));
    assert_eq!(run(&script, "1", Nft::Table, &[]), (true, String::new()));
    assert_eq!(run(&script, "2", Nft::Table, &[]), (true, String::new()));
}
