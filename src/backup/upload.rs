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
pub(super) async fn upload_packs(
    repo: &Repository,
    mut packs: tokio::sync::mpsc::Receiver<SealedPack>,
    concurrency: usize,
    progress: &Progress,
) -> Result<u64> {
    let mut in_flight = FuturesUnordered::new();
    let mut indexed: Vec<IndexedPack> = Vec::new();
    let mut bytes_added = 0u64;
    let mut open = true;
    let mut abort = test_hook::AbortAfterPacks::from_env();
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
                abort.pack_uploaded();
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

/// Lets the kill tests stop a backup at a deterministic point: with
/// `QVAULT_TEST_ABORT_AFTER_PACKS=N` (debug builds only) the process aborts, as a `kill -9`
/// would, right after its Nth pack upload finished and before any index file names it.
mod test_hook {
    #[cfg(debug_assertions)]
    pub(super) struct AbortAfterPacks(Option<u64>);

    #[cfg(debug_assertions)]
    impl AbortAfterPacks {
        pub(super) fn from_env() -> Self {
            Self(std::env::var("QVAULT_TEST_ABORT_AFTER_PACKS").ok().and_then(|v| v.parse().ok()))
        }
        pub(super) fn pack_uploaded(&mut self) {
            if let Some(n) = self.0.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    std::process::abort();
                }
            }
        }
    }

    #[cfg(not(debug_assertions))]
    pub(super) struct AbortAfterPacks;

    #[cfg(not(debug_assertions))]
    impl AbortAfterPacks {
        pub(super) fn from_env() -> Self {
            Self
        }
        pub(super) fn pack_uploaded(&mut self) {}
    }
}
