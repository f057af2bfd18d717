//! The address files: `ROOT/.addresses/ADDRESS`, one per floating address a group's role
//! holds, each an [`AddressRecord`] naming the group, node and term that took it (`.` never
//! starts a group name, so the directory is nobody's group).
//!
//! A file counts while the leader file it names is live at its term: the file needs no
//! renewal of its own, and one left by a holder that died or lost its session stops counting
//! with that holder's key. A campaign or release touches an address's file under that
//! address's lock, `ROOT/.addresses/ADDRESS.lock`: the group's addresses in their sorted
//! order, always after the group's own lock (one order for all, so two campaigns cannot
//! deadlock). Per address, not one for all: a holder stopped inside its campaign (SIGSTOP, a
//! hung NFS client) stalls only the groups that share one of its addresses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::core::Role;
use crate::store::error::DirError;
use crate::store::record::{AddressRecord, FORMAT_VERSION, LeaderRecord, MemberRecord};

use super::files::{
    GroupLock, Kept, Slot, any, make_dir, read_kept, read_slot, remove, write_atomic,
};
use super::format::encode_durable;
use super::jobs::Ctx;

/// The directory of the address files under `root`.
fn dir(root: &Path) -> PathBuf {
    root.join(".addresses")
}

fn file(root: &Path, ip: &IpAddr) -> PathBuf {
    dir(root).join(ip.to_string())
}

/// The lock file of `ip`'s address file (no address's text ends in `.lock`).
fn lock_file(root: &Path, ip: &IpAddr) -> PathBuf {
    dir(root).join(format!("{ip}.lock"))
}

/// The locks of the group's addresses, one per address, taken in the sorted order of
/// `ctx.addresses` ([`crate::store::GroupSpec::address_set`]); none if the group has no
/// address. Each waits at most `ctx.lock_wait`, and a lock not had releases those taken.
pub(super) fn lock(ctx: &Ctx) -> Result<Vec<GroupLock>, DirError> {
    if ctx.addresses.is_empty() {
        return Ok(Vec::new());
    }
    make_dir(&dir(&ctx.paths.root))?;
    ctx.addresses
        .iter()
        .map(|ip| GroupLock::acquire(&lock_file(&ctx.paths.root, ip), ctx.lock_wait))
        .collect()
}

/// Who holds one of the group's addresses at wall time `now` (µs), in words, if another
/// group does: the campaign is then lost. A file of this group (left by a holder whose key
/// was deleted by hand) does not count: the group's leader file keeps its hosts apart. An
/// unreadable address file counts, with no end (it names no holder whose end could be
/// seen): it is reported, and an operator deletes it.
/// Under [`lock`].
pub(super) fn held_elsewhere(ctx: &Ctx, now: u64) -> Result<Option<String>, DirError> {
    for ip in &ctx.addresses {
        let path = file(&ctx.paths.root, ip);
        let rec = match read_kept::<AddressRecord>(&path)? {
            Kept::Absent => continue,
            Kept::Corrupt(e) => {
                return Ok(Some(format!(
                    "address {ip}: {} is unreadable ({e}); remove it once no host holds the \
                     address",
                    path.display()
                )));
            }
            Kept::Valid(rec) if rec.group == ctx.group => continue,
            Kept::Valid(rec) => rec,
        };
        if holder_live(&ctx.paths.root, &rec, now)? {
            return Ok(Some(format!(
                "address {ip} is held by group {} on node {} (term {}; {})",
                rec.group,
                rec.node,
                rec.term,
                path.display()
            )));
        }
    }
    Ok(None)
}

/// Whether the holder `rec` names may still run its units: the group's leader file is live
/// at `rec`'s term, or the holder's member file is live and still claims the role
/// (`promoting`, `active`, `demoting`) at that term. The second is the in-group rule
/// ([`holder_standing`]): a leader file deleted by hand (a documented repair) vanishes while
/// its holder still has the address, until its next renewal finds the key gone and it
/// stops its units and says so (a reviewer's probe had another group take the address 11 ms
/// after such a delete). An unreadable file counts until its mtime plus the lease `rec`
/// gives.
///
/// [`holder_standing`]: crate::core
fn holder_live(root: &Path, rec: &AddressRecord, now: u64) -> Result<bool, DirError> {
    let dir = root.join(&rec.group);
    let corrupt_live = |mtime: u64| now < mtime.saturating_add(rec.lease_ms.saturating_mul(1000));
    let leader = match read_slot::<LeaderRecord>(&dir.join("leader"), any)? {
        Slot::Absent => false,
        Slot::Valid(e) => e.term == Some(rec.term) && e.record.node == rec.node && now < e.expires,
        Slot::Corrupt { mtime, .. } => corrupt_live(mtime),
    };
    if leader {
        return Ok(true);
    }
    Ok(
        match read_slot::<MemberRecord>(&dir.join("members").join(&rec.node), any)? {
            Slot::Absent => false,
            Slot::Valid(e) => {
                now < e.expires
                    && e.record.term == Some(rec.term)
                    && matches!(
                        e.record.role,
                        Role::Promoting | Role::Active | Role::Demoting
                    )
            }
            Slot::Corrupt { mtime, .. } => corrupt_live(mtime),
        },
    )
}

/// Write the group's address files for `term`. Under [`lock`], before the leader file: a
/// file whose leader file never came does not count.
pub(super) fn take(ctx: &Ctx, term: u64) -> Result<(), DirError> {
    let rec = AddressRecord {
        v: FORMAT_VERSION,
        group: ctx.group.clone(),
        node: ctx.node.clone(),
        host: ctx.host.as_ref().map(|h| h.as_str().to_owned()),
        term,
        lease_ms: ctx.lease_us / 1000,
    };
    let bytes = encode_durable(&rec);
    for ip in &ctx.addresses {
        write_atomic(&file(&ctx.paths.root, ip), &bytes, false)?;
    }
    Ok(())
}

/// Delete the group's address files that this node wrote at `term`; any other is left.
/// Under [`lock`], after the leader file is gone (a file left by a failure here no longer
/// counts).
pub(super) fn free(ctx: &Ctx, term: u64) -> Result<(), DirError> {
    for ip in &ctx.addresses {
        let path = file(&ctx.paths.root, ip);
        if let Kept::Valid(rec) = read_kept::<AddressRecord>(&path)?
            && rec.group == ctx.group
            && rec.node == ctx.node
            && rec.term == term
        {
            remove(&path)?;
        }
    }
    Ok(())
}
