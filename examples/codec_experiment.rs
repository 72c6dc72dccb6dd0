//! Measurement-only experiment (changes nothing in the format): how would blobs shrink with
//! zstd level 1 vs 3, and with a 4-byte-stride byte shuffle before zstd (the float32
//! exponent bytes side by side), on the chunks of a synthetic Qdrant snapshot?
//!
//! `cargo run --release --example codec_experiment -- [--size-mb 200] [--avg-kib 256]`
//!
//! Chunks come from the tar-aware chunker with the given average size (min avg/4, max 4 avg).
//! Times are single-threaded encode (and decode) seconds over all chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use qvault::chunker::{Chunker, ChunkerParams};
use qvault_synth::{Series, SeriesOptions};

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// Byte k of every 4-byte word goes to plane k: [b0 b0 b0 … b1 b1 b1 … b2 … b3 …] + tail.
fn shuffle4(data: &[u8]) -> Vec<u8> {
    let words = data.len() / 4;
    let mut out = vec![0u8; data.len()];
    for (i, w) in data.chunks_exact(4).enumerate() {
        out[i] = w[0];
        out[words + i] = w[1];
        out[2 * words + i] = w[2];
        out[3 * words + i] = w[3];
    }
    out[4 * words..].copy_from_slice(&data[4 * words..]);
    out
}

fn unshuffle4(data: &[u8]) -> Vec<u8> {
    let words = data.len() / 4;
    let mut out = vec![0u8; data.len()];
    for (i, w) in out.chunks_exact_mut(4).enumerate() {
        w[0] = data[i];
        w[1] = data[words + i];
        w[2] = data[2 * words + i];
        w[3] = data[3 * words + i];
    }
    out[4 * words..].copy_from_slice(&data[4 * words..]);
    out
}

#[derive(Default)]
struct Acc {
    bytes: u64,
    encode: f64,
    decode: f64,
}

fn main() {
    let size = arg("--size-mb", 200) << 20;
    let avg = (arg("--avg-kib", 256) as u32) * 1024;
    let mut data = Vec::with_capacity(size as usize + (4 << 20));
    Series::new(SeriesOptions::for_size(size, 1)).write_version(0, &mut data).expect("synth");
    let params = ChunkerParams {
        min_size: avg / 4,
        avg_size: avg,
        max_size: avg * 4,
        seed: 0x5176_6175_6c74,
        tar_aware: true,
        tar_threshold: 64 << 10,
    };
    let chunks: Vec<bytes::Bytes> = Chunker::new(std::io::Cursor::new(data.as_slice()), &params)
        .expect("valid params")
        .map(|c| c.expect("in memory"))
        .collect();
    let input: u64 = chunks.iter().map(|c| c.len() as u64).sum();

    // Variants: (name, level, shuffle). "best" keeps, per chunk, the smaller of plain and
    // shuffled at level 3 (what a codec byte per blob would allow; costs both encodes).
    let variants: [(&str, i32, bool); 4] = [
        ("zstd-1", 1, false),
        ("zstd-3", 3, false),
        ("shuffle4+zstd-1", 1, true),
        ("shuffle4+zstd-3", 3, true),
    ];
    let mut acc: Vec<Acc> = variants.iter().map(|_| Acc::default()).collect();
    let mut best = 0u64;
    let mut shuffle_won = 0usize;
    for chunk in &chunks {
        let mut sizes = [0u64; 4];
        for (k, (_, level, shuffle)) in variants.iter().enumerate() {
            let t = Instant::now();
            let src = if *shuffle { shuffle4(chunk) } else { chunk.to_vec() };
            let z = zstd::bulk::compress(&src, *level).expect("zstd");
            // A blob is never larger than raw + the codec byte.
            let blob = (z.len() as u64).min(chunk.len() as u64) + 1;
            acc[k].encode += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let back = zstd::bulk::decompress(&z, chunk.len()).expect("unzstd");
            let back = if *shuffle { unshuffle4(&back) } else { back };
            acc[k].decode += t.elapsed().as_secs_f64();
            assert_eq!(back.len(), chunk.len());
            acc[k].bytes += blob;
            sizes[k] = blob;
        }
        if sizes[3] < sizes[1] {
            shuffle_won += 1;
        }
        best += sizes[1].min(sizes[3]);
    }
    println!(
        "{} chunks (avg {} KiB target) of a {:.1} MB snapshot; raw {:.2} MB",
        chunks.len(),
        avg / 1024,
        input as f64 / 1e6,
        input as f64 / 1e6
    );
    println!(
        "{:<18} {:>10} {:>7} {:>10} {:>10}",
        "codec", "blobs MB", "ratio", "enc MB/s", "dec MB/s"
    );
    for ((name, _, _), a) in variants.iter().zip(&acc) {
        println!(
            "{:<18} {:>10.2} {:>7.3} {:>10.0} {:>10.0}",
            name,
            a.bytes as f64 / 1e6,
            a.bytes as f64 / input as f64,
            input as f64 / 1e6 / a.encode,
            input as f64 / 1e6 / a.decode
        );
    }
    println!(
        "{:<18} {:>10.2} {:>7.3}  (shuffle smaller in {shuffle_won} of {} chunks)",
        "best-of zstd-3",
        best as f64 / 1e6,
        best as f64 / input as f64,
        chunks.len()
    );
}
