//! Copy backups to a second repository (offsite redundancy), transferring only the chunks
//! the target lacks.
//!
//! ```text
//! plan:    selected backups ─► not yet in the target? ─► refs::for_each_chunk ─► chunks the
//!          target's index lacks ─► grouped by the source pack holding them
//! execute: source pack ─► decrypt (data identity) ─► check chunk id ─► packer (target's data
//!          recipients; list blocks: the target's metadata recipient) ─► uploads + index
//!          files ─► manifests, last
//! ```
//!
//! Guarantees:
//! - A manifest is written to the target only after every chunk it references is in the
//!   target's index (its pack uploaded, its index file written): a copy that fails or is
//!   killed leaves packs and index files, never a backup that cannot be restored.
//! - Resumable: the plan starts by indexing the target's unlisted packs (what a killed run
//!   uploaded), and only chunks the target's index lacks are transferred, so a rerun moves
//!   only what is missing.
//! - Blobs are moved as stored (compressed or raw), each checked against its chunk id on the
//!   way: the copy never spreads a damaged chunk.
//! - List blocks (format version 2) go into packs sealed to the target's metadata key, as a
//!   backup writes them: a host holding only the target's repository key walks every copied
//!   backup's references (prune, copy and verify there need it).
//! - Safe against a prune of the target: the copy holds a lease in the target's `locks/`
//!   (refreshed while it runs, checked before each manifest, as a backup's), and a chunk the
//!   target holds only in packs a prune marked counts as missing, so it is copied again
//!   rather than referenced in a pack about to be deleted.
//! - Needs a target made with `qvault init --copy-from` (same chunk-id key, chunker seed and
//!   chunker parameters); any other target is refused before anything is read
//!   (docs/copy.md says what copying between unrelated repositories would cost).
//!
//! A backup's id is the hash of its sealed manifest, so the same backup has another id in
//! the target; "already copied" means the target holds a manifest with the same plaintext.

use crate::backup::{packer, upload, NewBlob, Progress};
use crate::codec;
use crate::error::{first_real_error, pipeline_stopped, Error, ErrorKind, Result};
use crate::format::manifest::Manifest;
use crate::format::pack::{self, PackData, PackEntry};
use crate::id::{BackupId, ChunkId, PackId};
use crate::prune::{marked_packs, Lease};
use crate::refs::RefKind;
use crate::repo::{InitOptions, Repository};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Which backups to copy and how.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Backup ids, prefixes or `latest`; empty means every backup (narrowed by name and tags).
    pub backups: Vec<String>,
    /// Only backups with this name.
    pub name: Option<String>,
    /// Only backups carrying all these tags (`key` alone matches any value).
    pub tags: Vec<(String, Option<String>)>,
    /// Source packs read at once (and target packs uploaded at once).
    pub concurrency: usize,
}

/// One selected backup.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedBackup {
    pub id: BackupId,
    pub time: String,
    pub name: Option<String>,
    /// The target's id of this backup when it is there already (nothing to do).
    pub in_target: Option<BackupId>,
}

/// What a copy will transfer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopyPlan {
    pub backups: Vec<PlannedBackup>,
    /// Distinct chunks the target lacks.
    pub chunks: u64,
    /// Their stored (compressed) size.
    pub blob_bytes: u64,
    /// Source packs to read, in the order the backups need them.
    #[serde(skip)]
    packs: Vec<(PackId, Vec<PackEntry>)>,
    /// The chunks to transfer that are list blocks: they go into metadata packs.
    #[serde(skip)]
    list_blocks: Arc<HashSet<ChunkId>>,
    pub source_packs: u64,
}

/// What a copy did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopyReport {
    pub dry_run: bool,
    pub plan: CopyPlan,
    /// Source backup id → its id in the target, for the backups written by this run.
    pub copied: BTreeMap<BackupId, BackupId>,
    /// Backups the target already held.
    pub skipped: Vec<BackupId>,
    pub chunks_copied: u64,
    /// Bytes of packs read from the source.
    pub bytes_read: u64,
    /// Bytes written to the target (packs and index files).
    pub bytes_written: u64,
    pub duration_ms: u64,
}

/// Refuses a target whose chunk ids or cut points differ from the source's: copying into it
/// would break dedup there (and this module does not re-chunk).
pub fn check_compatible(source: &Repository, target: &Repository) -> Result<()> {
    const PROBE: &[u8] = b"qvault copy: do these repositories share a chunk-id key?";
    let (s, t) = (source.key(), target.key());
    if s.chunk_id(PROBE) != t.chunk_id(PROBE)
        || s.chunker_seed() != t.chunker_seed()
        || source.config().chunker != target.config().chunker
    {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "{} was not made from {} (its chunk ids or cut points differ): create the copy \
                 target with `qvault init --copy-from {}` (see docs/copy.md)",
                target.storage().location(),
                source.storage().location(),
                source.storage().location()
            ),
        ));
    }
    Ok(())
}

/// Creates a copy target of `source` on `storage`: its master secret and chunker
/// parameters, and, unless `options` sets them, its compression and pack size. The data
/// recipients are `options`'s own.
pub async fn init_target(
    storage: crate::storage::Storage,
    source: &Repository,
    options: InitOptions,
    cache: &crate::repo::Cache,
) -> Result<Repository> {
    let config = source.config();
    let options = InitOptions {
        chunker: Some(config.chunker.clone()),
        compression: options.compression.or(Some(config.compression)),
        pack_size: options.pack_size.or(Some(config.pack_size)),
        recipients: options.recipients,
    };
    Repository::init_sharing_secret(storage, options, source.key(), cache).await
}

fn tags_match(tags: &BTreeMap<String, String>, wanted: &[(String, Option<String>)]) -> bool {
    wanted.iter().all(|(k, v)| match v {
        Some(v) => tags.get(k) == Some(v),
        None => tags.contains_key(k),
    })
}

/// The source backups `options` selects, oldest first.
fn select(source: &Repository, options: &CopyOptions) -> Result<Vec<crate::index::BackupListing>> {
    let all = source.backups()?;
    let wanted: Option<HashSet<BackupId>> = if options.backups.is_empty() {
        None
    } else {
        Some(options.backups.iter().map(|s| source.resolve_backup(s)).collect::<Result<_>>()?)
    };
    Ok(all
        .into_iter()
        .filter(|b| wanted.as_ref().is_none_or(|w| w.contains(&b.id)))
        .filter(|b| options.name.as_ref().is_none_or(|n| b.name.as_ref() == Some(n)))
        .filter(|b| tags_match(&b.tags, &options.tags))
        .collect())
}

/// The target's backups by their plaintext manifest, for the times in `times` only (the
/// manifests of other times cannot match).
async fn target_manifests(
    target: &Repository,
    times: &HashSet<String>,
) -> Result<HashMap<Vec<u8>, BackupId>> {
    let mut out = HashMap::new();
    for listing in target.backups()?.into_iter().filter(|b| times.contains(&b.time)) {
        let manifest = target.read_manifest(listing.id).await?;
        out.insert(manifest.encode()?, listing.id);
    }
    Ok(out)
}

/// Works out what to transfer. Indexes the target's unlisted packs first, so what a killed
/// run uploaded counts as there; a chunk the target holds only in `marked` packs (a prune's
/// marks) counts as missing.
pub async fn plan(
    source: &Repository,
    target: &Repository,
    options: &CopyOptions,
    marked: &HashSet<PackId>,
) -> Result<(CopyPlan, Vec<(BackupId, Manifest)>)> {
    check_compatible(source, target)?;
    crate::index::sync::reconcile_packs(target).await?;
    let selected = select(source, options)?;
    let times: HashSet<String> = selected.iter().map(|b| b.time.clone()).collect();
    let present = target_manifests(target, &times).await?;
    let mut backups = Vec::new();
    let mut to_write = Vec::new();
    let mut needed: Vec<ChunkId> = Vec::new();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut lists: HashSet<ChunkId> = HashSet::new();
    for listing in selected {
        let manifest = source.read_manifest(listing.id).await?;
        let in_target = present.get(&manifest.encode()?).copied();
        if in_target.is_none() {
            crate::refs::for_each_reference(source, &manifest, |c, kind| {
                if kind == RefKind::ListBlock {
                    lists.insert(*c);
                }
                if seen.insert(*c) {
                    needed.push(*c);
                }
            })
            .await?;
            to_write.push((listing.id, manifest));
        }
        backups.push(PlannedBackup {
            id: listing.id,
            time: listing.time,
            name: listing.name,
            in_target,
        });
    }
    let mut by_pack: HashMap<PackId, usize> = HashMap::new();
    let mut packs: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let (mut chunks, mut blob_bytes) = (0u64, 0u64);
    let mut list_blocks = HashSet::new();
    for chunk in needed {
        if target.index().holds_outside(&chunk, marked)? {
            continue;
        }
        if lists.contains(&chunk) {
            list_blocks.insert(chunk);
        }
        let location = source.index().locate(&chunk)?.ok_or_else(|| {
            let owner = to_write.first().map(|(id, _)| id.to_string()).unwrap_or_default();
            Error::corrupt(format!(
                "chunk {chunk} (of the backups to copy, e.g. {owner}) is in no index file of {}: \
                 run `qvault verify` there, then `qvault repair index`",
                source.storage().location()
            ))
        })?;
        chunks += 1;
        blob_bytes += u64::from(location.entry.length);
        let slot = *by_pack.entry(location.pack).or_insert_with(|| {
            packs.push((location.pack, Vec::new()));
            packs.len() - 1
        });
        packs[slot].1.push(location.entry);
    }
    let source_packs = packs.len() as u64;
    let list_blocks = Arc::new(list_blocks);
    Ok((CopyPlan { backups, chunks, blob_bytes, packs, list_blocks, source_packs }, to_write))
}

/// Carries out a plan under `lease` (taken in the target before the plan): blobs into new
/// target packs, then the manifests, each only while the lease is sound.
pub async fn execute(
    source: &Repository,
    target: &Repository,
    plan: CopyPlan,
    manifests: Vec<(BackupId, Manifest)>,
    options: &CopyOptions,
    lease: &Lease,
) -> Result<CopyReport> {
    let marked = lease.marked_packs();
    let started = std::time::Instant::now();
    let concurrency = options.concurrency.max(1);
    let mut report = CopyReport::start(plan, false);
    if !report.plan.packs.is_empty() {
        let (packs, lists) = (report.plan.packs.clone(), report.plan.list_blocks.clone());
        let (read, written, chunks) = transfer(source, target, packs, lists, concurrency).await?;
        report.bytes_read = read;
        report.bytes_written = written;
        report.chunks_copied = chunks;
    }
    for (id, manifest) in manifests {
        let mut missing = 0u64;
        let mut check = Ok(());
        crate::refs::for_each_chunk(source, &manifest, |c| {
            if check.is_ok() {
                match target.index().holds_outside(c, &marked) {
                    Ok(false) => missing += 1,
                    Ok(true) => {}
                    Err(e) => check = Err(e),
                }
            }
        })
        .await?;
        check?;
        if missing > 0 {
            return Err(Error::corrupt(format!(
                "backup {id}: {missing} of its chunks did not reach {}; its manifest was not \
                 written: run the copy again",
                target.storage().location()
            )));
        }
        // As a backup does: a lease a prune may have judged stale protects nothing.
        let _recording = crate::held::critical();
        lease.check(target).await?;
        let new_id = target.write_manifest(&manifest).await?;
        report.copied.insert(id, new_id);
    }
    // Every backup is copied: the releases of the leases that follow must not turn a copy
    // that is done into a reported failure.
    crate::held::commit();
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The plan without doing it.
pub fn dry_run(plan: CopyPlan) -> CopyReport {
    CopyReport::start(plan, true)
}

impl CopyReport {
    /// A report of `plan` before anything was transferred: the backups the target already
    /// holds are the skipped ones.
    fn start(plan: CopyPlan, dry_run: bool) -> CopyReport {
        CopyReport {
            dry_run,
            copied: BTreeMap::new(),
            skipped: plan.backups.iter().filter(|b| b.in_target.is_some()).map(|b| b.id).collect(),
            chunks_copied: 0,
            bytes_read: 0,
            bytes_written: 0,
            duration_ms: 0,
            plan,
        }
    }
}

/// Plans and executes (or only plans, for a dry run).
pub async fn copy(
    source: &Repository,
    target: &Repository,
    options: &CopyOptions,
    dry: bool,
) -> Result<CopyReport> {
    if dry {
        // A dry run writes nothing to the target, so it takes no lease.
        let marked = marked_packs(target).await?;
        return Ok(dry_run(plan(source, target, options, &marked).await?.0));
    }
    // The target's lease keeps a prune of the target from deleting a pack this copy dedups
    // against, from the plan until the last manifest; the source's, a prune of the source
    // from deleting a pack it is about to read.
    crate::prune::read_leased(source, "copy", copy_leased(source, target, options)).await
}

async fn copy_leased(
    source: &Repository,
    target: &Repository,
    options: &CopyOptions,
) -> Result<CopyReport> {
    let lease = Lease::take(target).await?;
    let result = async {
        let (plan, manifests) = plan(source, target, options, &lease.marked_packs()).await?;
        execute(source, target, plan, manifests, options, &lease).await
    }
    .await;
    lease.release(target).await;
    result
}

/// Reads the source packs in order, hands their needed blobs to the target's packers (data,
/// and metadata for `list_blocks`) and uploads what they seal. Returns (bytes read, bytes
/// written, chunks copied).
async fn transfer(
    source: &Repository,
    target: &Repository,
    packs: Vec<(PackId, Vec<PackEntry>)>,
    list_blocks: Arc<HashSet<ChunkId>>,
    concurrency: usize,
) -> Result<(u64, u64, u64)> {
    // List-block packs in the source are sealed to its metadata key, data packs to its data
    // recipients: each pack opens with one of these.
    let mut identities = source.data_identities("copy")?.to_vec();
    identities.push(source.key().metadata_identity().clone());
    let identities = Arc::new(identities);
    let (blob_tx, blob_rx) = crossbeam_channel::bounded::<NewBlob>(64);
    let (list_tx, list_rx) = crossbeam_channel::bounded::<NewBlob>(8);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel(1);
    let list_pack_tx = pack_tx.clone();
    let recipients = target.data_recipients().to_vec();
    let metadata_recipient = target.key().metadata_recipient();
    let pack_size = target.config().pack_size;
    let packers = {
        let list_recipient = metadata_recipient.clone();
        let data = tokio::task::spawn_blocking(move || {
            packer::run_packer(blob_rx, pack_tx, &recipients, &metadata_recipient, pack_size)
        });
        let lists = tokio::task::spawn_blocking(move || {
            let recipients = [list_recipient.clone()];
            let size = packer::list_pack_size(pack_size);
            packer::run_packer(list_rx, list_pack_tx, &recipients, &list_recipient, size)
        });
        async move {
            let join = |e| Error::new(ErrorKind::Io, format!("the copy packer failed: {e}"));
            let (data, lists) = tokio::join!(data, lists);
            let errors =
                [data, lists].into_iter().filter_map(|r| r.map_err(join).and_then(|r| r).err());
            first_real_error(errors).map_or(Ok(()), Err)
        }
    };
    let sinks = Sinks { data: blob_tx, lists: list_tx, list_blocks };
    let progress = Progress::default();
    let feed = async {
        // Dropped when feeding ends, however it ends: the packers then seal what they hold.
        let sinks = sinks;
        let mut read = 0u64;
        let mut chunks = 0u64;
        // Ordered: a failure stops after every earlier pack was handed to the packer, whose
        // blobs are still sealed and uploaded, so a rerun has less to do.
        let mut fetched = stream::iter(packs)
            .map(|(pack, entries)| async move { (source.read_pack(pack).await, pack, entries) })
            .buffered(concurrency);
        while let Some((bytes, pack, entries)) = fetched.next().await {
            let bytes = bytes?;
            read += bytes.len() as u64;
            chunks += entries.len() as u64;
            let (sinks, ids, key) = (sinks.clone(), identities.clone(), source.key().clone());
            let metadata = source.key().metadata_identity().clone();
            tokio::task::spawn_blocking(move || {
                extract(pack, &bytes, &entries, &ids, &metadata, &key, &sinks)
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("a copy worker failed: {e}")))??;
        }
        Ok::<_, Error>((read, chunks))
    };
    let upload = upload::upload_packs(target, pack_rx, concurrency, &progress);
    let (fed, packed, uploaded) = tokio::join!(feed, packers, upload);
    match (fed, packed, uploaded) {
        (Ok((read, chunks)), Ok(()), Ok(written)) => Ok((read, written, chunks)),
        // A stage that stopped because another did reports only that: name the cause (a
        // full target's "No space left", exit 6), as a backup does.
        (f, p, u) => Err(first_real_error([f.err(), p.err(), u.err()].into_iter().flatten())
            .unwrap_or_else(pipeline_stopped)
            .context("copy failed, no backup copied")),
    }
}

/// Where extracted blobs go: list blocks to the metadata packer, the rest to the data one.
#[derive(Clone)]
struct Sinks {
    data: crossbeam_channel::Sender<NewBlob>,
    lists: crossbeam_channel::Sender<NewBlob>,
    list_blocks: Arc<HashSet<ChunkId>>,
}

/// Decrypts the blobs `entries` name from one whole source pack, checks each against its
/// chunk id, and sends it on as stored.
fn extract(
    pack: PackId,
    bytes: &[u8],
    entries: &[PackEntry],
    identities: &[age::x25519::Identity],
    metadata: &age::x25519::Identity,
    key: &crate::crypto::RepositoryKey,
    sinks: &Sinks,
) -> Result<()> {
    let what = format!("pack {pack}");
    let header = pack::read_header(bytes, metadata, &what)?;
    let refs: Vec<&dyn age::Identity> =
        identities.iter().map(|i| i as &dyn age::Identity).collect();
    let data = &bytes[..header.data_len as usize];
    let mut reader = PackData::open(std::io::Cursor::new(data), &refs, &what)?;
    let mut decoder = codec::Decoder::new()?;
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| e.offset);
    for entry in &sorted {
        let blob = reader.read_blob(entry)?;
        let chunk = decoder.decode(&blob, entry.raw_length as usize)?;
        if key.chunk_id(&chunk) != entry.chunk {
            return Err(Error::corrupt(format!(
                "{what}: chunk {} does not match its id: the pack is damaged (run `qvault verify`)",
                entry.chunk
            )));
        }
        let blob = NewBlob { id: entry.chunk, blob, raw_length: entry.raw_length };
        let tx = if sinks.list_blocks.contains(&entry.chunk) { &sinks.lists } else { &sinks.data };
        tx.send(blob).map_err(|_| pipeline_stopped())?;
    }
    Ok(())
}
