//! Writes a synthetic Qdrant snapshot series to a directory.
//!
//! `cargo run --example synth -- --out DIR --size-mb 200 --versions 4 --variant cow|inplace --seed N`
//! writes `DIR/v0.snapshot`, `DIR/v1.snapshot`, ... and prints each file's size, the
//! generation speed and what each version changed.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use qvault_synth::{Series, SeriesOptions, Variant};

struct Args {
    out: PathBuf,
    size_mb: u64,
    versions: u32,
    variant: Variant,
    seed: u64,
}

fn usage() -> String {
    "usage: synth --out DIR [--size-mb 200] [--versions 4] [--variant cow|inplace] [--seed N]"
        .to_string()
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        out: PathBuf::new(),
        size_mb: 200,
        versions: 4,
        variant: Variant::CopyOnWrite,
        seed: 1,
    };
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{}", usage()));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--size-mb" => {
                args.size_mb = value()?.parse().map_err(|e| format!("--size-mb: {e}"))?
            }
            "--versions" => {
                args.versions = value()?.parse().map_err(|e| format!("--versions: {e}"))?
            }
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--variant" => {
                args.variant = match value()?.as_str() {
                    "cow" => Variant::CopyOnWrite,
                    "inplace" => Variant::InPlace,
                    other => return Err(format!("unknown variant {other}\n{}", usage())),
                }
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    args.out = out.ok_or_else(usage)?;
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("synth: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let mut opts = SeriesOptions::for_size(args.size_mb << 20, args.seed);
    opts.variant = args.variant;
    let series = Series::new(opts);
    println!("{:?}", series.options());
    for v in 0..args.versions {
        let path = args.out.join(format!("v{v}.snapshot"));
        let start = Instant::now();
        let file = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let bytes = series.write_version(v, file)?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}: {bytes} bytes ({:.1} MB) in {secs:.2}s ({:.0} MB/s)",
            path.display(),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs.max(1e-9)
        );
        println!("  {}", series.changes(v));
    }
    Ok(())
}
