//! The collection model: which points live in which segment slot at each version.
//!
//! A version is rebuilt by replaying the operations from version 0, which is cheap (it
//! touches only the slot lists, never vector bytes). The state costs 8 bytes per slot plus a
//! deleted bit, i.e. well under 1% of the snapshot bytes a slot stands for (a vector alone
//! is `4 * dim` bytes), and the per-version operation logs are proportional to the changes.

use super::rng::{mix, uuid, WyRand, TAG_SIM};
use super::{SeriesOptions, Variant, VersionChanges};

/// A slot packs the point id (upper 40 bits) and the point version (lower 24 bits).
pub(crate) const VERSION_BITS: u32 = 24;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;

#[inline]
pub(crate) fn pack(id: u64, version: u32) -> u64 {
    (id << VERSION_BITS) | (u64::from(version) & VERSION_MASK)
}

#[inline]
pub(crate) fn unpack(slot: u64) -> (u64, u32) {
    (slot >> VERSION_BITS, (slot & VERSION_MASK) as u32)
}

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub(crate) uuid: [u8; 16],
    pub(crate) appendable: bool,
    /// Packed `(id, version)` per internal offset, in storage order.
    pub(crate) slots: Vec<u64>,
    /// Deleted flag per slot.
    pub(crate) deleted: Vec<u64>,
    pub(crate) deleted_count: u64,
    /// Version in which the segment was created, and the last one that modified it.
    pub(crate) created: u32,
    pub(crate) touched: u32,
    /// First and last operation numbers applied (for `segment.json`).
    pub(crate) initial_op: u64,
    pub(crate) last_op: u64,
    /// Appendable segments only: the mutable id tracker's append log, `slot << 1 | deleted`.
    pub(crate) events: Vec<u64>,
}

impl Segment {
    fn new(uuid: [u8; 16], appendable: bool, slots: Vec<u64>, version: u32, op: u64) -> Self {
        let words = slots.len().div_ceil(64);
        let events =
            if appendable { (0..slots.len() as u64).map(|s| s << 1).collect() } else { Vec::new() };
        Segment {
            uuid,
            appendable,
            slots,
            deleted: vec![0; words],
            deleted_count: 0,
            created: version,
            touched: version,
            initial_op: op,
            last_op: op,
            events,
        }
    }

    #[inline]
    pub(crate) fn is_deleted(&self, slot: usize) -> bool {
        self.deleted.get(slot / 64).is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }

    fn set_deleted(&mut self, slot: usize, on: bool) {
        if slot / 64 >= self.deleted.len() {
            self.deleted.resize(slot / 64 + 1, 0);
        }
        let bit = 1u64 << (slot % 64);
        let was = self.deleted[slot / 64] & bit != 0;
        if on && !was {
            self.deleted[slot / 64] |= bit;
            self.deleted_count += 1;
        } else if !on && was {
            self.deleted[slot / 64] &= !bit;
            self.deleted_count -= 1;
        }
    }

    fn push(&mut self, slot: u64) {
        let s = self.slots.len() as u64;
        self.slots.push(slot);
        if self.deleted.len() * 64 < self.slots.len() {
            self.deleted.push(0);
        }
        self.events.push(s << 1);
    }

    pub(crate) fn live(&self) -> u64 {
        self.slots.len() as u64 - self.deleted_count
    }
}

/// What one version wrote to a shard's WAL: upserted points (packed) and deleted ids.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpLog {
    pub(crate) upserts: Vec<u64>,
    pub(crate) deletes: Vec<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct Shard {
    pub(crate) id: u32,
    /// Segments in the order they are written (sorted by uuid, as a directory listing would
    /// be, so a merge moves segments around in the tar).
    pub(crate) segments: Vec<Segment>,
    /// Operation log per version, index = version.
    pub(crate) logs: Vec<OpLog>,
    /// Operations applied before the first WAL entry still present at version 0 (the bulk
    /// load, long truncated from the WAL).
    pub(crate) ops_before_log: u64,
    next_id: u64,
    uuid_counter: u64,
    /// In-place variant: slots freed by deletes, reused by later inserts.
    freed: Vec<(usize, usize, u32)>,
}

pub(crate) struct State {
    pub(crate) shards: Vec<Shard>,
    pub(crate) changes: VersionChanges,
}

/// Points per WAL upsert entry: the real fixture's client sent batches of 500; smaller when
/// a batch would not fit a quarter of a WAL segment.
pub(crate) fn batch_points(opts: &SeriesOptions) -> u64 {
    let per_point = u64::from(opts.dim) * 5 + 160;
    (opts.wal_capacity / 4 / per_point).clamp(1, 500)
}

/// Vector and payload bytes a point occupies in segment storage.
pub(crate) fn point_storage_bytes(opts: &SeriesOptions) -> u64 {
    u64::from(opts.dim) * 4 + super::segment::PAYLOAD_BLOCK
}

fn shard_points(opts: &SeriesOptions, shard: u32) -> u64 {
    let shards = u64::from(opts.shards);
    opts.points / shards + u64::from(u64::from(shard) < opts.points % shards)
}

/// Target bytes of vector data per immutable segment at version 0.
const SEGMENT_TARGET_BYTES: u64 = 64 << 20;

fn initial_shard(opts: &SeriesOptions, shard: u32) -> Shard {
    let n = shard_points(opts, shard);
    let shards = u64::from(opts.shards);
    let ids = |from: u64, to: u64| (from..to).map(|k| pack(u64::from(shard) + k * shards, 0));
    // The tail of the bulk load is still in the appendable segment (not yet indexed).
    let appendable = n / 50;
    let indexed = n - appendable;
    let vector_bytes = indexed * u64::from(opts.dim) * 4;
    let count = (vector_bytes + SEGMENT_TARGET_BYTES / 2) / SEGMENT_TARGET_BYTES;
    let count = count.clamp(2, 16).min(indexed).max(u64::from(indexed > 0));
    let mut uuid_counter = 0;
    let mut next_uuid = || {
        uuid_counter += 1;
        uuid(opts.seed, shard, uuid_counter)
    };
    let batch = batch_points(opts);
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 0..count {
        let end = indexed * (i + 1) / count;
        let op = end.div_ceil(batch);
        segments.push(Segment::new(next_uuid(), false, ids(start, end).collect(), 0, op));
        start = end;
    }
    segments.push(Segment::new(next_uuid(), true, ids(indexed, n).collect(), 0, n.div_ceil(batch)));
    segments.sort_by_key(|s| s.uuid);

    // The WAL at version 0 still holds the last upserts of the load: enough to fill about
    // 60% of one WAL segment.
    let per_point = u64::from(opts.dim) * 5 + 110;
    let tail = (opts.wal_capacity * 6 / 10 / per_point).min(n);
    let upserts = ids(n - tail, n).collect();
    let ops_before_log = (n - tail).div_ceil(batch);
    Shard {
        id: shard,
        segments,
        logs: vec![OpLog { upserts, deletes: Vec::new() }],
        ops_before_log,
        next_id: n,
        uuid_counter: count + 1,
        freed: Vec::new(),
    }
}

impl Shard {
    fn next_uuid(&mut self, seed: u64) -> [u8; 16] {
        self.uuid_counter += 1;
        uuid(seed, self.id, self.uuid_counter)
    }

    fn new_id(&mut self, shards: u32) -> u64 {
        let id = u64::from(self.id) + self.next_id * u64::from(shards);
        self.next_id += 1;
        id
    }

    pub(crate) fn live(&self) -> u64 {
        self.segments.iter().map(Segment::live).sum()
    }

    fn appendable(&self) -> Option<usize> {
        self.segments.iter().position(|s| s.appendable)
    }

    /// A random live slot, only in immutable segments when `immutable_only`. Bounded
    /// retries: deleted slots are a minority, and a miss only makes a version slightly
    /// smaller.
    fn pick_live(&self, rng: &mut WyRand, immutable_only: bool) -> Option<(usize, usize)> {
        let eligible = |s: &Segment| !(immutable_only && s.appendable);
        let total: u64 =
            self.segments.iter().filter(|s| eligible(s)).map(|s| s.slots.len() as u64).sum();
        if total == 0 {
            return None;
        }
        for _ in 0..64 {
            let mut r = rng.below(total);
            for (i, s) in self.segments.iter().enumerate() {
                if !eligible(s) {
                    continue;
                }
                let len = s.slots.len() as u64;
                if r < len {
                    if !s.is_deleted(r as usize) {
                        return Some((i, r as usize));
                    }
                    break;
                }
                r -= len;
            }
        }
        None
    }

    /// Optimizer merge: the appendable segment and the smallest indexed one become one new
    /// indexed segment without their deleted points (so every surviving byte moves), and a
    /// fresh empty appendable segment takes new writes.
    fn merge(&mut self, opts: &SeriesOptions, version: u32, op: u64, ch: &mut VersionChanges) {
        let Some(app) = self.appendable() else { return };
        let Some(small) = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.appendable)
            .min_by_key(|(_, s)| s.live())
            .map(|(i, _)| i)
        else {
            return;
        };
        let mut survivors = Vec::new();
        for &i in &[small, app] {
            let s = &self.segments[i];
            survivors.extend(
                s.slots.iter().enumerate().filter(|&(j, _)| !s.is_deleted(j)).map(|(_, &v)| v),
            );
            ch.segments_removed.push(super::rng::uuid_string(&s.uuid));
        }
        ch.shifted_bytes += survivors.len() as u64 * point_storage_bytes(opts);
        let (hi, lo) = if small > app { (small, app) } else { (app, small) };
        self.segments.remove(hi);
        self.segments.remove(lo);
        let merged_uuid = self.next_uuid(opts.seed);
        let fresh_uuid = self.next_uuid(opts.seed);
        let merged = Segment::new(merged_uuid, false, survivors, version, op);
        let fresh = Segment::new(fresh_uuid, true, Vec::new(), version, op);
        ch.segments_added.push(super::rng::uuid_string(&merged.uuid));
        ch.segments_added.push(super::rng::uuid_string(&fresh.uuid));
        self.segments.push(merged);
        self.segments.push(fresh);
        self.segments.sort_by_key(|s| s.uuid);
        ch.merged = true;
    }

    fn apply(&mut self, opts: &SeriesOptions, version: u32, ch: &mut VersionChanges) {
        let mut rng =
            WyRand::new(mix(mix(opts.seed ^ TAG_SIM, u64::from(self.id)), version.into()));
        let batch = batch_points(opts);
        let op =
            self.ops_before_log + self.logs.iter().map(|l| wal_entries(l, batch)).sum::<u64>() + 1;
        let live = self.live();
        let updates = (live as f64 * opts.change_fraction).round() as u64;
        let inserts = updates / 2;
        let deletes = updates / 4;
        let mut log = OpLog::default();
        match opts.variant {
            Variant::CopyOnWrite => {
                if opts.merge_every > 0 && version % opts.merge_every == 0 {
                    self.merge(opts, version, op, ch);
                }
                for _ in 0..updates {
                    let Some((seg, slot)) = self.pick_live(&mut rng, false) else { break };
                    let (id, _) = unpack(self.segments[seg].slots[slot]);
                    self.delete_slot(seg, slot, version, op);
                    self.append(pack(id, version), version, op);
                    log.upserts.push(pack(id, version));
                    ch.points_updated += 1;
                }
                for _ in 0..inserts {
                    let id = self.new_id(opts.shards);
                    self.append(pack(id, version), version, op);
                    log.upserts.push(pack(id, version));
                    ch.points_inserted += 1;
                }
                for _ in 0..deletes {
                    let Some((seg, slot)) = self.pick_live(&mut rng, false) else { break };
                    let (id, _) = unpack(self.segments[seg].slots[slot]);
                    self.delete_slot(seg, slot, version, op);
                    log.deletes.push(id);
                    ch.points_deleted += 1;
                }
            }
            Variant::InPlace => {
                // Updates overwrite the vector, payload block and version where they are;
                // inserts reuse slots freed by earlier versions' deletes; nothing grows.
                for _ in 0..updates {
                    let Some((seg, slot)) = self.pick_live(&mut rng, true) else { break };
                    let s = &mut self.segments[seg];
                    let (id, _) = unpack(s.slots[slot]);
                    s.slots[slot] = pack(id, version);
                    s.touched = version;
                    s.last_op = op;
                    log.upserts.push(pack(id, version));
                    ch.points_updated += 1;
                }
                let mut reused = 0;
                while reused < inserts {
                    let Some(pos) = self.freed.iter().position(|&(_, _, v)| v < version) else {
                        break;
                    };
                    let (seg, slot, _) = self.freed.swap_remove(pos);
                    let id = self.new_id(opts.shards);
                    let s = &mut self.segments[seg];
                    s.slots[slot] = pack(id, version);
                    s.set_deleted(slot, false);
                    s.touched = version;
                    s.last_op = op;
                    log.upserts.push(pack(id, version));
                    ch.points_inserted += 1;
                    reused += 1;
                }
                for _ in 0..deletes {
                    let Some((seg, slot)) = self.pick_live(&mut rng, true) else { break };
                    let (id, _) = unpack(self.segments[seg].slots[slot]);
                    self.delete_slot(seg, slot, version, op);
                    self.freed.push((seg, slot, version));
                    log.deletes.push(id);
                    ch.points_deleted += 1;
                }
            }
        }
        let new_points = log.upserts.len() as u64;
        ch.new_vector_bytes += new_points * u64::from(opts.dim) * 4;
        ch.new_payload_bytes += new_points * super::segment::PAYLOAD_BLOCK;
        self.logs.push(log);
    }

    fn delete_slot(&mut self, seg: usize, slot: usize, version: u32, op: u64) {
        let s = &mut self.segments[seg];
        s.set_deleted(slot, true);
        s.touched = version;
        s.last_op = op;
        if s.appendable {
            s.events.push(((slot as u64) << 1) | 1);
        }
    }

    fn append(&mut self, slot: u64, version: u32, op: u64) {
        if let Some(app) = self.appendable() {
            let s = &mut self.segments[app];
            s.push(slot);
            s.touched = version;
            s.last_op = op;
        }
    }
}

/// WAL entries a version's log produces: upsert batches, then one delete entry per 1000 ids.
pub(crate) fn wal_entries(log: &OpLog, batch: u64) -> u64 {
    (log.upserts.len() as u64).div_ceil(batch) + (log.deletes.len() as u64).div_ceil(1000)
}

/// Replays the series up to `version`.
pub(crate) fn simulate(opts: &SeriesOptions, version: u32) -> State {
    let mut shards: Vec<Shard> = (0..opts.shards).map(|s| initial_shard(opts, s)).collect();
    let mut changes = VersionChanges { version: 0, ..VersionChanges::default() };
    for s in &shards {
        changes.points_inserted += s.live();
        changes.segments_added.extend(s.segments.iter().map(|g| super::rng::uuid_string(&g.uuid)));
    }
    changes.new_vector_bytes = changes.points_inserted * u64::from(opts.dim) * 4;
    changes.new_payload_bytes = changes.points_inserted * super::segment::PAYLOAD_BLOCK;
    for v in 1..=version {
        changes = VersionChanges { version: v, ..VersionChanges::default() };
        for s in &mut shards {
            s.apply(opts, v, &mut changes);
        }
    }
    for s in &shards {
        changes.live_points += s.live();
        changes.segments += s.segments.len() as u64;
    }
    State { shards, changes }
}
