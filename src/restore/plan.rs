//! The restore plan: which pack holds each chunk of the stream, grouped into pieces that one
//! range read each can serve.
//!
//! A [`RestorePlan`] is computed once, before anything is written or sent, and handed to
//! whatever executes it (a file, stdout, a directory, a Qdrant upload, `--serve`): a chunk in
//! no index file fails here, not half way through an upload.

use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::format::pack::PackEntry;
use crate::id::{BackupId, PackId};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};

/// At most this much of a pack's data (plaintext) is fetched for one piece, and at most
/// this much chunk data is decoded: bounds the memory each piece in flight holds.
pub const PIECE_SPAN: u64 = 2 * 1024 * 1024;

/// How far ahead in the stream a piece may take more chunks of its pack. The writer holds
/// chunks that arrive before their turn, so this bounds its reorder buffer.
pub const LOOKAHEAD: u64 = 8 * 1024 * 1024;

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
/// hashes the result is checked against) and its chunks grouped into [`Piece`]s in stream
/// order.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub backup: BackupId,
    pub stream: StreamRecord,
    pub pieces: Vec<Piece>,
}

impl RestorePlan {
    /// Locates every chunk of `stream` in the local index, taking copies in packs storage
    /// still holds (one listing of `data/` finds the missing ones). Fails before anything is
    /// written, naming the backup, stream and chunk and what to run, when a chunk is in no
    /// index file or only in a pack that is missing or known to be damaged.
    pub async fn new(
        repo: &Repository,
        backup: BackupId,
        stream: &StreamRecord,
    ) -> Result<RestorePlan> {
        let missing: HashSet<PackId> =
            crate::index::sync::mark_missing_packs(repo).await?.into_iter().collect();
        let bad = repo.index().bad_packs()?;
        let pieces = plan(repo, backup, stream, &bad, &missing)?;
        Ok(RestorePlan { backup, stream: stream.clone(), pieces })
    }

    /// Distinct packs the stream's chunks live in.
    pub fn packs(&self) -> u64 {
        self.pieces.iter().map(|p| p.pack).collect::<HashSet<_>>().len() as u64
    }
}

/// Where every chunk of `stream` is, grouped into pieces. Fails (naming the backup, stream
/// and chunk) when a chunk is in no index file, or only in a pack of `bad`: `NotFound` when
/// that pack is in `missing`, `Corrupt` when it is stored but damaged.
pub fn plan(
    repo: &Repository,
    backup: BackupId,
    stream: &StreamRecord,
    bad: &HashSet<PackId>,
    missing: &HashSet<PackId>,
) -> Result<Vec<Piece>> {
    let mut pieces: Vec<Piece> = Vec::new();
    // The piece each pack's chunks currently go to.
    let mut open: HashMap<PackId, usize> = HashMap::new();
    let mut position = 0u64;
    for (seq, chunk) in stream.chunks.iter().enumerate() {
        let location = repo.index().locate(chunk)?.ok_or_else(|| {
            Error::not_found(format!(
                "chunk {chunk} of stream {:?} in backup {backup} is in no index file of {}: \
                 run `qvault index rebuild`, then `qvault verify`",
                stream.name,
                repo.storage().location()
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
        let end = position + u64::from(location.entry.raw_length);
        let joins = open.get(&location.pack).copied().filter(|&i| {
            let piece = &pieces[i];
            end - piece.stream_start <= LOOKAHEAD && piece.admits(&location.entry)
        });
        match joins {
            Some(i) => {
                pieces[i].entries.push(location.entry);
                pieces[i].seqs.push(seq as u64);
            }
            None => {
                open.insert(location.pack, pieces.len());
                pieces.push(Piece {
                    pack: location.pack,
                    pack_plaintext_len: location.pack_plaintext_len,
                    entries: vec![location.entry],
                    seqs: vec![seq as u64],
                    stream_start: position,
                });
            }
        }
        position = end;
    }
    Ok(pieces)
}
