//! Sealed packs to storage, with an index file every [`PACKS_PER_INDEX_FILE`] packs.
//!
//! Guarantees: an index file names only packs whose upload finished, so a pack is always in
//! storage before any index file mentions it; every uploaded pack is in some index file
//! once this returns Ok. Uploads run with bounded concurrency; the bytes they add are
//! counted into [`Progress`] as each finishes.

use super::Progress;
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::SealedPack;
use crate::repo::Repository;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::Ordering;

/// Packs per index file: bounds what an interrupted backup leaves unindexed.
const PACKS_PER_INDEX_FILE: usize = 16;

/// Uploads packs with bounded concurrency and writes an index file every few packs (only
/// for packs whose upload finished). Returns the bytes added to the repository.
pub(crate) async fn upload_packs(
    repo: &Repository,
    mut packs: tokio::sync::mpsc::Receiver<SealedPack>,
    concurrency: usize,
    progress: &Progress,
) -> Result<u64> {
    let mut in_flight = FuturesUnordered::new();
    let mut indexed: Vec<IndexedPack> = Vec::new();
    let mut bytes_added = 0u64;
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            next = packs.recv(), if open && in_flight.len() < concurrency => match next {
                Some(pack) => in_flight.push(async move {
                    let size = pack.bytes.len() as u64;
                    repo.write_pack(pack.id, Bytes::from(pack.bytes)).await?;
                    Ok::<_, Error>((IndexedPack { pack: pack.id, entries: pack.header.entries }, size))
                }),
                None => open = false,
            },
            Some(done) = in_flight.next() => {
                let (pack, size) = done?;
                bytes_added += size;
                progress.bytes_added.fetch_add(size, Ordering::Relaxed);
                indexed.push(pack);
                if indexed.len() >= PACKS_PER_INDEX_FILE {
                    let file = IndexFile { packs: std::mem::take(&mut indexed) };
                    bytes_added += repo.write_index_file(&file).await?.1;
                }
            }
        }
    }
    if !indexed.is_empty() {
        bytes_added += repo.write_index_file(&IndexFile { packs: indexed }).await?.1;
    }
    Ok(bytes_added)
}
