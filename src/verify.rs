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
//! Problems are collected, not fatal: one damaged pack must not hide the next. Every problem
//! names the object, and every backup it keeps from restoring whole is named too: index
//! files and manifests the sync at open skipped as damaged, packs missing from storage or
//! failing their checks. Missing and damaged packs are recorded in the local index as bad,
//! so the next backup stores their chunks again instead of deduplicating against them.
//! Packs that no index file lists are not problems: an interrupted backup leaves them (or a
//! running one has not indexed them yet); the next backup indexes them.

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::format::pack::{self, PackData, PackEntry};
use crate::id::{BackupId, PackId};
use crate::repo::Repository;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// What storage holds against what the index files say.
pub struct Inventory {
    /// Pack id → object size, from listing `data/`.
    pub stored: HashMap<PackId, u64>,
    /// Pack id → its entries, from the index files.
    pub indexed: HashMap<PackId, Vec<PackEntry>>,
}

impl Inventory {
    pub async fn read(repo: &Repository) -> Result<Inventory> {
        let stored = crate::index::sync::stored_packs(repo).await?;
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
        let mut identities = repo.data_identities("verify --read-data")?.to_vec();
        // List-block packs (version 2) are sealed to the metadata key.
        identities.push(repo.key().metadata_identity().clone());
        identities
    } else {
        vec![]
    };
    let inventory = Inventory::read(repo).await?;
    let mut report = VerifyReport { unindexed_packs: inventory.unindexed(), ..Default::default() };
    for damaged in repo.damaged_objects() {
        report
            .problems
            .push(Problem { object: damaged.path.clone(), message: damaged.reason.clone() });
        if let Some(id) = damaged.path.strip_prefix("backups/") {
            if let Ok(id) = id.parse::<BackupId>() {
                report.backups += 1;
                report
                    .damaged_backups
                    .insert(id, format!("its manifest is damaged: {}", damaged.reason));
            }
        }
    }
    let mut bad: HashSet<PackId> = HashSet::new();
    for pack in inventory.indexed.keys() {
        if !inventory.stored.contains_key(pack) {
            bad.insert(*pack);
            report.problems.push(Problem {
                object: format!("pack {pack}"),
                message: "listed in an index file but missing from storage".into(),
            });
        }
    }

    let stored = inventory.stored;
    let packs: Vec<(PackId, Vec<PackEntry>)> =
        inventory.indexed.into_iter().filter(|(p, _)| stored.contains_key(p)).collect();
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
            // Only damage marks a pack bad: a read that failed for another reason (the
            // network) says nothing about the pack.
            Err(e) => {
                if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound {
                    bad.insert(pack);
                }
                report
                    .problems
                    .push(Problem { object: format!("pack {pack}"), message: e.to_string() })
            }
        }
    }
    check_manifests(repo, &stored, &bad, &mut report).await?;
    repo.index().set_bad_packs(&bad)?;
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}

/// Every chunk of every backup must be in an index file whose pack is stored and intact.
async fn check_manifests(
    repo: &Repository,
    stored: &HashMap<PackId, u64>,
    bad: &HashSet<PackId>,
    report: &mut VerifyReport,
) -> Result<()> {
    // Restore takes a chunk's copy in a good pack when there is one.
    repo.index().set_bad_packs(bad)?;
    for listing in repo.backups()? {
        report.backups += 1;
        let manifest = match repo.read_manifest(listing.id).await {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound => {
                let why = format!("its manifest cannot be read: {e}");
                report.problems.push(Problem {
                    object: format!("backup {}", listing.id),
                    message: why.clone(),
                });
                report.damaged_backups.insert(listing.id, why);
                continue;
            }
            Err(e) => return Err(e),
        };
        let (mut unknown, mut missing, mut damaged) = (0u64, 0u64, 0u64);
        // Every reference, list blocks (version 2) included: `refs` is the one answer.
        let mut lookup = Ok(());
        let walked = crate::refs::for_each_chunk(repo, &manifest, |chunk| {
            match repo.index().locate(chunk) {
                Ok(None) => unknown += 1,
                Ok(Some(l)) if bad.contains(&l.pack) && stored.contains_key(&l.pack) => {
                    damaged += 1
                }
                Ok(Some(l)) if bad.contains(&l.pack) => missing += 1,
                Ok(Some(_)) => {}
                Err(e) => lookup = Err(e),
            }
        })
        .await;
        lookup?;
        if let Err(e) = walked {
            // A list block that cannot be read: the chunks below it are unknown.
            if e.kind() != ErrorKind::Corrupt && e.kind() != ErrorKind::NotFound {
                return Err(e);
            }
            let why = format!("its chunk list cannot be read: {e}");
            report
                .problems
                .push(Problem { object: format!("backup {}", listing.id), message: why.clone() });
            report.damaged_backups.insert(listing.id, why);
            continue;
        }
        let counts: Vec<(u64, &str)> = [
            (unknown, "in no index file"),
            (missing, "in packs missing from storage"),
            (damaged, "in damaged packs"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
        if !counts.is_empty() {
            let why = match counts.as_slice() {
                [(n, what)] => format!("{n} of its chunks are {what}"),
                many => {
                    let parts: Vec<String> =
                        many.iter().map(|(n, what)| format!("{n} are {what}")).collect();
                    format!("of its chunks, {}", parts.join(", "))
                }
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
