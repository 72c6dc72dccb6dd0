//! Backup: streams in, a manifest out.
//!
//! ```text
//! source ─► reader thread ─chunks─► workers: id, dedup, zstd ─new blobs─► packer thread
//!  (file, stdin,  └─bytes─► hasher thread (whole-stream SHA-256 + BLAKE3)        │ packs
//!   command, dir,                                                                 ▼
//!   Qdrant)                    manifest, last ◄── index files ◄── uploads (concurrent)
//! ```
//!
//! Guarantees:
//! - Nothing is recorded unless every stream was read to its end without error: a source
//!   that fails (a read error, a command that exits non-zero, a file that changed under
//!   [`OnChange::Fail`], a checksum its producer announced and the bytes do not match, an
//!   empty stream unless [`BackupOptions::allow_empty`]) fails the backup before the
//!   manifest is written.
//! - Write order: a pack before the index file naming it, index files before the manifest.
//!   An interrupted backup leaves only packs (and index files) that nothing references; a
//!   rerun dedups against the indexed ones.
//! - Memory is bounded by the chunks, blobs and packs in flight. In a version-1 repository
//!   the chunk-id list the manifest needs grows with the stream; in version 2 the ids go
//!   into list blocks as they come (one block per tree level in memory) and the manifest
//!   holds only the top of the tree.
//! - List blocks are chunks: they go through the same dedup and codec into packs of their
//!   own, sealed to the metadata recipient (a backup host reads them back without a data
//!   identity), uploaded and indexed like any pack, so "pack before index file before
//!   manifest" covers them.
//!
//! `source` hands out the streams, `chunks` turns one stream into ids and new blobs,
//! `packer` seals blobs into packs, `upload` stores packs and index files; this module wires
//! them together (CPU stages are plain threads joined by bounded channels, uploads async).

mod chunks;
pub(crate) mod packer;
mod source;
pub(crate) mod upload;

pub(crate) use chunks::NewBlob;
pub use source::{OnChange, StreamSource, StreamSources};

use crate::error::{first_real_error, pipeline_stopped, Error, ErrorKind, Result};
use crate::format::manifest::{BackupStats, Manifest, StreamKind, StreamRecord};
use crate::format::pack::SealedPack;
use crate::id::BackupId;
use crate::repo::{now_rfc3339, Repository};
use chunks::{archive_stream, Dedup, StreamContext};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

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
    /// Accept streams of 0 bytes. Off by default: an empty stream is far more often a
    /// producer that failed (`pg_dump … | qvault backup -`) than the data meant.
    pub allow_empty: bool,
    /// How often the backup's lease is refreshed against the prune side's stale limit.
    pub lease: crate::prune::LeaseTiming,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            tags: BTreeMap::new(),
            host: None,
            workers: None,
            upload_concurrency: 3,
            allow_empty: false,
            lease: crate::prune::LeaseTiming::default(),
        }
    }
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_read: AtomicU64,
    pub bytes_added: AtomicU64,
}

/// What a finished backup reports. Serializes (the CLI's `backup --json`) as its id, the
/// summary counts, `dedup_ratio` (`null` when nothing was added, see
/// [`BackupSummary::dedup_ratio`]) and each stream's name, kind, size and SHA-256.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    pub id: BackupId,
    pub manifest: Manifest,
}

impl BackupSummary {
    /// Bytes read per byte added: how much dedup and compression saved. `None` when the
    /// backup added nothing (everything deduplicated, or nothing read): no finite ratio
    /// says that, and JSON has no infinity.
    pub fn dedup_ratio(&self) -> Option<f64> {
        let s = &self.manifest.summary;
        (s.bytes_added > 0).then(|| s.bytes_read as f64 / s.bytes_added as f64)
    }
}

impl serde::Serialize for BackupSummary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Stream<'a> {
            name: &'a str,
            kind: StreamKind,
            size: u64,
            sha256: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            id: &'a BackupId,
            bytes_read: u64,
            bytes_added: u64,
            chunks: u64,
            new_chunks: u64,
            dedup_ratio: Option<f64>,
            duration_ms: u64,
            streams: Vec<Stream<'a>>,
        }
        let s = &self.manifest.summary;
        Summary {
            id: &self.id,
            bytes_read: s.bytes_read,
            bytes_added: s.bytes_added,
            chunks: s.chunks,
            new_chunks: s.new_chunks,
            dedup_ratio: self.dedup_ratio(),
            duration_ms: s.duration_ms,
            streams: self
                .manifest
                .streams
                .iter()
                .map(|st| Stream {
                    name: &st.name,
                    kind: st.kind,
                    size: st.size,
                    sha256: &st.sha256,
                })
                .collect(),
        }
        .serialize(serializer)
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(ErrorKind::Io, format!("a backup worker failed: {e}"))
}

/// The machine's host name (`/etc/hostname`, else `$HOSTNAME`), as manifests record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
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
///
/// A lease in `locks/` covers the whole run, refreshed while it lasts, so a concurrent prune
/// never deletes what this backup may reference (see [`crate::prune`]); if the lease could
/// not be kept fresh, the backup fails before it writes its manifest.
pub async fn backup_from<S: StreamSources>(
    repo: &Repository,
    sources: &mut S,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    check_labels(options)?;
    let lease = crate::prune::Lease::take_with(repo, options.lease).await?;
    let result = backup_leased(repo, sources, options, progress, &lease).await;
    lease.release(repo).await;
    // The critical section from the last lease check ends only here, after the release.
    result.map(|(summary, _recorded)| summary)
}

/// The longest name, tag key or tag value a backup takes, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

/// Names and tags are printed in listings, group keys, metric labels and logs, one backup
/// per line: one with a control character (a newline could forge a row) or longer than
/// [`MAX_LABEL_BYTES`] is refused before anything is stored.
fn check_labels(options: &BackupOptions) -> Result<()> {
    let labels = options.name.iter().map(|n| ("name", n.as_str())).chain(
        options.tags.iter().flat_map(|(k, v)| [("tag key", k.as_str()), ("tag value", v.as_str())]),
    );
    for (what, label) in labels {
        if label.chars().any(char::is_control) || label.len() > MAX_LABEL_BYTES {
            return Err(Error::invalid_input(format!(
                "backup {what} {label:?} is refused: names and tags are printed one per line, \
                 so they take no control characters (newlines, tabs) and at most \
                 {MAX_LABEL_BYTES} bytes"
            )));
        }
    }
    if options.tags.keys().any(String::is_empty) {
        return Err(Error::invalid_input("a backup tag needs a key: give --tag KEY or KEY=VALUE"));
    }
    Ok(())
}

async fn backup_leased<S: StreamSources>(
    repo: &Repository,
    sources: &mut S,
    options: &BackupOptions,
    progress: Arc<Progress>,
    lease: &crate::prune::Lease,
) -> Result<(BackupSummary, crate::held::Critical)> {
    let started = Instant::now();
    let time = now_rfc3339();
    // Reuse what an interrupted run uploaded; never dedup against a pack that is gone.
    crate::index::sync::reconcile_packs(repo).await?;
    match repo.storage().remove_stale_temporaries(crate::storage::STALE_TMP_AGE).await {
        Ok(r) if r.files > 0 => {
            tracing::info!(files = r.files, bytes = r.bytes, "removed stale temporary files");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    let workers = options
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let dedup = Dedup::new(
        repo.key().clone(),
        repo.index_arc(),
        repo.config().compression,
        lease.marked_packs(),
    );
    let (blob_tx, blob_rx) = crossbeam_channel::bounded::<NewBlob>(workers * 2);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<SealedPack>(1);
    let recipients = repo.data_recipients().to_vec();
    let metadata_recipient = repo.key().metadata_recipient();
    let pack_size = repo.config().pack_size;
    let list_packs = pack_tx.clone();
    let packer = tokio::task::spawn_blocking(move || {
        packer::run_packer(blob_rx, pack_tx, &recipients, &metadata_recipient, pack_size)
    });

    // Version 2: list blocks get a packer of their own, sealing to the metadata key.
    let (list_tx, list_packer) = if repo.config().list_blocks() {
        let (tx, rx) = crossbeam_channel::bounded::<NewBlob>(2);
        let metadata_recipient = repo.key().metadata_recipient();
        let packer = tokio::task::spawn_blocking(move || {
            let recipients = [metadata_recipient.clone()];
            let size = packer::list_pack_size(pack_size);
            packer::run_packer(rx, list_packs, &recipients, &metadata_recipient, size)
        });
        (Some(tx), Some(packer))
    } else {
        drop(list_packs);
        (None, None)
    };
    let params = repo.config().chunker.params(repo.key().chunker_seed());
    let cx = StreamContext {
        params: &params,
        dedup: &dedup,
        blobs: blob_tx,
        lists: list_tx,
        workers,
        progress: &progress,
        allow_empty: options.allow_empty,
    };
    let produce = async {
        let mut records: Vec<StreamRecord> = Vec::new();
        let mut totals = (0u64, 0u64, 0u64);
        while let Some(source) = sources.next_stream().await? {
            if records.iter().any(|r| r.name == source.name) {
                return Err(duplicate_stream(&source.name));
            }
            let (record, new_chunks) = archive_stream(source, &cx).await?;
            totals.0 += record.size;
            totals.1 += record.chunk_count();
            totals.2 += new_chunks;
            records.push(record);
        }
        if records.is_empty() {
            return Err(no_streams());
        }
        // The packer ends when the last sender of blobs is gone.
        drop(cx);
        let packed = packer.await.map_err(join_error)?;
        if let Some(list_packer) = list_packer {
            list_packer.await.map_err(join_error)??;
        }
        packed.map(|()| (records, totals))
    };
    let upload = upload::upload_packs(repo, pack_rx, options.upload_concurrency.max(1), &progress);
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
    // From here a signal lets the backup finish: the lease must outlive the manifest write,
    // and a backup that is recorded must not report failure (crate::held).
    let recording = crate::held::critical();
    lease.check(repo).await?;
    stall_before_manifest().await;
    let id = repo
        .write_manifest(&manifest)
        .await
        .map_err(|e| e.context("backup failed, no backup recorded"))?;
    crate::held::commit();
    Ok((BackupSummary { id, manifest }, recording))
}

/// Lets the signal tests hold a backup inside its last critical section, as a storage that
/// hangs would: with `QVAULT_TEST_STALL_BEFORE_MANIFEST_MS=N` (debug builds only) the
/// backup warns and waits N ms after its last lease check, before the manifest write.
async fn stall_before_manifest() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("QVAULT_TEST_STALL_BEFORE_MANIFEST_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!("test hook: stalling {ms} ms before the manifest write");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
