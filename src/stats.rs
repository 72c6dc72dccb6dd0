//! Repository statistics: what the repository stores against what its backups hold, and
//! what prune would give back. Reads only metadata (the repository key suffices).

use crate::error::Result;
use crate::id::BackupId;
use crate::id::PackId;
use crate::prune::{self, PruneOptions, PrunePlan};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};

/// One backup's size and what it added.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupStat {
    pub id: BackupId,
    pub time: String,
    pub name: Option<String>,
    /// Bytes of its streams.
    pub bytes: u64,
    /// Bytes it added to the repository when it ran (packs and index files).
    pub added_bytes: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RepositoryStats {
    /// Every object in the repository.
    pub repository_bytes: u64,
    pub pack_bytes: u64,
    pub packs: u64,
    pub backups: u64,
    /// What the backups hold, summed over backups (what restoring them all writes).
    pub original_bytes: u64,
    /// Distinct chunks the backups reference, their raw and stored (blob) sizes.
    pub unique_chunks: u64,
    pub unique_raw_bytes: u64,
    pub unique_blob_bytes: u64,
    /// original / unique raw: what deduplication saves. `null` without data.
    pub dedup_ratio: Option<f64>,
    /// unique raw / unique stored: what compression saves.
    pub compression_ratio: Option<f64>,
    /// Bytes prune gives back: unused packs, unused space in partly used packs, and packs
    /// already marked for deletion.
    pub unused_bytes: u64,
    pub marked_bytes: u64,
    pub per_backup: Vec<BackupStat>,
    /// The prune plan the unused figures come from.
    pub prune: PrunePlan,
}

/// What the repository stores: the bytes of every pack listed under `data/`, referenced or
/// not, until prune deletes it. `stats` (pack bytes), `report` and the
/// `qvault_repository_stored_bytes` metric all count it here: what surviving backups once
/// added undercounts after forget, since shared and not-yet-pruned data stays.
pub async fn stored_bytes(repo: &Repository) -> Result<u64> {
    Ok(pack_total(&crate::index::sync::stored_packs(repo).await?))
}

fn pack_total(stored: &HashMap<PackId, u64>) -> u64 {
    stored.values().sum()
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

pub async fn stats(repo: &Repository) -> Result<RepositoryStats> {
    // One read of the repository serves both the prune plan and the ratios.
    let options = PruneOptions::default();
    // The storage clock only judges which leases are stale in the plan shown; reading
    // needs no write, so credentials that may only read get a plan that treats every
    // lease as live (what `None` means) instead of no statistics.
    let now = match prune::locks::storage_now(repo).await {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(
                "cannot read the storage clock ({e}): every lease counts as live in these \
                 statistics"
            );
            None
        }
    };
    let input = prune::PruneInput::read(repo, now, options.stale_after).await?;
    let plan = prune::plan(&input, &options);
    let (inventory, referenced) = (&input.inventory, &input.referenced);
    let repository_bytes = repo.storage().list("").await?.iter().map(|o| o.size).sum();
    let mut per_backup = Vec::new();
    for listing in repo.backups()? {
        let manifest = repo.read_manifest(listing.id).await?;
        per_backup.push(BackupStat {
            id: listing.id,
            time: listing.time,
            name: listing.name,
            bytes: manifest.total_size(),
            added_bytes: manifest.summary.bytes_added,
        });
    }
    let mut seen = HashSet::new();
    let (mut raw, mut blob) = (0u64, 0u64);
    for entries in inventory.indexed.values() {
        for e in entries {
            if referenced.contains_prefix(e.prefix) && seen.insert(e.prefix) {
                raw += u64::from(e.raw_length);
                blob += u64::from(e.length);
            }
        }
    }
    let original_bytes = per_backup.iter().map(|b| b.bytes).sum();
    let pack_bytes = pack_total(&inventory.stored);
    let marked_bytes = pack_bytes - plan.pack_bytes.min(pack_bytes);
    Ok(RepositoryStats {
        repository_bytes,
        pack_bytes,
        packs: inventory.stored.len() as u64,
        backups: per_backup.len() as u64,
        original_bytes,
        unique_chunks: seen.len() as u64,
        unique_raw_bytes: raw,
        unique_blob_bytes: blob,
        dedup_ratio: ratio(original_bytes, raw),
        compression_ratio: ratio(raw, blob),
        unused_bytes: plan.unused_bytes + marked_bytes,
        marked_bytes,
        per_backup,
        prune: plan,
    })
}
