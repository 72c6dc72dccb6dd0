//! Verify: is every backup restorable from what the repository holds?
//!
//! ```text
//! inventory: packs in storage (data/) ⟷ packs in index files
//!   → every chunk of every manifest is in an index file, and its pack is in storage
//!   → every stored pack: whole object matches its id, its header (metadata identity)
//!     lists exactly what its index file says
//!   → with --read-data: every blob decrypts, decompresses and matches its chunk id
//! ```
//!
//! Problems are collected, not fatal: one damaged pack must not hide the next. Packs that
//! no index file lists are not problems: an interrupted backup leaves them (or a running
//! one has not indexed them yet); `index rebuild --read-packs` indexes them.

use crate::codec;
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexedPack};
use crate::format::pack::{self, PackData, PackEntry};
use crate::id::{BackupId, PackId};
use crate::repo::Repository;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Decrypt every blob and check every chunk id (needs a data identity).
    pub read_data: bool,
    /// Packs read at once.
    pub concurrency: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { read_data: false, concurrency: 4 }
    }
}

/// One thing that is wrong, named so the user can find it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `pack <id>`, `backup <id>`, …
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub backups: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Blobs decrypted and checked (`read_data` only).
    pub chunks_read: u64,
    /// Stored packs no index file lists.
    pub unindexed_packs: Vec<PackId>,
    /// Backups that cannot be restored whole, with why.
    pub damaged_backups: BTreeMap<BackupId, String>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Pack id → object size, from listing `data/`.
async fn stored_packs(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    Ok(repo.list_objects("data/").await?.into_iter().map(|(id, size)| (PackId(id), size)).collect())
}

/// What storage holds against what the index files say.
pub struct Inventory {
    /// Pack id → object size, from listing `data/`.
    pub stored: HashMap<PackId, u64>,
    /// Pack id → its entries, from the index files.
    pub indexed: HashMap<PackId, Vec<PackEntry>>,
}

impl Inventory {
    pub async fn read(repo: &Repository) -> Result<Inventory> {
        let stored = stored_packs(repo).await?;
        let mut indexed = HashMap::new();
        for id in repo.index().index_files()? {
            for p in repo.read_index_file(id).await?.packs {
                indexed.entry(p.pack).or_insert(p.entries);
            }
        }
        Ok(Inventory { stored, indexed })
    }

    /// Stored packs no index file lists, in a stable order.
    pub fn unindexed(&self) -> Vec<PackId> {
        let mut out: Vec<PackId> =
            self.stored.keys().filter(|p| !self.indexed.contains_key(p)).copied().collect();
        out.sort();
        out
    }
}

pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    // Asked for up front: a missing identity fails before any pack is read.
    let data = if options.read_data {
        repo.data_identities("verify --read-data")?.to_vec()
    } else {
        vec![]
    };
    let inventory = Inventory::read(repo).await?;
    let mut report = VerifyReport { unindexed_packs: inventory.unindexed(), ..Default::default() };
    for pack in inventory.indexed.keys() {
        if !inventory.stored.contains_key(pack) {
            report.problems.push(Problem {
                object: format!("pack {pack}"),
                message: "listed in an index file but missing from storage".into(),
            });
        }
    }
    check_manifests(repo, &inventory, &mut report).await?;

    let packs: Vec<(PackId, Vec<PackEntry>)> =
        inventory.indexed.into_iter().filter(|(p, _)| inventory.stored.contains_key(p)).collect();
    let context = Arc::new(PackCheck {
        metadata: repo.key().metadata_identity().clone(),
        data,
        key: repo.key().clone(),
    });
    let mut checked = stream::iter(packs)
        .map(|(pack, entries)| {
            let context = context.clone();
            async move {
                let bytes = match repo.read_pack(pack).await {
                    Ok(b) => b,
                    Err(e) => return (pack, 0, Err(e)),
                };
                let size = bytes.len() as u64;
                let result =
                    tokio::task::spawn_blocking(move || context.check(pack, &bytes, &entries))
                        .await
                        .unwrap_or_else(|e| {
                            Err(Error::corrupt(format!("checking pack {pack} failed: {e}")))
                        });
                (pack, size, result)
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    while let Some((pack, size, result)) = checked.next().await {
        report.packs += 1;
        report.pack_bytes += size;
        match result {
            Ok(chunks) => report.chunks_read += chunks,
            Err(e) => report
                .problems
                .push(Problem { object: format!("pack {pack}"), message: e.to_string() }),
        }
    }
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}

/// Every chunk of every backup must be in an index file whose pack is stored.
async fn check_manifests(
    repo: &Repository,
    inventory: &Inventory,
    report: &mut VerifyReport,
) -> Result<()> {
    for listing in repo.backups()? {
        report.backups += 1;
        let manifest = repo.read_manifest(listing.id).await?;
        let (mut unknown, mut missing) = (0u64, 0u64);
        for stream in &manifest.streams {
            for chunk in &stream.chunks {
                match repo.index().locate(chunk)? {
                    None => unknown += 1,
                    Some(l) if !inventory.stored.contains_key(&l.pack) => missing += 1,
                    Some(_) => {}
                }
            }
        }
        if unknown + missing > 0 {
            let why = match (unknown, missing) {
                (0, m) => format!("{m} of its chunks are in packs missing from storage"),
                (u, 0) => format!(
                    "{u} of its chunks are in no index file (`qvault index rebuild --read-packs` \
                     may find them)"
                ),
                (u, m) => format!(
                    "{u} of its chunks are in no index file and {m} in packs missing from storage"
                ),
            };
            report
                .problems
                .push(Problem { object: format!("backup {}", listing.id), message: why.clone() });
            report.damaged_backups.insert(listing.id, why);
        }
    }
    Ok(())
}

struct PackCheck {
    metadata: age::x25519::Identity,
    data: Vec<age::x25519::Identity>,
    key: crate::crypto::RepositoryKey,
}

impl PackCheck {
    /// Header against index entries; with data identities, every blob. Returns the number
    /// of blobs read.
    fn check(&self, pack: PackId, bytes: &[u8], entries: &[PackEntry]) -> Result<u64> {
        let what = format!("pack {pack}");
        let header = pack::read_header(bytes, &self.metadata, &what)?;
        if header.entries != entries {
            return Err(Error::corrupt(format!(
                "its header lists {} entries that differ from the {} its index file lists",
                header.entries.len(),
                entries.len()
            )));
        }
        if self.data.is_empty() {
            return Ok(0);
        }
        let refs: Vec<&dyn age::Identity> =
            self.data.iter().map(|i| i as &dyn age::Identity).collect();
        let data = &bytes[..header.data_len as usize];
        let mut reader = PackData::open(std::io::Cursor::new(data), &refs, &what)?;
        let mut decoder = codec::Decoder::new()?;
        let mut sorted = header.entries;
        sorted.sort_by_key(|e| e.offset);
        for entry in &sorted {
            crate::restore::read_chunk(&mut reader, &mut decoder, &self.key, entry)
                .map_err(|e| e.context(format!("chunk {}", entry.chunk)))?;
        }
        Ok(sorted.len() as u64)
    }
}

/// Writes one index file listing every stored pack that no index file lists (read from the
/// packs' own headers), so their chunks are deduplicated against and restorable again.
/// Returns the packs indexed.
pub async fn index_unindexed_packs(repo: &Repository) -> Result<Vec<PackId>> {
    // The synced local index knows which packs are listed: no index file is read again.
    let listed = repo.index().pack_ids()?;
    let mut unindexed: Vec<PackId> =
        stored_packs(repo).await?.into_keys().filter(|p| !listed.contains(p)).collect();
    unindexed.sort();
    let mut packs = Vec::new();
    for pack in unindexed {
        let bytes = repo.read_pack(pack).await?;
        let metadata = repo.key().metadata_identity().clone();
        let header = tokio::task::spawn_blocking(move || {
            pack::read_header(&bytes, &metadata, &format!("pack {pack}"))
        })
        .await
        .map_err(|e| Error::corrupt(format!("reading the header of pack {pack} failed: {e}")))??;
        packs.push(IndexedPack { pack, entries: header.entries });
    }
    let ids: Vec<PackId> = packs.iter().map(|p| p.pack).collect();
    if !packs.is_empty() {
        repo.write_index_file(&IndexFile { packs }).await?;
    }
    Ok(ids)
}
