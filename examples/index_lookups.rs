//! The local index at scale: its size on disk and the lookups per second a backup (dedup:
//! `contains_chunk`) and a restore plan (`locate`) get from it, with 1, 2 and 4 threads
//! sharing it — the numbers behind docs/benchmarks.md "Local index lookups".
//!
//! ```text
//! cargo run --release --example index_lookups -- [--chunks 10000000] [--dir /tmp]
//! ```
//!
//! Fills a local index file with `--chunks` synthetic chunk ids (256 per pack, 16 packs per
//! index file, as backups write them) the way a sync does (`BulkLoad`), then looks up random
//! ids that are present (a backup of unchanged data) and absent (new data).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use qvault::format::index::{IndexFile, IndexedPack};
use qvault::format::pack::PackEntry;
use qvault::id::{ChunkId, IndexId, PackId};
use qvault::index::LocalIndex;
use std::sync::Arc;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHUNKS_PER_PACK: u64 = 256;
const PACKS_PER_FILE: u64 = 16;

fn id(n: u64, salt: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(salt);
    h.update(&n.to_le_bytes());
    *h.finalize().as_bytes()
}

fn chunk(n: u64) -> ChunkId {
    ChunkId(id(n, b"chunk"))
}

/// `lookups` calls of `f` spread over `threads` threads; returns calls per second.
fn rate(threads: u64, lookups: u64, f: impl Fn(u64) + Send + Sync + 'static) -> f64 {
    let f = Arc::new(f);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                for i in 0..lookups / threads {
                    f(t * 1_000_003 + i * 7919);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    lookups as f64 / started.elapsed().as_secs_f64()
}

/// The SQL of `locate` and `contains_chunk` as they were and are, timed on one connection
/// to the same file (one thread, ids present): what each costs per lookup.
fn query_variants(path: &std::path::Path, chunks: u64) -> Result<serde_json::Value, BoxError> {
    const VARIANTS: [(&str, &str); 5] = [
        (
            "locate, plain join (a6b2fed)",
            "SELECT c.pack, c.offset, c.length, c.raw_length, p.plaintext_len
             FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
        ),
        (
            "locate, ORDER BY pack IN bad_packs (d0834d5)",
            "SELECT c.pack, c.offset, c.length, c.raw_length, p.plaintext_len
             FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1
             ORDER BY c.pack IN (SELECT id FROM bad_packs) LIMIT 1",
        ),
        (
            "locate, EXISTS per row",
            "SELECT c.pack, c.offset, c.length, c.raw_length, p.plaintext_len,
             EXISTS (SELECT 1 FROM bad_packs b WHERE b.id = c.pack)
             FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1",
        ),
        (
            "contains, NOT IN bad_packs (d0834d5)",
            "SELECT 1 FROM chunks WHERE id = ?1 AND pack NOT IN (SELECT id FROM bad_packs)",
        ),
        (
            "contains, NOT EXISTS",
            "SELECT 1 FROM chunks c WHERE c.id = ?1
             AND NOT EXISTS (SELECT 1 FROM bad_packs b WHERE b.id = c.pack)",
        ),
    ];
    let conn = rusqlite::Connection::open(path)?;
    let lookups = 200_000u64;
    let mut out = serde_json::Map::new();
    for round in 0..2 {
        for (name, sql) in VARIANTS {
            let mut stmt = conn.prepare_cached(sql)?;
            let started = Instant::now();
            for k in 0..lookups {
                let id = chunk((k * 7919 + round) % chunks);
                let mut rows = stmt.query([&id.0[..]])?;
                assert!(rows.next()?.is_some(), "{name}");
            }
            let per_s = lookups as f64 / started.elapsed().as_secs_f64();
            if round == 1 {
                println!("  {name}: {per_s:.0}/s");
                out.insert(name.into(), per_s.into());
            }
        }
    }
    Ok(out.into())
}

fn main() -> Result<(), BoxError> {
    let (mut chunks, mut base) = (10_000_000u64, std::env::temp_dir());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--chunks" => chunks = args.next().ok_or("--chunks N")?.parse()?,
            "--dir" => base = args.next().ok_or("--dir DIR")?.into(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let tmp = tempfile::tempdir_in(&base)?;
    let path = tmp.path().join("index.sqlite");
    let index = Arc::new(LocalIndex::open(&path)?);
    let started = Instant::now();
    let packs = chunks.div_ceil(CHUNKS_PER_PACK);
    let mut n = 0u64;
    let mut load = index.bulk_load()?;
    for file in 0..packs.div_ceil(PACKS_PER_FILE) {
        let mut listed = Vec::new();
        for p in 0..PACKS_PER_FILE {
            let pack = PackId(id(file * PACKS_PER_FILE + p, b"pack"));
            let mut entries = Vec::new();
            for i in 0..CHUNKS_PER_PACK.min(chunks - n) {
                entries.push(PackEntry {
                    chunk: chunk(n),
                    offset: i * 80,
                    length: 80,
                    raw_length: 64,
                });
                n += 1;
            }
            if !entries.is_empty() {
                listed.push(IndexedPack { pack, entries });
            }
        }
        load.stage([(IndexId(id(file, b"index")), &IndexFile { packs: listed })])?;
    }
    load.finish()?;
    let fill = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path)?.len()
        + std::fs::metadata(tmp.path().join("index.sqlite-wal")).map(|m| m.len()).unwrap_or(0);
    println!(
        "{chunks} chunks: filled in {fill:.1} s ({:.0} rows/s), local index {:.1} MiB ({:.0} B per chunk)",
        chunks as f64 / fill,
        size as f64 / (1 << 20) as f64,
        size as f64 / chunks as f64
    );
    let lookups = 400_000u64;
    let mut results = Vec::new();
    for threads in [1u64, 2, 4] {
        let i = index.clone();
        let present = rate(threads, lookups, move |k| {
            assert!(i.contains_chunk(&chunk(k % chunks)).unwrap());
        });
        let i = index.clone();
        let absent = rate(threads, lookups, move |k| {
            assert!(!i.contains_chunk(&ChunkId(id(k, b"absent"))).unwrap());
        });
        let i = index.clone();
        let locate = rate(threads, lookups, move |k| {
            assert!(i.locate(&chunk(k % chunks)).unwrap().is_some());
        });
        println!(
            "  {threads} thread(s): contains_chunk present {present:.0}/s, absent {absent:.0}/s; locate {locate:.0}/s"
        );
        results.push(serde_json::json!({
            "threads": threads, "contains_present": present, "contains_absent": absent,
            "locate": locate,
        }));
    }
    let queries = query_variants(&path, chunks)?;
    println!(
        "{}",
        serde_json::json!({"chunks": chunks, "fill_seconds": fill, "local_index_bytes": size,
            "rates": results, "queries": queries})
    );
    Ok(())
}
