//! Repair: make a repository with lost or damaged objects whole for new backups, and move
//! what cannot be read out of the way. restic's `repair index` and `repair snapshots` are
//! the anchors.
//!
//! ```text
//! repair index:   plan (bad packs: missing from storage, or found damaged by verify;
//!                       damaged index files; unlisted packs)
//!                 → write new index files without the bad packs
//!                 → delete the index files they replace
//!                 → move damaged index files and damaged packs to quarantine/
//!                 → index the packs no index file lists, from their headers
//! repair backups: move damaged manifests to quarantine/
//! ```
//!
//! Guarantees:
//! - Nothing readable is lost: an index file is deleted only after the file replacing it
//!   (listing every one of its packs that is not bad) is written; a damaged object is copied
//!   to `quarantine/<its path>` before it is deleted, so it can still be examined.
//! - After `repair index` no index file lists a missing or damaged pack, so every backup
//!   stores those chunks again; `verify` then names exactly the backups that cannot be
//!   restored (remove them with `forget`).
//! - The plan is a value: `--dry-run` prints it and stops.

use crate::error::{ErrorKind, Result};
use crate::format::index::IndexFile;
use crate::id::{IndexId, PackId};
use crate::index::sync::{self, DamagedObject};
use crate::repo::{index_path, pack_path, Repository};
use crate::verify::{verify, VerifyOptions};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Where damaged objects are moved: `quarantine/<their path>`. Not part of the format;
/// nothing reads it.
pub const QUARANTINE: &str = "quarantine/";

#[derive(Clone, Debug, Default)]
pub struct RepairIndexOptions {
    /// Read every pack and check it against its id and header first (a full structural
    /// `verify`); otherwise only packs missing from storage and those the last `verify`
    /// found damaged are bad.
    pub read_packs: bool,
}

/// What `repair index` will do.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairIndexPlan {
    /// Packs index files list that are missing from storage.
    pub missing_packs: Vec<PackId>,
    /// Stored packs known to be damaged: moved to quarantine.
    pub damaged_packs: Vec<PackId>,
    /// Index files listing a bad pack → the packs they list that are not bad, which a new
    /// index file will list.
    pub rewrite: BTreeMap<IndexId, Vec<PackId>>,
    /// Index files that fail their checks: moved to quarantine (their packs are then indexed
    /// from the packs' headers).
    pub damaged_index_files: Vec<DamagedObject>,
    /// Packs no index file lists now (more may follow from damaged index files).
    pub unlisted_packs: Vec<PackId>,
}

impl RepairIndexPlan {
    pub fn is_empty(&self) -> bool {
        self.missing_packs.is_empty()
            && self.damaged_packs.is_empty()
            && self.damaged_index_files.is_empty()
            && self.unlisted_packs.is_empty()
    }
}

/// What `repair index` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Index files written: rewrites without bad packs, and the one listing unlisted packs.
    pub index_files_written: u64,
    pub index_files_deleted: u64,
    pub quarantined: Vec<String>,
    /// Packs listed again from their own headers.
    pub packs_indexed: u64,
    /// Packs whose header could not be read: left in place, unlisted.
    pub unreadable_packs: Vec<DamagedObject>,
}

/// Computes what `repair index` would change; changes nothing but, with `read_packs`, the
/// local index's record of bad packs.
pub async fn plan_repair_index(
    repo: &Repository,
    options: &RepairIndexOptions,
) -> Result<RepairIndexPlan> {
    // What storage holds, not what a warm cache remembers: a damaged index file the cache
    // still lists is found here exactly as a sync into an empty cache finds it.
    let rechecked = sync::recheck(repo).await?;
    if options.read_packs {
        // Records every pack that is missing or fails its checks as bad.
        verify(repo, &VerifyOptions::default()).await?;
    }
    let stored = sync::stored_packs(repo).await?;
    let listed = repo.index().pack_ids()?;
    let known_bad = repo.index().bad_packs()?;
    let mut plan = RepairIndexPlan::default();
    let mut bad = HashSet::new();
    for pack in &listed {
        if !stored.contains_key(pack) {
            plan.missing_packs.push(*pack);
            bad.insert(*pack);
        } else if known_bad.contains(pack) {
            plan.damaged_packs.push(*pack);
            bad.insert(*pack);
        }
    }
    plan.missing_packs.sort();
    plan.damaged_packs.sort();
    let mut affected = BTreeSet::new();
    for pack in &bad {
        affected.extend(repo.index().index_files_listing(pack)?);
    }
    for file in affected {
        let kept = repo
            .read_index_file(file)
            .await?
            .packs
            .into_iter()
            .map(|p| p.pack)
            .filter(|p| !bad.contains(p))
            .collect();
        plan.rewrite.insert(file, kept);
    }
    plan.damaged_index_files = damaged_under(repo, &rechecked, "index/");
    plan.unlisted_packs = stored.keys().filter(|p| !listed.contains(p)).copied().collect();
    plan.unlisted_packs.sort();
    Ok(plan)
}

/// Carries out `plan` (from [`plan_repair_index`] on this repository).
pub async fn repair_index(repo: &Repository, plan: &RepairIndexPlan) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let bad: HashSet<PackId> =
        plan.missing_packs.iter().chain(&plan.damaged_packs).copied().collect();
    report.index_files_written = write_index_rewrites(repo, plan.rewrite.keys(), &bad).await?;
    report.index_files_deleted = delete_index_files(repo, plan.rewrite.keys()).await?;
    for damaged in &plan.damaged_index_files {
        if quarantine(repo, &damaged.path).await? {
            report.quarantined.push(damaged.path.clone());
        }
    }
    for pack in &plan.damaged_packs {
        let path = pack_path(pack);
        if quarantine(repo, &path).await? {
            report.quarantined.push(path);
        }
    }
    let still_bad: HashSet<PackId> = repo.index().bad_packs()?.difference(&bad).copied().collect();
    repo.index().set_bad_packs(&still_bad)?;
    let unlisted = sync::index_unlisted_packs(repo).await?;
    report.packs_indexed = unlisted.indexed.len() as u64;
    // Those packs went into one new index file: it is written too.
    report.index_files_written += u64::from(!unlisted.indexed.is_empty());
    report.unreadable_packs = unlisted.damaged;
    Ok(report)
}

/// The first half of replacing index files (repair's bad packs, prune's deleted ones): for
/// each of `files`, writes a new index file listing its packs that are not in `drop` (none
/// when nothing is left). Returns how many were written. Run [`delete_index_files`] on the
/// same files only after this returns: every other pack stays listed at every moment.
pub(crate) async fn write_index_rewrites(
    repo: &Repository,
    files: impl IntoIterator<Item = &IndexId>,
    drop: &HashSet<PackId>,
) -> Result<u64> {
    let mut written = 0;
    for old in files {
        let packs: Vec<_> = repo
            .read_index_file(*old)
            .await?
            .packs
            .into_iter()
            .filter(|p| !drop.contains(&p.pack))
            .collect();
        if !packs.is_empty() {
            repo.write_index_file(&IndexFile { packs }).await?;
            written += 1;
        }
    }
    Ok(written)
}

/// The second half: deletes `files` from storage and the local index. Returns how many.
pub(crate) async fn delete_index_files(
    repo: &Repository,
    files: impl IntoIterator<Item = &IndexId>,
) -> Result<u64> {
    let mut deleted = 0;
    for old in files {
        repo.storage().delete(&index_path(old)).await?;
        repo.index().remove_index_file(*old)?;
        deleted += 1;
    }
    Ok(deleted)
}

/// What `repair backups` will do: move the manifests that fail their checks to quarantine.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairBackupsPlan {
    pub damaged_manifests: Vec<DamagedObject>,
}

/// Reads every manifest in storage again (a warm cache would hide one damaged since it was
/// cached) and plans to move each that fails its checks.
pub async fn plan_repair_backups(repo: &Repository) -> Result<RepairBackupsPlan> {
    let rechecked = sync::recheck(repo).await?;
    Ok(RepairBackupsPlan { damaged_manifests: damaged_under(repo, &rechecked, "backups/") })
}

/// The damaged objects under `dir`: those the sync at open skipped and those a recheck found,
/// each once, by path.
fn damaged_under(repo: &Repository, rechecked: &sync::SyncReport, dir: &str) -> Vec<DamagedObject> {
    let mut out: BTreeMap<String, DamagedObject> = BTreeMap::new();
    for d in repo.damaged_objects().iter().chain(&rechecked.damaged) {
        if d.path.starts_with(dir) {
            out.entry(d.path.clone()).or_insert_with(|| d.clone());
        }
    }
    out.into_values().collect()
}

/// Carries out `plan`; returns the paths moved to quarantine.
pub async fn repair_backups(repo: &Repository, plan: &RepairBackupsPlan) -> Result<Vec<String>> {
    let mut moved = Vec::new();
    for damaged in &plan.damaged_manifests {
        if quarantine(repo, &damaged.path).await? {
            moved.push(damaged.path.clone());
        }
    }
    Ok(moved)
}

/// Copies `path` to `quarantine/<path>`, then deletes it. False when it was already gone.
async fn quarantine(repo: &Repository, path: &str) -> Result<bool> {
    let storage = repo.storage();
    let bytes: Bytes = match storage.read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    storage.write(&format!("{QUARANTINE}{path}"), bytes).await?;
    storage.delete(path).await?;
    Ok(true)
}
