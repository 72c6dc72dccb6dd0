//! A shard's write-ahead log, framed like the `wal` crate Qdrant uses.
//!
//! Segment files are preallocated to the WAL capacity (so they are sparse members) and start
//! with `wal\0` and a 4-byte seed. Each entry is `u64` length, CBOR data, zero padding so that
//! data plus CRC end 8-aligned, and a `u32` CRC-32C. Entries are CBOR maps
//! (`{"upsert_points": {"points": [...]}}`, `{"delete_points": {"ids": [...]}}`) with vectors
//! as CBOR float32, as in the real captures.
//!
//! All entries since version 0 are laid out in order over numbered segment files; a snapshot
//! holds the last closed segment (Qdrant retains one), the open one, and the empty segment
//! opened ahead.

use std::io::{self, Write};

use super::rng::{fill_vector, mix, Crc32c, Payload, TAG_WAL};
use super::segment::version_time;
use super::series::{batch_points, unpack, Shard};
use super::tar_writer::Sink;
use super::SeriesOptions;

const HEADER: u64 = 8;
const FS_BLOCK: u64 = 4096;
const DELETE_BATCH: usize = 1000;

#[derive(Clone, Copy)]
enum Entry<'a> {
    Upsert(&'a [u64]),
    Delete(&'a [u64]),
}

fn entries(shard: &Shard, batch: u64) -> impl Iterator<Item = (u32, Entry<'_>)> {
    shard.logs.iter().enumerate().flat_map(move |(v, log)| {
        let ups = log.upserts.chunks(batch as usize).map(move |c| (v as u32, Entry::Upsert(c)));
        let dels = log.deletes.chunks(DELETE_BATCH).map(move |c| (v as u32, Entry::Delete(c)));
        ups.chain(dels)
    })
}

fn uint_len(v: u64) -> u64 {
    match v {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// CBOR head (major type in the top 3 bits) for `v`.
fn head(major: u8, v: u64, out: &mut [u8; 9]) -> usize {
    let m = major << 5;
    match v {
        0..=23 => {
            out[0] = m | v as u8;
            1
        }
        24..=0xff => {
            out[0] = m | 24;
            out[1] = v as u8;
            2
        }
        0x100..=0xffff => {
            out[0] = m | 25;
            out[1..3].copy_from_slice(&(v as u16).to_be_bytes());
            3
        }
        0x1_0000..=0xffff_ffff => {
            out[0] = m | 26;
            out[1..5].copy_from_slice(&(v as u32).to_be_bytes());
            5
        }
        _ => {
            out[0] = m | 27;
            out[1..9].copy_from_slice(&v.to_be_bytes());
            9
        }
    }
}

fn point_len(opts: &SeriesOptions, packed: u64) -> u64 {
    let (id, ver) = unpack(packed);
    let dim = u64::from(opts.dim);
    let p = Payload::new(opts.seed, id, ver);
    let title = p.title_len as u64;
    let payload = 1 + 6 + uint_len(title) + title + 2 + uint_len(id) + 4 + 2;
    1 + 3 + uint_len(id) + 7 + uint_len(dim) + 5 * dim + 8 + payload
}

fn data_len(opts: &SeriesOptions, e: Entry<'_>) -> u64 {
    match e {
        Entry::Upsert(points) => {
            let body: u64 = points.iter().map(|&p| point_len(opts, p)).sum();
            1 + 14 + 1 + 7 + uint_len(points.len() as u64) + body + 1
        }
        Entry::Delete(ids) => {
            let body: u64 = ids.iter().map(|&id| uint_len(id)).sum();
            1 + 14 + 1 + 4 + uint_len(ids.len() as u64) + body + 1
        }
    }
}

fn padding(len: u64) -> u64 {
    (8 - (len + 4) % 8) % 8
}

fn framed(len: u64) -> u64 {
    8 + len + padding(len) + 4
}

/// One WAL segment file in the snapshot.
#[derive(Clone, Debug)]
pub(crate) struct WalFile {
    pub(crate) name: String,
    pub(crate) number: u64,
    /// Bytes written (header and entries); the rest of the capacity is a hole.
    pub(crate) used: u64,
    pub(crate) mtime: u64,
}

impl WalFile {
    /// Written part as stored: whole file-system blocks.
    pub(crate) fn data_len(&self, capacity: u64) -> u64 {
        (self.used.div_ceil(FS_BLOCK) * FS_BLOCK).min(capacity)
    }
}

pub(crate) struct WalPlan {
    pub(crate) files: Vec<WalFile>,
    /// Operation number of the first entry still in the WAL.
    pub(crate) ack_index: u64,
    /// Operation number of the last entry.
    pub(crate) last_op: u64,
    /// Framed bytes the last version appended (the WAL's share of truly new bytes).
    pub(crate) last_version_bytes: u64,
}

/// Lays every entry out over segment files, calling `f(segment, version, entry)` for each.
fn place<'a>(
    opts: &SeriesOptions,
    shard: &'a Shard,
    mut f: impl FnMut(u64, u32, Entry<'a>, u64),
) -> (u64, u64) {
    let batch = batch_points(opts);
    let mut number = 1;
    let mut off = HEADER;
    for (v, e) in entries(shard, batch) {
        let len = data_len(opts, e);
        let total = framed(len);
        if off + total > opts.wal_capacity && off > HEADER {
            number += 1;
            off = HEADER;
        }
        f(number, v, e, len);
        off += total;
    }
    (number, off)
}

pub(crate) fn plan(opts: &SeriesOptions, shard: &Shard, version: u32) -> WalPlan {
    let mut used = std::collections::BTreeMap::<u64, (u64, u32)>::new();
    let mut entries_before = std::collections::BTreeMap::<u64, u64>::new();
    let mut count = 0u64;
    let mut last_version_bytes = 0;
    let (open, _) = place(opts, shard, |number, v, _, len| {
        entries_before.entry(number).or_insert(count);
        count += 1;
        let e = used.entry(number).or_insert((HEADER, 0));
        e.0 += framed(len);
        e.1 = v;
        if v == version {
            last_version_bytes += framed(len);
        }
    });
    let mut files = Vec::new();
    let first = open.saturating_sub(1).max(1);
    for number in first..=open {
        let (u, v) = used.get(&number).copied().unwrap_or((HEADER, version));
        let state = if number == open { "open" } else { "closed" };
        files.push(WalFile {
            name: format!("{state}-{number}"),
            number,
            used: u,
            mtime: version_time(v),
        });
    }
    // The segment Qdrant opens ahead of need: just a header.
    let opened = used.get(&open).map_or(0, |&(_, v)| v);
    files.push(WalFile {
        name: format!("open-{}", open + 1),
        number: open + 1,
        used: HEADER,
        mtime: version_time(opened),
    });
    let retained_from = entries_before.get(&first).copied().unwrap_or(count);
    WalPlan {
        files,
        ack_index: shard.ops_before_log + retained_from,
        last_op: shard.ops_before_log + count,
        last_version_bytes,
    }
}

struct CrcSink<'s, W: Write> {
    sink: &'s mut Sink<W>,
    crc: Crc32c,
}

impl<W: Write> CrcSink<'_, W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.sink.put(b)
    }

    fn head(&mut self, major: u8, v: u64) -> io::Result<()> {
        let mut h = [0u8; 9];
        let n = head(major, v, &mut h);
        self.put(&h[..n])
    }

    fn text(&mut self, s: &[u8]) -> io::Result<()> {
        self.head(3, s.len() as u64)?;
        self.put(s)
    }
}

/// Writes the stored part of WAL segment `file` (header, entries, zeros to the block).
pub(crate) fn write_file<W: Write>(
    opts: &SeriesOptions,
    shard: &Shard,
    file: &WalFile,
    sink: &mut Sink<W>,
) -> io::Result<()> {
    let start = sink.position();
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(b"wal\0");
    let salt = mix(mix(opts.seed ^ TAG_WAL, u64::from(shard.id)), file.number) as u32;
    header[4..].copy_from_slice(&salt.to_le_bytes());
    sink.put(&header)?;
    let dim = opts.dim as usize;
    let mut scratch = vec![0f32; dim];
    let mut floats = vec![0u8; dim * 5];
    let mut result = Ok(());
    place(opts, shard, |number, _, e, len| {
        if number != file.number || result.is_err() {
            return;
        }
        result = write_entry(opts, e, len, sink, &mut scratch, &mut floats);
    });
    result?;
    let stored = file.data_len(opts.wal_capacity);
    let produced = sink.position() - start;
    if produced > stored {
        return Err(io::Error::other("synth: WAL segment overflow"));
    }
    sink.zeros(stored - produced)
}

fn write_entry<W: Write>(
    opts: &SeriesOptions,
    e: Entry<'_>,
    len: u64,
    sink: &mut Sink<W>,
    scratch: &mut [f32],
    floats: &mut [u8],
) -> io::Result<()> {
    sink.put(&len.to_le_bytes())?;
    let mut w = CrcSink { sink, crc: Crc32c::new() };
    w.put(&[0xbf])?;
    match e {
        Entry::Upsert(points) => {
            w.text(b"upsert_points")?;
            w.head(5, 1)?;
            w.text(b"points")?;
            w.head(4, points.len() as u64)?;
            for &packed in points {
                let (id, ver) = unpack(packed);
                w.head(5, 3)?;
                w.text(b"id")?;
                w.head(0, id)?;
                w.text(b"vector")?;
                w.head(4, u64::from(opts.dim))?;
                fill_vector(opts.seed, id, ver, scratch);
                for (o, x) in floats.chunks_exact_mut(5).zip(scratch.iter()) {
                    o[0] = 0xfa;
                    o[1..].copy_from_slice(&x.to_be_bytes());
                }
                w.put(floats)?;
                w.text(b"payload")?;
                let p = Payload::new(opts.seed, id, ver);
                w.head(5, 3)?;
                w.text(b"title")?;
                w.text(p.title())?;
                w.text(b"n")?;
                w.head(0, id)?;
                w.text(b"tag")?;
                w.text(&[p.tag])?;
            }
        }
        Entry::Delete(ids) => {
            w.text(b"delete_points")?;
            w.head(5, 1)?;
            w.text(b"ids")?;
            w.head(4, ids.len() as u64)?;
            for &id in ids {
                w.head(0, id)?;
            }
        }
    }
    w.put(&[0xff])?;
    let crc = w.crc.finish();
    let pad = [0u8; 8];
    sink.put(&pad[..padding(len) as usize])?;
    sink.put(&crc.to_le_bytes())
}
