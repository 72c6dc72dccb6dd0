//! Hashing throughput on 1 MiB: the keyed BLAKE3 chunk id (once per chunk) and SHA-256 (the
//! whole-stream checksum Qdrant uses, computed over every byte of a backup).
//!
//! Run with `cargo bench --bench hash`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qvault::crypto::RepositoryKey;
use sha2::Digest;

const SIZE: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let mut state = 7u64;
    let data: Vec<u8> = (0..SIZE)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (state >> 56) as u8
        })
        .collect();
    let key = RepositoryKey::generate();
    let mut group = c.benchmark_group("hash");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("chunk_id/keyed_blake3", |b| b.iter(|| key.chunk_id(black_box(&data))));
    group.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    group.bench_function("sha256", |b| b.iter(|| sha2::Sha256::digest(black_box(&data))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
