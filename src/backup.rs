//! Backup: streams in, a manifest out.
//!
//! ```text
//! reader thread ─chunks─► workers (id, dedup, zstd) ─new blobs─► packer thread ─packs─► uploads
//!      └─bytes─► hasher thread (whole-stream SHA-256 + BLAKE3)            index files ◄─┘
//!                                                              manifest, last ◄─┘
//! ```
//!
//! CPU stages are plain threads joined by bounded channels; uploads are async. Memory is
//! bounded by the chunks, blobs and packs in flight; what grows with the stream is only the
//! chunk-id list the manifest needs. Write order: a pack before the index file naming it,
//! index files before the manifest. An interrupted backup leaves only packs (and index
//! files) that nothing references; a rerun dedups against the indexed ones.

use crate::chunker::Chunker;
use crate::codec::{self, CodecParams};
use crate::crypto::RepositoryKey;
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::manifest::{BackupStats, Manifest, StreamKind, StreamRecord};
use crate::format::pack::{PackWriter, SealedPack};
use crate::id::{BackupId, ChunkId};
use crate::index::LocalIndex;
use crate::repo::{now_rfc3339, Repository};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Packs per index file: bounds what an interrupted backup leaves unindexed.
const PACKS_PER_INDEX_FILE: usize = 16;

/// One stream to archive.
pub struct StreamSource {
    /// Unique within the backup: a file name, `stdin`, a collection name.
    pub name: String,
    pub kind: StreamKind,
    pub reader: Box<dyn Read + Send>,
    /// Free-form provenance stored in the manifest (e.g. Qdrant collection info).
    pub source: Option<serde_json::Value>,
    /// The SHA-256 the producer vouches for (Qdrant's checksum): a mismatch fails the backup.
    pub expected_sha256: Option<String>,
}

/// Streams handed to the pipeline one at a time ([`backup_from`]).
///
/// The pipeline asks for the next stream only once the previous one was read to its end and
/// checked, so a source can prepare each stream as late as possible and release the previous
/// one as early as possible: a Qdrant source creates a snapshot right before its stream and
/// deletes it right after, and learns the checksum to check only then.
pub trait StreamSources: Send {
    /// The next stream, or `None` after the last. An error fails the backup.
    fn next_stream(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<StreamSource>>> + Send;
}

/// Streams known up front.
impl StreamSources for std::vec::IntoIter<StreamSource> {
    async fn next_stream(&mut self) -> Result<Option<StreamSource>> {
        Ok(self.next())
    }
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Recorded in the manifest; defaults to the machine's host name.
    pub host: Option<String>,
    /// CPU workers for ids and compression; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Pack uploads in flight.
    pub upload_concurrency: usize,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            tags: BTreeMap::new(),
            host: None,
            workers: None,
            upload_concurrency: 3,
        }
    }
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_read: AtomicU64,
    pub bytes_added: AtomicU64,
}

/// What a finished backup reports.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    pub id: BackupId,
    pub manifest: Manifest,
}

impl BackupSummary {
    /// Bytes read per byte added: how much dedup and compression saved.
    pub fn dedup_ratio(&self) -> f64 {
        let s = &self.manifest.summary;
        if s.bytes_added == 0 {
            f64::INFINITY
        } else {
            s.bytes_read as f64 / s.bytes_added as f64
        }
    }
}

/// A chunk that is not in the repository yet, compressed.
struct NewBlob {
    id: ChunkId,
    blob: Vec<u8>,
    raw_length: u32,
}

/// The marker for "a later stage stopped": the stage that stopped has the real error.
fn pipeline_stopped() -> Error {
    Error::new(ErrorKind::Io, "backup pipeline stopped")
}

fn is_pipeline_stopped(e: &Error) -> bool {
    e.kind() == ErrorKind::Io && e.message() == "backup pipeline stopped"
}

/// Picks the error that explains a failure over the ones it caused downstream.
fn first_real_error(errors: impl IntoIterator<Item = Error>) -> Option<Error> {
    let mut fallback = None;
    for e in errors {
        if !is_pipeline_stopped(&e) {
            return Some(e);
        }
        fallback.get_or_insert(e);
    }
    fallback
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(ErrorKind::Io, format!("a backup worker failed: {e}"))
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Shared state of one backup's workers.
#[derive(Clone)]
struct Dedup {
    key: RepositoryKey,
    index: Arc<LocalIndex>,
    /// Chunks this backup already queued: two identical new chunks are stored once.
    queued: Arc<Mutex<HashSet<ChunkId>>>,
    codec: CodecParams,
}

impl Dedup {
    /// True when the chunk must be stored (and claims it, so no other worker stores it).
    fn claim(&self, id: &ChunkId) -> Result<bool> {
        if self.index.contains_chunk(id)? {
            return Ok(false);
        }
        let mut queued = self.queued.lock().map_err(|_| pipeline_stopped())?;
        Ok(queued.insert(*id))
    }
}

fn duplicate_stream(name: &str) -> Error {
    Error::invalid_input(format!(
        "two streams are named {name:?}: stream names must be unique within a backup"
    ))
}

fn no_streams() -> Error {
    Error::invalid_input("a backup needs at least one stream")
}

/// Archives `streams` as one backup. Nothing is recorded unless every stream succeeds.
pub async fn backup(
    repo: &Repository,
    streams: Vec<StreamSource>,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    // Known up front, so checked before anything is read.
    let mut names = HashSet::new();
    if let Some(dup) = streams.iter().find(|s| !names.insert(s.name.as_str())) {
        return Err(duplicate_stream(&dup.name));
    }
    if streams.is_empty() {
        return Err(no_streams());
    }
    backup_from(repo, &mut streams.into_iter(), options, progress).await
}

/// Archives the streams `sources` hands out, in that order, as one backup. Nothing is
/// recorded unless every stream succeeds; the first error (of the pipeline or of
/// `sources`) stops the backup, and `sources` is not asked for more.
pub async fn backup_from<S: StreamSources>(
    repo: &Repository,
    sources: &mut S,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let time = now_rfc3339();
    // Reuse what an interrupted run uploaded; never dedup against a pack that is gone.
    crate::index::sync::reconcile_packs(repo).await?;
    let workers = options
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let dedup = Dedup {
        key: repo.key().clone(),
        index: repo.index_arc(),
        queued: Arc::new(Mutex::new(HashSet::new())),
        codec: repo.config().compression,
    };
    let (blob_tx, blob_rx) = crossbeam_channel::bounded::<NewBlob>(workers * 2);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<SealedPack>(1);
    let recipients = repo.data_recipients().to_vec();
    let metadata_recipient = repo.key().metadata_recipient();
    let pack_size = repo.config().pack_size;
    let packer = tokio::task::spawn_blocking(move || {
        run_packer(blob_rx, pack_tx, &recipients, &metadata_recipient, pack_size)
    });

    let params = repo.config().chunker.params(repo.key().chunker_seed());
    let produce = async {
        let mut records: Vec<StreamRecord> = Vec::new();
        let mut totals = (0u64, 0u64, 0u64);
        while let Some(source) = sources.next_stream().await? {
            if records.iter().any(|r| r.name == source.name) {
                return Err(duplicate_stream(&source.name));
            }
            let (record, new_chunks) =
                archive_stream(source, &params, &dedup, &blob_tx, workers, &progress).await?;
            totals.0 += record.size;
            totals.1 += record.chunks.len() as u64;
            totals.2 += new_chunks;
            records.push(record);
        }
        if records.is_empty() {
            return Err(no_streams());
        }
        drop(blob_tx);
        let packed = packer.await.map_err(join_error)?;
        packed.map(|()| (records, totals))
    };
    let upload = upload_packs(repo, pack_rx, options.upload_concurrency.max(1), &progress);
    let (produced, uploaded) = tokio::join!(produce, upload);
    let ((streams, (bytes_read, chunks, new_chunks)), bytes_added) = match (produced, uploaded) {
        (Ok(p), Ok(u)) => (p, u),
        (p, u) => {
            let errors = [p.err(), u.err()].into_iter().flatten();
            return Err(first_real_error(errors)
                .unwrap_or_else(pipeline_stopped)
                .context("backup failed, no backup recorded"));
        }
    };
    let manifest = Manifest {
        time,
        name: options.name.clone(),
        tags: options.tags.clone(),
        host: options.host.clone().unwrap_or_else(host_name),
        tool_version: format!("qvault {}", env!("CARGO_PKG_VERSION")),
        streams,
        summary: BackupStats {
            bytes_read,
            bytes_added,
            chunks,
            new_chunks,
            duration_ms: started.elapsed().as_millis() as u64,
        },
    };
    let id = repo.write_manifest(&manifest).await?;
    Ok(BackupSummary { id, manifest })
}

/// Chunks, hashes and dedups one stream; new blobs go to the packer.
async fn archive_stream(
    source: StreamSource,
    params: &crate::chunker::ChunkerParams,
    dedup: &Dedup,
    blob_tx: &crossbeam_channel::Sender<NewBlob>,
    workers: usize,
    progress: &Arc<Progress>,
) -> Result<(StreamRecord, u64)> {
    let StreamSource { name, kind, reader, source: provenance, expected_sha256 } = source;
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<(u64, Bytes)>(workers * 2);
    let (hash_tx, hash) = crate::digest::spawn(workers * 2);

    let chunker = Chunker::new(reader, params)?;
    let reader_progress = Arc::clone(progress);
    let stream_name = name.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<()> {
        for (seq, chunk) in chunker.enumerate() {
            let chunk =
                chunk.map_err(|e| Error::io(format!("reading stream {stream_name:?}"), e))?;
            reader_progress.bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            hash_tx.send(chunk.clone()).map_err(|_| pipeline_stopped())?;
            chunk_tx.send((seq as u64, chunk)).map_err(|_| pipeline_stopped())?;
        }
        Ok(())
    });
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let rx = chunk_rx.clone();
        let tx = blob_tx.clone();
        let dedup = dedup.clone();
        handles.push(tokio::task::spawn_blocking(move || -> Result<(Vec<(u64, ChunkId)>, u64)> {
            let mut ids = Vec::new();
            let mut new_chunks = 0;
            let mut encoder = codec::Encoder::new(&dedup.codec)?;
            for (seq, chunk) in rx {
                let id = dedup.key.chunk_id(&chunk);
                ids.push((seq, id));
                if dedup.claim(&id)? {
                    let blob = encoder.encode(&chunk)?;
                    let raw_length = chunk.len() as u32;
                    tx.send(NewBlob { id, blob, raw_length }).map_err(|_| pipeline_stopped())?;
                    new_chunks += 1;
                }
            }
            Ok((ids, new_chunks))
        }));
    }
    drop(chunk_rx);

    let mut errors = Vec::new();
    if let Err(e) = read.await.map_err(join_error).and_then(|r| r) {
        errors.push(e);
    }
    let mut ids = Vec::new();
    let mut new_chunks = 0;
    for handle in handles {
        match handle.await.map_err(join_error).and_then(|r| r) {
            Ok((mut worker_ids, n)) => {
                ids.append(&mut worker_ids);
                new_chunks += n;
            }
            Err(e) => errors.push(e),
        }
    }
    let crate::digest::StreamDigest { size, sha256, blake3 } = hash.await.map_err(join_error)?;
    if let Some(e) = first_real_error(errors) {
        return Err(e);
    }
    if let Some(expected) = expected_sha256 {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(Error::corrupt(format!(
                "stream {name:?} has SHA-256 {sha256}, but its source announced {expected}: \
                 the download was damaged or cut"
            )));
        }
    }
    ids.sort_unstable_by_key(|(seq, _)| *seq);
    let chunks = ids.into_iter().map(|(_, id)| id).collect();
    let record = StreamRecord { name, kind, size, sha256, blake3, chunks, source: provenance };
    Ok((record, new_chunks))
}

/// Fills packs with new blobs and hands sealed packs to the uploader.
fn run_packer(
    blobs: crossbeam_channel::Receiver<NewBlob>,
    packs: tokio::sync::mpsc::Sender<SealedPack>,
    recipients: &[age::x25519::Recipient],
    metadata_recipient: &age::x25519::Recipient,
    pack_size: u64,
) -> Result<()> {
    let capacity = usize::try_from(pack_size).unwrap_or(usize::MAX).saturating_add(1 << 20);
    let mut writer: Option<PackWriter> = None;
    for blob in blobs {
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(PackWriter::new(recipients, capacity)?),
        };
        w.add(blob.id, &blob.blob, blob.raw_length)?;
        if w.len() >= pack_size {
            if let Some(full) = writer.take() {
                packs
                    .blocking_send(full.finish(metadata_recipient)?)
                    .map_err(|_| pipeline_stopped())?;
            }
        }
    }
    if let Some(last) = writer.take().filter(|w| !w.is_empty()) {
        packs.blocking_send(last.finish(metadata_recipient)?).map_err(|_| pipeline_stopped())?;
    }
    Ok(())
}

/// Uploads packs with bounded concurrency and writes an index file every few packs (only
/// for packs whose upload finished). Returns the bytes added to the repository.
async fn upload_packs(
    repo: &Repository,
    mut packs: tokio::sync::mpsc::Receiver<SealedPack>,
    concurrency: usize,
    progress: &Progress,
) -> Result<u64> {
    let mut in_flight = FuturesUnordered::new();
    let mut indexed: Vec<IndexedPack> = Vec::new();
    let mut bytes_added = 0u64;
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            next = packs.recv(), if open && in_flight.len() < concurrency => match next {
                Some(pack) => in_flight.push(async move {
                    let size = pack.bytes.len() as u64;
                    repo.write_pack(pack.id, Bytes::from(pack.bytes)).await?;
                    Ok::<_, Error>((IndexedPack { pack: pack.id, entries: pack.header.entries }, size))
                }),
                None => open = false,
            },
            Some(done) = in_flight.next() => {
                let (pack, size) = done?;
                bytes_added += size;
                progress.bytes_added.fetch_add(size, Ordering::Relaxed);
                indexed.push(pack);
                if indexed.len() >= PACKS_PER_INDEX_FILE {
                    let file = IndexFile { packs: std::mem::take(&mut indexed) };
                    bytes_added += repo.write_index_file(&file).await?.1;
                }
            }
        }
    }
    if !indexed.is_empty() {
        bytes_added += repo.write_index_file(&IndexFile { packs: indexed }).await?.1;
    }
    Ok(bytes_added)
}
