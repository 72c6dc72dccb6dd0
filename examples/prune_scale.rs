//! Prune at scale (issue 13): a local repository of ~10,000 packs holding ~2.5 million chunks
//! — what 160 GB in 16 MiB packs of 64 KiB chunks holds — built quickly through the real
//! backup pipeline with tiny chunks and packs; then every other backup forgotten and prune
//! run twice (mark, then delete), each run in a fresh child process whose peak RSS
//! (`VmHWM`) and wall time are reported.
//!
//! ```text
//! cargo run --release --example prune_scale -- [--packs 10000] [--chunks-per-pack 256]
//!     [--backups 4] [--dir DIR] [--keep] [--cold]
//! ```
//!
//! `--cold`: each prune starts with an empty cache directory (a host that never saw the
//! repository syncs every index file first); by default the generating process's cache is
//! reused, as on the host that ran the backups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bench/procfs.rs"]
mod procfs;
use procfs::peak_rss;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use age::secrecy::ExposeSecret;
use qvault::backup::{backup, BackupOptions, StreamSource};
use qvault::format::config::ChunkerConfig;
use qvault::format::manifest::StreamKind;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::Storage;

type BoxError = Box<dyn std::error::Error>;

const USAGE: &str = "usage: prune_scale [--packs 10000] [--chunks-per-pack 256] [--backups 4] \
[--dir DIR] [--keep] [--cold]";

/// fastcdc's smallest average: each chunk names ~256 bytes.
const AVG_CHUNK: u64 = 256;

struct Args {
    packs: u64,
    chunks_per_pack: u64,
    backups: u64,
    dir: Option<PathBuf>,
    keep: bool,
    cold: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        packs: 10_000,
        chunks_per_pack: 256,
        backups: 4,
        dir: None,
        keep: false,
        cold: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{v:?} is not a number"));
        match flag.as_str() {
            "--packs" => a.packs = num(value()?)?,
            "--chunks-per-pack" => a.chunks_per_pack = num(value()?)?,
            "--backups" => a.backups = num(value()?)?.max(2),
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--keep" => a.keep = true,
            "--cold" => a.cold = true,
            _ => return Err(USAGE.to_string()),
        }
    }
    Ok(a)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn dir_stats(path: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(path) else { return (0, 0) };
    entries.flatten().fold((0, 0), |(n, bytes), e| match e.file_type() {
        Ok(t) if t.is_dir() => {
            let (n2, b2) = dir_stats(&e.path());
            (n + n2, bytes + b2)
        }
        _ => (n + 1, bytes + e.metadata().map_or(0, |m| m.len())),
    })
}

fn open_storage(dir: &Path) -> Result<Storage, BoxError> {
    Ok(Storage::open(dir.join("repo").to_str().ok_or("--dir is not UTF-8")?, &Default::default())?)
}

fn cache(dir: &Path, cold: bool, run: usize) -> Cache {
    if cold {
        Cache::Dir(dir.join(format!("cache-cold-{run}")))
    } else {
        Cache::Dir(dir.join("cache"))
    }
}

/// The child: opens the repository, prunes once, prints one JSON line.
async fn prune_child(dir: &Path, cold: bool, run: usize) -> Result<(), BoxError> {
    let started = Instant::now();
    let text = std::fs::read_to_string(dir.join("identity.txt"))?;
    let identity = age::x25519::Identity::from_str(text.trim())?;
    let credentials = Credentials { identities: vec![identity], key: None };
    let repo = Repository::open(open_storage(dir)?, credentials, &cache(dir, cold, run)).await?;
    let opened = started.elapsed().as_secs_f64();
    let report = qvault::prune::prune(&repo, &Default::default()).await?;
    let line = serde_json::json!({
        "wall_s": started.elapsed().as_secs_f64(),
        "open_s": opened,
        "peak_rss_bytes": peak_rss(),
        "packs": report.plan.packs,
        "packs_marked": report.packs_marked,
        "packs_deleted": report.packs_deleted,
        "index_files_written": report.index_files_written,
        "index_files_deleted": report.index_files_deleted,
    });
    println!("{line}");
    Ok(())
}

async fn generate(dir: &Path, args: &Args) -> Result<Vec<qvault::backup::BackupSummary>, BoxError> {
    let identity = age::x25519::Identity::generate();
    std::fs::write(dir.join("identity.txt"), identity.to_string().expose_secret())?;
    let storage = open_storage(dir)?;
    let init = InitOptions {
        recipients: vec![identity.to_public()],
        chunker: Some(ChunkerConfig {
            min_size: 64,
            avg_size: AVG_CHUNK as u32,
            max_size: 1024,
            tar_aware: false,
            ..ChunkerConfig::default()
        }),
        // A pack closes once its blobs reach this: ~chunks_per_pack random chunks.
        pack_size: Some(args.chunks_per_pack * (AVG_CHUNK + 16)),
        ..Default::default()
    };
    let cache = cache(dir, false, 0);
    Repository::init(storage.clone(), init, &cache).await?;
    let credentials = Credentials { identities: vec![identity], key: None };
    let repo = Repository::open(storage, credentials, &cache).await?;
    let per_backup = args.packs * args.chunks_per_pack * AVG_CHUNK / args.backups;
    let mut summaries = Vec::new();
    for b in 0..args.backups {
        let started = Instant::now();
        let source = StreamSource {
            name: format!("part-{b}.bin"),
            kind: StreamKind::File,
            reader: Box::new(std::io::Cursor::new(qvault_synth::pseudo_random(
                per_backup as usize,
                1000 + b,
            ))),
            source: None,
            expected_sha256: None,
            left_out: None,
        };
        let options = BackupOptions::default();
        let summary = backup(&repo, vec![source], &options, Arc::default()).await?;
        eprintln!(
            "  backup {b}: {:.1} MB, {} chunks in {:.1} s",
            per_backup as f64 / 1e6,
            summary.manifest.summary.chunks,
            started.elapsed().as_secs_f64()
        );
        summaries.push(summary);
    }
    Ok(summaries)
}

fn run_child(dir: &Path, cold: bool, run: usize) -> Result<serde_json::Value, BoxError> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--prune-child")
        .arg(dir)
        .arg(if cold { "cold" } else { "warm" })
        .arg(run.to_string())
        .output()?;
    if !out.status.success() {
        return Err(
            format!("prune run {run} failed: {}", String::from_utf8_lossy(&out.stderr)).into()
        );
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(text.trim())?)
}

#[tokio::main]
async fn main() {
    qvault::alloc::bound_retained_memory();
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("--prune-child") {
        let rest: Vec<String> = argv.skip(1).collect();
        let (dir, cold, run) =
            (PathBuf::from(&rest[0]), rest[1] == "cold", rest[2].parse().unwrap());
        if let Err(e) = prune_child(&dir, cold, run).await {
            eprintln!("prune_scale child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("prune_scale: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("qvault-prune-scale-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    eprintln!(
        "prune_scale: ~{} packs of ~{} chunks in {}",
        args.packs,
        args.chunks_per_pack,
        dir.display()
    );
    let started = Instant::now();
    let summaries = generate(&dir, &args).await?;
    let generated = started.elapsed().as_secs_f64();
    let (files, bytes) = dir_stats(&dir.join("repo"));
    let (packs, _) = dir_stats(&dir.join("repo/data"));
    let (index_files, _) = dir_stats(&dir.join("repo/index"));
    let chunks: u64 = summaries.iter().map(|s| s.manifest.summary.new_chunks).sum();
    println!(
        "repository: {packs} packs, {index_files} index files, {chunks} chunks stored, {files} \
         files, {:.1} MB; generated in {generated:.1} s",
        bytes as f64 / 1e6
    );

    // Forget every other backup: half the packs become unused.
    {
        let text = std::fs::read_to_string(dir.join("identity.txt"))?;
        let identity = age::x25519::Identity::from_str(text.trim())?;
        let credentials = Credentials { identities: vec![identity], key: None };
        let repo =
            Repository::open(open_storage(&dir)?, credentials, &cache(&dir, false, 0)).await?;
        for s in summaries.iter().step_by(2) {
            repo.delete_manifest(s.id).await?;
        }
    }
    println!(
        "{:<28} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "prune (fresh process)", "wall s", "open s", "peak MiB", "packs", "marked", "deleted"
    );
    let mut worst = 0u64;
    for run in 1..=2 {
        let r = run_child(&dir, args.cold, run)?;
        let rss = r["peak_rss_bytes"].as_u64().unwrap_or(0);
        worst = worst.max(rss);
        println!(
            "{:<28} {:>8.2} {:>8.2} {:>10.1} {:>8} {:>8} {:>8}",
            format!("run {run} ({})", if args.cold { "cold cache" } else { "warm cache" }),
            r["wall_s"].as_f64().unwrap_or(0.0),
            r["open_s"].as_f64().unwrap_or(0.0),
            mib(rss),
            r["packs"],
            r["packs_marked"],
            r["packs_deleted"]
        );
    }
    let mark = if mib(worst) <= 150.0 { "✓" } else { "✗" };
    println!("  {mark} prune peak RSS {:.1} MiB (target ≤ 150 MiB)", mib(worst));
    if args.keep {
        eprintln!("prune_scale: kept {}", dir.display());
    } else if args.dir.is_some() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
