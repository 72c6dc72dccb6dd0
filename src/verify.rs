//! Verify: is every backup restorable from what the repository holds?
//!
//! ```text
//! inventory: packs in storage (data/) ⟷ packs in index files
//!   → every chunk of every manifest is in an index file, and its pack is in storage
//!   → every stored pack: whole object matches its id, its header (metadata identity)
//!     lists exactly what its index file says
//!   → with --read-data: every blob decrypts, decompresses and matches its chunk id
//!     (with --read-data-subset: only the blobs of the packs a [`DataSubset`] picks)
//! ```
//!
//! Problems are collected, not fatal: one damaged pack must not hide the next. Every problem
//! names the object and the backups it affects, and every backup it keeps from restoring
//! whole is named too: index
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
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Decrypt every blob and check every chunk id (needs a data identity).
    pub read_data: bool,
    /// Decrypt and check the blobs of these packs only (needs a data identity); ignored when
    /// `read_data` is set.
    pub read_data_subset: Option<DataSubset>,
    /// Packs read at once.
    pub concurrency: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { read_data: false, read_data_subset: None, concurrency: 4 }
    }
}

/// Which packs a tiered verify decrypts, with restic's `--read-data-subset` semantics.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSubset {
    /// `N/T`: part `n` (1-based) of `t`, the packs whose id (its first 8 bytes, big-endian)
    /// is `n - 1` modulo `t`. The same part picks the same packs every run, and the runs
    /// `1/T` … `T/T` together read every pack exactly once (e.g. `$(date +%u)/7` nightly).
    Part { n: u64, t: u64 },
    /// `X%`: this percentage of the packs (rounded up), picked at random each run.
    Percent(f64),
    /// `SIZE` (`500M`, `2G`, `1.5GiB`, binary units): random packs until at least this many
    /// bytes are read, or every pack is.
    Bytes(u64),
}

impl std::str::FromStr for DataSubset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_input(format!(
                "--read-data-subset {s:?}: {why}; give N/T (part N of T, e.g. 2/7), a \
                 percentage (10%) or a size (500M, 2G)"
            ))
        };
        let s = s.trim();
        if let Some((n, t)) = s.split_once('/') {
            let (n, t) = match (n.trim().parse::<u64>(), t.trim().parse::<u64>()) {
                (Ok(n), Ok(t)) => (n, t),
                _ => return Err(bad("N and T must be whole numbers")),
            };
            if t == 0 || n == 0 || n > t {
                return Err(bad("N must be between 1 and T"));
            }
            return Ok(DataSubset::Part { n, t });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(DataSubset::Percent(p));
        }
        let digits = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad("not a number"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit.trim_end_matches("ib").trim_end_matches('b');
        let scale: u64 = match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            "t" => 1 << 40,
            _ => return Err(bad("unknown size unit")),
        };
        let bytes = (number * scale as f64).ceil() as u64;
        if bytes == 0 {
            return Err(bad("the size must be above 0"));
        }
        Ok(DataSubset::Bytes(bytes))
    }
}

impl std::fmt::Display for DataSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSubset::Part { n, t } => write!(f, "{n}/{t}"),
            DataSubset::Percent(p) => write!(f, "{p}%"),
            DataSubset::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

impl DataSubset {
    /// The packs (id, stored size) this subset picks.
    pub fn select(&self, packs: &[(PackId, u64)]) -> HashSet<PackId> {
        match *self {
            DataSubset::Part { n, t } => packs
                .iter()
                .filter(|(id, _)| Self::part_of(id, t) == n - 1)
                .map(|(id, _)| *id)
                .collect(),
            DataSubset::Percent(p) => {
                let count = ((packs.len() as f64) * p / 100.0).ceil() as usize;
                let mut shuffled: Vec<PackId> = packs.iter().map(|(id, _)| *id).collect();
                shuffled.shuffle(&mut rand::thread_rng());
                shuffled.into_iter().take(count).collect()
            }
            DataSubset::Bytes(budget) => {
                let mut shuffled = packs.to_vec();
                shuffled.shuffle(&mut rand::thread_rng());
                let mut total = 0u64;
                let mut out = HashSet::new();
                for (id, size) in shuffled {
                    if total >= budget {
                        break;
                    }
                    total += size;
                    out.insert(id);
                }
                out
            }
        }
    }

    /// The part (0-based, of `t`) a pack belongs to.
    pub fn part_of(id: &PackId, t: u64) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&id.0[..8]);
        u64::from_be_bytes(first) % t
    }
}

/// One thing that is wrong, named so the user can find it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `pack <id>`, `backup <id>`, …
    pub object: String,
    pub message: String,
    /// The backups this problem keeps from restoring whole (for a pack: those with chunks
    /// in it that no good pack also holds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupId>,
}

impl Problem {
    fn new(object: String, message: String) -> Problem {
        Problem { object, message, backups: Vec::new() }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub backups: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Blobs decrypted and checked (`read_data` or a subset only).
    pub chunks_read: u64,
    /// The subset asked for, and the packs whose data it decrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_subset: Option<String>,
    pub data_packs: u64,
    pub data_bytes: u64,
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

/// Runs the checks; one that decrypts data (`read_data`, a subset) holds a lease while it
/// runs, so a prune on another host does not delete packs it is about to read
/// ([`crate::prune::read_leased`]).
pub async fn verify(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    if options.read_data || options.read_data_subset.is_some() {
        return crate::prune::read_leased(repo, "verify", verify_now(repo, options)).await;
    }
    verify_now(repo, options).await
}

async fn verify_now(repo: &Repository, options: &VerifyOptions) -> Result<VerifyReport> {
    // Asked for up front: a missing identity fails before any pack is read.
    let subset = options.read_data_subset.as_ref().filter(|_| !options.read_data);
    let data = if options.read_data {
        let mut identities = repo.data_identities("verify --read-data")?.to_vec();
        // List-block packs (version 2) are sealed to the metadata key.
        identities.push(repo.key().metadata_identity().clone());
        identities
    } else if subset.is_some() {
        let mut identities = repo.data_identities("verify --read-data-subset")?.to_vec();
        identities.push(repo.key().metadata_identity().clone());
        identities
    } else {
        vec![]
    };
    let inventory = Inventory::read(repo).await?;
    let mut report = VerifyReport {
        unindexed_packs: inventory.unindexed(),
        data_subset: subset.map(|s| s.to_string()),
        ..Default::default()
    };
    for damaged in repo.damaged_objects() {
        report.problems.push(Problem::new(damaged.path.clone(), damaged.reason.clone()));
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
            report.problems.push(Problem::new(
                format!("pack {pack}"),
                "listed in an index file but missing from storage".into(),
            ));
        }
    }

    let stored = inventory.stored;
    let packs: Vec<(PackId, Vec<PackEntry>)> =
        inventory.indexed.into_iter().filter(|(p, _)| stored.contains_key(p)).collect();
    // None: every pack's data (or none, without identities); Some: only these packs'.
    let picked: Option<HashSet<PackId>> = subset.map(|s| {
        let sized: Vec<(PackId, u64)> =
            packs.iter().map(|(p, _)| (*p, stored.get(p).copied().unwrap_or(0))).collect();
        s.select(&sized)
    });
    let context = Arc::new(PackCheck {
        metadata: repo.key().metadata_identity().clone(),
        data,
        key: repo.key().clone(),
    });
    let mut checked = stream::iter(packs)
        .map(|(pack, entries)| {
            let context = context.clone();
            let read_data = picked.as_ref().is_none_or(|p| p.contains(&pack));
            async move {
                let bytes = match repo.read_pack(pack).await {
                    Ok(b) => b,
                    Err(e) => return (pack, 0, Err(e)),
                };
                let size = bytes.len() as u64;
                let result = tokio::task::spawn_blocking(move || {
                    context.check(pack, &bytes, &entries, read_data)
                })
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
            Ok(chunks) => {
                report.chunks_read += chunks;
                if chunks > 0 {
                    report.data_packs += 1;
                    report.data_bytes += size;
                }
            }
            // Only damage marks a pack bad: a read that failed for another reason (the
            // network) says nothing about the pack.
            Err(e) => {
                if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound {
                    bad.insert(pack);
                }
                report.problems.push(Problem::new(format!("pack {pack}"), e.to_string()))
            }
        }
    }
    let affected = check_manifests(repo, &stored, &bad, &mut report).await?;
    for problem in &mut report.problems {
        let pack = problem.object.strip_prefix("pack ").and_then(|p| p.parse::<PackId>().ok());
        if let Some(backups) = pack.and_then(|p| affected.get(&p)) {
            problem.backups = backups.iter().copied().collect();
        } else if let Some(id) = problem
            .object
            .strip_prefix("backup ")
            .or_else(|| problem.object.strip_prefix("backups/"))
            .and_then(|id| id.parse::<BackupId>().ok())
        {
            problem.backups = vec![id];
        }
    }
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}

/// Every chunk of every backup must be in an index file whose pack is stored and intact.
/// Returns, per bad pack, the backups it keeps from restoring whole.
async fn check_manifests(
    repo: &Repository,
    stored: &HashMap<PackId, u64>,
    bad: &HashSet<PackId>,
    report: &mut VerifyReport,
) -> Result<HashMap<PackId, std::collections::BTreeSet<BackupId>>> {
    let mut affected: HashMap<PackId, std::collections::BTreeSet<BackupId>> = HashMap::new();
    // Restore takes a chunk's copy in a good pack when there is one.
    repo.index().set_bad_packs(bad)?;
    for listing in repo.backups()? {
        report.backups += 1;
        let manifest = match repo.read_manifest(listing.id).await {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound => {
                let why = format!("its manifest cannot be read: {e}");
                report.problems.push(Problem::new(format!("backup {}", listing.id), why.clone()));
                report.damaged_backups.insert(listing.id, why);
                continue;
            }
            Err(e) => return Err(e),
        };
        let (mut unknown, mut missing, mut damaged) = (0u64, 0u64, 0u64);
        // Every reference, list blocks (version 2) included: `refs` is the one answer.
        let mut lookup = Ok(());
        let walked = crate::refs::for_each_chunk(repo, &manifest, |chunk| {
            let location = match repo.index().locate(chunk) {
                Ok(l) => l,
                Err(e) => {
                    lookup = Err(e);
                    return;
                }
            };
            match location {
                None => unknown += 1,
                Some(l) if bad.contains(&l.pack) => {
                    affected.entry(l.pack).or_default().insert(listing.id);
                    if stored.contains_key(&l.pack) {
                        damaged += 1
                    } else {
                        missing += 1
                    }
                }
                Some(_) => {}
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
            report.problems.push(Problem::new(format!("backup {}", listing.id), why.clone()));
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
            report.problems.push(Problem::new(format!("backup {}", listing.id), why.clone()));
            report.damaged_backups.insert(listing.id, why);
        }
    }
    Ok(affected)
}

struct PackCheck {
    metadata: age::x25519::Identity,
    data: Vec<age::x25519::Identity>,
    key: crate::crypto::RepositoryKey,
}

impl PackCheck {
    /// Header against index entries; with data identities, every blob. Returns the number
    /// of blobs read.
    fn check(&self, pack: PackId, bytes: &[u8], entries: &[PackEntry], data: bool) -> Result<u64> {
        let what = format!("pack {pack}");
        let header = pack::read_header(bytes, &self.metadata, &what)?;
        if header.entries != entries {
            return Err(Error::corrupt(format!(
                "its header lists {} entries that differ from the {} its index file lists",
                header.entries.len(),
                entries.len()
            )));
        }
        if self.data.is_empty() || !data {
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
