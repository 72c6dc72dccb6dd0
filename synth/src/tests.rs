use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use sha2::{Digest, Sha256};

use super::*;

fn small(variant: Variant) -> SeriesOptions {
    SeriesOptions {
        seed: 42,
        points: 3000,
        dim: 64,
        shards: 1,
        variant,
        change_fraction: 0.01,
        merge_every: 0,
        wal_capacity: 1 << 20,
    }
}

fn render(series: &Series, v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let n = series.write_version(v, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

#[derive(Debug, Clone)]
struct Member {
    kind: u8,
    apparent: u64,
    stored: u64,
    mtime: u64,
    /// The stored part (for a sparse member: the written region at offset 0).
    head: Vec<u8>,
    /// Byte offset of the header in its (outer or nested) tar.
    offset: u64,
}

/// Every member, nested segment tars expanded as `outer.tar::inner`, read with the `tar`
/// crate (which expands old-GNU sparse members itself).
fn members(bytes: &[u8]) -> BTreeMap<String, Member> {
    let mut map = BTreeMap::new();
    collect(bytes, "", &mut map);
    map
}

fn collect(bytes: &[u8], prefix: &str, map: &mut BTreeMap<String, Member>) {
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = format!("{prefix}{}", e.path().unwrap().to_str().unwrap());
        let kind = e.header().entry_type().as_byte();
        let apparent = e.size();
        let stored = e.header().entry_size().unwrap();
        let mtime = e.header().mtime().unwrap();
        let offset = e.raw_header_position();
        let mut head = Vec::new();
        (&mut e).take(stored).read_to_end(&mut head).unwrap();
        assert_eq!(head.len() as u64, stored.min(apparent), "{name}");
        // Past the written region a sparse member reads as zeros up to its apparent size.
        let mut rest = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = e.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 0), "{name}: non-zero hole");
            rest += n as u64;
        }
        assert_eq!(head.len() as u64 + rest, apparent, "{name}");
        if name.ends_with(".tar") {
            collect(&head, &format!("{name}::"), map);
        }
        map.insert(name, Member { kind, apparent, stored, mtime, head, offset });
    }
}

fn segment_uuids(m: &BTreeMap<String, Member>) -> BTreeSet<String> {
    m.keys()
        .filter(|k| k.ends_with(".tar"))
        .map(|k| k.trim_start_matches("0/segments/").trim_end_matches(".tar").to_string())
        .collect()
}

fn is_appendable(m: &BTreeMap<String, Member>, seg: &str) -> bool {
    !m.contains_key(&format!("0/segments/{seg}.tar::snapshot/files/vector_index/graph.bin"))
}

#[test]
fn same_seed_gives_identical_bytes() {
    let a = Sha256::digest(render(&Series::new(small(Variant::CopyOnWrite)), 2));
    let b = Sha256::digest(render(&Series::new(small(Variant::CopyOnWrite)), 2));
    assert_eq!(a, b);
    let mut other = small(Variant::CopyOnWrite);
    other.seed = 43;
    assert_ne!(a, Sha256::digest(render(&Series::new(other), 2)));
}

#[test]
fn parses_with_tar_crate_and_has_qdrant_layout() {
    let mut opts = small(Variant::CopyOnWrite);
    opts.shards = 2;
    let bytes = render(&Series::new(opts), 1);
    assert_eq!(bytes.len() % 512, 0);
    let m = members(&bytes);
    for name in [
        "config.json",
        "version.info",
        "shard_key_mapping.json",
        "payload_index.json",
        "0/newest_clocks.json",
        "0/oldest_clocks.json",
        "0/applied_seq.json",
        "0/replica_state.json",
        "0/shard_config.json",
        "0/wal/open-1",
        "0/wal/open-2",
        "0/wal/first-index",
        "1/wal/open-1",
        "1/shard_config.json",
    ] {
        assert!(m.contains_key(name), "missing {name}");
    }
    let config: serde_json::Value = serde_json::from_slice(&m["config.json"].head).unwrap();
    assert_eq!(config["params"]["vectors"]["size"], 64);
    assert_eq!(config["params"]["shard_number"], 2);
    assert_eq!(config["params"]["vectors"]["distance"], "Cosine");

    let mut immutable = 0;
    let mut appendable = 0;
    for seg in segment_uuids(&m).iter().filter(|s| !s.starts_with('1')) {
        let p = format!("0/segments/{seg}.tar::snapshot/files/");
        let common = [
            "segment.json",
            "version.info",
            "vector_storage/vectors/config.json",
            "vector_storage/vectors/status.dat",
            "vector_storage/vectors/chunk_0.mmap",
            "vector_storage/deleted/status.dat",
            "vector_storage/deleted/flags_a.dat",
            "payload_index/config.json",
            "payload_storage/page_0.dat",
            "payload_storage/tracker.dat",
            "payload_storage/bitmask.dat",
            "payload_storage/gaps.dat",
            "payload_storage/config.json",
        ];
        let own: &[&str] = if is_appendable(&m, seg) {
            appendable += 1;
            &["mutable_id_tracker.mappings", "mutable_id_tracker.versions"]
        } else {
            immutable += 1;
            &[
                "vector_index/graph.bin",
                "vector_index/links_compressed.bin",
                "vector_index/hnsw_config.json",
                "id_tracker.mappings",
                "id_tracker.versions",
                "id_tracker.deleted",
            ]
        };
        for f in common.iter().chain(own) {
            assert!(m.contains_key(&format!("{p}{f}")), "missing {p}{f}");
        }
        let json: serde_json::Value = serde_json::from_slice(&m[&format!("{p}segment.json")].head)
            .unwrap_or_else(|e| panic!("{p}segment.json: {e}"));
        assert_eq!(json["config"]["vector_data"][""]["size"], 64);
    }
    assert_eq!(appendable, 1);
    assert!(immutable >= 1);

    // Header dialect of the real snapshots: nested tars and generated JSON as type '\0'
    // with mtime 0, files from disk as '0'/'S' with their own mtimes.
    // (The tar crate reports type '\0' as '0', so look at the raw header.)
    let seg_tar = m.iter().find(|(k, _)| k.ends_with(".tar")).unwrap().1;
    assert_eq!(seg_tar.offset, 0);
    assert_eq!((bytes[156], seg_tar.mtime), (0, 0));
    assert_eq!(&bytes[257..265], b"ustar  \0");
    assert_eq!(m["0/wal/open-1"].kind, b'S');
    assert!(m["0/wal/open-1"].mtime > 0);
    let config_at = m["config.json"].offset as usize;
    assert_eq!(bytes[config_at + 156], 0);
}

#[test]
fn sparse_members_have_correct_maps() {
    let opts = small(Variant::CopyOnWrite);
    let bytes = render(&Series::new(opts.clone()), 1);
    let m = members(&bytes);
    let mut sparse = 0;
    for (name, e) in &m {
        if e.kind == b'S' {
            sparse += 1;
            assert!(e.stored < e.apparent, "{name}");
            assert_eq!(e.stored % 4096, 0, "{name}: written part in whole blocks");
        }
    }
    assert!(sparse >= 8, "{sparse}");
    let wal = &m["0/wal/open-1"];
    assert_eq!(wal.apparent, opts.wal_capacity);
    assert_eq!(&wal.head[..4], b"wal\0");
    let ahead = &m["0/wal/open-2"];
    assert_eq!(ahead.stored, 4096);
    for (name, e) in m.iter().filter(|(k, _)| k.ends_with("chunk_0.mmap")) {
        let per_chunk = (32u64 << 20) / (64 * 4);
        assert_eq!(e.apparent, per_chunk * 64 * 4, "{name}");
        // The written part holds whole vectors of unit length.
        let v: Vec<f32> = e.head[..256]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-3, "{name}: {norm}");
    }
    // An empty preallocated file is a sparse member with no data at all.
    let mut opts = small(Variant::CopyOnWrite);
    opts.merge_every = 1;
    opts.change_fraction = 0.0;
    let m = members(&render(&Series::new(opts), 1));
    let empty_flags = m
        .iter()
        .find(|(k, e)| k.ends_with("deleted/flags_a.dat") && e.kind == b'S')
        .expect("fresh appendable segment has sparse flags");
    assert_eq!(empty_flags.1.stored, 0);
}

#[test]
fn copy_on_write_keeps_immutable_data_and_changes_the_rest() {
    let series = Series::new(small(Variant::CopyOnWrite));
    let a = members(&render(&series, 0));
    let b = members(&render(&series, 1));
    let ch = series.changes(1);
    assert_eq!(ch.points_updated, 30);
    assert_eq!(ch.points_inserted, 15);
    assert_eq!(ch.points_deleted, 7);
    assert!(!ch.merged);
    assert_eq!(segment_uuids(&a), segment_uuids(&b));
    let mut flags_changed = 0;
    for seg in segment_uuids(&a) {
        let p = format!("0/segments/{seg}.tar::snapshot/files/");
        let same = |f: &str| a[&format!("{p}{f}")].head == b[&format!("{p}{f}")].head;
        if is_appendable(&a, &seg) {
            assert!(!same("vector_storage/vectors/chunk_0.mmap"));
            assert!(!same("mutable_id_tracker.mappings"));
            // Appended, not rewritten: the old vectors are a prefix of the new ones.
            let old = &a[&format!("{p}vector_storage/vectors/chunk_0.mmap")].head;
            let new = &b[&format!("{p}vector_storage/vectors/chunk_0.mmap")].head;
            let used = 60 * 64 * 4;
            assert_eq!(old[..used], new[..used]);
        } else {
            for f in [
                "vector_storage/vectors/chunk_0.mmap",
                "vector_index/links_compressed.bin",
                "vector_index/graph.bin",
                "id_tracker.mappings",
                "id_tracker.versions",
                "payload_storage/page_0.dat",
            ] {
                assert!(same(f), "{p}{f} changed");
            }
            if !same("vector_storage/deleted/flags_a.dat") {
                flags_changed += 1;
                assert!(!same("id_tracker.deleted"));
            }
        }
    }
    assert!(flags_changed > 0);
    assert_ne!(a["0/wal/open-1"].head, b["0/wal/open-1"].head);
    // The WAL grew by exactly the bytes the version reports, appended after the old ones.
    let used = |m: &BTreeMap<String, Member>| wal_used(&m["0/wal/open-1"].head);
    assert_eq!(used(&b) - used(&a), ch.wal_bytes);
    let old = &a["0/wal/open-1"].head;
    assert_eq!(old[..used(&a) as usize], b["0/wal/open-1"].head[..used(&a) as usize]);
}

/// Walks the `wal` crate framing, checking each entry's CRC; returns the bytes in use.
fn wal_used(seg: &[u8]) -> u64 {
    let mut off = 8usize;
    while off + 8 <= seg.len() {
        let len = u64::from_le_bytes(seg[off..off + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let data = &seg[off + 8..off + 8 + len];
        assert_eq!(data[0], 0xbf);
        let pad = (8 - (len + 4) % 8) % 8;
        let at = off + 8 + len + pad;
        let crc = u32::from_le_bytes(seg[at..at + 4].try_into().unwrap());
        let mut c = rng::Crc32c::new();
        c.update(data);
        assert_eq!(c.finish(), crc);
        off = at + 4;
    }
    off as u64
}

#[test]
fn merge_replaces_two_segments() {
    let mut opts = small(Variant::CopyOnWrite);
    opts.merge_every = 2;
    let series = Series::new(opts);
    let a = members(&render(&series, 1));
    let b = members(&render(&series, 2));
    let (ua, ub) = (segment_uuids(&a), segment_uuids(&b));
    let gone: Vec<_> = ua.difference(&ub).cloned().collect();
    let new: Vec<_> = ub.difference(&ua).cloned().collect();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert_eq!(new.len(), 2, "merged segment and a fresh appendable one");
    let ch = series.changes(2);
    assert!(ch.merged);
    assert_eq!(
        ch.segments_removed.iter().cloned().collect::<BTreeSet<_>>(),
        gone.iter().cloned().collect()
    );
    assert_eq!(
        ch.segments_added.iter().cloned().collect::<BTreeSet<_>>(),
        new.iter().cloned().collect()
    );
    assert!(ch.shifted_bytes > 0);
    let merged = new.iter().find(|s| !is_appendable(&b, s)).expect("merged segment is indexed");
    // Deleted points were dropped: the merged segment holds exactly the live points of the
    // two it replaced (this version's own deletes come after the merge).
    let status = |m: &BTreeMap<String, Member>, seg: &str| {
        let h = &m
            [&format!("0/segments/{seg}.tar::snapshot/files/vector_storage/deleted/status.dat")]
            .head;
        let n = u64::from_le_bytes(h[..8].try_into().unwrap());
        let deleted = u64::from_le_bytes(h[8..16].try_into().unwrap());
        (n, deleted)
    };
    let live_before: u64 = gone.iter().map(|s| status(&a, s)).map(|(n, d)| n - d).sum();
    let dropped: u64 = gone.iter().map(|s| status(&a, s).1).sum();
    assert!(dropped > 0);
    assert_eq!(status(&b, merged).0, live_before);
    // Points keep their vectors, so v2's merged chunk holds vectors seen in v1 at new offsets.
    let chunk =
        &b[&format!("0/segments/{merged}.tar::snapshot/files/vector_storage/vectors/chunk_0.mmap")];
    let first = &chunk.head[..256];
    let found = a
        .iter()
        .filter(|(k, _)| k.ends_with("chunk_0.mmap"))
        .any(|(_, e)| e.head.chunks_exact(256).any(|v| v == first));
    assert!(found);
    // A later version without a merge keeps the merged segment intact.
    let c = members(&render(&series, 3));
    let p = format!("0/segments/{merged}.tar::snapshot/files/vector_storage/vectors/chunk_0.mmap");
    assert_eq!(b[&p].head, c[&p].head);
}

#[test]
fn in_place_keeps_sizes_and_rewrites_at_offsets() {
    let series = Series::new(small(Variant::InPlace));
    let a = members(&render(&series, 1));
    let b = members(&render(&series, 2));
    let seg = |m: &BTreeMap<String, Member>| {
        m.iter()
            // segment.json records the last operation number, whose digits may grow.
            .filter(|(k, _)| k.contains(".tar::") && !k.ends_with("segment.json"))
            .map(|(k, e)| (k.clone(), (e.apparent, e.stored, e.head.len())))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(seg(&a), seg(&b), "segment member names and sizes are unchanged");
    let ch = series.changes(2);
    assert!(ch.points_updated > 0 && ch.points_inserted > 0 && ch.points_deleted > 0);
    let mut rewritten_vectors = 0;
    for (k, e) in a.iter().filter(|(k, _)| k.ends_with("chunk_0.mmap")) {
        let other = &b[k];
        rewritten_vectors += e
            .head
            .chunks_exact(256)
            .zip(other.head.chunks_exact(256))
            .filter(|(x, y)| x != y)
            .count() as u64;
    }
    // Updated and reinserted points, each one vector rewritten where it was.
    assert_eq!(rewritten_vectors, ch.points_updated + ch.points_inserted);
    assert_ne!(a["0/wal/open-1"].head, b["0/wal/open-1"].head);
}

#[test]
fn wal_rolls_over_into_closed_segments() {
    let mut opts = small(Variant::CopyOnWrite);
    opts.points = 20_000;
    opts.wal_capacity = 256 << 10;
    opts.change_fraction = 0.05;
    let series = Series::new(opts);
    let m = members(&render(&series, 2));
    let wal: Vec<_> = m.keys().filter(|k| k.starts_with("0/wal/")).cloned().collect();
    assert!(wal.iter().any(|k| k.contains("closed-")), "{wal:?}");
    for k in wal.iter().filter(|k| !k.ends_with("first-index")) {
        assert!(wal_used(&m[k].head) <= 256 << 10);
    }
}

#[test]
fn bad_options_are_clamped_not_panicking() {
    let opts = SeriesOptions {
        seed: 0,
        points: 0,
        dim: 0,
        shards: 0,
        variant: Variant::CopyOnWrite,
        change_fraction: f64::NAN,
        merge_every: 1,
        wal_capacity: 0,
    };
    let series = Series::new(opts);
    for v in 0..3 {
        let m = members(&render(&series, v));
        assert!(m.contains_key("config.json"));
    }
    assert!(series.write_version(u32::MAX, std::io::sink()).is_err());
}

#[test]
fn for_size_lands_near_the_target() {
    let target = 24u64 << 20;
    let series = Series::new(SeriesOptions::for_size(target, 1));
    let n = series.write_version(0, std::io::sink()).unwrap();
    assert!(n > target * 8 / 10 && n < target * 12 / 10, "{n}");
}

/// Streaming by construction: output reaches the writer in pieces no larger than the sink's
/// fixed buffer, never as one whole-snapshot buffer.
#[test]
fn output_is_streamed_in_bounded_writes() {
    struct Probe {
        calls: u64,
        largest: usize,
        total: u64,
    }
    impl std::io::Write for Probe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            self.largest = self.largest.max(buf.len());
            self.total += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut opts = small(Variant::CopyOnWrite);
    opts.points = 12_000;
    let mut probe = Probe { calls: 0, largest: 0, total: 0 };
    let n = Series::new(opts).write_version(1, &mut probe).unwrap();
    assert_eq!(n, probe.total);
    assert!(probe.largest <= 1 << 18, "{}", probe.largest);
    assert!(probe.calls >= n / (1 << 18), "{} calls for {n} bytes", probe.calls);
}
