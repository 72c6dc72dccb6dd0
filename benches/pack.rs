//! Pack sealing and opening: 16 MiB of blobs (64 × 256 KiB, the default pack size and
//! average chunk) through `PackWriter` (age encryption, one X25519 per pack), and back
//! through `PackData` (open, then read every blob).
//!
//! Run with `cargo bench --bench pack`.

#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qvault::format::pack::{PackData, PackWriter};
use qvault::id::ChunkId;

const BLOB: usize = 256 << 10;
const BLOBS: usize = 64;

fn bench(c: &mut Criterion) {
    let data_identity = age::x25519::Identity::generate();
    let metadata_identity = age::x25519::Identity::generate();
    let recipients = [data_identity.to_public()];
    let metadata = metadata_identity.to_public();
    let mut state = 3u64;
    let blobs: Vec<Vec<u8>> = (0..BLOBS)
        .map(|_| {
            (0..BLOB)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (state >> 56) as u8
                })
                .collect()
        })
        .collect();
    let seal = || {
        let mut w = PackWriter::new(&recipients, BLOB * BLOBS + (1 << 20)).expect("new pack");
        for (i, blob) in blobs.iter().enumerate() {
            w.add(ChunkId([i as u8; 32]), blob, blob.len() as u32).expect("adding a blob");
        }
        w.finish(&metadata).expect("sealing a pack")
    };
    let sealed = seal();
    let data = &sealed.bytes[..sealed.header.data_len as usize];

    let mut group = c.benchmark_group("pack");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(4));
    group.throughput(Throughput::Bytes((BLOB * BLOBS) as u64));
    group.bench_function("seal_16MiB", |b| b.iter(|| black_box(seal().bytes.len())));
    group.bench_function("open_read_16MiB", |b| {
        b.iter(|| {
            let mut reader =
                PackData::open(std::io::Cursor::new(black_box(data)), &[&data_identity], "pack")
                    .expect("opening a pack");
            let mut total = 0;
            for entry in &sealed.header.entries {
                total += reader.read_blob(entry).expect("reading a blob").len();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
