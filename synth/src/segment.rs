//! One segment as a nested tar: the files of a Qdrant segment directory under
//! `snapshot/files/`, in the order and with the header dialect of the real snapshots.
//!
//! Every file is described first (name, mtime, apparent and stored size) so the nested tar's
//! size is known before its outer header is written; the bytes are then generated while
//! streaming. Big files (vectors, payload pages, trackers, id tracker, links) are produced
//! record by record into the fixed-size sink buffer.

use std::io::{self, Write};

use super::rng::{fill_vector, mix, Payload, WyRand, MAX_JSON, TAG_LINKS};
use super::series::{unpack, Segment};
use super::tar_writer::{Layout, MemberHeader, Sink, Style};
use super::SeriesOptions;

/// Bytes per payload block; every generated payload fits in one.
pub(crate) const PAYLOAD_BLOCK: u64 = 128;
const PAGE_BYTES: u64 = 32 << 20;
const BLOCKS_PER_PAGE: u64 = PAGE_BYTES / PAYLOAD_BLOCK;
const BLOCKS_PER_REGION: u64 = 8192;
const BITMASK_PER_PAGE: u64 = BLOCKS_PER_PAGE / 8;
const GAPS_PER_PAGE: u64 = BLOCKS_PER_PAGE / BLOCKS_PER_REGION * 6;
const VECTOR_CHUNK_BYTES: u64 = 32 << 20;
/// File system block: written parts of preallocated files are stored rounded up to it.
const FS_BLOCK: u64 = 4096;
const HNSW_M: u64 = 16;
const HNSW_M0: u64 = 32;
const LINKS_HEADER: u64 = 64;

/// Timestamp of version `v`'s snapshot: versions are an hour apart.
pub(crate) fn version_time(v: u32) -> u64 {
    1_767_225_600 + u64::from(v) * 3600
}

/// Files are flushed over a couple of seconds, so mtimes differ slightly per file.
fn file_time(v: u32, key: u64, file: u64) -> u64 {
    version_time(v) + mix(key, file) % 3
}

pub(crate) fn vectors_per_chunk(dim: u32) -> u64 {
    (VECTOR_CHUNK_BYTES / (u64::from(dim) * 4)).max(1)
}

fn round_fs(n: u64) -> u64 {
    n.div_ceil(FS_BLOCK) * FS_BLOCK
}

#[derive(Clone, Copy, Debug)]
enum Body {
    Bytes(usize),
    Vectors { chunk: u64 },
    Page { page: u64 },
    Tracker,
    Bitmask,
    Gaps,
    DeletedBits,
    Mappings,
    Versions,
    MutableMappings,
    Links,
}

struct File {
    name: String,
    mtime: u64,
    layout: Layout,
    /// Bytes the body produces; the stored data is this much, then zeros up to the layout's
    /// stored length.
    body: Body,
}

pub(crate) struct SegmentTar<'a> {
    opts: &'a SeriesOptions,
    seg: &'a Segment,
    files: Vec<File>,
    small: Vec<Vec<u8>>,
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl<'a> SegmentTar<'a> {
    pub(crate) fn new(opts: &'a SeriesOptions, seg: &'a Segment) -> Self {
        let mut t = SegmentTar { opts, seg, files: Vec::new(), small: Vec::new() };
        t.describe();
        t
    }

    fn key(&self) -> u64 {
        u64::from_le_bytes([
            self.seg.uuid[0],
            self.seg.uuid[1],
            self.seg.uuid[2],
            self.seg.uuid[3],
            self.seg.uuid[4],
            self.seg.uuid[5],
            self.seg.uuid[6],
            self.seg.uuid[7],
        ])
    }

    fn add(&mut self, name: &str, version: u32, layout: Layout, body: Body) {
        let mtime = file_time(version, self.key(), self.files.len() as u64);
        self.files.push(File { name: format!("snapshot/files/{name}"), mtime, layout, body });
    }

    fn add_small(&mut self, name: &str, version: u32, bytes: Vec<u8>, preallocated: bool) {
        let len = bytes.len() as u64;
        let layout = if preallocated {
            let used = if bytes.iter().all(|&b| b == 0) { 0 } else { round_fs(len) };
            Layout::preallocated(len, used)
        } else {
            Layout::Regular { size: len }
        };
        self.small.push(bytes);
        self.add(name, version, layout, Body::Bytes(self.small.len() - 1));
    }

    fn describe(&mut self) {
        let seg = self.seg;
        let opts = self.opts;
        let n = seg.slots.len() as u64;
        let dim = u64::from(opts.dim);
        let created = seg.created;
        // Immutable segments rewrite only their bookkeeping after creation; appendable ones
        // and in-place rewrites touch everything.
        let data_time = if seg.appendable || opts.variant == super::Variant::InPlace {
            seg.touched
        } else {
            created
        };
        let touched = seg.touched;
        let prealloc_small = seg.appendable;

        if !seg.appendable {
            let graph = u64s(&[n, HNSW_M, HNSW_M0, 100, 1 + n / 4096, n / 2, 0, 0, 0]);
            self.add_small("vector_index/graph.bin", created, graph, false);
            let links = self.links_len();
            self.add(
                "vector_index/links_compressed.bin",
                created,
                Layout::Regular { size: links },
                Body::Links,
            );
            let hnsw = format!(
                "{{\"m\":{HNSW_M},\"m0\":{HNSW_M0},\"ef_construct\":100,\"ef\":100,\
                 \"full_scan_threshold\":10000,\"max_indexing_threads\":0,\"payload_m\":null,\
                 \"payload_m0\":null,\"indexed_vector_count\":{n}}}"
            );
            self.add_small("vector_index/hnsw_config.json", created, hnsw.into_bytes(), false);
        }
        let vpc = vectors_per_chunk(opts.dim);
        let vconf = format!(
            "{{\"chunk_size_bytes\":{},\"chunk_size_vectors\":{vpc},\"dim\":{dim},\"populate\":true}}",
            vpc * dim * 4
        );
        self.add_small("vector_storage/vectors/config.json", created, vconf.into_bytes(), false);
        self.add_small("vector_storage/vectors/status.dat", touched, u64s(&[n]), prealloc_small);
        for chunk in 0..n.div_ceil(vpc) {
            let count = (n - chunk * vpc).min(vpc);
            let apparent = vpc * dim * 4;
            let layout = Layout::preallocated(apparent, round_fs(count * dim * 4));
            let name = format!("vector_storage/vectors/chunk_{chunk}.mmap");
            self.add(&name, data_time, layout, Body::Vectors { chunk });
        }
        self.add_small(
            "vector_storage/deleted/status.dat",
            touched,
            u64s(&[n, seg.deleted_count]),
            prealloc_small,
        );
        let flags_len = n.div_ceil(8).next_power_of_two().max(128);
        let flags_used = if seg.deleted_count > 0 { round_fs(flags_len) } else { 0 };
        let flags_layout = if prealloc_small {
            Layout::preallocated(flags_len, flags_used)
        } else {
            Layout::Regular { size: flags_len }
        };
        self.add("vector_storage/deleted/flags_a.dat", touched, flags_layout, Body::DeletedBits);
        self.add_small(
            "payload_index/config.json",
            created,
            b"{\"indexed_fields\":{}}".to_vec(),
            false,
        );
        let tracker_used = 16 + 16 * n;
        let tracker_len = tracker_used.next_power_of_two().max(1 << 20);
        self.add(
            "payload_storage/tracker.dat",
            touched,
            Layout::preallocated(tracker_len, round_fs(tracker_used)),
            Body::Tracker,
        );
        let pages = n.div_ceil(BLOCKS_PER_PAGE).max(1);
        for page in 0..pages {
            let count = n.saturating_sub(page * BLOCKS_PER_PAGE).min(BLOCKS_PER_PAGE);
            let layout = Layout::preallocated(PAGE_BYTES, round_fs(count * PAYLOAD_BLOCK));
            let name = format!("payload_storage/page_{page}.dat");
            self.add(&name, data_time, layout, Body::Page { page });
        }
        let pconf = format!(
            "{{\"page_size_bytes\":{PAGE_BYTES},\"block_size_bytes\":{PAYLOAD_BLOCK},\
             \"region_size_blocks\":{BLOCKS_PER_REGION},\"compression\":\"LZ4\"}}"
        );
        self.add_small("payload_storage/config.json", created, pconf.into_bytes(), false);
        let bitmask_used = if seg.live() > 0 { round_fs(n.div_ceil(8)) } else { 0 };
        self.add(
            "payload_storage/bitmask.dat",
            touched,
            Layout::preallocated(BITMASK_PER_PAGE * pages, bitmask_used),
            Body::Bitmask,
        );
        self.add(
            "payload_storage/gaps.dat",
            touched,
            Layout::Regular { size: GAPS_PER_PAGE * pages },
            Body::Gaps,
        );
        if seg.appendable {
            if !seg.events.is_empty() {
                let inserts = seg.events.iter().filter(|e| *e & 1 == 0).count() as u64;
                let deletes = seg.events.len() as u64 - inserts;
                self.add(
                    "mutable_id_tracker.mappings",
                    touched,
                    Layout::Regular { size: inserts * 13 + deletes * 9 },
                    Body::MutableMappings,
                );
                self.add(
                    "mutable_id_tracker.versions",
                    touched,
                    Layout::Regular { size: n * 8 },
                    Body::Versions,
                );
            }
        } else {
            self.add(
                "id_tracker.deleted",
                touched,
                Layout::Regular { size: n.div_ceil(64) * 8 },
                Body::DeletedBits,
            );
            self.add(
                "id_tracker.mappings",
                data_time,
                Layout::Regular { size: 8 + n * 13 },
                Body::Mappings,
            );
            self.add(
                "id_tracker.versions",
                data_time,
                Layout::Regular { size: n * 8 },
                Body::Versions,
            );
        }
        let index = if seg.appendable {
            "{\"type\":\"plain\",\"options\":{}}".to_string()
        } else {
            format!(
                "{{\"type\":\"hnsw\",\"options\":{{\"m\":{HNSW_M},\"ef_construct\":100,\
                 \"full_scan_threshold\":10000,\"max_indexing_threads\":0,\"on_disk\":false}}}}"
            )
        };
        let segment_json = format!(
            "{{\"initial_version\":{},\"version\":{},\"config\":{{\"vector_data\":{{\"\":{{\
             \"size\":{dim},\"distance\":\"Cosine\",\"storage_type\":\"InRamChunkedMmap\",\
             \"index\":{index},\"quantization_config\":null}}}},\
             \"payload_storage_type\":{{\"type\":\"mmap\"}}}}}}",
            seg.initial_op, seg.last_op
        );
        self.add_small("segment.json", touched, segment_json.into_bytes(), false);
        self.add_small("version.info", created, b"0.6.0".to_vec(), false);
    }

    /// Size of the nested tar. Like Qdrant's, it has no end-of-archive blocks.
    pub(crate) fn len(&self) -> u64 {
        self.files.iter().map(|f| header(f).total_len()).sum()
    }

    pub(crate) fn write<W: Write>(&self, sink: &mut Sink<W>) -> io::Result<()> {
        let mut scratch = vec![0f32; self.opts.dim as usize];
        for f in &self.files {
            let h = header(f);
            h.write(sink)?;
            let stored = f.layout.stored();
            let start = sink.position();
            self.write_body(f.body, stored, sink, &mut scratch)?;
            let produced = sink.position() - start;
            if produced > stored {
                return Err(io::Error::other(format!(
                    "synth: {} produced {produced} bytes for {stored} stored",
                    f.name
                )));
            }
            sink.zeros(stored - produced)?;
            sink.pad_block(stored)?;
        }
        Ok(())
    }

    /// Writes at most `limit` bytes of the file's content (the written part of a
    /// preallocated file ends before its hole).
    fn write_body<W: Write>(
        &self,
        body: Body,
        limit: u64,
        sink: &mut Sink<W>,
        scratch: &mut [f32],
    ) -> io::Result<()> {
        let seg = self.seg;
        let n = seg.slots.len() as u64;
        let seed = self.opts.seed;
        let dim = self.opts.dim as usize;
        if limit == 0 {
            return Ok(());
        }
        match body {
            Body::Bytes(i) => {
                let b = self.small.get(i).map(Vec::as_slice).unwrap_or(&[]);
                sink.put(&b[..b.len().min(limit as usize)])?;
            }
            Body::Vectors { chunk } => {
                let vpc = vectors_per_chunk(self.opts.dim);
                let from = chunk * vpc;
                let to = (from + vpc).min(n);
                for &slot in &seg.slots[from as usize..to as usize] {
                    let (id, ver) = unpack(slot);
                    fill_vector(seed, id, ver, scratch);
                    let out = sink.space(dim * 4)?;
                    for (o, x) in out.chunks_exact_mut(4).zip(scratch.iter()) {
                        o.copy_from_slice(&x.to_le_bytes());
                    }
                }
            }
            Body::Page { page } => {
                let from = page * BLOCKS_PER_PAGE;
                let to = (from + BLOCKS_PER_PAGE).min(n);
                for &slot in &seg.slots[from as usize..to as usize] {
                    let (id, ver) = unpack(slot);
                    write_payload_block(sink, &Payload::new(seed, id, ver))?;
                }
            }
            Body::Tracker => {
                let mut head = [0u8; 16];
                head[..4].copy_from_slice(&(n as u32).to_le_bytes());
                head[4..8].copy_from_slice(&1u32.to_le_bytes());
                sink.put(&head)?;
                for (i, &slot) in seg.slots.iter().enumerate() {
                    let mut e = [0u8; 16];
                    if !seg.is_deleted(i) {
                        let (id, ver) = unpack(slot);
                        let i = i as u64;
                        let len = payload_block_len(&Payload::new(seed, id, ver));
                        e[..4].copy_from_slice(&((i % BLOCKS_PER_PAGE) as u32).to_le_bytes());
                        e[4..8].copy_from_slice(&((i / BLOCKS_PER_PAGE) as u32).to_le_bytes());
                        e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                        e[12..16].copy_from_slice(&1u32.to_le_bytes());
                    }
                    sink.put(&e)?;
                }
            }
            Body::Bitmask => {
                // A set bit per used payload block; deleted points free theirs.
                let words = n.div_ceil(64) as usize;
                let mut produced = 0u64;
                for w in 0..words {
                    let mut word = !seg.deleted.get(w).copied().unwrap_or(0);
                    let base = w as u64 * 64;
                    if base + 64 > n {
                        word &= (1u64 << (n - base)) - 1;
                    }
                    let bytes = word.to_le_bytes();
                    let take = (n.div_ceil(8) - produced).min(8) as usize;
                    sink.put(&bytes[..take])?;
                    produced += take as u64;
                }
            }
            Body::Gaps => {
                let pages = n.div_ceil(BLOCKS_PER_PAGE).max(1);
                for region in 0..pages * BLOCKS_PER_PAGE / BLOCKS_PER_REGION {
                    let from = region * BLOCKS_PER_REGION;
                    let (mut lead, mut trail, mut best, mut run) = (0u64, 0u64, 0u64, 0u64);
                    let mut seen_used = false;
                    for b in from..from + BLOCKS_PER_REGION {
                        let used = b < n && !seg.is_deleted(b as usize);
                        if used {
                            seen_used = true;
                            run = 0;
                        } else {
                            run += 1;
                            best = best.max(run);
                            if !seen_used {
                                lead += 1;
                            }
                        }
                        trail = run;
                    }
                    let mut g = [0u8; 6];
                    g[..2].copy_from_slice(&(lead as u16).to_le_bytes());
                    g[2..4].copy_from_slice(&(trail as u16).to_le_bytes());
                    g[4..].copy_from_slice(&(best as u16).to_le_bytes());
                    sink.put(&g)?;
                }
            }
            Body::DeletedBits => {
                let mut left = limit;
                for w in &seg.deleted {
                    if left == 0 {
                        break;
                    }
                    let take = left.min(8) as usize;
                    sink.put(&w.to_le_bytes()[..take])?;
                    left -= take as u64;
                }
            }
            Body::Mappings => {
                sink.put(&n.to_le_bytes())?;
                for (i, &slot) in seg.slots.iter().enumerate() {
                    let (id, _) = unpack(slot);
                    let mut r = [0u8; 13];
                    r[1..9].copy_from_slice(&id.to_le_bytes());
                    r[9..].copy_from_slice(&(i as u32).to_le_bytes());
                    sink.put(&r)?;
                }
            }
            Body::Versions => {
                for &slot in &seg.slots {
                    let (_, ver) = unpack(slot);
                    sink.put(&(u64::from(ver) + 1).to_le_bytes())?;
                }
            }
            Body::MutableMappings => {
                for &e in &seg.events {
                    let slot = (e >> 1) as usize;
                    let (id, _) = unpack(seg.slots.get(slot).copied().unwrap_or(0));
                    let mut r = [0u8; 13];
                    r[1..9].copy_from_slice(&id.to_le_bytes());
                    if e & 1 == 0 {
                        r[0] = 1;
                        r[9..].copy_from_slice(&(slot as u32).to_le_bytes());
                        sink.put(&r)?;
                    } else {
                        r[0] = 2;
                        sink.put(&r[..9])?;
                    }
                }
            }
            Body::Links => self.write_links(sink)?,
        }
        Ok(())
    }

    fn links_seed(&self) -> u64 {
        mix(self.opts.seed ^ TAG_LINKS, self.key())
    }

    /// Size of `links_compressed.bin`: header, an offset per point plus one, and the
    /// delta-varint neighbour lists.
    fn links_len(&self) -> u64 {
        let n = self.seg.slots.len() as u64;
        let mut buf = [0u8; LINKS_MAX];
        let data: u64 = (0..n).map(|s| neighbours(self.links_seed(), n, s, &mut buf) as u64).sum();
        LINKS_HEADER + (n + 1) * 8 + data
    }

    fn write_links<W: Write>(&self, sink: &mut Sink<W>) -> io::Result<()> {
        let n = self.seg.slots.len() as u64;
        let seed = self.links_seed();
        let mut buf = [0u8; LINKS_MAX];
        let data_len = self.links_len() - LINKS_HEADER - (n + 1) * 8;
        let mut head = [0u8; LINKS_HEADER as usize];
        for (i, v) in [n, 1 + n / 4096, data_len, LINKS_HEADER, HNSW_M, HNSW_M0].iter().enumerate()
        {
            head[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        sink.put(&head)?;
        let mut offset = 0u64;
        for s in 0..n {
            sink.put(&offset.to_le_bytes())?;
            offset += neighbours(seed, n, s, &mut buf) as u64;
        }
        sink.put(&offset.to_le_bytes())?;
        for s in 0..n {
            let len = neighbours(seed, n, s, &mut buf);
            sink.put(&buf[..len])?;
        }
        Ok(())
    }
}

const LINKS_MAX: usize = 1 + HNSW_M0 as usize * 10;

/// A point's level-0 neighbour list, HNSW style: between m0/2 and m0 neighbours, sorted,
/// stored as a count and varint deltas. Pseudo-random but fixed per (segment, slot), so an
/// unchanged segment keeps identical links.
fn neighbours(seed: u64, n: u64, slot: u64, out: &mut [u8; LINKS_MAX]) -> usize {
    let mut rng = WyRand::new(mix(seed, slot));
    let count = HNSW_M0 / 2 + rng.below(HNSW_M0 / 2 + 1);
    let spread = (2 * n / count).max(2);
    out[0] = count as u8;
    let mut len = 1;
    for _ in 0..count {
        let mut d = 1 + rng.below(spread - 1);
        while d >= 0x80 {
            out[len] = (d as u8) | 0x80;
            d >>= 7;
            len += 1;
        }
        out[len] = d as u8;
        len += 1;
    }
    len
}

/// A payload as stored in a gridstore block: `u32` length, then an LZ4 block holding the JSON
/// as literals only (valid LZ4), zero-padded to the block size.
fn payload_block_len(p: &Payload) -> usize {
    let mut json = [0u8; MAX_JSON];
    p.write_json(&mut json) + 2
}

fn write_payload_block<W: Write>(sink: &mut Sink<W>, p: &Payload) -> io::Result<()> {
    let mut json = [0u8; MAX_JSON];
    let n = p.write_json(&mut json);
    let block = sink.space(PAYLOAD_BLOCK as usize)?;
    // JSON is 15..=122 bytes: one token with 15 literals plus one extra length byte.
    let lz4_len = n + 2;
    block[..4].copy_from_slice(&(lz4_len as u32).to_le_bytes());
    block[4] = 0xf0;
    block[5] = n.saturating_sub(15).min(255) as u8;
    let end = (6 + n).min(PAYLOAD_BLOCK as usize);
    block[6..end].copy_from_slice(&json[..end - 6]);
    Ok(())
}

fn header(f: &File) -> MemberHeader<'_> {
    MemberHeader { name: &f.name, mtime: f.mtime, style: Style::Disk, layout: f.layout.clone() }
}
