//! Carrying out a [`PrunePlan`], one numbered step at a time, in the order that keeps every
//! step safe to stop after:
//!
//! ```text
//! 1 repack      new packs with the live blobs of partly used packs, then their index file
//! 2 index new   index files replacing those that list a pack to delete
//! 3 index old   delete the index files they replace
//! 4 packs       delete the packs of ready marks
//! 5 marks       delete the ready marks and damaged ones (and stale leases)
//! 6 mark        mark the packs unused now (and the repacked ones) for a later prune
//! ```

use super::table::prefix;
use super::{injected, locks, PartlyUsed, PruneInput, PruneOptions, PrunePlan};
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

    // 1. Repack: the new packs and their index file exist before anything is marked. List-block
    // packs need only the repository key; data packs a data identity.
    let mut repacked = Vec::new();
    let (lists, data): (Vec<&PartlyUsed>, Vec<&PartlyUsed>) =
        plan.repack.iter().partition(|r| r.list);
    let mut batches = vec![(lists, Sealing::metadata(repo))];
    if plan.can_repack {
        batches.push((data, Sealing::data(repo)?));
    }
    for (sources, sealing) in batches.into_iter().filter(|(s, _)| !s.is_empty()) {
        let done = repack(repo, &sources, &sealing).await?;
        report.packs_written += done.packs;
        report.bytes_written += done.bytes;
        repacked.extend(done.sources);
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
    // Step 6 marks their packs again if they are still unused.
    for mark in &plan.damaged_marks {
        repo.storage().delete(&mark.path).await?;
        report.marks_deleted += 1;
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

/// Who can read a repacked pack, and with what its source is read.
struct Sealing {
    /// Decrypt the source packs' data.
    identities: Vec<age::x25519::Identity>,
    /// The new packs' data is sealed to these.
    recipients: Vec<age::x25519::Recipient>,
    /// List-block packs: a source that these identities cannot read (a data pack whose live
    /// chunks happen to be list blocks) is left as it is rather than failing the prune.
    skip_unreadable: bool,
}

impl Sealing {
    /// For list-block packs: the metadata key reads them, and the copies stay readable by a
    /// backup host. Data identities, when held, also read the rare data pack in the batch.
    fn metadata(repo: &Repository) -> Sealing {
        let mut identities = vec![repo.key().metadata_identity().clone()];
        if let Ok(data) = repo.data_identities("repacking") {
            identities.extend(data.iter().cloned());
        }
        Sealing {
            identities,
            recipients: vec![repo.key().metadata_recipient()],
            skip_unreadable: true,
        }
    }

    fn data(repo: &Repository) -> Result<Sealing> {
        Ok(Sealing {
            identities: repo.data_identities("repacking partly used packs")?.to_vec(),
            recipients: repo.data_recipients().to_vec(),
            skip_unreadable: false,
        })
    }
}

/// What one batch of repacks wrote.
struct Repacked {
    packs: u64,
    bytes: u64,
    /// The source packs whose live blobs are now in the new packs: to mark.
    sources: Vec<PackId>,
}

/// Copies the referenced blobs of `sources` into new packs (as stored: codec byte and
/// payload) sealed as `sealing` says, uploads them and writes one index file listing them.
async fn repack(repo: &Repository, sources: &[&PartlyUsed], sealing: &Sealing) -> Result<Repacked> {
    let metadata = repo.key().metadata_identity().clone();
    let metadata_recipient = repo.key().metadata_recipient();
    let pack_size = repo.config().pack_size;
    let capacity = usize::try_from(pack_size).unwrap_or(usize::MAX).saturating_add(1 << 20);
    // By prefix (see `super::table`): a collision copies a chunk twice, never loses one.
    let mut copied: HashSet<u64> = HashSet::new();
    let mut writer: Option<PackWriter> = None;
    let mut indexed: Vec<IndexedPack> = Vec::new();
    let mut done = Repacked { packs: 0, bytes: 0, sources: Vec::new() };
    for source in sources {
        let bytes = repo.read_pack(source.pack).await?;
        let live: HashSet<u64> =
            source.live.iter().filter(|c| !copied.contains(*c)).copied().collect();
        let (identities, metadata, recipients, recipient) = (
            sealing.identities.clone(),
            metadata.clone(),
            sealing.recipients.clone(),
            metadata_recipient.clone(),
        );
        let mut w = writer.take();
        let pack = source.pack;
        // The writer always comes back, so blobs of earlier sources are never dropped.
        let (w, result) = tokio::task::spawn_blocking(move || {
            let result = copy_live_blobs(
                &bytes,
                pack,
                &live,
                &identities,
                &metadata,
                &recipients,
                &recipient,
                pack_size,
                capacity,
                &mut w,
            );
            (w, result)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("repacking pack {pack} failed: {e}")))?;
        writer = w;
        let (sealed, chunks) = match result {
            Ok(r) => r,
            Err(e) if sealing.skip_unreadable && e.kind() == ErrorKind::KeyRejected => {
                tracing::warn!("pack {pack} is left as it is, not repacked: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        copied.extend(chunks);
        done.sources.push(pack);
        for pack in sealed {
            done.bytes += upload(repo, pack, &mut indexed).await?;
        }
    }
    if let Some(last) = writer.filter(|w| !w.is_empty()) {
        let pack = last.finish(&metadata_recipient)?;
        done.bytes += upload(repo, pack, &mut indexed).await?;
    }
    done.packs = indexed.len() as u64;
    if !indexed.is_empty() {
        done.bytes += repo.write_index_file(&IndexFile { packs: indexed }).await?.1;
    }
    Ok(done)
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
