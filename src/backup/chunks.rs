//! One stream through chunk → id → dedup → encode: a reader thread cuts chunks (and feeds the
//! whole-stream hasher), CPU workers name each chunk, keep the ones the repository lacks and
//! compress them for the packer.
//!
//! Guarantees: each chunk id is claimed by one worker only, so a chunk new to the repository
//! is stored once even when it occurs twice in the backup (memory for that stays bounded:
//! see `Queued`); the stream's chunk list is in
//! stream order whatever order the workers finish in (an ids thread puts them back in order
//! from a buffer bounded by the chunks in flight); in a version-2 repository the ids stream
//! into list blocks ([`ListWriter`]) that go through the same dedup and codec to the list
//! packer, so no stage holds the whole list; a stream is accepted only when it was
//! read to its end, matched the checksum its source announced, and (unless allowed) is not
//! empty.

use super::source::StreamSource;
use super::{first_real_error, join_error, pipeline_stopped, Progress};
use crate::chunker::{Chunker, ChunkerParams};
use crate::codec::{self, CodecParams};
use crate::crypto::RepositoryKey;
use crate::error::{Error, Result};
use crate::format::list::ListWriter;
use crate::format::manifest::{StreamRecord, Unreadable};
use crate::id::{ChunkId, PackId};
use crate::index::LocalIndex;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A chunk that is not in the repository yet, compressed.
pub(crate) struct NewBlob {
    pub(crate) id: ChunkId,
    pub(crate) blob: Vec<u8>,
    pub(crate) raw_length: u32,
}

/// Shared state of one backup's workers.
#[derive(Clone)]
pub(super) struct Dedup {
    key: RepositoryKey,
    index: Arc<LocalIndex>,
    /// Chunks this backup already queued: two identical new chunks are stored once.
    queued: Arc<Mutex<Queued>>,
    codec: CodecParams,
    /// Packs a prune has marked (read from storage under the backup's lease): a chunk only
    /// they hold is stored again.
    marked: Arc<HashSet<PackId>>,
}

/// Chunk ids queued in this backup and not yet known to be in the local index, in two
/// generations of at most [`QUEUED_GENERATION`] ids: a queued chunk is in the local index
/// once the index file naming its pack is written (every 16 packs), long before 65,536
/// more new chunks are queued (a pipeline holds ~6,000 of 64 KiB), so the older generation
/// is dropped whole instead of holding every new id of the backup (17 MiB at 16 GiB of new
/// data, ~1 GiB at 1 TB; docs/benchmarks.md "Scale"). With chunks far smaller than the
/// default, a repeat of a dropped id still in flight is stored twice: never lost.
#[derive(Default)]
struct Queued {
    current: HashSet<ChunkId>,
    previous: HashSet<ChunkId>,
}

const QUEUED_GENERATION: usize = 1 << 16;

impl Queued {
    /// Whether `id` is new to this backup (and remembers it).
    fn insert(&mut self, id: ChunkId) -> bool {
        if self.previous.contains(&id) || !self.current.insert(id) {
            return false;
        }
        if self.current.len() >= QUEUED_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        true
    }
}

impl Dedup {
    pub(super) fn new(
        key: RepositoryKey,
        index: Arc<LocalIndex>,
        codec: CodecParams,
        marked: Arc<HashSet<PackId>>,
    ) -> Dedup {
        Dedup { key, index, queued: Arc::default(), codec, marked }
    }

    /// True when the repository holds the chunk in a pack this backup may reference.
    fn stored(&self, id: &ChunkId) -> Result<bool> {
        self.index.holds_outside(id, &self.marked)
    }

    /// True when the chunk must be stored (and claims it, so no other worker stores it).
    fn claim(&self, id: &ChunkId) -> Result<bool> {
        if self.stored(id)? {
            return Ok(false);
        }
        let mut queued = self.queued.lock().map_err(|_| pipeline_stopped())?;
        Ok(queued.insert(*id))
    }
}

/// What [`archive_stream`] needs besides the stream.
pub(super) struct StreamContext<'a> {
    pub(super) params: &'a ChunkerParams,
    pub(super) dedup: &'a Dedup,
    pub(super) blobs: crossbeam_channel::Sender<NewBlob>,
    /// Version 2: where new list blocks go (the packer sealing packs to the metadata key).
    pub(super) lists: Option<crossbeam_channel::Sender<NewBlob>>,
    pub(super) workers: usize,
    pub(super) progress: &'a Arc<Progress>,
    pub(super) allow_empty: bool,
}

/// Chunks, hashes and dedups one stream; new blobs go to the packer. Returns the stream's
/// record and how many of its chunks were new.
pub(super) async fn archive_stream(
    source: StreamSource,
    cx: &StreamContext<'_>,
) -> Result<(StreamRecord, u64)> {
    let StreamSource { name, kind, reader, source: provenance, expected_sha256, left_out } = source;
    let workers = cx.workers;
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<(u64, Bytes)>(workers * 2);
    let (hash_tx, hash) = crate::digest::spawn(workers * 2);

    let chunker = Chunker::new(reader, cx.params)?;
    let reader_progress = Arc::clone(cx.progress);
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
    let (id_tx, id_rx) = crossbeam_channel::bounded::<(u64, ChunkId)>(workers * 4);
    let ids = {
        let dedup = cx.dedup.clone();
        let lists = cx.lists.clone();
        tokio::task::spawn_blocking(move || collect_ids(id_rx, &dedup, lists))
    };
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let rx = chunk_rx.clone();
        let tx = cx.blobs.clone();
        let id_tx = id_tx.clone();
        let dedup = cx.dedup.clone();
        handles.push(tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut new_chunks = 0;
            let mut encoder = codec::Encoder::new(&dedup.codec)?;
            for (seq, chunk) in rx {
                let id = dedup.key.chunk_id(&chunk);
                id_tx.send((seq, id)).map_err(|_| pipeline_stopped())?;
                if dedup.claim(&id)? {
                    let blob = encoder.encode(&chunk)?;
                    let raw_length = chunk.len() as u32;
                    tx.send(NewBlob { id, blob, raw_length }).map_err(|_| pipeline_stopped())?;
                    new_chunks += 1;
                }
            }
            Ok(new_chunks)
        }));
    }
    drop(chunk_rx);
    drop(id_tx);

    let mut errors = Vec::new();
    if let Err(e) = read.await.map_err(join_error).and_then(|r| r) {
        errors.push(e);
    }
    let mut new_chunks = 0;
    for handle in handles {
        match handle.await.map_err(join_error).and_then(|r| r) {
            Ok(n) => new_chunks += n,
            Err(e) => errors.push(e),
        }
    }
    let ids = ids.await.map_err(join_error).and_then(|r| r);
    let (chunks, list) = match ids {
        Ok(ids) => ids,
        Err(e) => {
            errors.push(e);
            Default::default()
        }
    };
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
    if size == 0 && !cx.allow_empty {
        return Err(Error::invalid_input(format!(
            "stream {name:?} is empty (0 bytes): a failed producer looks like this; \
             pass --allow-empty if an empty stream is expected"
        )));
    }
    // Complete now: the walk that fills it ended with the stream.
    let unreadable = left_out.and_then(|l| Unreadable::of(&l.paths()));
    let record = StreamRecord {
        name,
        kind,
        size,
        sha256,
        blake3,
        chunks,
        list,
        source: provenance,
        unreadable,
    };
    Ok((record, new_chunks))
}

/// Puts the workers' ids back in stream order. Version 1 (`lists` is `None`): returns them
/// all, for the manifest. Version 2: cuts them into list blocks as they come, stores the new
/// blocks through `dedup` and returns only the top of the tree.
fn collect_ids(
    ids: crossbeam_channel::Receiver<(u64, ChunkId)>,
    dedup: &Dedup,
    lists: Option<crossbeam_channel::Sender<NewBlob>>,
) -> Result<(Vec<ChunkId>, Option<crate::format::list::ChunkList>)> {
    let mut inline = Vec::new();
    let mut writer = lists.as_ref().map(|_| ListWriter::new(|b: &[u8]| dedup.key.chunk_id(b)));
    let mut encoder = codec::Encoder::new(&dedup.codec)?;
    let mut store = |blocks: Vec<(ChunkId, Vec<u8>)>| -> Result<()> {
        let Some(lists) = &lists else { return Ok(()) };
        for (id, block) in blocks {
            if dedup.claim(&id)? {
                let blob = encoder.encode(&block)?;
                let raw_length = block.len() as u32;
                lists.send(NewBlob { id, blob, raw_length }).map_err(|_| pipeline_stopped())?;
            }
        }
        Ok(())
    };
    // Ids that arrive before their turn; bounded by the chunks in flight.
    let mut waiting: BTreeMap<u64, ChunkId> = BTreeMap::new();
    let mut next = 0u64;
    for (seq, id) in ids {
        waiting.insert(seq, id);
        while let Some(id) = waiting.remove(&next) {
            next += 1;
            match writer.as_mut() {
                Some(w) => {
                    w.push(id);
                    store(w.take_blocks())?;
                }
                None => inline.push(id),
            }
        }
    }
    if !waiting.is_empty() {
        // Only when a stage stopped early; its error is the one reported.
        return Err(pipeline_stopped());
    }
    match writer {
        Some(w) => {
            let (list, blocks) = w.finish();
            store(blocks)?;
            Ok((Vec::new(), Some(list)))
        }
        None => Ok((inline, None)),
    }
}

#[cfg(test)]
mod queued_tests {
    use super::*;

    #[test]
    fn queued_ids_stay_within_two_generations_and_recent_repeats_are_refused() {
        let mut queued = Queued::default();
        let id = |n: usize| ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes());
        for n in 0..QUEUED_GENERATION * 2 + 10 {
            assert!(queued.insert(id(n)), "{n}");
            assert!(!queued.insert(id(n)), "{n} again");
        }
        assert!(queued.current.len() + queued.previous.len() <= 2 * QUEUED_GENERATION);
        // The last generation and the one before are remembered; older ids are dropped.
        assert!(!queued.insert(id(QUEUED_GENERATION * 2 + 9)));
        assert!(!queued.insert(id(QUEUED_GENERATION + 5)));
        assert!(queued.insert(id(5)));
    }
}
