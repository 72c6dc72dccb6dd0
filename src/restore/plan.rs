//! The restore plan: which pack holds each chunk of the stream, grouped into pieces that one
//! range read each can serve.
//!
//! A [`RestorePlan`] holds the stream's record and is checked before anything is written or
//! sent; its pieces are produced window by window while the restore runs ([`PieceCursor`]),
//! so memory stays flat however long the stream.
//!
//! Checked up front by [`RestorePlan::new`]: for a version-1 stream, every chunk (it is
//! listed in the manifest anyway); for version 2, the top of the list-block tree — every top
//! id is in an index file and in a pack that is stored and not known to be damaged. Checked
//! during the restore, in stream order: each list block below the top and each data chunk,
//! with the same errors. A caller that must not start on a stream that fails half way (an
//! upload it cannot take back) runs `qvault verify` first.

use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::format::pack::PackEntry;
use crate::id::{BackupId, ChunkId, PackId};
use crate::index::ChunkLocation;
use crate::refs::ListWalk;
use crate::repo::Repository;
use std::collections::{HashMap, HashSet, VecDeque};

/// At most this much of a pack's data (plaintext) is fetched for one piece, and at most
/// this much chunk data is decoded: bounds the memory each piece in flight holds.
pub const PIECE_SPAN: u64 = 2 * 1024 * 1024;

/// How far ahead in the stream a piece may take more chunks of its pack. The writer holds
/// chunks that arrive before their turn, so this bounds its reorder buffer.
pub const LOOKAHEAD: u64 = 8 * 1024 * 1024;

/// Chunks of a version-1 stream planned per window.
const INLINE_WINDOW: usize = 4096;

/// Chunks of one pack from a stretch of the stream, fetched with one range read: when a
/// few chunks from elsewhere interrupt a run (an edit, a new segment), the run goes on in
/// the same piece rather than costing another read and re-decrypting the segments at its
/// ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub pack: PackId,
    /// Plaintext length of the pack's data section.
    pub pack_plaintext_len: u64,
    /// In stream order; offsets may go back and forth (and repeat) within the piece.
    pub entries: Vec<PackEntry>,
    /// Each entry's position in the stream's chunk list.
    pub seqs: Vec<u64>,
    /// Stream byte offset of the first chunk.
    pub stream_start: u64,
}

impl Piece {
    /// The plaintext range of the pack holding every blob of the piece.
    pub(crate) fn span(&self) -> std::ops::Range<u64> {
        let start = self.entries.iter().map(|e| e.offset).min().unwrap_or(0);
        let end = self.entries.iter().map(|e| e.offset + u64::from(e.length)).max().unwrap_or(0);
        start..end
    }

    fn raw_len(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.raw_length)).sum()
    }

    /// Whether `entry` of the same pack can join without the piece outgrowing its limits.
    fn admits(&self, entry: &PackEntry) -> bool {
        let span = self.span();
        let start = span.start.min(entry.offset);
        let end = span.end.max(entry.offset + u64::from(entry.length));
        end - start <= PIECE_SPAN && self.raw_len() + u64::from(entry.raw_length) <= PIECE_SPAN
    }
}

/// What restoring one stream of one backup will read: the stream's record (sizes and the
/// hashes the result is checked against), checked as the module docs say; its pieces come
/// from [`RestorePlan::cursor`].
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub backup: BackupId,
    pub stream: StreamRecord,
    bad: HashSet<PackId>,
    missing: HashSet<PackId>,
}

/// How many pieces and packs a whole plan reads (a dry run walks the whole stream for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanCounts {
    pub pieces: u64,
    pub packs: u64,
}

/// The stream a restore reads, as every restore report names it: `id`, `stream`, `sha256`
/// (the hash the restored bytes are checked against).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamRef {
    pub id: BackupId,
    pub stream: String,
    pub sha256: String,
}

/// What a dry run reports: the stream, its size in bytes and chunks, and what restoring it
/// reads (`pieces` range reads from `packs` packs).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanSummary {
    #[serde(flatten)]
    pub source: StreamRef,
    pub bytes: u64,
    pub chunks: u64,
    #[serde(flatten)]
    pub counts: PlanCounts,
}

impl RestorePlan {
    /// Takes the packs storage still holds (one listing of `data/` finds the missing ones)
    /// and checks what the module docs say is checked up front. Fails before anything is
    /// written, naming the backup, stream and chunk and what to run, when one of those is in
    /// no index file or only in a pack that is missing or known to be damaged.
    pub async fn new(
        repo: &Repository,
        backup: BackupId,
        stream: &StreamRecord,
    ) -> Result<RestorePlan> {
        let missing: HashSet<PackId> =
            crate::index::sync::mark_missing_packs(repo).await?.into_iter().collect();
        let bad = repo.index().bad_packs()?;
        let plan = RestorePlan { backup, stream: stream.clone(), bad, missing };
        let upfront = match &stream.list {
            None => &stream.chunks,
            Some(list) => &list.top,
        };
        for id in upfront {
            plan.locate(repo, id)?;
        }
        Ok(plan)
    }

    /// The pieces, window by window, in the order of their first chunk.
    pub fn cursor<'a>(&'a self, repo: &'a Repository) -> PieceCursor<'a> {
        let ids = match &self.stream.list {
            None => Ids::Inline(0),
            Some(list) => Ids::Tree(ListWalk::new(list, &self.stream.name)),
        };
        PieceCursor {
            plan: self,
            repo,
            reader: super::BlockReader::new(repo),
            ids,
            planner: Planner::default(),
            done: false,
        }
    }

    /// Every piece at once: memory grows with the stream (tests and inspection).
    pub async fn pieces(&self, repo: &Repository) -> Result<Vec<Piece>> {
        let mut cursor = self.cursor(repo);
        let mut pieces = Vec::new();
        while let Some(mut window) = cursor.next_window().await? {
            pieces.append(&mut window);
        }
        Ok(pieces)
    }

    /// Walks the whole plan and counts what it would read.
    /// The stream this plan restores.
    pub fn stream_ref(&self) -> StreamRef {
        StreamRef {
            id: self.backup,
            stream: self.stream.name.clone(),
            sha256: self.stream.sha256.clone(),
        }
    }

    /// The dry run's report: [`Self::count`] with the stream's facts.
    pub async fn summary(&self, repo: &Repository) -> Result<PlanSummary> {
        Ok(PlanSummary {
            source: self.stream_ref(),
            bytes: self.stream.size,
            chunks: self.stream.chunk_count(),
            counts: self.count(repo).await?,
        })
    }

    pub async fn count(&self, repo: &Repository) -> Result<PlanCounts> {
        let mut cursor = self.cursor(repo);
        let (mut pieces, mut packs) = (0, HashSet::new());
        while let Some(window) = cursor.next_window().await? {
            pieces += window.len() as u64;
            packs.extend(window.iter().map(|p| p.pack));
        }
        Ok(PlanCounts { pieces, packs: packs.len() as u64 })
    }

    /// Where `chunk` (data or list block) is. Fails (naming the backup, stream and chunk)
    /// when it is in no index file, or only in a bad pack: `NotFound` when that pack is
    /// missing, `Corrupt` when it is stored but damaged.
    pub(crate) fn locate(&self, repo: &Repository, chunk: &ChunkId) -> Result<ChunkLocation> {
        locate(repo, self.backup, &self.stream, chunk, &self.bad, &self.missing)
    }
}

fn locate(
    repo: &Repository,
    backup: BackupId,
    stream: &StreamRecord,
    chunk: &ChunkId,
    bad: &HashSet<PackId>,
    missing: &HashSet<PackId>,
) -> Result<ChunkLocation> {
    let location = repo.index().locate(chunk)?.ok_or_else(|| {
        Error::not_found(format!(
            "chunk {chunk} of stream {:?} in backup {backup} is in no index file of {}: {}",
            stream.name,
            repo.storage().location(),
            super::UNINDEXED_ADVICE
        ))
    })?;
    if bad.contains(&location.pack) {
        let (kind, state) = if missing.contains(&location.pack) {
            (ErrorKind::NotFound, "missing from")
        } else {
            (ErrorKind::Corrupt, "damaged in")
        };
        return Err(Error::new(
            kind,
            format!(
                "chunk {chunk} of stream {:?} in backup {backup} is only in pack {}, which \
                 is {state} {}: run `qvault verify` to see what else it affects, `qvault \
                 repair index`, and back the data up again",
                stream.name,
                location.pack,
                repo.storage().location()
            ),
        ));
    }
    Ok(location)
}

enum Ids {
    /// Version 1: the next position in the manifest's list.
    Inline(usize),
    Tree(ListWalk),
}

/// Produces a plan's pieces window by window; holds the pieces of the last [`LOOKAHEAD`]
/// of stream (they may still grow) and one list block per tree level.
pub struct PieceCursor<'a> {
    plan: &'a RestorePlan,
    repo: &'a Repository,
    reader: super::BlockReader<'a>,
    ids: Ids,
    planner: Planner,
    done: bool,
}

impl PieceCursor<'_> {
    /// The next pieces that can no longer grow, in order (`None` at the end).
    pub async fn next_window(&mut self) -> Result<Option<Vec<Piece>>> {
        while !self.done {
            let batch = match &mut self.ids {
                Ids::Inline(pos) => {
                    let chunks = &self.plan.stream.chunks;
                    let end = (*pos + INLINE_WINDOW).min(chunks.len());
                    let batch = (*pos < end).then(|| chunks[*pos..end].to_vec());
                    *pos = end;
                    batch
                }
                Ids::Tree(walk) => walk.next_batch(&self.reader, &mut |_| {}).await?,
            };
            let Some(batch) = batch else {
                self.done = true;
                break;
            };
            for id in &batch {
                self.planner.add(self.plan.locate(self.repo, id)?);
            }
            let closed = self.planner.drain(false);
            if !closed.is_empty() {
                return Ok(Some(closed));
            }
        }
        let rest = self.planner.drain(true);
        Ok((!rest.is_empty()).then_some(rest))
    }
}

/// Groups located chunks into pieces as they arrive, exactly as if it saw the whole stream:
/// a piece leaves only once no later chunk can join it.
#[derive(Default)]
struct Planner {
    pieces: VecDeque<Piece>,
    /// Number of pieces already handed out: `open` holds absolute piece numbers.
    base: usize,
    /// The piece each pack's chunks currently go to.
    open: HashMap<PackId, usize>,
    position: u64,
    seq: u64,
}

impl Planner {
    fn add(&mut self, location: ChunkLocation) {
        let end = self.position + u64::from(location.entry.raw_length);
        let joins = self.open.get(&location.pack).copied().filter(|&i| {
            i >= self.base && {
                let piece = &self.pieces[i - self.base];
                end - piece.stream_start <= LOOKAHEAD && piece.admits(&location.entry)
            }
        });
        match joins {
            Some(i) => {
                let piece = &mut self.pieces[i - self.base];
                piece.entries.push(location.entry);
                piece.seqs.push(self.seq);
            }
            None => {
                self.open.insert(location.pack, self.base + self.pieces.len());
                self.pieces.push_back(Piece {
                    pack: location.pack,
                    pack_plaintext_len: location.pack_plaintext_len,
                    entries: vec![location.entry],
                    seqs: vec![self.seq],
                    stream_start: self.position,
                });
            }
        }
        self.position = end;
        self.seq += 1;
    }

    /// Pieces no later chunk can join (every chunk from here ends more than LOOKAHEAD after
    /// their start), or all of them at the end.
    fn drain(&mut self, all: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        while let Some(first) = self.pieces.front() {
            if !all && self.position - first.stream_start < LOOKAHEAD {
                break;
            }
            out.extend(self.pieces.pop_front());
            self.base += 1;
        }
        let base = self.base;
        self.open.retain(|_, i| *i >= base);
        out
    }
}

/// Every piece of a version-1 `stream` at once, checking each chunk as [`RestorePlan::new`]
/// does (`bad` packs; `NotFound` for those in `missing`).
pub fn plan(
    repo: &Repository,
    backup: BackupId,
    stream: &StreamRecord,
    bad: &HashSet<PackId>,
    missing: &HashSet<PackId>,
) -> Result<Vec<Piece>> {
    let mut planner = Planner::default();
    for chunk in &stream.chunks {
        planner.add(locate(repo, backup, stream, chunk, bad, missing)?);
    }
    Ok(planner.drain(true))
}
