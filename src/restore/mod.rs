//! Restore: a stream of a backup back to bytes, every chunk and the whole stream checked.
//!
//! ```text
//! plan: chunks (inline, or walked from the list-block tree) → pieces (chunks of one pack
//!   lying close together, from a stretch of stream), window by window
//!   → fetch each piece's segments with a range read (concurrent, in order; the pack's age
//!     header once per pack)
//!   → decode on the blocking pool: decrypt, decompress, check each chunk id
//!   → writer thread: write in stream order, whole-stream SHA-256 and BLAKE3
//! ```
//!
//! Range reads fetch what the stream needs, not whole packs: a late backup's chunks are
//! scattered over the packs of every earlier one. Output is written in stream order; the
//! caller decides what "complete" means (a file is renamed into place only after this
//! returns Ok).
//!
//! `plan` groups chunks into pieces, `fetch` reads a piece's bytes (and presents them to age
//! as a sparse pack), `decode` turns them into checked chunks; this module runs the pipeline
//! and the ordered writer.

mod decode;
pub(crate) use decode::read_chunk;
mod fetch;
mod plan;
mod pool;
mod target;

pub use plan::{
    plan, Piece, PieceCursor, PlanCounts, PlanSummary, RestorePlan, StreamRef, LOOKAHEAD,
    PIECE_SPAN,
};
pub use target::{restore_to_file, RestoreReport};

use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::id::{BackupId, ChunkId, PackId};
use crate::repo::Repository;
use bytes::Bytes;
use decode::DecodeContext;
use fetch::Fetcher;
use futures::stream::StreamExt;
use futures::SinkExt;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every this many pieces (~32 MiB of stream) the writer hands the allocator's free pages
/// back to the system. Reads, blobs and decoded pieces of many sizes come and go for the
/// whole restore, and glibc keeps the holes between them: peak RSS 82–94 MiB without, 76–80
/// MiB with, for ~3% more CPU (4 GiB restore, 3 backups × 2 runs each; docs/benchmarks.md
/// "Scale"). The bytes in use (54–66 MiB from 1 GiB to 50 GB) rise to a bound, the pipeline's
/// pieces and OpenDAL's read buffers (~72 MiB), not with the stream.
const TRIM_EVERY_PIECES: u64 = 16;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Pieces fetched and decoded ahead of the writer (each at most [`PIECE_SPAN`]).
    pub prefetch: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { prefetch: 6 }
    }
}

/// What a finished restore of one stream did. Serialises as the `--json` fields `bytes`,
/// `chunks`, `packs_read`, `reads`, `bytes_fetched` and `seconds`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreSummary {
    pub bytes: u64,
    pub chunks: u64,
    /// Distinct packs the stream's chunks live in.
    pub packs_read: u64,
    /// Range reads made (pieces plus one age header per pack).
    pub reads: u64,
    /// Bytes fetched from storage.
    pub bytes_fetched: u64,
    #[serde(rename = "seconds", serialize_with = "as_seconds")]
    pub duration: Duration,
}

/// Serializes a duration as fractional seconds: every report's `seconds`.
pub(crate) fn as_seconds<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Serializes a value by its `Display` text (a Qdrant scope as `collection \`c\``, …).
pub(crate) fn as_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Names where in the backup a failure happened, for every error restore reports.
#[derive(Clone)]
pub(crate) struct Place {
    pub(crate) backup: BackupId,
    pub(crate) stream: String,
}

impl Place {
    pub(crate) fn at(&self, pack: &PackId, chunk: &ChunkId) -> String {
        format!("backup {}, stream {:?}, chunk {chunk} in pack {pack}", self.backup, self.stream)
    }

    /// A pack that fails as a whole is reported with the first chunk the piece needs.
    pub(crate) fn piece(&self, piece: &Piece) -> String {
        match piece.entries.first() {
            Some(e) => self.at(&piece.pack, &e.chunk),
            None => {
                format!("backup {}, stream {:?}, pack {}", self.backup, self.stream, piece.pack)
            }
        }
    }
}

/// Reads single chunks by id (list blocks) through restore's read path: a range read of the
/// blob's segments, age, codec and keyed-id checks. Decrypts with every identity the
/// repository was opened with — the metadata identity (list blocks live in packs sealed to
/// it) and any data identities — so a backup host walks chunk lists without a data identity.
pub struct BlockReader<'a> {
    repo: &'a Repository,
    fetcher: Fetcher<'a>,
    identities: Vec<age::x25519::Identity>,
}

/// What to do about a chunk in no index file: the index may only be out of date, or the
/// pack that held it was quarantined by `repair index` (then its data is gone).
pub(crate) const UNINDEXED_ADVICE: &str = "run `qvault index rebuild`, then `qvault verify`; \
     if `qvault repair index` quarantined the pack that held it, its data is gone: forget the \
     backups verify names (`qvault forget ID`) or back the source up again";

impl<'a> BlockReader<'a> {
    pub fn new(repo: &'a Repository) -> Self {
        BlockReader { repo, fetcher: Fetcher::new(repo), identities: reading_identities(repo) }
    }

    /// The chunk `id`; `what` names it in errors.
    pub async fn read(&self, id: &ChunkId, what: &str) -> Result<Vec<u8>> {
        let location = self.repo.index().locate(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "{what} is in no index file of {}: {UNINDEXED_ADVICE}",
                self.repo.storage().location()
            ))
        })?;
        let piece = Piece {
            pack: location.pack,
            pack_plaintext_len: location.pack_plaintext_len,
            entries: vec![location.entry],
            seqs: vec![0],
            stream_start: 0,
        };
        let in_pack = || format!("{what} in pack {}", location.pack);
        let fetched = self.fetcher.fetch(&piece).await.map_err(|e| e.context(in_pack()))?;
        let refs: Vec<&dyn age::Identity> =
            self.identities.iter().map(|i| i as &dyn age::Identity).collect();
        let mut data =
            crate::format::pack::PackData::open(fetch::Window::new(fetched), &refs, what)
                .map_err(|e| e.context(in_pack()))?;
        let mut decoder = crate::codec::Decoder::new()?;
        read_chunk(&mut data, &mut decoder, self.repo.key(), &location.entry)
            .map_err(|e| e.context(in_pack()))
    }
}

/// Data identities (if any), then the metadata identity: a blob is read with every key the
/// reader holds, so it does not matter which kind of pack dedup found it in.
fn reading_identities(repo: &Repository) -> Vec<age::x25519::Identity> {
    let mut identities = repo.data_identities("").map(|i| i.to_vec()).unwrap_or_default();
    identities.push(repo.key().metadata_identity().clone());
    identities
}

/// Restores `stream` of `backup` into `out` and returns `out` when every check passed:
/// [`RestorePlan::new`], then [`execute`].
pub async fn restore_stream<W: Write + Send + 'static>(
    repo: &Repository,
    backup: BackupId,
    stream: &StreamRecord,
    out: W,
    options: &RestoreOptions,
) -> Result<(W, RestoreSummary)> {
    execute(repo, &RestorePlan::new(repo, backup, stream).await?, out, options).await
}

/// Runs `plan` into `out` and returns `out` when every chunk id and the whole stream's size,
/// SHA-256 and BLAKE3 checked out. On error `out` holds a prefix of the stream (or garbage
/// after it): the caller discards it ([`restore_to_file`] does).
pub async fn execute<W: Write + Send + 'static>(
    repo: &Repository,
    plan: &RestorePlan,
    out: W,
    options: &RestoreOptions,
) -> Result<(W, RestoreSummary)> {
    let started = Instant::now();
    let (backup, stream) = (plan.backup, &plan.stream);
    let decode_context = Arc::new(DecodeContext {
        identities: {
            repo.data_identities("restoring a backup")?;
            reading_identities(repo)
        },
        key: repo.key().clone(),
        place: Place { backup, stream: stream.name.clone() },
        // Enough for every piece the pipeline holds at once: those being decoded, the
        // decoded ones `buffered` and the channel keep in order, and what the writer and
        // the hasher still hold.
        pool: pool::BufferPool::new(PIECE_SPAN as usize, options.prefetch.max(1) + 8),
    });
    let fetcher = Fetcher::new(repo);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u64>, Vec<Bytes>)>(2);
    let total_chunks = stream.chunk_count();
    let place = decode_context.place.clone();
    let (digest_tx, digest) = crate::digest::spawn(64);
    let writer = tokio::task::spawn_blocking(move || -> Result<W> {
        let mut out = out;
        let write_error = |e| Error::io(format!("writing stream {:?}", place.stream), e);
        // Pieces arrive in the order of their first chunk but may carry chunks up to
        // LOOKAHEAD further on: those wait here for their turn.
        let mut next = 0u64;
        let mut waiting: BTreeMap<u64, Bytes> = BTreeMap::new();
        let mut pieces = 0u64;
        while let Some((seqs, chunks)) = rx.blocking_recv() {
            pieces += 1;
            if pieces % TRIM_EVERY_PIECES == 0 {
                crate::alloc::release_free_memory();
            }
            waiting.extend(seqs.into_iter().zip(chunks));
            while let Some(chunk) = waiting.remove(&next) {
                out.write_all(&chunk).map_err(write_error)?;
                digest_tx
                    .send(chunk)
                    .map_err(|_| Error::new(ErrorKind::Io, "restore: the stream hasher stopped"))?;
                next += 1;
            }
        }
        if next != total_chunks {
            // Only after a failed fetch (whose error is the one reported) or a wrong plan.
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "restore wrote {next} of {total_chunks} chunks of stream {:?}",
                    place.stream
                ),
            ));
        }
        out.flush().map_err(write_error)?;
        Ok(out)
    });

    // Pieces come window by window from the plan's cursor, ahead of the fetches.
    let (piece_tx, pieces) = futures::channel::mpsc::channel::<Result<Piece>>(2);
    let planner = async move {
        let mut piece_tx = piece_tx;
        let mut cursor = plan.cursor(repo);
        loop {
            let window = match cursor.next_window().await {
                Ok(Some(window)) => window,
                Ok(None) => return,
                Err(e) => {
                    let _ = piece_tx.send(Err(e)).await;
                    return;
                }
            };
            for piece in window {
                // A closed channel means the fetches stopped; their error is reported.
                if piece_tx.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
        }
    };
    let fetch = async {
        let decoded = pieces
            .map(|piece| {
                let context = decode_context.clone();
                let fetcher = &fetcher;
                async move {
                    let piece = piece?;
                    let pack = piece.pack;
                    let fetched = fetcher
                        .fetch(&piece)
                        .await
                        .map_err(|e| e.context(context.place.piece(&piece)))?;
                    tokio::task::spawn_blocking(move || {
                        let chunks = context.decode(&piece, fetched)?;
                        Ok((pack, piece.seqs, chunks))
                    })
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Io, format!("restore decoder failed: {e}"))
                    })?
                }
            })
            .buffered(options.prefetch.max(1));
        let mut decoded = std::pin::pin!(decoded);
        // Counted by an 8-byte prefix of each id, in a quarter of the memory of whole ids
        // (~60,000 packs per TB); two packs sharing 8 bytes (odds ~10⁻¹⁰ at 60,000) would
        // count once, in a number that is only reported.
        let mut packs: HashSet<[u8; 8]> = HashSet::new();
        while let Some(decoded) = decoded.next().await {
            let (pack, seqs, chunks) = decoded?;
            packs.insert(pack_prefix(&pack));
            // A closed channel means the writer failed; its error is the one to report.
            if tx.send((seqs, chunks)).await.is_err() {
                break;
            }
        }
        drop(tx);
        Ok::<_, Error>(packs.len() as u64)
    };
    let ((), fetched, written) = tokio::join!(planner, fetch, writer);
    let written =
        written.map_err(|e| Error::new(ErrorKind::Io, format!("restore writer failed: {e}")))?;
    let (packs_read, out) = match (fetched, written) {
        // A failed fetch ends the writer's input early: the fetch error is the cause.
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        (Ok(packs_read), Ok(out)) => (packs_read, out),
    };
    let got = digest
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("restore hasher failed: {e}")))?;
    if got.size != stream.size || got.sha256 != stream.sha256 || got.blake3 != stream.blake3 {
        return Err(Error::corrupt(format!(
            "stream {:?} of backup {backup} restored to {} bytes with SHA-256 {}, but was \
             backed up as {} bytes with SHA-256 {}: the restored data is wrong",
            stream.name, got.size, got.sha256, stream.size, stream.sha256
        )));
    }
    let summary = RestoreSummary {
        bytes: got.size,
        chunks: stream.chunk_count(),
        packs_read,
        reads: fetcher.reads.load(Ordering::Relaxed),
        bytes_fetched: fetcher.bytes.load(Ordering::Relaxed),
        duration: started.elapsed(),
    };
    Ok((out, summary))
}

fn pack_prefix(pack: &PackId) -> [u8; 8] {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&pack.0[..8]);
    prefix
}
