//! The whole pipeline on a 64 MiB synthetic Qdrant snapshot, into an in-memory repository:
//! a backup of never-seen data (fresh repository each time), a backup of the same snapshot
//! again (everything deduplicated), and a restore (to a sink; every chunk and the whole
//! stream are still checked).
//!
//! Run with `cargo bench --bench pipeline`; `cargo run --release --example bench` is the
//! end-to-end version with files, a local repository and the zstd/restic references.

#![allow(clippy::expect_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use qvault::backup::{backup, BackupOptions, BackupSummary, Progress, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::restore::{restore_stream, RestoreOptions};
use qvault::storage::Storage;
use qvault_synth::{Series, SeriesOptions};

const SIZE: u64 = 64 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

async fn fresh_repository() -> Repository {
    let storage = Storage::memory();
    let identity = age::x25519::Identity::generate();
    let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    Repository::init(storage.clone(), options, &Cache::InMemory).await.expect("init");
    let credentials = Credentials { identities: vec![identity], key: None };
    Repository::open(storage, credentials, &Cache::InMemory).await.expect("open")
}

async fn backup_bytes(repo: &Repository, data: &Arc<Vec<u8>>) -> BackupSummary {
    let source = StreamSource {
        name: "collection.snapshot".to_string(),
        kind: StreamKind::File,
        reader: Box::new(std::io::Cursor::new(ArcBytes(Arc::clone(data)))),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    backup(repo, vec![source], &BackupOptions::default(), Arc::new(Progress::default()))
        .await
        .expect("backup")
}

/// Shares one input buffer between iterations without copying it.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut data = Vec::with_capacity(SIZE as usize + (1 << 20));
    Series::new(SeriesOptions::for_size(SIZE, 1)).write_version(0, &mut data).expect("synth");
    let data = Arc::new(data);

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(10));
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("backup_new_64MiB", |b| {
        b.iter_batched(
            || rt.block_on(fresh_repository()),
            |repo| rt.block_on(backup_bytes(&repo, &data)),
            BatchSize::PerIteration,
        )
    });
    let repo = rt.block_on(fresh_repository());
    let first = rt.block_on(backup_bytes(&repo, &data));
    group.bench_function("backup_unchanged_64MiB", |b| {
        b.iter(|| rt.block_on(backup_bytes(&repo, &data)))
    });
    let stream = first.manifest.streams[0].clone();
    group.bench_function("restore_64MiB", |b| {
        b.iter(|| {
            rt.block_on(restore_stream(
                &repo,
                first.id,
                &stream,
                std::io::sink(),
                &RestoreOptions::default(),
            ))
            .expect("restore")
            .1
            .bytes
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
