//! The objects under `locks/` that let prune delete while backups run on other hosts.
//!
//! ```text
//! locks/lease-<16 random bytes, hex>      a running backup (written first, rewritten while
//!                                         it runs, deleted last: lease.rs)
//! locks/prune                             the prune lock (write-if-absent)
//! locks/prune-mark-<16 random bytes, hex> packs a prune found unused, and the leases
//!                                         present when it looked
//! locks/clock-<16 random bytes, hex>      a probe: written, stat'ed, deleted, to read
//!                                         the storage's clock
//! ```
//!
//! Every object is sealed to the metadata recipient (like index files), holding JSON.
//! Guarantees (see docs/design.md, "Prune and concurrent backups"):
//! - A backup writes its lease *before* it looks at the index, then reads every mark and
//!   never deduplicates against a marked pack. A prune writes a mark *before* it lists the
//!   leases. So either the prune sees the backup's lease (and waits for it to end), or the
//!   backup sees the mark (and stores those chunks again): no backup can reference a pack
//!   that a mark lets prune delete.
//! - Staleness is judged by the storage's clock only: a lease whose object the storage last
//!   modified more than `stale_after` before a probe object it just wrote is dead. No host
//!   clock is compared with another.

use crate::error::{Error, ErrorKind, Result};
use crate::id::PackId;
use crate::index::sync::DamagedObject;
use crate::repo::Repository;
use bytes::Bytes;
use std::time::{Duration, SystemTime};

pub const LOCKS_DIR: &str = "locks/";
pub const PRUNE_LOCK: &str = "locks/prune";
pub(super) const LEASE_PREFIX: &str = "locks/lease-";
const MARK_PREFIX: &str = "locks/prune-mark-";
const CLOCK_PREFIX: &str = "locks/clock-";

/// A lease or lock older than this (by the storage's clock) is taken to be dead: a backup or
/// a prune running longer than this is not protected.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

pub(super) fn random_name(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Who holds a lease or the prune lock: for the operator reading `locks/`, never trusted
/// for timing.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Holder {
    host: String,
    pid: u32,
    /// The holder's own clock when it started: informational only.
    started: String,
}

impl Holder {
    pub(super) fn me() -> Holder {
        Holder {
            host: crate::backup::host_name(),
            pid: std::process::id(),
            started: crate::repo::now_rfc3339(),
        }
    }
}

/// `value` as JSON sealed to the metadata recipient: the bytes of a lock object.
pub(super) fn seal(repo: &Repository, path: &str, value: &impl serde::Serialize) -> Result<Bytes> {
    let json = serde_json::to_vec(value)
        .map_err(|e| Error::new(ErrorKind::Io, format!("encoding {path}: {e}")))?;
    Ok(Bytes::from(repo.key().seal_metadata(&json)?))
}

async fn write_sealed(
    repo: &Repository,
    path: &str,
    value: &impl serde::Serialize,
    new: bool,
) -> Result<()> {
    let sealed = seal(repo, path, value)?;
    if new {
        repo.storage().write_new(path, sealed).await
    } else {
        repo.storage().write(path, sealed).await
    }
}

async fn read_sealed<T: serde::de::DeserializeOwned>(repo: &Repository, path: &str) -> Result<T> {
    let sealed = repo.storage().read(path).await?;
    let plain = repo.key().open_metadata(&sealed, path)?;
    serde_json::from_slice(&plain)
        .map_err(|e| Error::corrupt(format!("{path} is not a valid lock object: {e}")))
}

/// The storage's clock now: the modification time of a probe object it just wrote. `None`
/// when the backend reports no modification times (then nothing is ever stale).
pub async fn storage_now(repo: &Repository) -> Result<Option<SystemTime>> {
    let probe = random_name(CLOCK_PREFIX);
    repo.storage().write(&probe, Bytes::new()).await?;
    let now = repo.storage().modified(&probe).await;
    repo.storage().delete(&probe).await?;
    now
}

fn is_stale(modified: Option<SystemTime>, now: Option<SystemTime>, stale_after: Duration) -> bool {
    match (modified, now) {
        (Some(m), Some(now)) => now.duration_since(m).is_ok_and(|age| age > stale_after),
        _ => false,
    }
}

/// A lease found in storage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LeaseState {
    /// Its object name under `locks/`.
    pub name: String,
    /// Older than the stale limit by the storage's clock.
    pub stale: bool,
}

/// The leases in storage now, each judged stale or not against `now` (the storage's clock).
pub async fn leases(
    repo: &Repository,
    now: Option<SystemTime>,
    stale_after: Duration,
) -> Result<Vec<LeaseState>> {
    let mut out = Vec::new();
    for object in repo.storage().list(LOCKS_DIR).await? {
        if !object.path.starts_with(LEASE_PREFIX) {
            continue;
        }
        let modified = match repo.storage().modified(&object.path).await {
            Ok(m) => m,
            // Released between the listing and the stat.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.push(LeaseState { name: object.path, stale: is_stale(modified, now, stale_after) });
    }
    Ok(out)
}

/// What a prune marked: packs nothing referenced when it looked, to delete on a later run.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub packs: Vec<PackId>,
    /// The leases present right after the mark was first written. `None` until then: a mark
    /// without it is never acted on (its prune stopped half way), but still keeps its packs
    /// out of new backups' dedup.
    pub leases: Option<Vec<String>>,
}

/// A mark and where it is stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredMark {
    pub path: String,
    pub mark: Mark,
}

/// The marks in storage: those that read, and those that are damaged.
#[derive(Clone, Debug, Default)]
pub struct Marks {
    pub readable: Vec<StoredMark>,
    /// Marks that fail their checks (do not decrypt or decode). One deletes nothing and keeps
    /// nothing out of a backup's dedup; a prune removes it (see [`super::PrunePlan`]).
    pub damaged: Vec<DamagedObject>,
}

/// Every mark in storage. A mark that cannot be read for another reason than damage (the
/// storage failed) is skipped with a warning: it neither excludes nor deletes anything
/// this time, and is read again next time.
pub async fn read_marks(repo: &Repository) -> Result<Marks> {
    let mut out = Marks::default();
    for object in repo.storage().list(LOCKS_DIR).await? {
        if !object.path.starts_with(MARK_PREFIX) {
            continue;
        }
        match read_sealed::<Mark>(repo, &object.path).await {
            Ok(mark) => out.readable.push(StoredMark { path: object.path, mark }),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                out.damaged.push(DamagedObject { path: object.path, reason: e.to_string() });
            }
            Err(e) => tracing::warn!("ignoring prune mark {} this time: {e}", object.path),
        }
    }
    Ok(out)
}

/// Writes a new mark in two steps: the packs first (from then on no new backup dedups
/// against them), then the leases present after that. Returns its path.
pub async fn write_mark(
    repo: &Repository,
    packs: Vec<PackId>,
    stale_after: Duration,
) -> Result<String> {
    let path = random_name(MARK_PREFIX);
    let mut mark = Mark { packs, leases: None };
    write_sealed(repo, &path, &mark, true).await?;
    let now = storage_now(repo).await?;
    let live = leases(repo, now, stale_after).await?;
    mark.leases = Some(live.into_iter().filter(|l| !l.stale).map(|l| l.name).collect());
    write_sealed(repo, &path, &mark, false).await?;
    Ok(path)
}

/// The prune lock, held for one prune run.
#[derive(Debug)]
pub struct PruneLock {
    /// The storage's clock when the lock was taken.
    pub now: Option<SystemTime>,
    /// Deleted by [`crate::held::release_all`] if a signal stops the process first.
    held: crate::held::Token,
}

impl PruneLock {
    /// Takes the lock, breaking one that is stale by the storage's clock. Another live
    /// prune is `ErrorKind::Refused`.
    pub async fn acquire(repo: &Repository, stale_after: Duration) -> Result<PruneLock> {
        for _ in 0..2 {
            let written_whole = crate::held::critical();
            match write_sealed(repo, PRUNE_LOCK, &Holder::me(), true).await {
                Ok(()) => {
                    let held = crate::held::hold_object(repo.storage(), PRUNE_LOCK);
                    drop(written_whole);
                    let now = repo.storage().modified(PRUNE_LOCK).await?;
                    return Ok(PruneLock { now, held });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let held_since = repo.storage().modified(PRUNE_LOCK).await?;
                    let now = storage_now(repo).await?;
                    if !is_stale(held_since, now, stale_after) {
                        let holder = read_sealed::<Holder>(repo, PRUNE_LOCK)
                            .await
                            .map(|h| format!("{} (pid {}, started {})", h.host, h.pid, h.started))
                            .unwrap_or_else(|_| "an unknown holder".to_string());
                        return Err(Error::new(
                            ErrorKind::Refused,
                            format!(
                                "another prune holds {PRUNE_LOCK} in {}: {holder}; wait for it, or if \
                                 no prune runs, remove the lock with `qvault prune --unlock`",
                                repo.storage().location()
                            ),
                        ));
                    }
                    tracing::warn!("breaking a stale prune lock in {}", repo.storage().location());
                    repo.storage().delete(PRUNE_LOCK).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::Refused,
            format!(
                "another prune took {PRUNE_LOCK} in {} first: try again",
                repo.storage().location()
            ),
        ))
    }

    pub async fn release(self, repo: &Repository) -> Result<()> {
        let deleted = repo.storage().delete(PRUNE_LOCK).await;
        crate::held::let_go(self.held);
        deleted
    }
}

/// What `qvault prune --unlock` removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Unlocked {
    /// Whether a prune lock was there.
    pub prune_lock: bool,
    /// Leases this host's processes wrote that are no longer running (a killed backup's).
    pub dead_leases: Vec<String>,
    /// Leases left: other hosts', running processes', unreadable ones. They go stale by
    /// themselves.
    pub other_leases: usize,
    /// Nothing was removed: the lock and `dead_leases` are what a real run would remove.
    pub dry_run: bool,
}

/// `qvault prune --unlock`, for after a crash: removes the prune lock whoever holds it (the
/// operator knows no prune runs), and the leases of processes of this host that are no
/// longer running (a `kill -9`ed backup's lease would hold marked packs for the whole stale
/// limit). A lease is judged only on its own host, by its process id (Linux `/proc`);
/// elsewhere nothing is removed. Should another machine share this host name and a lease of
/// a backup still running there be removed, that backup fails before its manifest (the
/// lease check) and records nothing: never a backup referencing deleted packs.
///
/// With `dry_run` it removes nothing and reports what it would remove.
pub async fn unlock(repo: &Repository, dry_run: bool) -> Result<Unlocked> {
    let mut out = Unlocked {
        prune_lock: repo.storage().exists(PRUNE_LOCK).await?,
        dry_run,
        ..Default::default()
    };
    if !dry_run {
        repo.storage().delete(PRUNE_LOCK).await?;
    }
    let me = Holder::me();
    for object in repo.storage().list(LOCKS_DIR).await? {
        if !object.path.starts_with(LEASE_PREFIX) {
            continue;
        }
        let dead = match read_sealed::<Holder>(repo, &object.path).await {
            Ok(holder) => holder.host == me.host && !process_running(holder.pid),
            Err(_) => false,
        };
        if dead {
            if !dry_run {
                repo.storage().delete(&object.path).await?;
            }
            out.dead_leases.push(object.path);
        } else {
            out.other_leases += 1;
        }
    }
    Ok(out)
}

/// Whether process `pid` runs on this host; `true` where that cannot be told.
fn process_running(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_storage_clock_makes_a_lease_stale() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(24 * 3600);
        assert!(is_stale(Some(t0), Some(t0 + day + Duration::from_secs(1)), day));
        assert!(!is_stale(Some(t0), Some(t0 + day), day));
        // A lease "from the future" (storage clock stepped back) is live, not stale.
        assert!(!is_stale(Some(t0 + day * 3), Some(t0), day));
        // Without modification times nothing is ever stale.
        assert!(!is_stale(None, Some(t0), day));
        assert!(!is_stale(Some(t0), None, day));
    }
}
