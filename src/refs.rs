//! What a backup references: every chunk a restore of any of its streams reads. Prune keeps
//! exactly these (and the packs holding them), copy transfers exactly these.
//!
//! This is the one place that knows how a manifest names its chunks. In format version 1 a
//! stream lists its chunk ids inline. In version 2 it holds the top of a tree of list blocks
//! (`format::list`): the references are then the list blocks themselves *and* the data
//! chunks they name, and reading the tree needs the index and storage, not just the
//! manifest. [`ListWalk`] is the one walker of that tree; restore plans from it too.
//!
//! Guarantees: a walk holds one block per level (≤ 6 × 128 KiB, the largest a reader accepts), never the whole list; every
//! block read is checked like a data chunk (keyed id, age tags) and for its level; a tree
//! whose data chunks do not add up to the manifest's count fails as `Corrupt`.

use crate::error::{Error, Result};
use crate::format::list::{decode_block, ChunkList};
use crate::format::manifest::Manifest;
use crate::id::ChunkId;
use crate::repo::Repository;
use crate::restore::BlockReader;
use std::collections::HashSet;

/// What a reference is: list blocks live in metadata packs (readable with the repository
/// key), data chunks in data packs. Prune must keep each kind in its kind of pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    ListBlock,
    Data,
}

/// Calls `visit` once per chunk reference of `manifest` (repeats included): for version 2,
/// each list block just before the chunks under it, then the data chunks, in stream order.
/// Needs only the repository key: chunk lists are metadata.
pub async fn for_each_chunk(
    repo: &Repository,
    manifest: &Manifest,
    mut visit: impl FnMut(&ChunkId),
) -> Result<()> {
    for_each_reference(repo, manifest, |id, _| visit(id)).await
}

/// [`for_each_chunk`], telling list blocks from data chunks.
pub async fn for_each_reference(
    repo: &Repository,
    manifest: &Manifest,
    mut visit: impl FnMut(&ChunkId, RefKind),
) -> Result<()> {
    let reader = BlockReader::new(repo);
    for stream in &manifest.streams {
        match &stream.list {
            None => stream.chunks.iter().for_each(|id| visit(id, RefKind::Data)),
            Some(list) => {
                let mut walk = ListWalk::new(list, &stream.name);
                while let Some(ids) =
                    walk.next_batch(&reader, &mut |id| visit(id, RefKind::ListBlock)).await?
                {
                    ids.iter().for_each(|id| visit(id, RefKind::Data));
                }
            }
        }
    }
    Ok(())
}

/// The distinct chunks `manifest` references (list blocks and data).
pub async fn chunk_set(repo: &Repository, manifest: &Manifest) -> Result<HashSet<ChunkId>> {
    let mut set = HashSet::new();
    for_each_chunk(repo, manifest, |id| {
        set.insert(*id);
    })
    .await?;
    Ok(set)
}

/// A depth-first walk of one stream's list-block tree, handing out its data chunk ids in
/// stream order, one block's worth at a time.
pub struct ListWalk {
    /// Per level being read: the ids of that level still to visit.
    stack: Vec<Frame>,
    expected: u64,
    seen: u64,
    stream: String,
}

struct Frame {
    /// Level of the blocks `ids` names; 0: `ids` are data chunks.
    level: u32,
    ids: Vec<ChunkId>,
    next: usize,
}

impl ListWalk {
    pub fn new(list: &ChunkList, stream: &str) -> ListWalk {
        ListWalk {
            stack: vec![Frame { level: list.levels, ids: list.top.clone(), next: 0 }],
            expected: list.chunks,
            seen: 0,
            stream: stream.to_string(),
        }
    }

    /// The next run of data chunk ids (`None` at the end). `on_block` sees each list block
    /// id just before that block is read.
    pub async fn next_batch(
        &mut self,
        reader: &BlockReader<'_>,
        on_block: &mut impl FnMut(&ChunkId),
    ) -> Result<Option<Vec<ChunkId>>> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                if self.seen != self.expected {
                    return Err(Error::corrupt(format!(
                        "the list blocks of stream {:?} name {} chunks, its manifest says {}",
                        self.stream, self.seen, self.expected
                    )));
                }
                return Ok(None);
            };
            if frame.level == 0 {
                let ids = std::mem::take(&mut frame.ids);
                self.stack.pop();
                self.seen += ids.len() as u64;
                if self.seen > self.expected {
                    continue; // reported at the end, with the full count
                }
                return Ok(Some(ids));
            }
            let Some(&id) = frame.ids.get(frame.next) else {
                self.stack.pop();
                continue;
            };
            frame.next += 1;
            let level = frame.level;
            on_block(&id);
            let what = format!("list block {id} (level {level}) of stream {:?}", self.stream);
            let bytes = reader.read(&id, &what).await?;
            let (found, ids) = decode_block(&bytes, &what)?;
            if found != level {
                return Err(Error::corrupt(format!("{what} is a level-{found} block")));
            }
            self.stack.push(Frame { level: level - 1, ids, next: 0 });
        }
    }
}
