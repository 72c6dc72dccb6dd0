//! The main job end to end on a local repository, no server needed:
//! init → backup → change the data → backup again → restore → check, printing the dedup.
//!
//! `cargo run --example quickstart` (add `--release` for speed; `-- --size-mb N` to resize).

use qvault::backup::{backup, BackupOptions, Progress, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::restore::{restore_stream, RestoreOptions};
use qvault::storage::Storage;
use sha2::Digest;
use std::sync::Arc;
use std::time::Instant;

/// Deterministic incompressible bytes with some repeated structure, like vector files.
fn generate(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

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

    let first = generate(size_mb << 20, 1);
    let mut second = first.clone();
    // Change it like a database does: a few rewritten regions and an insert in the middle.
    for (i, at) in [0.1, 0.4, 0.8].iter().enumerate() {
        let at = (second.len() as f64 * at) as usize;
        second[at..at + 256 * 1024].copy_from_slice(&generate(256 * 1024, 10 + i as u64));
    }
    let middle = second.len() / 2;
    second.splice(middle..middle, generate(512 * 1024, 20));
    let expected = hex::encode(sha2::Sha256::digest(&second));

    let a = archive(&repo, "version 1", first).await?;
    let b = archive(&repo, "version 2", second).await?;

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
