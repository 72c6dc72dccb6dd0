//! What prune holds in memory about every chunk, kept small enough for large repositories
//! (10,000 packs and millions of chunks in well under 150 MiB): chunk ids by their 8-byte
//! prefix, and per pack entry 16 bytes instead of 48.
//!
//! Guarantees:
//! - A prefix stands for a chunk only where a collision (two distinct chunks with the same
//!   prefix; ids are keyed hashes, so about n²/2⁶⁵ for n chunks) can only make prune keep
//!   more: an unreferenced chunk looking referenced, a chunk copied twice by a repack, a pack
//!   counted more or less used. Deciding that a referenced chunk is held by a pack that stays
//!   — the one step that could lose data — uses full ids ([`PackTable::marked`] and the local
//!   index), never prefixes.

use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};

/// The first 8 bytes of a chunk id.
pub fn prefix(id: &ChunkId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

/// Chunks by prefix: 8 bytes a chunk instead of 32.
#[derive(Debug, Default)]
pub struct RefSet(HashSet<u64>);

impl RefSet {
    pub fn insert(&mut self, id: &ChunkId) {
        self.0.insert(prefix(id));
    }

    /// True for every chunk in the set, and (rarely) for one whose prefix collides.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.0.contains(&prefix(id))
    }

    pub fn contains_prefix(&self, prefix: u64) -> bool {
        self.0.contains(&prefix)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One entry of a pack, compact.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub prefix: u64,
    /// The blob's stored length.
    pub length: u32,
    /// The chunk's length before compression.
    pub raw_length: u32,
}

/// Stored packs against what the index files list.
#[derive(Debug, Default)]
pub struct PackTable {
    /// Pack id → object size, from listing `data/`.
    pub stored: HashMap<PackId, u64>,
    /// Pack id → its entries, from the index files (the first listing of a pack wins).
    pub indexed: HashMap<PackId, Vec<Entry>>,
    /// Full chunk ids of the packs some mark holds: the packs a prune may delete.
    pub marked: HashMap<PackId, Vec<ChunkId>>,
}

impl PackTable {
    /// Reads `data/` and every index file the local index knows, one at a time, keeping
    /// full ids only for the packs in `marked`.
    pub async fn read(repo: &Repository, marked: &HashSet<PackId>) -> Result<PackTable> {
        let stored = crate::index::sync::stored_packs(repo).await?;
        let mut table = PackTable { stored, ..Default::default() };
        for id in repo.index().index_files()? {
            for p in repo.read_index_file(id).await?.packs {
                if table.indexed.contains_key(&p.pack) {
                    continue;
                }
                if marked.contains(&p.pack) {
                    table.marked.insert(p.pack, p.entries.iter().map(|e| e.chunk).collect());
                }
                let entries = p
                    .entries
                    .iter()
                    .map(|e| Entry {
                        prefix: prefix(&e.chunk),
                        length: e.length,
                        raw_length: e.raw_length,
                    })
                    .collect();
                table.indexed.insert(p.pack, entries);
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_the_first_eight_bytes_little_endian() {
        let mut id = ChunkId([0u8; 32]);
        id.0[0] = 1;
        id.0[7] = 0x80;
        id.0[8] = 0xff;
        assert_eq!(prefix(&id), 0x8000_0000_0000_0001);
        let mut set = RefSet::default();
        set.insert(&id);
        assert!(set.contains(&id));
        id.0[31] = 1; // same prefix: looks referenced, which only ever keeps more
        assert!(set.contains(&id));
        id.0[0] = 2;
        assert!(!set.contains(&id));
    }
}
