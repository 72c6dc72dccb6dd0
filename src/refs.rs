//! What a backup references: every chunk a restore of any of its streams reads. Prune keeps
//! exactly these (and the packs holding them), copy transfers exactly these.
//!
//! This is the one place that knows how a manifest names its chunks. In format version 1 a
//! stream lists its chunk ids inline; a format that stores the list itself as chunks adds
//! those here, and every caller (prune, copy, verify) follows without change.

use crate::error::Result;
use crate::format::manifest::Manifest;
use crate::id::ChunkId;
use crate::repo::Repository;
use std::collections::HashSet;

/// Calls `visit` once per chunk reference of `manifest` (repeats included), in stream order.
/// Needs only the repository key: chunk lists are metadata.
pub async fn for_each_chunk(
    _repo: &Repository,
    manifest: &Manifest,
    mut visit: impl FnMut(&ChunkId),
) -> Result<()> {
    for stream in &manifest.streams {
        stream.chunks.iter().for_each(&mut visit);
    }
    Ok(())
}

/// The distinct chunks `manifest` references.
pub async fn chunk_set(repo: &Repository, manifest: &Manifest) -> Result<HashSet<ChunkId>> {
    let mut set = HashSet::new();
    for_each_chunk(repo, manifest, |id| {
        set.insert(*id);
    })
    .await?;
    Ok(set)
}
