//! List blocks (format version 2): a stream's chunk-id list, stored as chunks.
//!
//! ```text
//! block = "QVLB" ‖ u32 LE version (2) ‖ u32 LE level (≥ 1) ‖ count × chunk id (32 bytes)
//! ```
//!
//! A level-1 block holds data chunk ids; a level-L block holds the ids of level-(L−1)
//! blocks. A block is a chunk like any other (keyed BLAKE3 id, codec, pack, index file), so
//! an unchanged stretch of a stream's id list is the same blocks and costs nothing.
//!
//! Guarantees: cut points are content-defined at id granularity ([`ends_block`]), so an
//! insert or removal changes only the blocks around it; [`ListWriter`] holds at most
//! [`TOP_MAX`] + [`MAX_IDS`] ids per level, never the whole list; decoding checks magic,
//! version, level and that the ids fill the block exactly.

use super::{put_header, ByteReader};
use crate::error::{Error, Result};
use crate::id::ChunkId;

const MAGIC: &[u8; 4] = b"QVLB";
pub const LIST_BLOCK_VERSION: u32 = 2;
pub const HEADER_LEN: usize = 12;
/// A block ends after an id whose first two bytes (u16 LE) are a multiple of `TARGET`, once
/// it has at least `MIN_IDS` ids, and always at `MAX_IDS`: ~320 ids (10 KiB) on average.
/// Writer-only (readers accept any cut): until 2026-11-30 the rule was 256 / 1024 / 4096
/// (~40 KiB blocks), and a backup whose changes are spread over the stream rewrote nearly
/// every block (docs/design.md "List blocks", docs/benchmarks.md "Scale").
pub const MIN_IDS: usize = 64;
pub const TARGET: u16 = 256;
pub const MAX_IDS: usize = 1024;
/// The most ids a block or a stream's top may hold when read: the earlier writer's maximum.
pub const READ_MAX_IDS: usize = 4096;
/// A level with at most this many ids is the top, kept in the manifest; more are cut into
/// blocks and their ids form the next level.
pub const TOP_MAX: usize = 16;
/// Readers refuse deeper trees: 6 levels of `MIN_IDS` already exceed any real stream.
pub const MAX_LEVELS: u32 = 6;

/// A stream's chunk list in a version-2 manifest: the top of the tree and what it adds up
/// to. `levels == 0` means `top` holds the data chunk ids themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkList {
    /// Data chunks in the stream (repeats included).
    pub chunks: u64,
    /// Block levels below the top.
    pub levels: u32,
    /// At most [`TOP_MAX`] ids: level-`levels` block ids (data chunk ids when 0).
    pub top: Vec<ChunkId>,
}

/// Whether a block that has `count` ids, the last of them `last`, ends here.
pub fn ends_block(last: &ChunkId, count: usize) -> bool {
    count >= MAX_IDS
        || (count >= MIN_IDS && u16::from_le_bytes([last.0[0], last.0[1]]) % TARGET == 0)
}

/// The bytes of a block of `level` holding `ids`.
pub fn encode_block(level: u32, ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 32 * ids.len());
    put_header(&mut out, MAGIC, LIST_BLOCK_VERSION);
    out.extend_from_slice(&level.to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// A block's level and ids. `what` names the block for errors.
pub fn decode_block(bytes: &[u8], what: &str) -> Result<(u32, Vec<ChunkId>)> {
    let mut r = ByteReader::new(bytes, what);
    r.expect_header(MAGIC, LIST_BLOCK_VERSION)?;
    let level = r.u32()?;
    if level == 0 || level > MAX_LEVELS {
        return Err(Error::corrupt(format!("{what} claims level {level}, not 1..={MAX_LEVELS}")));
    }
    let rest = r.remaining();
    if rest == 0 || rest % 32 != 0 || rest / 32 > READ_MAX_IDS {
        return Err(Error::corrupt(format!(
            "{what} has {rest} bytes of ids: not a whole number of 1..={READ_MAX_IDS} ids"
        )));
    }
    let mut ids = Vec::with_capacity(rest / 32);
    while r.remaining() > 0 {
        ids.push(ChunkId(r.id()?));
    }
    r.finish()?;
    Ok((level, ids))
}

/// Cuts a stream's chunk ids, pushed in order, into list blocks level by level. Blocks come
/// out through [`ListWriter::take_blocks`] as soon as they are cut, each before any block
/// that names it; [`ListWriter::finish`] flushes the rest and returns the manifest's part.
pub struct ListWriter<F: Fn(&[u8]) -> ChunkId> {
    name: F,
    levels: Vec<Level>,
    chunks: u64,
    blocks: Vec<(ChunkId, Vec<u8>)>,
}

#[derive(Default)]
struct Level {
    /// The ids of the block being filled (or, until `cutting`, every id of the level).
    ids: Vec<ChunkId>,
    /// More than `TOP_MAX` ids arrived: this level is not the top, cut it.
    cutting: bool,
}

impl<F: Fn(&[u8]) -> ChunkId> ListWriter<F> {
    /// `name` gives a block's chunk id (the repository's keyed BLAKE3).
    pub fn new(name: F) -> Self {
        ListWriter { name, levels: Vec::new(), chunks: 0, blocks: Vec::new() }
    }

    pub fn push(&mut self, id: ChunkId) {
        self.chunks += 1;
        self.push_at(0, id);
    }

    /// Blocks cut so far, in the order they must be stored (children before parents).
    pub fn take_blocks(&mut self) -> Vec<(ChunkId, Vec<u8>)> {
        std::mem::take(&mut self.blocks)
    }

    fn push_at(&mut self, level: usize, id: ChunkId) {
        if level == self.levels.len() {
            self.levels.push(Level::default());
        }
        if self.levels[level].cutting {
            return self.add(level, id);
        }
        let l = &mut self.levels[level];
        l.ids.push(id);
        if l.ids.len() > TOP_MAX {
            // Not the top after all: cut what was held exactly as if cut on arrival.
            l.cutting = true;
            for id in std::mem::take(&mut l.ids) {
                self.add(level, id);
            }
        }
    }

    fn add(&mut self, level: usize, id: ChunkId) {
        let l = &mut self.levels[level];
        l.ids.push(id);
        if ends_block(&id, l.ids.len()) {
            let ids = std::mem::take(&mut l.ids);
            self.emit(level, &ids);
        }
    }

    fn emit(&mut self, level: usize, ids: &[ChunkId]) {
        let bytes = encode_block(level as u32 + 1, ids);
        let id = (self.name)(&bytes);
        self.blocks.push((id, bytes));
        self.push_at(level + 1, id);
    }

    /// Flushes the last block of every level; returns the list and the blocks not yet taken.
    pub fn finish(mut self) -> (ChunkList, Vec<(ChunkId, Vec<u8>)>) {
        let mut level = 0;
        loop {
            if level == self.levels.len() || !self.levels[level].cutting {
                let top = self.levels.get_mut(level).map(|l| std::mem::take(&mut l.ids));
                let list = ChunkList {
                    chunks: self.chunks,
                    levels: level as u32,
                    top: top.unwrap_or_default(),
                };
                return (list, self.blocks);
            }
            let ids = std::mem::take(&mut self.levels[level].ids);
            if !ids.is_empty() {
                self.emit(level, &ids);
            }
            level += 1;
        }
    }
}

/// The whole tree for `ids` at once: for tests, tools and the fuzz target.
pub fn build(
    ids: &[ChunkId],
    name: impl Fn(&[u8]) -> ChunkId,
) -> (ChunkList, Vec<(ChunkId, Vec<u8>)>) {
    let mut writer = ListWriter::new(name);
    ids.iter().for_each(|id| writer.push(*id));
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64, salt: u64) -> Vec<ChunkId> {
        (0..n)
            .map(|i| {
                ChunkId(*blake3::hash(&[i.to_le_bytes(), salt.to_le_bytes()].concat()).as_bytes())
            })
            .collect()
    }

    fn name(b: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(b).as_bytes())
    }

    /// Reads the tree back from the blocks: the list it holds, in order.
    fn flatten(list: &ChunkList, blocks: &[(ChunkId, Vec<u8>)]) -> Vec<ChunkId> {
        let mut level_ids = list.top.clone();
        for level in (1..=list.levels).rev() {
            let mut next = Vec::new();
            for id in &level_ids {
                let (_, bytes) = blocks.iter().find(|(b, _)| b == id).unwrap();
                let (l, mut ids) = decode_block(bytes, "block").unwrap();
                assert_eq!(l, level);
                next.append(&mut ids);
            }
            level_ids = next;
        }
        level_ids
    }

    #[test]
    fn small_lists_stay_in_the_top_and_large_ones_round_trip() {
        for n in [0, 1, TOP_MAX as u64, TOP_MAX as u64 + 1, 5000, 70_000] {
            let ids = ids(n, 1);
            let (list, blocks) = build(&ids, name);
            assert_eq!(list.chunks, n);
            assert!(list.top.len() <= TOP_MAX, "{n}");
            assert_eq!(list.levels == 0, n as usize <= TOP_MAX, "{n}");
            assert_eq!(flatten(&list, &blocks), ids, "{n}");
            for (id, bytes) in &blocks {
                assert_eq!(name(bytes), *id);
                assert!(bytes.len() <= HEADER_LEN + 32 * MAX_IDS);
            }
        }
    }

    #[test]
    fn an_insert_changes_only_the_blocks_around_it() {
        let old = ids(40_000, 2);
        let mut new = old.clone();
        new.splice(20_000..20_000, ids(3, 3));
        let (_, a) = build(&old, name);
        let (_, b) = build(&new, name);
        let a: std::collections::HashSet<_> = a.iter().map(|(id, _)| *id).collect();
        let changed = b.iter().filter(|(id, _)| !a.contains(id)).count();
        // The level-1 block holding the insert, and its parents up the tree.
        assert!(changed <= 3, "{changed} of {} blocks changed", b.len());
    }

    #[test]
    fn damaged_blocks_are_refused() {
        let good = encode_block(1, &ids(3, 4));
        assert!(decode_block(&good, "b").is_ok());
        assert!(decode_block(&good[..good.len() - 1], "b").is_err());
        assert!(decode_block(&encode_block(0, &ids(1, 4)), "b").is_err());
        assert!(decode_block(&encode_block(1, &[]), "b").is_err());
        let mut v3 = good.clone();
        v3[4] = 3;
        let err = decode_block(&v3, "b").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::UnsupportedVersion);
    }
}
