//! Prune: give back the space of packs no backup references, without ever deleting a chunk a
//! backup — finished, or still running on another host — may need.
//!
//! ```text
//! lock ─► leases, marks, manifests, index files ─► plan() ─► PrunePlan ─► execute() ─► PruneReport
//!         (all read after the lock)                 (pure)    (printable)
//! ```
//!
//! A pack is deleted in two runs (see docs/design.md, "Prune and concurrent backups"):
//! - run N finds it unused (or repacks its live blobs into a new pack) and *marks* it in
//!   `locks/prune-mark-<id>` with the backup leases present then; it deletes nothing;
//! - a later run deletes it only if every lease the mark names is gone (or stale by the
//!   storage's clock) and no manifest in storage *now* references a chunk only it holds.
//!
//! Guarantees:
//! - What a backup references is [`crate::refs`]'s answer, nothing else.
//! - Write order: new packs, then the index files listing them; new index files before the
//!   old ones they replace are deleted; packs only after no index file lists them; a mark is
//!   deleted only after its packs. A prune stopped at any step leaves a repository that
//!   verifies clean and restores every backup, and the next prune finishes the job.
//! - With only the repository key it deletes wholly unused packs, repacks partly used
//!   list-block packs (version 2: sealed to the metadata key, which it holds) and reports what
//!   repacking data packs would free; that needs a data identity. Blobs are copied as stored
//!   (codec byte and payload), never decompressed, into a pack sealed like the one they come
//!   from: list blocks to the metadata recipient, data to the data recipients.
//! - `--dry-run` prints the plan that `execute` would carry out, and writes nothing.

mod execute;
mod lease;
pub mod locks;
pub mod table;

pub use execute::{execute, PruneReport};
pub use lease::{marked_packs, read_leased, Lease, LeaseTiming};
pub use locks::DEFAULT_STALE_AFTER;

use crate::error::{Error, Result};
use crate::id::{ChunkId, IndexId, PackId};
use crate::index::sync::DamagedObject;
use crate::repo::Repository;
use locks::StoredMark;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};
use table::{Entry, PackTable, RefSet};

/// restic's default: repack until unused space is at most 5% of the repository.
pub const DEFAULT_MAX_UNUSED_PERCENT: f64 = 5.0;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused bytes left in partly used packs, as a percentage of the repository after
    /// prune; packs with the most unused bytes are repacked until it holds.
    pub max_unused_percent: f64,
    /// Compute and return the plan only.
    pub dry_run: bool,
    /// Leases and prune locks older than this (by the storage's clock) are dead.
    pub stale_after: Duration,
    /// Test hook: stop with an error right after this step of [`execute`] (1-based), as a
    /// crash would. Not on the command line.
    pub fail_after_step: Option<usize>,
    /// Test hook: with `fail_after_step`, abort the process instead (as `kill -9` would:
    /// no lock released, nothing cleaned up).
    pub abort_on_fail: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: DEFAULT_MAX_UNUSED_PERCENT,
            dry_run: false,
            stale_after: DEFAULT_STALE_AFTER,
            fail_after_step: None,
            abort_on_fail: false,
        }
    }
}

/// A partly used pack and what repacking it frees.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PartlyUsed {
    pub pack: PackId,
    pub size: u64,
    pub used_bytes: u64,
    pub unused_bytes: u64,
    /// Its live chunks are all list blocks: a metadata pack (version 2), repacked with the
    /// repository key alone.
    pub list: bool,
    /// The chunks to copy (by prefix, see [`table`]): those this pack keeps.
    #[serde(skip)]
    pub live: Vec<u64>,
}

/// A mark that cannot be acted on yet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WaitingMark {
    pub path: String,
    pub packs: usize,
    /// Live leases the mark names: backups that may still reference its packs.
    pub live_leases: Vec<String>,
}

/// What prune will do.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PrunePlan {
    /// Packs from ready marks that nothing needs: deleted now.
    pub delete_packs: Vec<PackId>,
    pub delete_bytes: u64,
    /// Packs of ready marks no longer listed once the index files are rewritten (those to
    /// delete, and those a stopped prune already deleted).
    pub unlist_packs: Vec<PackId>,
    /// Index files listing a pack to delete → the packs their replacements list.
    pub rewrite_index: BTreeMap<IndexId, Vec<PackId>>,
    /// Ready marks, deleted once their packs are.
    pub finished_marks: Vec<String>,
    /// Marked packs a backup references again: kept.
    pub unmarked_packs: Vec<PackId>,
    /// Leases of backups that died (stale by the storage's clock): deleted with the marks.
    pub stale_leases: Vec<String>,
    /// Marks whose backups may still run.
    pub waiting_marks: Vec<WaitingMark>,
    /// Marks that fail their checks: deleted. Safe because a damaged mark never let a pack be
    /// deleted (only a mark that reads names packs to delete); its packs, if still unused,
    /// are in this run's new mark and wait out both phases again (docs/retention.md).
    pub damaged_marks: Vec<DamagedObject>,
    /// Packs nothing references now: marked, deleted by a later prune.
    pub mark_unused: Vec<PackId>,
    pub mark_unused_bytes: u64,
    /// Partly used packs to repack (data packs need a data identity, list-block packs only
    /// the repository key); marked once repacked.
    pub repack: Vec<PartlyUsed>,
    /// Bytes the repacks free (once their packs are deleted by a later prune).
    pub repack_frees_bytes: u64,
    /// Whether this prune can repack (it holds a data identity).
    pub can_repack: bool,
    /// Stored packs no index file lists: left alone (an unfinished backup's, which its
    /// rerun indexes, or a stopped prune's).
    pub unindexed_packs: usize,
    /// Totals over indexed, stored packs not yet marked.
    pub packs: usize,
    pub pack_bytes: u64,
    pub used_bytes: u64,
    pub unused_bytes: u64,
}

impl PrunePlan {
    /// True when executing changes nothing.
    pub fn is_empty(&self) -> bool {
        self.delete_packs.is_empty()
            && self.finished_marks.is_empty()
            && self.stale_leases.is_empty()
            && self.damaged_marks.is_empty()
            && self.mark_unused.is_empty()
            && self.repack.is_empty()
    }
}

/// Every chunk some backup references now, and which of them are list blocks (version 2),
/// by prefix.
async fn references(repo: &Repository) -> Result<(RefSet, RefSet)> {
    let (mut set, mut lists) = (RefSet::default(), RefSet::default());
    for backup in repo.index().backup_ids()? {
        let manifest = repo.read_manifest(backup).await?;
        crate::refs::for_each_reference(repo, &manifest, |id, kind| {
            set.insert(id);
            if kind == crate::refs::RefKind::ListBlock {
                lists.insert(id);
            }
        })
        .await?;
    }
    Ok((set, lists))
}

/// What [`plan`] reads from the repository, so the plan itself is a pure function.
pub struct PruneInput {
    pub inventory: PackTable,
    /// What backups reference, by prefix ([`table`]).
    pub referenced: RefSet,
    /// The referenced chunks that are list blocks: their packs are sealed to the metadata
    /// key, and repack (which writes data packs) leaves them alone.
    pub list_blocks: RefSet,
    /// For each referenced chunk of a marked pack (full id), every stored pack that holds
    /// it, from the local index: exact, so a pack is deleted only when no referenced chunk
    /// would be left without a copy.
    pub marked_holders: HashMap<ChunkId, Vec<PackId>>,
    pub marks: Vec<StoredMark>,
    /// Marks that fail their checks.
    pub damaged_marks: Vec<DamagedObject>,
    /// Live (not stale) lease names now.
    pub live_leases: HashSet<String>,
    /// Leases older than the stale limit: dead backups' leftovers.
    pub stale_leases: Vec<String>,
    /// Index file → packs it lists.
    pub listings: HashMap<PackId, BTreeSet<IndexId>>,
    pub can_repack: bool,
}

impl PruneInput {
    /// Reads leases first, then manifests: a backup whose lease is gone wrote its manifest
    /// before, so it is seen.
    pub async fn read(
        repo: &Repository,
        now: Option<SystemTime>,
        stale_after: Duration,
    ) -> Result<PruneInput> {
        let (stale, live): (Vec<_>, Vec<_>) =
            locks::leases(repo, now, stale_after).await?.into_iter().partition(|l| l.stale);
        let live_leases = live.into_iter().map(|l| l.name).collect();
        let stale_leases = stale.into_iter().map(|l| l.name).collect();
        let locks::Marks { readable: marks, damaged: damaged_marks } =
            locks::read_marks(repo).await?;
        repo.sync().await?;
        let (referenced, list_blocks) = references(repo).await?;
        let in_marks: HashSet<PackId> =
            marks.iter().flat_map(|m| m.mark.packs.iter().copied()).collect();
        let inventory = PackTable::read(repo, &in_marks).await?;
        // The marked packs themselves from their index entries, the others from the local
        // index leaving out packs known missing or damaged (they hold no usable copy).
        let mut marked_holders: HashMap<ChunkId, Vec<PackId>> = HashMap::new();
        for (pack, chunks) in &inventory.marked {
            for chunk in chunks.iter().filter(|c| referenced.contains(c)) {
                marked_holders.entry(*chunk).or_default().push(*pack);
            }
        }
        for (chunk, holders) in marked_holders.iter_mut() {
            holders.extend(repo.index().packs_holding(chunk)?);
            holders.retain(|p| inventory.stored.contains_key(p));
            holders.sort();
            holders.dedup();
        }
        let mut listings: HashMap<PackId, BTreeSet<IndexId>> = HashMap::new();
        for pack in inventory.indexed.keys() {
            listings.insert(*pack, repo.index().index_files_listing(pack)?.into_iter().collect());
        }
        let can_repack = repo.data_identities("repack").is_ok();
        Ok(PruneInput {
            inventory,
            referenced,
            list_blocks,
            marked_holders,
            marks,
            damaged_marks,
            live_leases,
            stale_leases,
            listings,
            can_repack,
        })
    }
}

/// Computes what prune does from what it read: pure.
pub fn plan(input: &PruneInput, options: &PruneOptions) -> PrunePlan {
    let inv = &input.inventory;
    let mut plan = PrunePlan {
        can_repack: input.can_repack,
        stale_leases: input.stale_leases.clone(),
        damaged_marks: input.damaged_marks.clone(),
        ..Default::default()
    };
    let mut marked: HashSet<PackId> = HashSet::new();
    let mut deletable: BTreeSet<PackId> = BTreeSet::new();
    for stored in &input.marks {
        let live: Vec<String> = match &stored.mark.leases {
            Some(leases) => {
                leases.iter().filter(|l| input.live_leases.contains(*l)).cloned().collect()
            }
            // Its prune stopped before listing leases: never acted on, redone below.
            None => {
                plan.finished_marks.push(stored.path.clone());
                continue;
            }
        };
        marked.extend(stored.mark.packs.iter().copied());
        if live.is_empty() {
            deletable.extend(stored.mark.packs.iter().copied());
            plan.finished_marks.push(stored.path.clone());
        } else {
            plan.waiting_marks.push(WaitingMark {
                path: stored.path.clone(),
                packs: stored.mark.packs.len(),
                live_leases: live,
            });
        }
    }
    // A referenced chunk no pack outside the deletion holds keeps every pack holding it
    // (full ids: the holders come from the local index).
    let mut keep: BTreeSet<PackId> = BTreeSet::new();
    for pack in &deletable {
        for chunk in inv.marked.get(pack).into_iter().flatten() {
            let Some(packs) = input.marked_holders.get(chunk) else { continue };
            if packs.iter().all(|p| deletable.contains(p)) {
                keep.extend(packs.iter().copied());
            }
        }
    }
    plan.unmarked_packs = keep.iter().copied().collect();
    for pack in &keep {
        deletable.remove(pack);
        marked.remove(pack);
    }
    plan.unlist_packs = deletable.iter().copied().collect();
    for pack in &deletable {
        // Already gone from storage (a stopped prune deleted it): only listings to drop.
        if let Some(size) = inv.stored.get(pack) {
            plan.delete_bytes += size;
            plan.delete_packs.push(*pack);
        }
        for file in input.listings.get(pack).into_iter().flatten() {
            plan.rewrite_index.entry(*file).or_default();
        }
    }
    for (file, kept) in plan.rewrite_index.iter_mut() {
        *kept = input
            .listings
            .iter()
            .filter(|(p, files)| files.contains(file) && !deletable.contains(p))
            .map(|(p, _)| *p)
            .collect();
        kept.sort();
    }

    // What is unused now, among packs no mark holds. A chunk stored twice (a repack that
    // stopped before its mark, a rerun backup) counts as used only in its keeper: the pack
    // holding it that is most used, so the other copy's pack empties out.
    let live_packs: Vec<(&PackId, &Vec<Entry>, u64)> = {
        let mut v: Vec<_> = inv
            .indexed
            .iter()
            .filter_map(|(p, e)| inv.stored.get(p).map(|size| (p, e, *size)))
            .filter(|(p, _, _)| !marked.contains(p) && !deletable.contains(p))
            .collect();
        v.sort_by_key(|(p, _, _)| **p);
        v
    };
    let referenced = |e: &Entry| input.referenced.contains_prefix(e.prefix);
    let fraction = |entries: &[Entry]| {
        let total: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        let used: u64 = entries.iter().filter(|e| referenced(e)).map(|e| u64::from(e.length)).sum();
        used as f64 / total.max(1) as f64
    };
    // Only chunks stored in more than one pack need a keeper: found by sorting prefixes,
    // so memory stays at 8 bytes a chunk.
    let shared: HashSet<u64> = {
        let mut all: Vec<u64> = live_packs
            .iter()
            .flat_map(|(_, entries, _)| {
                let mut own: Vec<u64> =
                    entries.iter().filter(|e| referenced(e)).map(|e| e.prefix).collect();
                own.sort_unstable();
                own.dedup();
                own
            })
            .collect();
        all.sort_unstable();
        all.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect()
    };
    let mut keeper: HashMap<u64, (f64, PackId)> = HashMap::new();
    for (pack, entries, _) in &live_packs {
        let f = fraction(entries);
        for e in entries.iter().filter(|e| shared.contains(&e.prefix) && referenced(e)) {
            let best = keeper.entry(e.prefix).or_insert((f, **pack));
            if f > best.0 {
                *best = (f, **pack);
            }
        }
    }
    let mut partly: Vec<PartlyUsed> = Vec::new();
    for (pack, entries, size) in live_packs {
        let mut live: Vec<u64> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let (mut used, mut unused) = (0u64, 0u64);
        for e in entries {
            let kept_here = referenced(e)
                && keeper.get(&e.prefix).is_none_or(|(_, k)| k == pack)
                && seen.insert(e.prefix);
            if kept_here {
                live.push(e.prefix);
                used += u64::from(e.length);
            } else {
                unused += u64::from(e.length);
            }
        }
        plan.packs += 1;
        plan.pack_bytes += size;
        plan.used_bytes += used;
        if used == 0 {
            plan.mark_unused.push(*pack);
            plan.mark_unused_bytes += size;
        } else if unused > 0 {
            plan.unused_bytes += unused;
            // List blocks go to metadata packs, data to data packs. A pack whose live chunks
            // are both (a data chunk that a list block deduplicated against) stays as it is.
            let lists = live.iter().filter(|c| input.list_blocks.contains_prefix(**c)).count();
            if lists > 0 && lists < live.len() {
                continue;
            }
            partly.push(PartlyUsed {
                pack: *pack,
                size,
                used_bytes: used,
                unused_bytes: unused,
                list: lists > 0,
                live,
            });
        }
    }
    plan.unused_bytes += plan.mark_unused_bytes;
    plan.unindexed_packs = inv.stored.keys().filter(|p| !inv.indexed.contains_key(p)).count();

    // restic's rule: unused ≤ p% of the repository after prune, i.e. ≤ p/(100−p) × used.
    let p = options.max_unused_percent.clamp(0.0, 99.9);
    let allowed = (p / (100.0 - p) * plan.used_bytes as f64) as u64;
    let mut left: u64 = partly.iter().map(|x| x.unused_bytes).sum();
    partly.sort_by(|a, b| {
        let frac = |x: &PartlyUsed| x.unused_bytes as f64 / x.size.max(1) as f64;
        frac(b).total_cmp(&frac(a)).then(a.pack.cmp(&b.pack))
    });
    for candidate in partly {
        if left <= allowed {
            break;
        }
        left -= candidate.unused_bytes;
        plan.repack_frees_bytes += candidate.unused_bytes;
        plan.repack.push(candidate);
    }
    plan
}

/// Computes the plan, taking nothing: what `--dry-run` and `stats` show.
pub async fn dry_run(repo: &Repository, options: &PruneOptions) -> Result<PrunePlan> {
    let now = locks::storage_now(repo).await?;
    let input = PruneInput::read(repo, now, options.stale_after).await?;
    Ok(plan(&input, options))
}

/// Takes the prune lock, plans and (unless `dry_run`) executes; the lock is released even
/// when a step fails.
pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    if options.dry_run {
        let plan = dry_run(repo, options).await?;
        return Ok(PruneReport { plan, dry_run: true, ..Default::default() });
    }
    let lock = locks::PruneLock::acquire(repo, options.stale_after).await?;
    let result = async {
        let input = PruneInput::read(repo, lock.now, options.stale_after).await?;
        let plan = plan(&input, options);
        execute(repo, plan, &input, options).await
    }
    .await;
    let released = lock.release(repo).await;
    let report = result?;
    released.map_err(|e| e.context("prune finished but could not remove its lock"))?;
    Ok(report)
}

/// The error a [`PruneOptions::fail_after_step`] hook raises.
fn injected(step: usize) -> Error {
    Error::new(crate::error::ErrorKind::Io, format!("prune stopped after step {step} (test hook)"))
}
