//! The main job end to end on a local repository, no server needed: init → back up a
//! Qdrant-like collection snapshot → back up the next version of it (1% of points updated,
//! copy-on-write, like Qdrant) → restore → check byte for byte, printing the dedup.
//!
//! `cargo run --example quickstart` (add `--release` for speed; `-- --size-mb N` to resize).

use qvault::backup::{backup, BackupOptions, Progress, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::restore::{restore_stream, RestoreOptions};
use qvault::storage::Storage;
use qvault_synth::{Series, SeriesOptions};
use sha2::Digest;
use std::sync::Arc;
use std::time::Instant;

fn mib(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

async fn archive(
    repo: &Repository,
    name: &str,
    data: Vec<u8>,
) -> qvault::Result<qvault::backup::BackupSummary> {
    let source = StreamSource {
        name: name.to_string(),
        kind: StreamKind::File,
        reader: Box::new(std::io::Cursor::new(data)),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    let started = Instant::now();
    let summary =
        backup(repo, vec![source], &BackupOptions::default(), Arc::new(Progress::default()))
            .await?;
    let s = &summary.manifest.summary;
    println!(
        "backup {} of {name}: read {:.1} MiB, added {:.2} MiB ({} of {} chunks new) in {:.2} s",
        summary.id.short(),
        mib(s.bytes_read),
        mib(s.bytes_added),
        s.new_chunks,
        s.chunks,
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size_mb: usize = match std::env::args().skip_while(|a| a != "--size-mb").nth(1) {
        Some(n) => n.parse()?,
        None => 64,
    };
    let dir = tempfile::tempdir()?;
    let location = dir.path().join("repository");
    let storage =
        Storage::open(location.to_str().ok_or("temp path is not UTF-8")?, &Default::default())?;
    let identity = age::x25519::Identity::generate();
    let cache = Cache::Dir(dir.path().join("cache"));
    let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    Repository::init(storage.clone(), options, &cache).await?;
    println!("created a repository at {}", location.display());
    let credentials = Credentials { identities: vec![identity], key: None };
    let repo = Repository::open(storage, credentials, &cache).await?;

    // Two versions of a generated collection snapshot (nested segment tars, sparse WAL and
    // vector files, copy-on-write updates): the shape qvault's chunker is built for.
    let series = Series::new(SeriesOptions::for_size((size_mb as u64) << 20, 42));
    let mut first = Vec::new();
    series.write_version(0, &mut first)?;
    let mut second = Vec::new();
    series.write_version(1, &mut second)?;
    println!("generated two snapshot versions; what changed: {}", series.changes(1));
    let expected = hex::encode(sha2::Sha256::digest(&second));

    let a = archive(&repo, "snapshot v0", first).await?;
    let b = archive(&repo, "snapshot v1", second).await?;

    let started = Instant::now();
    let out_path = dir.path().join("restored");
    let file = std::io::BufWriter::new(std::fs::File::create(&out_path)?);
    let stream = &b.manifest.streams[0];
    let (_, restored) =
        restore_stream(&repo, b.id, stream, file, &RestoreOptions::default()).await?;
    let actual = hex::encode(sha2::Sha256::digest(std::fs::read(&out_path)?));
    println!(
        "restored backup {}: {:.1} MiB in {:.2} s, SHA-256 {}",
        b.id.short(),
        mib(restored.bytes),
        started.elapsed().as_secs_f64(),
        if actual == expected { "matches" } else { "DIFFERS" }
    );
    if actual != expected {
        return Err("the restored bytes differ from the backed-up bytes".into());
    }
    let (added_a, added_b) = (a.manifest.summary.bytes_added, b.manifest.summary.bytes_added);
    println!(
        "dedup: the second backup stored {:.2} MiB, {:.1}% of the first's {:.1} MiB",
        mib(added_b),
        added_b as f64 * 100.0 / added_a.max(1) as f64,
        mib(added_a)
    );
    Ok(())
}
