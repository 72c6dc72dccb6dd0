//! Chunker throughput on 64 MiB of pseudo-random bytes and on a synthetic tar shaped like a
//! Qdrant snapshot, with the default-like sizes (min 64 KiB, avg 256 KiB, max 1 MiB).
//!
//! Run with `cargo bench --bench chunker`; numbers from debug builds mean nothing.

// Like tests, a benchmark should stop loudly on a broken setup.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qvault::chunker::{Chunker, ChunkerParams};
use qvault_synth::pseudo_random;

const SIZE: usize = 64 << 20;

/// About 64 MiB of tar: small files, nested segment tars with big files, mostly-zero WAL files.
fn synthetic_tar() -> Vec<u8> {
    let mut outer = tar::Builder::new(Vec::new());
    let mut seed = 1u64;
    let append = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).expect("appending to an in-memory tar");
    };
    for segment in 0..6 {
        let mut inner = tar::Builder::new(Vec::new());
        for (name, len) in
            [("vectors/chunk_0.mmap", 6 << 20), ("graph.bin", 2 << 20), ("segment.json", 300)]
        {
            seed += 1;
            append(&mut inner, name, &pseudo_random(len, seed));
        }
        let inner = inner.into_inner().expect("finishing an in-memory tar");
        append(&mut outer, &format!("0/segments/{segment}.tar"), &inner);
    }
    for wal in 0..4 {
        append(&mut outer, &format!("0/wal/open-{wal}"), &vec![0; 4 << 20]);
    }
    append(&mut outer, "config.json", b"{}");
    outer.into_inner().expect("finishing an in-memory tar")
}

fn bench(c: &mut Criterion) {
    let params = ChunkerParams {
        min_size: 64 << 10,
        avg_size: 256 << 10,
        max_size: 1 << 20,
        seed: 0x5176_6175_6c74,
        tar_aware: true,
        tar_threshold: 64 << 10,
    };
    let inputs = [("random", pseudo_random(SIZE, 42)), ("tar", synthetic_tar())];
    let mut group = c.benchmark_group("chunker");
    group.sample_size(10);
    for (name, data) in &inputs {
        group.throughput(Throughput::Bytes(data.len() as u64));
        for tar_aware in [false, true] {
            let params = ChunkerParams { tar_aware, ..params.clone() };
            let id = format!("{name}/tar_aware={tar_aware}");
            group.bench_function(id, |b| {
                b.iter(|| {
                    let chunker = Chunker::new(Cursor::new(black_box(data.as_slice())), &params)
                        .expect("valid parameters");
                    let mut count = 0usize;
                    for chunk in chunker {
                        count += chunk.expect("reading from memory").len();
                    }
                    count
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
