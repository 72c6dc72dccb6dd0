//! Deterministic generator of Qdrant-like collection snapshot series, for tests, benches and
//! the `synth` example.
//!
//! A version is an uncompressed tar laid out like a real Qdrant 1.18 collection snapshot (see
//! `shared/qdrant-api.md` and the captures in `shared/real-qdrant/`): `config.json`,
//! `version.info`, and per shard `N/segments/<uuid>.tar` nested tars, the WAL and the small
//! JSON files. Preallocated files (vector chunks, payload pages, trackers, WAL segments) are
//! old-GNU sparse members whose stored data is the written part.
//!
//! Versions change the way Qdrant changes a collection:
//! - [`Variant::CopyOnWrite`]: each version updates `change_fraction` of the points (old copy
//!   flagged deleted where it lives, new copy appended to the appendable segment), inserts
//!   half as many new points and deletes a quarter as many. Indexed segments keep their
//!   vectors, links, id mappings and payload pages byte for byte; their deleted flags,
//!   payload tracker and bitmask change. Every `merge_every` versions the optimizer merges
//!   the appendable segment with the smallest indexed one into a new uuid, dropping deleted
//!   points (so everything in them shifts), and opens a fresh appendable segment.
//! - [`Variant::InPlace`]: the same number of changes written at their existing offsets
//!   inside the indexed segments' files (vectors, payload blocks, versions, flags), inserts
//!   reusing slots freed by earlier deletes. Member sizes never change: the hard case for a
//!   chunker, since changes are scattered through every big file.
//!
//! Output is streamed through one fixed 256 KiB buffer; vector, payload and link bytes are
//! regenerated from `(seed, point id, point version)` as they are written. Nothing holds
//! the output: memory is the simulation state (8 bytes and a bit per point, plus the logs
//! of changed points), a few hundred bytes of metadata per file, and that buffer.

mod rng;
mod segment;
mod series;
mod tar_writer;
mod wal;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, Write};

use segment::{version_time, SegmentTar};
use tar_writer::{Layout, MemberHeader, Sink, Style};

/// `len` incompressible bytes, a pure function of `seed`: test and bench data that no
/// chunk of another seed dedups against.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rng::WyRand::new(rng::mix(seed, len as u64));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How versions change the collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Qdrant's behaviour: updates append to the appendable segment, old copies are only
    /// flagged deleted; periodic merges rewrite segments under new uuids.
    CopyOnWrite,
    /// Scattered rewrites inside the existing files, sizes unchanged.
    InPlace,
}

#[derive(Clone, Debug)]
pub struct SeriesOptions {
    pub seed: u64,
    /// Points at version 0, over all shards.
    pub points: u64,
    /// Vector dimension (float32).
    pub dim: u32,
    pub shards: u32,
    pub variant: Variant,
    /// Fraction of live points updated per version (e.g. 0.01).
    pub change_fraction: f64,
    /// An optimizer merge happens in every version `v` with `v % merge_every == 0`
    /// (copy-on-write only; 0 disables merges).
    pub merge_every: u32,
    /// Preallocated size of each WAL segment file (Qdrant's default is 32 MiB).
    pub wal_capacity: u64,
}

/// Per-point bytes in the snapshot besides the vector: payload block, tracker entry, id
/// tracker records and HNSW links, measured on generated output.
const POINT_OVERHEAD: u64 = 128 + 16 + 21 + 48;
const MIB: u64 = 1 << 20;

impl SeriesOptions {
    /// Options for a copy-on-write series whose version 0 is about `target_bytes` long:
    /// 768-dimensional vectors (a common embedding size), 1% changes per version, a merge
    /// every 3 versions, and a WAL capacity scaled down for small targets.
    pub fn for_size(target_bytes: u64, seed: u64) -> Self {
        let dim = 768u32;
        let shards = if target_bytes >= 1 << 30 { 2 } else { 1 };
        let wal_capacity = (target_bytes / 8 / MIB).clamp(1, 32) * MIB;
        // The WAL holds about 60% of a segment per shard; the rest is points.
        let fixed = u64::from(shards) * (wal_capacity * 6 / 10 + 256 * 1024);
        let per_point = u64::from(dim) * 4 + POINT_OVERHEAD;
        let points = target_bytes.saturating_sub(fixed) / per_point;
        SeriesOptions {
            seed,
            points: points.max(1),
            dim,
            shards,
            variant: Variant::CopyOnWrite,
            change_fraction: 0.01,
            merge_every: 3,
            wal_capacity,
        }
    }

    /// Clamps every field into the range the generator supports, so any input produces a
    /// valid series instead of a panic or an absurd allocation.
    fn sanitized(mut self) -> Self {
        self.dim = self.dim.clamp(1, 65_536);
        self.shards = self.shards.clamp(1, 64);
        // Point ids are packed into 40 bits.
        self.points = self.points.min(1 << 36);
        self.change_fraction = if self.change_fraction.is_finite() {
            self.change_fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        // Room for a few upsert batches of at least one point.
        let min_wal = (4 * (u64::from(self.dim) * 5 + 200)).max(64 * 1024);
        self.wal_capacity = self.wal_capacity.max(min_wal).min(1 << 34);
        self
    }
}

/// What version `v` changed relative to `v - 1` (for version 0: everything it contains).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionChanges {
    pub version: u32,
    pub points_updated: u64,
    pub points_inserted: u64,
    pub points_deleted: u64,
    /// Live points and segments after this version.
    pub live_points: u64,
    pub segments: u64,
    /// An optimizer merge happened in this version.
    pub merged: bool,
    pub segments_removed: Vec<String>,
    pub segments_added: Vec<String>,
    /// Vector bytes of the points written in this version.
    pub new_vector_bytes: u64,
    /// Payload block bytes of the points written in this version.
    pub new_payload_bytes: u64,
    /// WAL bytes this version appended.
    pub wal_bytes: u64,
    /// Bytes of old points rewritten at new offsets by a merge (not new, but moved).
    pub shifted_bytes: u64,
}

impl VersionChanges {
    /// The floor for an incremental backup of this version: bytes that exist nowhere in the
    /// previous version (new vectors and payloads, WAL entries). Small bookkeeping files
    /// (flags, trackers, JSON) come on top.
    pub fn new_bytes(&self) -> u64 {
        self.new_vector_bytes + self.new_payload_bytes + self.wal_bytes
    }
}

impl fmt::Display for VersionChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}: {} updated, {} inserted, {} deleted, {} live in {} segments; new bytes {} \
             (vectors {}, payload {}, wal {})",
            self.version,
            self.points_updated,
            self.points_inserted,
            self.points_deleted,
            self.live_points,
            self.segments,
            self.new_bytes(),
            self.new_vector_bytes,
            self.new_payload_bytes,
            self.wal_bytes
        )?;
        if self.merged {
            write!(
                f,
                "; merge: -{} +{}, {} bytes shifted",
                self.segments_removed.join(" -"),
                self.segments_added.join(" +"),
                self.shifted_bytes
            )?;
        }
        Ok(())
    }
}

/// A series of snapshots of one synthetic collection.
#[derive(Clone, Debug)]
pub struct Series {
    opts: SeriesOptions,
}

/// Point versions are stored in 24 bits.
const MAX_VERSION: u32 = (1 << series::VERSION_BITS) - 1;

impl Series {
    pub fn new(opts: SeriesOptions) -> Self {
        Series { opts: opts.sanitized() }
    }

    /// The options in effect (after clamping to supported ranges).
    pub fn options(&self) -> &SeriesOptions {
        &self.opts
    }

    /// Writes version `v` (0-based) as an uncompressed tar to `out`, streaming: memory does
    /// not grow with the snapshot size. Returns the bytes written.
    pub fn write_version(&self, v: u32, out: impl Write) -> io::Result<u64> {
        if v > MAX_VERSION {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "synth: version too large"));
        }
        let opts = &self.opts;
        let state = series::simulate(opts, v);
        let mut sink = Sink::new(out);
        let now = version_time(v);
        for shard in &state.shards {
            let s = shard.id;
            for seg in &shard.segments {
                let tar = SegmentTar::new(opts, seg);
                let name = format!("{s}/segments/{}.tar", rng::uuid_string(&seg.uuid));
                let inner = tar.len();
                let h = MemberHeader {
                    name: &name,
                    mtime: 0,
                    style: Style::Memory,
                    layout: Layout::Regular { size: inner },
                };
                h.write(&mut sink)?;
                let start = sink.position();
                tar.write(&mut sink)?;
                if sink.position() - start != inner {
                    return Err(io::Error::other("synth: segment tar size mismatch"));
                }
                sink.pad_block(inner)?;
            }
            let wal = wal::plan(opts, shard, v);
            let peer = rng::mix(opts.seed, 0x7065_6572) >> 12;
            let token = rng::mix(opts.seed ^ u64::from(s), 0x0074_6f6b);
            let clocks = |tick: u64| {
                format!(
                    "{{\"clocks\":[{{\"peer_id\":{peer},\"clock_id\":0,\"current_tick\":{tick},\
                     \"token\":{token}}}]}}"
                )
            };
            let mut small = |name: String, body: String, style: Style, mtime: u64| {
                put_file(&mut sink, &name, mtime, style, body.as_bytes())
            };
            small(format!("{s}/newest_clocks.json"), clocks(wal.last_op), Style::Disk, now)?;
            small(format!("{s}/oldest_clocks.json"), clocks(wal.ack_index), Style::Disk, now)?;
            for f in &wal.files {
                let name = format!("{s}/wal/{}", f.name);
                let layout = Layout::preallocated(opts.wal_capacity, f.data_len(opts.wal_capacity));
                let h = MemberHeader { name: &name, mtime: f.mtime, style: Style::Disk, layout };
                h.write(&mut sink)?;
                wal::write_file(opts, shard, f, &mut sink)?;
                sink.pad_block(h.layout.stored())?;
            }
            let mut small = |name: String, body: String, style: Style, mtime: u64| {
                put_file(&mut sink, &name, mtime, style, body.as_bytes())
            };
            small(
                format!("{s}/wal/first-index"),
                format!("{{\"ack_index\":{}}}", wal.ack_index),
                Style::Disk,
                now,
            )?;
            small(
                format!("{s}/applied_seq.json"),
                format!("{{\"op_num\":{},\"timestamp\":{now}}}", wal.last_op),
                Style::Disk,
                now,
            )?;
            small(
                format!("{s}/replica_state.json"),
                format!(
                    "{{\"is_local\":true,\"this_peer_id\":{peer},\"peers\":{{\"{peer}\":\"Active\"}}}}"
                ),
                Style::Memory,
                0,
            )?;
            small(
                format!("{s}/shard_config.json"),
                "{\"type\":\"ReplicaSet\"}".into(),
                Style::Memory,
                0,
            )?;
        }
        put_file(&mut sink, "version.info", 0, Style::Memory, b"0.4.2")?;
        put_file(&mut sink, "config.json", 0, Style::Memory, self.config_json().as_bytes())?;
        put_file(&mut sink, "shard_key_mapping.json", 0, Style::Memory, b"[]")?;
        put_file(&mut sink, "payload_index.json", 0, Style::Memory, b"{\"schema\":{}}")?;
        sink.zeros(1024)?;
        sink.finish()
    }

    /// Describes what version `v` changed relative to `v - 1`.
    pub fn changes(&self, v: u32) -> VersionChanges {
        let v = v.min(MAX_VERSION);
        let state = series::simulate(&self.opts, v);
        let mut ch = state.changes;
        ch.wal_bytes =
            state.shards.iter().map(|s| wal::plan(&self.opts, s, v).last_version_bytes).sum();
        ch
    }

    fn config_json(&self) -> String {
        let o = &self.opts;
        format!(
            "{{\"params\":{{\"vectors\":{{\"size\":{},\"distance\":\"Cosine\"}},\"shard_number\":{},\
             \"replication_factor\":1,\"write_consistency_factor\":1,\"on_disk_payload\":true}},\
             \"hnsw_config\":{{\"m\":16,\"ef_construct\":100,\"full_scan_threshold\":10000,\
             \"max_indexing_threads\":0,\"on_disk\":false}},\"optimizer_config\":{{\
             \"deleted_threshold\":0.2,\"vacuum_min_vector_number\":1000,\
             \"default_segment_number\":0,\"max_segment_size\":null,\"memmap_threshold\":null,\
             \"indexing_threshold\":10000,\"flush_interval_sec\":5,\
             \"max_optimization_threads\":null,\"prevent_unoptimized\":null}},\"wal_config\":{{\
             \"wal_capacity_mb\":{},\"wal_segments_ahead\":0,\"wal_retain_closed\":1}},\
             \"quantization_config\":null,\"uuid\":null}}",
            o.dim,
            o.shards,
            o.wal_capacity.div_ceil(MIB)
        )
    }
}

fn put_file<W: Write>(
    sink: &mut Sink<W>,
    name: &str,
    mtime: u64,
    style: Style,
    body: &[u8],
) -> io::Result<()> {
    let layout = Layout::Regular { size: body.len() as u64 };
    MemberHeader { name, mtime, style, layout }.write(sink)?;
    sink.put(body)?;
    sink.pad_block(body.len() as u64)
}
