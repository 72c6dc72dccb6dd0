//! Blob codec throughput: zstd levels 1 and 3, encode and decode, on 1 MiB of float32-like
//! data (what vector files hold) and on 1 MiB of random bytes (stored raw).
//!
//! Run with `cargo bench --bench codec`.

#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qvault::codec::{self, CodecParams, CompressionAlgorithm};
use qvault_synth::pseudo_random;

const SIZE: usize = 1 << 20;

fn random(len: usize) -> Vec<u8> {
    pseudo_random(len, 0x9E37_79B9_7F4A_7C15)
}

/// Normalized-embedding-like float32 values: roughly Gaussian, scaled near 1/sqrt(768).
fn floats(len: usize) -> Vec<u8> {
    let uniforms = pseudo_random(len * 4, 42);
    let mut out = Vec::with_capacity(len + 4);
    for four in uniforms.chunks_exact(16) {
        // Sum of four uniforms: a cheap bell curve.
        let sum: f32 = four
            .chunks_exact(4)
            .map(|u| {
                (u32::from_le_bytes([u[0], u[1], u[2], u[3]]) >> 8) as f32 / (1u32 << 24) as f32
            })
            .sum();
        let value = (sum - 2.0) * 0.0625;
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn bench(c: &mut Criterion) {
    let inputs = [("float32", floats(SIZE)), ("random", random(SIZE))];
    let mut group = c.benchmark_group("codec");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (name, data) in &inputs {
        for level in [1, 3] {
            let params = CodecParams { algorithm: CompressionAlgorithm::Zstd, level };
            let blob = codec::encode(data, &params).expect("encoding");
            eprintln!("codec {name} level {level}: blob {} of {} bytes", blob.len(), data.len());
            // The reusable encoder and decoder, as backup workers and restore use them.
            let mut encoder = codec::Encoder::new(&params).expect("encoder");
            group.bench_function(format!("encode/{name}/zstd{level}"), |b| {
                b.iter(|| encoder.encode(black_box(data)).expect("encoding"))
            });
            let mut decoder = codec::Decoder::new().expect("decoder");
            group.bench_function(format!("decode/{name}/zstd{level}"), |b| {
                b.iter(|| decoder.decode(black_box(&blob), SIZE).expect("decoding"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
