//! Keeping the local index in step with the repository: the one part of `index/` that reads
//! storage.
//!
//! ```text
//! list index/ ⟷ cached index files ─► read the new ones, drop the gone ones
//! list backups/ ⟷ cached backups   ─► read the new ones, drop the gone ones
//! list data/ ⟷ packs any index file lists ─► unlisted packs: read their headers (two small
//!                                             range reads each), write one index file
//! ```
//!
//! Guarantees:
//! - After [`sync`], the local index holds exactly the index files and manifests in storage
//!   that pass their checks. An object that fails them (wrong id, fails authentication, does
//!   not decode) is skipped with one warning naming it and returned in [`SyncReport::damaged`]:
//!   one damaged object never blocks backups, listings or restores of what is intact.
//!   `qvault verify` reports it and `qvault repair` moves it out of the way.
//! - Only integrity failures are skipped. An unreachable backend, a wrong key or an object of
//!   a newer format version is an error, never a silent gap.
//! - [`index_unlisted_packs`] makes the packs an interrupted backup finished usable again
//!   without reading their data: it writes a new index file only for packs whose header
//!   decrypts and checks.

use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::{self, PackHeader, TRAILER_LEN};
use crate::id::{BackupId, IndexId, PackId};
use crate::repo::{pack_path, Repository};
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};

/// Pack headers read at once by [`index_unlisted_packs`].
const HEADER_READS: usize = 8;

/// Index files and manifests a sync reads at once: a fresh machine reads every one, and one
/// at a time it waited on each request in turn (10,000 packs: 625 index files).
const METADATA_READS: usize = 32;

/// Index files staged per local-index transaction during a sync (~4,000 chunks each).
const FILES_PER_TRANSACTION: usize = 32;

/// A repository object that failed its integrity checks and was skipped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamagedObject {
    /// Its path in the repository, e.g. `backups/<id>`.
    pub path: String,
    /// What check it failed.
    pub reason: String,
}

/// What a sync found that the caller may want to report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub damaged: Vec<DamagedObject>,
}

/// Whether `e` means the object itself is bad (skip it), not that reading it failed.
fn is_damage(e: &Error) -> bool {
    e.kind() == ErrorKind::Corrupt
}

/// Brings the local index up to date with the repository's index files and backups.
pub async fn sync(repo: &Repository) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let index = repo.index();

    let stored: HashSet<[u8; 32]> = repo.list_objects("index/").await?.into_keys().collect();
    let cached: HashSet<[u8; 32]> = index.index_files()?.into_iter().map(|i| i.0).collect();
    for id in cached.difference(&stored) {
        index.remove_index_file(IndexId(*id))?;
    }
    let new: Vec<IndexId> = stored.difference(&cached).map(|id| IndexId(*id)).collect();
    add_index_files(repo, new, &mut report).await?;

    let stored: HashSet<[u8; 32]> = repo.list_objects("backups/").await?.into_keys().collect();
    let cached: HashSet<[u8; 32]> = index.backup_ids()?.into_iter().map(|b| b.0).collect();
    for id in cached.difference(&stored) {
        index.remove_backup(BackupId(*id))?;
    }
    let new: Vec<BackupId> = stored.difference(&cached).map(|id| BackupId(*id)).collect();
    let mut manifests = stream::iter(new)
        .map(|id| async move { (id, repo.read_manifest(id).await) })
        .buffer_unordered(METADATA_READS);
    while let Some((id, read)) = manifests.next().await {
        match read {
            Ok(manifest) => index.add_backup(id, &manifest)?,
            Err(e) => skip(&mut report, crate::repo::backup_path(&id), e)?,
        }
    }
    Ok(report)
}

/// Reads `ids` concurrently and records them in the local index ([`crate::index::BulkLoad`])
/// on a thread of its own while the next ones are read: staged [`FILES_PER_TRANSACTION`] at
/// a time, recorded together once every one was read.
async fn add_index_files(
    repo: &Repository,
    ids: Vec<IndexId>,
    report: &mut SyncReport,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(IndexId, IndexFile)>>(2);
    let index = repo.index_arc();
    let writer = tokio::task::spawn_blocking(move || {
        let mut load = index.bulk_load()?;
        let mut complete = false;
        while let Some(batch) = rx.blocking_recv() {
            // The reader's last message: every file was read (an error sends none).
            complete = batch.is_empty();
            load.stage(batch.iter().map(|(id, file)| (*id, file)))?;
        }
        if complete {
            load.finish()?;
        }
        Ok::<_, Error>(())
    });
    let read = async {
        let mut files = stream::iter(ids)
            .map(|id| async move { (id, repo.read_index_file(id).await) })
            .buffer_unordered(METADATA_READS);
        let mut batch = Vec::new();
        while let Some((id, read)) = files.next().await {
            match read {
                Ok(file) => batch.push((id, file)),
                Err(e) => skip(report, crate::repo::index_path(&id), e)?,
            }
            if batch.len() >= FILES_PER_TRANSACTION {
                // A closed channel means the writer failed: its error is the one reported.
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return Ok(());
        }
        let _ = tx.send(Vec::new()).await;
        Ok::<_, Error>(())
    };
    let read = read.await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("the local index writer failed: {e}")))?;
    read.and(written)
}

/// Records a damaged object (with one warning), or passes on an error that is not damage.
fn skip(report: &mut SyncReport, path: String, e: Error) -> Result<()> {
    match e.kind() {
        // Deleted between listing and reading (a forget or prune elsewhere): nothing to do.
        ErrorKind::NotFound => Ok(()),
        _ if is_damage(&e) => {
            tracing::warn!(
                "skipping {path}: {e}; run `qvault verify` to see what it affects and \
                 `qvault repair index` / `qvault repair backups` to move it out of the way"
            );
            report.damaged.push(DamagedObject { path, reason: e.to_string() });
            Ok(())
        }
        _ => Err(e),
    }
}

/// Reads again, from storage, every index file and manifest the local index holds: for
/// `repair`, which must act on what storage holds, not on what a warm cache remembers (a
/// sync reads only objects it has not cached). One that fails its checks or is gone is
/// dropped from the local index, as a sync into an empty cache would never have added it;
/// the damaged ones are returned (and warned about once, as a sync does).
pub async fn recheck(repo: &Repository) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let index = repo.index();
    let files: Vec<IndexId> = index.index_files()?.into_iter().collect();
    let mut reads = stream::iter(files)
        .map(|id| async move { (id, repo.read_index_file(id).await) })
        .buffer_unordered(METADATA_READS);
    while let Some((id, read)) = reads.next().await {
        if let Err(e) = read {
            skip(&mut report, crate::repo::index_path(&id), e)?;
            index.remove_index_file(id)?;
        }
    }
    let backups: Vec<BackupId> = index.backup_ids()?.into_iter().collect();
    let mut reads = stream::iter(backups)
        .map(|id| async move { (id, repo.read_manifest(id).await) })
        .buffer_unordered(METADATA_READS);
    while let Some((id, read)) = reads.next().await {
        if let Err(e) = read {
            skip(&mut report, crate::repo::backup_path(&id), e)?;
            index.remove_backup(id)?;
        }
    }
    Ok(report)
}

/// Empties the local index and fills it again from the repository.
pub async fn rebuild(repo: &Repository) -> Result<SyncReport> {
    repo.index().clear()?;
    sync(repo).await
}

/// Pack id → object size, from listing `data/`.
pub async fn stored_packs(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    Ok(repo.list_objects("data/").await?.into_iter().map(|(id, size)| (PackId(id), size)).collect())
}

/// Stored packs (with their sizes) that no index file in the local index lists, in id order.
fn unlisted(stored: &HashMap<PackId, u64>, listed: &HashSet<PackId>) -> Vec<(PackId, u64)> {
    let mut out: Vec<(PackId, u64)> =
        stored.iter().filter(|(p, _)| !listed.contains(p)).map(|(p, s)| (*p, *s)).collect();
    out.sort();
    out
}

/// What [`reconcile_packs`] found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PackReconciliation {
    /// Packs index files list that storage does not hold: recorded as bad, so the next backup
    /// stores their chunks again.
    pub missing: Vec<PackId>,
    /// Stored packs no index file listed, now listed by a new index file.
    pub indexed: Vec<PackId>,
    /// Stored packs no index file listed whose header could not be read (left alone).
    pub damaged: Vec<DamagedObject>,
}

/// Compares storage's packs with the index files' (one listing of `data/`): indexes the packs
/// an interrupted backup finished (from their headers) and records the packs that are gone
/// as bad. Run at the start of every backup, so a rerun after a kill reuses what the killed
/// run uploaded, and no backup deduplicates against a pack that is known to be lost.
pub async fn reconcile_packs(repo: &Repository) -> Result<PackReconciliation> {
    let stored = stored_packs(repo).await?;
    let listed = repo.index().pack_ids()?;
    let missing = record_missing(repo, &stored, &listed)?;
    let unlisted = index_packs(repo, unlisted(&stored, &listed)).await?;
    Ok(PackReconciliation { missing, indexed: unlisted.indexed, damaged: unlisted.damaged })
}

/// Records the packs index files list that storage does not hold as bad (one listing of
/// `data/`, no writes to the repository): restore then takes other copies of their chunks,
/// or refuses before it starts. Returns them.
pub async fn mark_missing_packs(repo: &Repository) -> Result<Vec<PackId>> {
    let stored = stored_packs(repo).await?;
    record_missing(repo, &stored, &repo.index().pack_ids()?)
}

fn record_missing(
    repo: &Repository,
    stored: &HashMap<PackId, u64>,
    listed: &HashSet<PackId>,
) -> Result<Vec<PackId>> {
    let mut missing: Vec<PackId> =
        listed.iter().filter(|p| !stored.contains_key(p)).copied().collect();
    missing.sort();
    if !missing.is_empty() {
        let mut bad = repo.index().bad_packs()?;
        bad.extend(missing.iter().copied());
        repo.index().set_bad_packs(&bad)?;
        tracing::warn!(
            "{} packs listed in index files are missing from {}: run `qvault verify` to see \
             which backups they affect, then `qvault repair index`",
            missing.len(),
            repo.storage().location()
        );
    }
    Ok(missing)
}

/// Reads a pack's header with two range reads (trailer, then header), not the whole pack.
/// `size` is the object's size from a listing.
pub async fn read_pack_header(repo: &Repository, pack: PackId, size: u64) -> Result<PackHeader> {
    let what = format!("pack {pack}");
    let trailer_len = TRAILER_LEN as u64;
    if size < trailer_len {
        return Err(Error::corrupt(format!("{what} is {size} bytes, too short to be a pack")));
    }
    let trailer = repo.read_pack_range(pack, size - trailer_len..size).await?;
    let header_len = pack::decode_trailer(&trailer, &what)?;
    let header_start = (size - trailer_len).checked_sub(header_len).ok_or_else(|| {
        Error::corrupt(format!("{what} is shorter than the header its trailer announces"))
    })?;
    let sealed = repo.read_pack_range(pack, header_start..size - trailer_len).await?;
    let metadata = repo.key().metadata_identity().clone();
    let header = tokio::task::spawn_blocking(move || {
        let plain = crate::crypto::decrypt(&metadata, &sealed, &format!("{what} header"))?;
        let header = PackHeader::decode(&plain, &format!("{what} header"))?;
        if header.data_len != header_start {
            return Err(Error::corrupt(format!(
                "{what}: its header says the data is {} bytes, the pack holds {header_start}",
                header.data_len
            )));
        }
        Ok(header)
    })
    .await
    .map_err(|e| Error::corrupt(format!("reading the header of pack {pack} failed: {e}")))??;
    Ok(header)
}

/// What [`index_unlisted_packs`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UnlistedPacks {
    /// Packs now listed by the new index file.
    pub indexed: Vec<PackId>,
    /// Packs whose header could not be read: left alone (`verify` reports them).
    pub damaged: Vec<DamagedObject>,
}

/// Writes one index file listing every stored pack that no index file lists, from the packs'
/// own headers, so their chunks are deduplicated against and restorable again. Reads only
/// the headers (the metadata identity suffices: a backup host can do it).
pub async fn index_unlisted_packs(repo: &Repository) -> Result<UnlistedPacks> {
    let stored = stored_packs(repo).await?;
    index_packs(repo, unlisted(&stored, &repo.index().pack_ids()?)).await
}

/// Indexes `unlisted` (pack, size) from their headers in one new index file.
async fn index_packs(repo: &Repository, unlisted: Vec<(PackId, u64)>) -> Result<UnlistedPacks> {
    let mut out = UnlistedPacks::default();
    let mut packs = Vec::new();
    let mut headers = stream::iter(unlisted)
        .map(|(pack, size)| async move { (pack, read_pack_header(repo, pack, size).await) })
        .buffered(HEADER_READS);
    while let Some((pack, header)) = headers.next().await {
        match header {
            Ok(header) => packs.push(IndexedPack { pack, entries: header.entries }),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if is_damage(&e) => {
                tracing::warn!("pack {pack} is not indexed: its header is damaged: {e}");
                out.damaged.push(DamagedObject { path: pack_path(&pack), reason: e.to_string() });
            }
            Err(e) => return Err(e),
        }
    }
    out.indexed = packs.iter().map(|p| p.pack).collect();
    if !packs.is_empty() {
        repo.write_index_file(&IndexFile { packs }).await?;
    }
    Ok(out)
}
