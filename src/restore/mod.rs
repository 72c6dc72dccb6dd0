//! Restore: a stream of a backup back to bytes, every chunk and the whole stream checked.
//!
//! ```text
//! plan: chunks → pieces (chunks of one pack lying close together, from a stretch of stream)
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
mod target;

pub use plan::{plan, Piece, RestorePlan, LOOKAHEAD, PIECE_SPAN};
pub use target::{restore_to_file, RestoreReport};

use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::id::{BackupId, ChunkId, PackId};
use crate::repo::Repository;
use bytes::Bytes;
use decode::DecodeContext;
use fetch::Fetcher;
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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
        identities: repo.data_identities("restoring a backup")?.to_vec(),
        key: repo.key().clone(),
        place: Place { backup, stream: stream.name.clone() },
    });
    let packs_read = plan.packs();
    let fetcher = Fetcher::new(repo);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u64>, Vec<Bytes>)>(2);
    let total_chunks = stream.chunks.len() as u64;
    let place = decode_context.place.clone();
    let (digest_tx, digest) = crate::digest::spawn(64);
    let writer = tokio::task::spawn_blocking(move || -> Result<W> {
        let mut out = out;
        let write_error = |e| Error::io(format!("writing stream {:?}", place.stream), e);
        // Pieces arrive in the order of their first chunk but may carry chunks up to
        // LOOKAHEAD further on: those wait here for their turn.
        let mut next = 0u64;
        let mut waiting: BTreeMap<u64, Bytes> = BTreeMap::new();
        while let Some((seqs, chunks)) = rx.blocking_recv() {
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

    let fetch = async {
        let mut decoded = stream::iter(plan.pieces.iter().cloned())
            .map(|piece| {
                let context = decode_context.clone();
                let fetcher = &fetcher;
                async move {
                    let fetched = fetcher
                        .fetch(&piece)
                        .await
                        .map_err(|e| e.context(context.place.piece(&piece)))?;
                    tokio::task::spawn_blocking(move || {
                        let chunks = context.decode(&piece, fetched)?;
                        Ok((piece.seqs, chunks))
                    })
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Io, format!("restore decoder failed: {e}"))
                    })?
                }
            })
            .buffered(options.prefetch.max(1));
        while let Some(chunks) = decoded.next().await {
            // A closed channel means the writer failed; its error is the one to report.
            if tx.send(chunks?).await.is_err() {
                break;
            }
        }
        drop(tx);
        Ok::<_, Error>(())
    };
    let (fetched, written) = tokio::join!(fetch, writer);
    let written =
        written.map_err(|e| Error::new(ErrorKind::Io, format!("restore writer failed: {e}")))?;
    let out = match (fetched, written) {
        // A failed fetch ends the writer's input early: the fetch error is the cause.
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(out)) => out,
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
        chunks: stream.chunks.len() as u64,
        packs_read,
        reads: fetcher.reads.load(Ordering::Relaxed),
        bytes_fetched: fetcher.bytes.load(Ordering::Relaxed),
        duration: started.elapsed(),
    };
    Ok((out, summary))
}
