//! Carrying out a [`PrunePlan`], one numbered step at a time, in the order that keeps every
//! step safe to stop after:
//!
//! ```text
//! 1 repack      new packs with the live blobs of partly used packs, then their index file
//! 2 index new   index files replacing those that list a pack to delete
//! 3 index old   delete the index files they replace
//! 4 packs       delete the packs of ready marks
//! 5 marks       delete the ready marks (and stale leases)
//! 6 mark        mark the packs unused now (and the repacked ones) for a later prune
//! ```

use super::table::prefix;
use super::{injected, locks, PruneInput, PruneOptions, PrunePlan};
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::{self, PackData, PackWriter, SealedPack};
use crate::id::PackId;
use crate::repo::{pack_path, Repository};
use bytes::Bytes;
use std::collections::HashSet;

/// What a prune did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PruneReport {
    pub plan: PrunePlan,
    pub dry_run: bool,
    pub packs_written: u64,
    pub bytes_written: u64,
    pub index_files_written: u64,
    pub index_files_deleted: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    pub marks_deleted: u64,
    /// The mark this run wrote, if any, and how many packs it holds.
    pub mark_written: Option<String>,
    pub packs_marked: u64,
}

/// Executes `plan` (from [`super::plan`] on `input`, read under the prune lock).
pub async fn execute(
    repo: &Repository,
    plan: PrunePlan,
    input: &PruneInput,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let step_done = |step: usize| match options.fail_after_step {
        Some(n) if n == step && options.abort_on_fail => std::process::abort(),
        Some(n) if n == step => Err(injected(step)),
        _ => Ok(()),
    };

    // 1. Repack: the new packs and their index file exist before anything is marked.
    let mut repacked = Vec::new();
    if plan.can_repack && !plan.repack.is_empty() {
        let (packs, bytes) = repack(repo, &plan.repack).await?;
        report.packs_written = packs;
        report.bytes_written = bytes;
        repacked = plan.repack.iter().map(|r| r.pack).collect();
    }
    step_done(1)?;

    // 2 and 3. Replace the index files listing a pack to delete: new ones first.
    let unlist: HashSet<PackId> = plan.unlist_packs.iter().copied().collect();
    report.index_files_written =
        crate::repair::write_index_rewrites(repo, plan.rewrite_index.keys(), &unlist).await?;
    step_done(2)?;
    report.index_files_deleted =
        crate::repair::delete_index_files(repo, plan.rewrite_index.keys()).await?;
    step_done(3)?;

    // 4. Packs, now that no index file lists them.
    for pack in &plan.delete_packs {
        let size = input.inventory.stored.get(pack).copied().unwrap_or(0);
        repo.storage().delete(&pack_path(pack)).await?;
        report.packs_deleted += 1;
        report.bytes_deleted += size;
    }
    step_done(4)?;

    // 5. The marks whose packs are gone (or back in use).
    for mark in &plan.finished_marks {
        repo.storage().delete(mark).await?;
        report.marks_deleted += 1;
    }
    for lease in &plan.stale_leases {
        repo.storage().delete(lease).await?;
    }
    step_done(5)?;

    // 6. What is unused now waits for a later prune.
    let to_mark: Vec<PackId> = plan.mark_unused.iter().chain(&repacked).copied().collect();
    if !to_mark.is_empty() {
        report.packs_marked = to_mark.len() as u64;
        report.mark_written = Some(locks::write_mark(repo, to_mark, options.stale_after).await?);
    }
    step_done(6)?;
    report.plan = plan;
    Ok(report)
}

/// Copies the referenced blobs of `sources` into new packs (as stored: codec byte and
/// payload), uploads them and writes one index file listing them. Returns (packs, bytes).
async fn repack(repo: &Repository, sources: &[super::PartlyUsed]) -> Result<(u64, u64)> {
    let identities = repo.data_identities("repacking partly used packs")?.to_vec();
    let metadata = repo.key().metadata_identity().clone();
    let metadata_recipient = repo.key().metadata_recipient();
    let recipients = repo.data_recipients().to_vec();
    let pack_size = repo.config().pack_size;
    let capacity = usize::try_from(pack_size).unwrap_or(usize::MAX).saturating_add(1 << 20);
    // By prefix (see `super::table`): a collision copies a chunk twice, never loses one.
    let mut copied: HashSet<u64> = HashSet::new();
    let mut writer: Option<PackWriter> = None;
    let mut sealed: Vec<SealedPack> = Vec::new();
    let mut indexed: Vec<IndexedPack> = Vec::new();
    let mut bytes_written = 0u64;
    for source in sources {
        let bytes = repo.read_pack(source.pack).await?;
        let live: HashSet<u64> =
            source.live.iter().filter(|c| !copied.contains(*c)).copied().collect();
        let (identities2, metadata2, recipients2, recipient2) =
            (identities.clone(), metadata.clone(), recipients.clone(), metadata_recipient.clone());
        let mut w = writer.take();
        let source = source.pack;
        let (w, done, chunks) = tokio::task::spawn_blocking(move || {
            copy_live_blobs(
                &bytes,
                source,
                &live,
                &identities2,
                &metadata2,
                &recipients2,
                &recipient2,
                pack_size,
                capacity,
                &mut w,
            )
            .map(|(done, chunks)| (w, done, chunks))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("repacking pack {source} failed: {e}")))??;
        writer = w;
        copied.extend(chunks);
        sealed.extend(done);
        for pack in sealed.drain(..) {
            bytes_written += upload(repo, pack, &mut indexed).await?;
        }
    }
    if let Some(last) = writer.filter(|w| !w.is_empty()) {
        let pack = last.finish(&metadata_recipient)?;
        bytes_written += upload(repo, pack, &mut indexed).await?;
    }
    let packs = indexed.len() as u64;
    if !indexed.is_empty() {
        bytes_written += repo.write_index_file(&IndexFile { packs: indexed }).await?.1;
    }
    Ok((packs, bytes_written))
}

async fn upload(
    repo: &Repository,
    pack: SealedPack,
    indexed: &mut Vec<IndexedPack>,
) -> Result<u64> {
    let size = pack.bytes.len() as u64;
    repo.write_pack(pack.id, Bytes::from(pack.bytes)).await?;
    indexed.push(IndexedPack { pack: pack.id, entries: pack.header.entries });
    Ok(size)
}

/// Decrypts one whole pack and adds its live blobs to `writer`, sealing full packs. Returns
/// the sealed packs and the chunks copied.
#[allow(clippy::too_many_arguments)]
fn copy_live_blobs(
    bytes: &[u8],
    source: PackId,
    live: &HashSet<u64>,
    identities: &[age::x25519::Identity],
    metadata: &age::x25519::Identity,
    recipients: &[age::x25519::Recipient],
    metadata_recipient: &age::x25519::Recipient,
    pack_size: u64,
    capacity: usize,
    writer: &mut Option<PackWriter>,
) -> Result<(Vec<SealedPack>, Vec<u64>)> {
    let what = format!("pack {source}");
    let header = pack::read_header(bytes, metadata, &what)?;
    let data = bytes
        .get(..header.data_len as usize)
        .ok_or_else(|| Error::corrupt(format!("{what} is shorter than its header says")))?;
    let refs: Vec<&dyn age::Identity> =
        identities.iter().map(|i| i as &dyn age::Identity).collect();
    let mut reader = PackData::open(std::io::Cursor::new(data), &refs, &what)?;
    let mut sealed = Vec::new();
    let mut copied = Vec::new();
    let mut entries = header.entries.clone();
    entries.sort_by_key(|e| e.offset);
    for entry in entries.iter().filter(|e| live.contains(&prefix(&e.chunk))) {
        if copied.contains(&prefix(&entry.chunk)) {
            continue;
        }
        let blob = reader.read_blob(entry)?;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(PackWriter::new(recipients, capacity)?),
        };
        w.add(entry.chunk, &blob, entry.raw_length)?;
        copied.push(prefix(&entry.chunk));
        if w.len() >= pack_size {
            if let Some(full) = writer.take() {
                sealed.push(full.finish(metadata_recipient)?);
            }
        }
    }
    Ok((sealed, copied))
}
