//! `verify --restore-test`: the recovery drill as one command. For the latest backup of each
//! group (or given backups), every file, stdin and directory stream is restored to a scratch
//! location, read back from disk and compared with what the manifest recorded (size, SHA-256,
//! BLAKE3), and the time each restore took is reported: the recovery time operators plan for.
//!
//! Guarantees: a file or stdin stream is compared as it landed on disk, read back after the
//! restore finished (not the bytes on their way). A directory stream is compared as the
//! stream it restores to (the tar stream handed to the extractor, hashed as it goes) and
//! must also extract whole. Re-reading the extracted tree would compare ownership too, and a
//! drill run as another user than the tree's owner (a Qdrant storage directory owned by uid
//! 1000) cannot restore that: it would fail a stream that restores. Every stream is tested
//! even when an earlier one fails. The scratch location is removed afterwards.
//!
//! Qdrant streams need a Qdrant node: given a [`QdrantDriller`] (`qdrant::drill`, for
//! `--qdrant URL`) they are restored into a scratch collection there and compared; without
//! one they are listed as skipped. The trait keeps this module free of the Qdrant client.

use crate::digest::StreamDigest;
use crate::error::{Error, Result};
use crate::format::manifest::{StreamKind, StreamRecord};
use crate::id::BackupId;
use crate::repo::Repository;
use crate::restore::{execute, restore_to_file, RestoreOptions, RestorePlan};
use crate::retention::GroupBy;
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct RestoreTestOptions {
    /// Backup ids, prefixes or `latest`; empty means the latest backup of each group.
    pub backups: Vec<String>,
    pub group_by: GroupBy,
    /// Where scratch copies go (a fresh directory is made inside); default: the system's
    /// temporary directory.
    pub scratch: Option<PathBuf>,
}

/// Restores Qdrant streams into a node and compares them (implemented by
/// `qdrant::drill::QdrantDrill`).
pub trait QdrantDriller {
    /// Drills one Qdrant stream of backup `id`: restored, compared, scratch removed; or why
    /// it was skipped.
    fn drill(
        &self,
        repo: &Repository,
        id: BackupId,
        stream: &StreamRecord,
    ) -> impl std::future::Future<Output = std::result::Result<StreamTest, String>> + Send;
}

/// No Qdrant node: Qdrant streams are skipped.
pub struct NoQdrant;

impl QdrantDriller for NoQdrant {
    async fn drill(
        &self,
        _: &Repository,
        _: BackupId,
        _: &StreamRecord,
    ) -> std::result::Result<StreamTest, String> {
        Err("a Qdrant stream: give `--qdrant URL` to restore it into a scratch collection there"
            .into())
    }
}

/// What the drill of a Qdrant stream compared.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct QdrantStreamTest {
    /// The node restored into, password redacted.
    pub node: String,
    /// `qvault-restore-test-<hex>`, deleted afterwards.
    pub scratch_collection: String,
    pub scratch_deleted: bool,
    /// The exact count the backup recorded, and the one after the restore.
    pub points_expected: Option<u64>,
    pub points_restored: Option<u64>,
    /// Whether the restored vectors config (dense, sparse, shard number) is the backup's.
    pub config_matches: Option<bool>,
    /// Sampled points read back and compared, and probe queries replayed.
    pub sampled_points: usize,
    pub probes: usize,
    /// What was not compared, and why (e.g. a backup that recorded no sample).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One stream's drill.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamTest {
    pub backup: BackupId,
    pub stream: String,
    pub kind: StreamKind,
    pub size: u64,
    /// Time to restore it (fetch, decrypt, decompress, write, extract).
    pub restore_ms: u64,
    /// Time to read it back and hash it.
    pub compare_ms: u64,
    pub passed: bool,
    /// What differed, or why the restore failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A Qdrant stream's comparisons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<QdrantStreamTest>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SkippedStream {
    pub backup: BackupId,
    pub stream: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreTestReport {
    pub streams: Vec<StreamTest>,
    pub skipped: Vec<SkippedStream>,
}

impl RestoreTestReport {
    pub fn is_ok(&self) -> bool {
        self.streams.iter().all(|s| s.passed)
    }
}

/// The backups to drill: the given ones, else the latest of each group.
async fn targets(repo: &Repository, options: &RestoreTestOptions) -> Result<Vec<BackupId>> {
    if !options.backups.is_empty() {
        return options.backups.iter().map(|s| repo.resolve_backup(s)).collect();
    }
    let mut latest: BTreeMap<String, (jiff::Timestamp, BackupId)> = BTreeMap::new();
    for b in crate::retention::load_backups(repo).await? {
        let key = options.group_by.key(&b);
        let newer = latest.get(&key).is_none_or(|(t, id)| (b.time, b.id) > (*t, *id));
        if newer {
            latest.insert(key, (b.time, b.id));
        }
    }
    Ok(latest.into_values().map(|(_, id)| id).collect())
}

/// The drill of file, stdin and directory streams; Qdrant streams are skipped.
pub async fn restore_test(
    repo: &Repository,
    options: &RestoreTestOptions,
) -> Result<RestoreTestReport> {
    restore_test_with(repo, options, &NoQdrant).await
}

/// The drill, Qdrant streams going to `qdrant`.
pub async fn restore_test_with(
    repo: &Repository,
    options: &RestoreTestOptions,
    qdrant: &impl QdrantDriller,
) -> Result<RestoreTestReport> {
    let ids = targets(repo, options).await?;
    let base = options.scratch.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)
        .map_err(|e| Error::io(format!("creating the scratch directory {}", base.display()), e))?;
    let scratch = base.join(format!("qvault-restore-test-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&scratch).map_err(|e| {
        Error::io(format!("creating the scratch directory {}", scratch.display()), e)
    })?;
    // The drill restores like `qvault restore`, so it holds a lease as a restore does.
    let result = crate::prune::read_leased(
        repo,
        "verify --restore-test",
        drill_all(repo, ids, &scratch, qdrant),
    )
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn drill_all(
    repo: &Repository,
    ids: Vec<BackupId>,
    scratch: &Path,
    qdrant: &impl QdrantDriller,
) -> Result<RestoreTestReport> {
    let mut report = RestoreTestReport::default();
    for (n, id) in ids.into_iter().enumerate() {
        let manifest = repo.read_manifest(id).await?;
        for (i, stream) in manifest.streams.iter().enumerate() {
            let place = scratch.join(format!("{n}-{i}"));
            match stream.kind {
                StreamKind::File | StreamKind::Stdin | StreamKind::Directory => {
                    report.streams.push(drill(repo, id, stream, &place).await);
                }
                _ => match qdrant.drill(repo, id, stream).await {
                    Ok(test) => report.streams.push(test),
                    Err(reason) => report.skipped.push(SkippedStream {
                        backup: id,
                        stream: stream.name.clone(),
                        reason,
                    }),
                },
            }
            // Scratch space is freed stream by stream: a drill needs room for one at a time.
            let _ = std::fs::remove_dir_all(&place);
            let _ = std::fs::remove_file(&place);
        }
    }
    Ok(report)
}

async fn drill(repo: &Repository, id: BackupId, stream: &StreamRecord, place: &Path) -> StreamTest {
    let mut test = StreamTest {
        backup: id,
        stream: stream.name.clone(),
        kind: stream.kind,
        size: stream.size,
        restore_ms: 0,
        compare_ms: 0,
        passed: false,
        error: None,
        qdrant: None,
    };
    let started = Instant::now();
    let restored = restore_to(repo, id, stream, place).await;
    test.restore_ms = started.elapsed().as_millis() as u64;
    let extracted = match restored {
        Err(e) => {
            test.error = Some(format!("the restore failed: {e}"));
            return test;
        }
        Ok(extracted) => extracted,
    };
    let started = Instant::now();
    let path = place.to_path_buf();
    let digest = match extracted {
        Some(digest) => Ok(digest),
        None => tokio::task::spawn_blocking(move || read_back(&path)).await.unwrap_or_else(|e| {
            Err(Error::new(crate::ErrorKind::Io, format!("hashing failed: {e}")))
        }),
    };
    test.compare_ms = started.elapsed().as_millis() as u64;
    match digest {
        Err(e) => test.error = Some(format!("reading the restored copy back failed: {e}")),
        Ok(d) => {
            let mut differ = Vec::new();
            if d.size != stream.size {
                differ.push(format!("size {} (recorded {})", d.size, stream.size));
            }
            if d.sha256 != stream.sha256 {
                differ.push(format!("SHA-256 {} (recorded {})", d.sha256, stream.sha256));
            }
            if d.blake3 != stream.blake3 {
                differ.push(format!("BLAKE3 {} (recorded {})", d.blake3, stream.blake3));
            }
            if differ.is_empty() {
                test.passed = true;
            } else {
                test.error = Some(format!("the restored copy differs: {}", differ.join(", ")));
            }
        }
    }
    test
}

/// Restores the stream to `place`; a directory stream also returns the digest of the tar
/// stream it extracted (a file is read back from disk instead).
async fn restore_to(
    repo: &Repository,
    id: BackupId,
    stream: &StreamRecord,
    place: &Path,
) -> Result<Option<StreamDigest>> {
    let plan = RestorePlan::new(repo, id, stream).await?;
    let options = RestoreOptions::default();
    if stream.kind == StreamKind::Directory {
        let extractor = Hashing::new(crate::dirtar::DirExtractor::new(place)?);
        let (extractor, _) = execute(repo, &plan, extractor, &options).await?;
        let (extractor, digest) = extractor.finish();
        extractor.finish()?;
        Ok(Some(digest))
    } else {
        restore_to_file(repo, &plan, place, false, &options).await?;
        Ok(None)
    }
}

/// Size, SHA-256 and BLAKE3 of what passes through.
struct Hashing<W> {
    inner: W,
    sha: sha2::Sha256,
    b3: blake3::Hasher,
    size: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing { inner, sha: sha2::Sha256::new(), b3: blake3::Hasher::new(), size: 0 }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.b3.update(bytes);
        self.size += bytes.len() as u64;
    }

    fn finish(self) -> (W, StreamDigest) {
        let digest = StreamDigest {
            size: self.size,
            sha256: hex::encode(self.sha.finalize()),
            blake3: self.b3.finalize().to_hex().to_string(),
        };
        (self.inner, digest)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Size, SHA-256 and BLAKE3 of a restored file, read back from disk.
fn read_back(path: &Path) -> Result<StreamDigest> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hashing = Hashing::new(());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n =
            file.read(&mut buf).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hashing.update(&buf[..n]);
    }
    Ok(hashing.finish().1)
}
