//! Sync at scale: how long a fresh machine takes to fill its local index from a repository of
//! many packs — the numbers behind docs/benchmarks.md "Local index sync at 10,000 packs".
//!
//! ```text
//! cargo run --release --example sync_scale -- [--packs 10000] [--chunks-per-pack 256]
//!     [--dir /tmp] [--s3]
//! ```
//!
//! Writes a synthetic repository directly (no chunking, no compression): `--packs` small
//! real packs of `--chunks-per-pack` distinct 64-byte chunks each, sealed like a backup's,
//! with an index file every 16 packs as a backup writes them, and one backup manifest. Then
//! opens it as a fresh machine would (empty `--cache-dir`), which syncs the local index,
//! and opens it again with the filled cache. With `--s3` the repository lives on the S3
//! server `.ci/s3-server.sh` started (its `QVAULT_TEST_S3_*` exports), else on disk under
//! `--dir`. The number of requests a sync makes is counted from the objects it reads: one
//! listing page per 1,000 objects of `index/` and `backups/`, one GET per index file and
//! per manifest, and the repository's config and key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bench/procfs.rs"]
mod procfs;
use procfs::dir_size;

use futures::stream::{self, StreamExt, TryStreamExt};
use qvault::format::index::{IndexFile, IndexedPack};
use qvault::format::pack::PackWriter;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::{Storage, StorageOptions};
use std::path::Path;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Packs per index file, as a backup writes them (`backup/upload.rs`).
const PACKS_PER_INDEX_FILE: usize = 16;

fn storage(dir: &Path, s3: bool) -> Result<Storage, BoxError> {
    if !s3 {
        return Ok(Storage::open(dir.join("repo").to_str().ok_or("path")?, &Default::default())?);
    }
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} unset: start .ci/s3-server.sh"));
    let options = StorageOptions {
        s3_endpoint: Some(var("QVAULT_TEST_S3_ENDPOINT")?),
        s3_region: Some("us-east-1".into()),
        access_key_id: Some(var("QVAULT_TEST_S3_ACCESS_KEY")?),
        secret_access_key: Some(var("QVAULT_TEST_S3_SECRET_KEY")?),
        ..Default::default()
    };
    let prefix = dir.file_name().and_then(|n| n.to_str()).ok_or("path")?;
    let location = format!("s3://{}/sync-scale-{prefix}", var("QVAULT_TEST_S3_BUCKET")?);
    Ok(Storage::open(&location, &options)?)
}

/// One group of packs and the index file listing them: `first` numbers its first chunk.
async fn write_group(
    repo: &Repository,
    packs: usize,
    chunks: usize,
    first: u64,
) -> Result<(), BoxError> {
    let recipients = repo.data_recipients().to_vec();
    let metadata = repo.key().metadata_recipient();
    let key = repo.key().clone();
    let sealed = tokio::task::spawn_blocking(move || {
        let mut sealed = Vec::new();
        let mut n = first;
        for _ in 0..packs {
            let mut writer = PackWriter::new(&recipients, chunks * 80)?;
            for _ in 0..chunks {
                let chunk: Vec<u8> = blake3::hash(&n.to_le_bytes()).as_bytes().repeat(2);
                n += 1;
                let blob = [&[qvault::codec::CODEC_RAW][..], &chunk].concat();
                writer.add(key.chunk_id(&chunk), &blob, chunk.len() as u32)?;
            }
            sealed.push(writer.finish(&metadata)?);
        }
        Ok::<_, qvault::Error>(sealed)
    })
    .await??;
    let mut listed = Vec::new();
    for pack in sealed {
        listed.push(IndexedPack { pack: pack.id, entries: pack.header.entries.clone() });
        repo.write_pack(pack.id, pack.bytes.into()).await?;
    }
    repo.write_index_file(&IndexFile { packs: listed }).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    qvault::alloc::bound_retained_memory();
    let (mut packs, mut chunks, mut base, mut s3) =
        (10_000usize, 256usize, std::env::temp_dir(), false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--s3" => s3 = true,
            "--packs" => packs = args.next().ok_or("--packs N")?.parse()?,
            "--chunks-per-pack" => chunks = args.next().ok_or("--chunks-per-pack N")?.parse()?,
            "--dir" => base = args.next().ok_or("--dir DIR")?.into(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let tmp = tempfile::tempdir_in(&base)?;
    let storage = storage(tmp.path(), s3)?;
    storage.create_root().await?;
    let identity = age::x25519::Identity::generate();
    let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    Repository::init(storage.clone(), options, &Cache::InMemory).await?;
    let credentials = || Credentials { identities: vec![identity.clone()], key: None };
    let writer = Repository::open(storage.clone(), credentials(), &Cache::InMemory).await?;

    let started = Instant::now();
    let groups = packs.div_ceil(PACKS_PER_INDEX_FILE);
    stream::iter(0..groups)
        .map(|g| {
            let in_group = PACKS_PER_INDEX_FILE.min(packs - g * PACKS_PER_INDEX_FILE);
            let first = (g * PACKS_PER_INDEX_FILE * chunks) as u64;
            write_group(&writer, in_group, chunks, first)
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    // One backup, so the sync reads a manifest too (its stream is not restorable: the
    // sync does not look inside).
    let manifest = qvault::Manifest {
        time: qvault::repo::format_rfc3339_millis(time::OffsetDateTime::now_utc()),
        name: Some("sync-scale".into()),
        tags: Default::default(),
        host: "bench".into(),
        tool_version: "bench".into(),
        streams: vec![],
        summary: Default::default(),
    };
    writer.write_manifest(&manifest).await?;
    let written = started.elapsed().as_secs_f64();
    let entries = packs * chunks;
    println!(
        "wrote {packs} packs ({entries} chunks) and {groups} index files to {} in {written:.1} s",
        storage.location()
    );

    let cache_dir = tmp.path().join("cache");
    let fresh = Instant::now();
    let repo =
        Repository::open(storage.clone(), credentials(), &Cache::Dir(cache_dir.clone())).await?;
    let fresh = fresh.elapsed().as_secs_f64();
    let indexed = repo.index().chunk_count()?;
    assert_eq!(indexed, entries as u64, "the local index holds every chunk");
    drop(repo);
    let warm = Instant::now();
    Repository::open(storage.clone(), credentials(), &Cache::Dir(cache_dir.clone())).await?;
    let warm = warm.elapsed().as_secs_f64();
    let local = dir_size(&cache_dir);
    let index_bytes = storage.list("index/").await?.iter().map(|o| o.size).sum::<u64>();
    // config + key, listing pages of index/ and backups/, one GET per object read.
    let requests = 2 + groups.div_ceil(1000) + 1 + groups + 1;
    println!(
        "fresh sync {fresh:.2} s ({:.0} chunks/s), warm open {warm:.2} s; {groups} index files \
         ({:.1} MiB), local index {:.1} MiB; ~{requests} requests",
        entries as f64 / fresh,
        index_bytes as f64 / (1 << 20) as f64,
        local as f64 / (1 << 20) as f64,
    );
    println!(
        "{}",
        serde_json::json!({
            "packs": packs, "chunks": entries, "index_files": groups, "s3": s3,
            "write_seconds": written, "fresh_sync_seconds": fresh, "warm_open_seconds": warm,
            "index_file_bytes": index_bytes, "local_index_bytes": local, "requests": requests,
        })
    );
    if s3 {
        for dir in ["data/", "index/", "backups/", "keys/", ""] {
            for o in storage.list(dir).await.unwrap_or_default() {
                let _ = storage.delete(&o.path).await;
            }
        }
    }
    Ok(())
}
