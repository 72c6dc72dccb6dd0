//! Scale: what backups of an N GB stream cost as N grows, and what an unchanged or slightly
//! changed backup costs — the numbers behind docs/benchmarks.md "Scale".
//!
//! ```text
//! cargo run --release --example scale -- [--sizes-mb 1024,4096] [--dir /tmp] [--seed 1]
//! ```
//!
//! Per size: a fresh repository (version 2, on disk under `--dir`); the synthetic Qdrant
//! snapshot generator (`qvault_synth`) streams version 0 straight into a backup through a
//! pipe (no file), then the same version again (unchanged), then version 1 (1% of points
//! changed); the unchanged backup is restored into a sink (restore checks every chunk and
//! the whole-stream hashes itself). Reported: throughput, peak RSS (VmHWM, reset before
//! each step), the manifest's stored bytes, what the backup added, the index files' and the
//! local index's bytes, and what the same manifest would take in format version 1 (its
//! chunk ids inline: the v1 plaintext plus the same age overhead).
//!
//! Memory is measured as the `qvault` binary runs: glibc's allocator tuned the same way
//! (`qvault::alloc`), each size in a process of its own, and the restore in a process that
//! only restores (its peak is what `qvault restore` of that backup holds, not what the
//! backups before it left in the heap).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bench/procfs.rs"]
mod procfs;
use procfs::{dir_size, peak_rss, reset_peak_rss};

use qvault::backup::{BackupSummary, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::Storage;
use qvault_synth::{Series, SeriesOptions};
use std::path::Path;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The generator's side of an in-memory pipe: 1 MiB buffers over a bounded channel.
struct PipeWriter {
    buf: Vec<u8>,
    tx: crossbeam_channel::Sender<Vec<u8>>,
}

impl std::io::Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 20));
            self.tx.send(full).map_err(|_| std::io::Error::other("backup stopped reading"))?;
        }
        Ok(())
    }
}

/// The backup's side: reads the buffers in order; end of stream when the writer is gone.
struct PipeReader {
    current: std::io::Cursor<Vec<u8>>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
}

impl std::io::Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(next) => self.current = std::io::Cursor::new(next),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// Backs up version `v` of `series`, generated on a thread into an in-memory pipe.
async fn backup_version(
    repo: &Repository,
    series: &Series,
    v: u32,
) -> Result<BackupSummary, BoxError> {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let reader = PipeReader { current: std::io::Cursor::new(Vec::new()), rx };
    let series = Series::new(series.options().clone());
    let producer = std::thread::spawn(move || {
        let mut writer = PipeWriter { buf: Vec::with_capacity(1 << 20), tx };
        let n = series.write_version(v, &mut writer)?;
        std::io::Write::flush(&mut writer)?;
        Ok::<_, std::io::Error>(n)
    });
    let source = StreamSource {
        name: "collection".to_string(),
        kind: StreamKind::QdrantCollection,
        reader: Box::new(reader),
        source: None,
        expected_sha256: None,
    };
    let summary =
        qvault::backup::backup(repo, vec![source], &Default::default(), Default::default()).await?;
    producer.join().map_err(|_| "synth producer panicked")??;
    Ok(summary)
}

struct Step {
    name: &'static str,
    bytes: u64,
    seconds: f64,
    peak_rss: u64,
}

impl Step {
    fn print(&self) {
        println!(
            "  {:<18} {:>9.1} MiB {:>7.1} s {:>8.1} MiB/s  peak RSS {:>7.1} MiB",
            self.name,
            mib(self.bytes),
            self.seconds,
            mib(self.bytes) / self.seconds.max(1e-9),
            mib(self.peak_rss)
        );
    }
}

async fn timed_backup(
    name: &'static str,
    repo: &Repository,
    series: &Series,
    v: u32,
) -> Result<(Step, BackupSummary), BoxError> {
    reset_peak_rss();
    let started = Instant::now();
    let summary = backup_version(repo, series, v).await?;
    let step = Step {
        name,
        bytes: summary.manifest.summary.bytes_read,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss: peak_rss(),
    };
    step.print();
    Ok((step, summary))
}

/// Stored bytes of the backup's manifest, and what version 1 would have stored.
async fn manifest_bytes(
    repo: &Repository,
    dir: &Path,
    summary: &BackupSummary,
) -> Result<(u64, u64), BoxError> {
    let stored = std::fs::metadata(dir.join("backups").join(summary.id.to_hex()))?.len();
    let v2_plain = summary.manifest.encode()?.len() as u64;
    let mut v1 = summary.manifest.clone();
    for stream in &mut v1.streams {
        let mut ids = Vec::new();
        let single = qvault::format::manifest::Manifest {
            streams: vec![stream.clone()],
            ..summary.manifest.clone()
        };
        qvault::refs::for_each_reference(repo, &single, |id, kind| {
            if kind == qvault::refs::RefKind::Data {
                ids.push(*id);
            }
        })
        .await?;
        stream.chunks = ids;
        stream.list = None;
    }
    let v1_plain = v1.encode()?.len() as u64;
    Ok((stored, v1_plain + stored - v2_plain))
}

/// Restores the first stream of `backup` into a sink in a child process (see the module
/// docs) and returns its step.
fn restore_in_child(tmp: &Path, backup: qvault::BackupId) -> Result<Step, BoxError> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--restore-child".as_ref(), tmp.as_os_str(), backup.to_hex().as_ref()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("the restore child failed: {}", out.status).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |k: &str| v[k].as_f64().ok_or(format!("restore child: no {k}"));
    Ok(Step {
        name: "restore (to sink)",
        bytes: field("bytes")? as u64,
        seconds: field("seconds")?,
        peak_rss: field("peak_rss")? as u64,
    })
}

/// The child's side of [`restore_in_child`]: prints its step as JSON.
async fn restore_child(tmp: &Path, backup: &str) -> Result<(), BoxError> {
    let identity: age::x25519::Identity =
        std::fs::read_to_string(tmp.join("identity.txt"))?.trim().parse()?;
    let storage = Storage::open(tmp.join("repo").to_str().ok_or("path")?, &Default::default())?;
    let credentials = Credentials { identities: vec![identity], key: None };
    let repo = Repository::open(storage, credentials, &Cache::Dir(tmp.join("cache"))).await?;
    let id = qvault::BackupId::from_hex(backup)?;
    let manifest = repo.read_manifest(id).await?;
    reset_peak_rss();
    let started = Instant::now();
    let (_, restored) = qvault::restore::restore_stream(
        &repo,
        id,
        &manifest.streams[0],
        std::io::sink(),
        &Default::default(),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"bytes": restored.bytes, "seconds": seconds, "peak_rss": peak_rss()})
    );
    Ok(())
}

async fn run_size(base: &Path, size_mb: u64, seed: u64) -> Result<serde_json::Value, BoxError> {
    let tmp = tempfile::tempdir_in(base)?;
    let repo_dir = tmp.path().join("repo");
    let identity = age::x25519::Identity::generate();
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(tmp.path().join("identity.txt"), identity.to_string().expose_secret())?;
    }
    let storage = Storage::open(repo_dir.to_str().ok_or("path")?, &Default::default())?;
    storage.create_root().await?;
    let cache = Cache::Dir(tmp.path().join("cache"));
    let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    Repository::init(storage.clone(), options, &cache).await?;
    let credentials = Credentials { identities: vec![identity], key: None };
    let repo = Repository::open(storage, credentials, &cache).await?;
    let series = Series::new(SeriesOptions::for_size(size_mb << 20, seed));

    println!("{size_mb} MiB stream (repository format version {}):", repo.config().version);
    let (first, s1) = timed_backup("backup (new)", &repo, &series, 0).await?;
    let (unchanged, s2) = timed_backup("backup (unchanged)", &repo, &series, 0).await?;
    let (changed, s3) = timed_backup("backup (1% changed)", &repo, &series, 1).await?;
    let restore = restore_in_child(tmp.path(), s2.id)?;
    restore.print();

    let (m1, m1_v1) = manifest_bytes(&repo, &repo_dir, &s1).await?;
    let (m2, m2_v1) = manifest_bytes(&repo, &repo_dir, &s2).await?;
    let (m3, m3_v1) = manifest_bytes(&repo, &repo_dir, &s3).await?;
    let index_bytes = dir_size(&repo_dir.join("index"));
    let local_index = dir_size(&tmp.path().join("cache"));
    let data_bytes = dir_size(&repo_dir.join("data"));
    let chunks = s1.manifest.summary.chunks;
    let list = s1.manifest.streams[0].list.clone().unwrap_or_default();
    println!("  chunks {chunks}, list levels {}, top {} ids", list.levels, list.top.len());
    println!("  manifest bytes: new {m1} (v1 {m1_v1}), unchanged {m2} (v1 {m2_v1}), 1% changed {m3} (v1 {m3_v1})");
    println!(
        "  added: unchanged {} B, 1% changed {:.1} MiB; index files {:.2} MiB; local index {:.2} MiB; packs {:.1} MiB",
        s2.manifest.summary.bytes_added,
        mib(s3.manifest.summary.bytes_added),
        mib(index_bytes),
        mib(local_index),
        mib(data_bytes)
    );
    let step = |s: &Step| {
        serde_json::json!({
            "bytes": s.bytes, "seconds": s.seconds,
            "mib_per_s": mib(s.bytes) / s.seconds.max(1e-9), "peak_rss": s.peak_rss,
        })
    };
    Ok(serde_json::json!({
        "size_mb": size_mb, "chunks": chunks, "levels": list.levels,
        "backup_new": step(&first), "backup_unchanged": step(&unchanged),
        "backup_changed": step(&changed), "restore": step(&restore),
        "manifest_bytes": {"new": m1, "unchanged": m2, "changed": m3},
        "manifest_bytes_v1": {"new": m1_v1, "unchanged": m2_v1, "changed": m3_v1},
        "bytes_added": {"unchanged": s2.manifest.summary.bytes_added, "changed": s3.manifest.summary.bytes_added},
        "index_file_bytes": index_bytes, "local_index_bytes": local_index, "pack_bytes": data_bytes,
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    qvault::alloc::bound_retained_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, tmp, backup] = &args[..] {
        if flag == "--restore-child" {
            return restore_child(Path::new(tmp), backup).await;
        }
    }
    let mut sizes = vec![1024u64, 4096];
    let mut dir = std::env::temp_dir();
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes-mb" => {
                sizes = value.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?
            }
            "--dir" => dir = value.into(),
            "--seed" => seed = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if let [size] = sizes[..] {
        let result = run_size(&dir, size, seed).await?;
        println!("{}", serde_json::to_string(&[result])?);
        return Ok(());
    }
    // Several sizes: each in a process of its own (see the module docs).
    for size in sizes {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["--sizes-mb", &size.to_string(), "--dir"])
            .arg(&dir)
            .args(["--seed", &seed.to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("the {size} MiB run failed: {status}").into());
        }
    }
    Ok(())
}
