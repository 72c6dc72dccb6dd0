//! The chunker's tests: cut-point properties (proptest), tar-awareness on every tar dialect
//! Qdrant and GNU tar write (ustar, GNU long names, pax, old-GNU sparse, nested segment tars),
//! and dedup on real and synthetic snapshot series. Longer than 600 lines on purpose: each
//! dialect needs its own hand-built tar and its own assertions.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Cursor, Read};

use bytes::Bytes;
use fastcdc::v2020::FastCDC;
use proptest::prelude::*;

use super::tar_scan::TarScanner;
use super::*;
use crate::error::ErrorKind;
use qvault_synth::pseudo_random;

const SEED: u64 = 0x5176_6175_6c74;

fn small(tar_aware: bool) -> ChunkerParams {
    ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        seed: SEED,
        tar_aware,
        tar_threshold: 512,
    }
}

fn chunk_reader(reader: impl Read, params: &ChunkerParams) -> Vec<Bytes> {
    Chunker::new(reader, params).unwrap().collect::<io::Result<Vec<_>>>().unwrap()
}

fn chunk(data: &[u8], params: &ChunkerParams) -> Vec<Bytes> {
    chunk_reader(Cursor::new(data), params)
}

/// Chunk end offsets, which are the cut points (the input's length is the last one).
fn ends(chunks: &[Bytes]) -> Vec<u64> {
    chunks
        .iter()
        .scan(0u64, |off, c| {
            *off += c.len() as u64;
            Some(*off)
        })
        .collect()
}

fn cut_set(chunks: &[Bytes]) -> BTreeSet<u64> {
    std::iter::once(0).chain(ends(chunks)).collect()
}

/// Returns at most the next size of a fixed cycle per read.
struct SplitReader<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    turn: usize,
}

impl Read for SplitReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

const READ_PATTERNS: &[&[usize]] = &[&[1], &[7], &[511], &[513], &[1, 513, 7, 4096, 511]];

/// The forced cut points the scanner finds when it sees the whole input at once.
fn forced_cuts(data: &[u8], params: &ChunkerParams) -> BTreeSet<u64> {
    let mut cuts = BTreeSet::new();
    if params.tar_aware {
        TarScanner::new(params.tar_threshold).feed(data, &mut cuts);
    }
    cuts
}

/// The model the chunker must match: fastcdc's own `FastCDC` run separately on every span
/// between consecutive forced cut points.
fn reference_lengths(data: &[u8], params: &ChunkerParams) -> Vec<usize> {
    let mut bounds: Vec<usize> = vec![0];
    bounds.extend(
        forced_cuts(data, params).into_iter().map(|c| c as usize).filter(|&c| c < data.len()),
    );
    bounds.push(data.len());
    bounds.dedup();
    let mut lengths = Vec::new();
    for span in bounds.windows(2) {
        let cdc = FastCDC::with_level_and_seed(
            &data[span[0]..span[1]],
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
            Normalization::Level1,
            params.seed,
        );
        lengths.extend(cdc.map(|c| c.length));
    }
    lengths
}

/// Checks every guarantee that holds for any input, with every read pattern.
fn check_invariants(data: &[u8], params: &ChunkerParams) -> Vec<Bytes> {
    let chunks = chunk(data, params);
    assert_eq!(chunks.concat(), data, "chunks must concatenate to the input");
    let forced = forced_cuts(data, params);
    let mut off = 0u64;
    for c in &chunks {
        assert!(!c.is_empty(), "empty chunk at {off}");
        assert!(c.len() <= params.max_size as usize, "chunk at {off} longer than max_size");
        off += c.len() as u64;
        if c.len() < params.min_size as usize {
            assert!(
                off == data.len() as u64 || forced.contains(&off),
                "short chunk ending at {off} is neither at a forced cut nor the end"
            );
        }
    }
    let lengths: Vec<usize> = chunks.iter().map(Bytes::len).collect();
    assert_eq!(lengths, reference_lengths(data, params), "chunks differ from the span model");
    for sizes in READ_PATTERNS {
        let split = chunk_reader(SplitReader { data, sizes, turn: 0 }, params);
        assert_eq!(split, chunks, "reads of {sizes:?} bytes changed the chunks");
    }
    chunks
}

/// `(data start, data end)` of every member with at least `threshold` data bytes, nested
/// `.tar` members expanded, as the `tar` crate reads them. Members after the first error
/// are not listed. Old GNU sparse members count their stored bytes, which follow the
/// header's extension blocks (the `tar` crate's `raw_file_position` points before those).
fn member_spans(
    archive: &[u8],
    base: u64,
    prefix: &str,
    threshold: u64,
    out: &mut Vec<(u64, u64, String)>,
) -> bool {
    let mut ar = tar::Archive::new(Cursor::new(archive));
    let Ok(entries) = ar.entries() else { return false };
    let mut complete = true;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(_) => return false,
        };
        let header = entry.header();
        let mut start = entry.raw_file_position();
        let mut size = entry.size();
        if header.entry_type().is_gnu_sparse() {
            size = header.entry_size().unwrap();
            if header.as_bytes()[482] != 0 {
                loop {
                    let ext = &archive[start as usize..start as usize + 512];
                    start += 512;
                    if ext[504] == 0 {
                        break;
                    }
                }
            }
        }
        let name = format!("{prefix}{}", String::from_utf8_lossy(&entry.path_bytes()));
        if size >= threshold {
            out.push((base + start, base + start + size, name.clone()));
            if name.ends_with(".tar") {
                let inner = &archive[start as usize..(start + size) as usize];
                complete &= member_spans(inner, base + start, &format!("{name}::"), threshold, out);
            }
        }
    }
    complete
}

/// Every member's span by [`member_spans`], for archives the `tar` crate must read whole.
fn all_spans_of(archive: &[u8], threshold: u64) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    assert!(member_spans(archive, 0, "", threshold, &mut out), "the tar crate cannot read it");
    out
}

fn gnu_header(path: &str, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_cksum();
    h
}

/// One member of a generated tar.
#[derive(Clone, Debug)]
enum Member {
    /// A file with a short name, or a long one that needs a GNU `L` header.
    File { size: usize, seed: u64, long_name: bool },
    /// A file whose real size and name come from a pax `x` header.
    Pax { size: usize, seed: u64 },
    /// A nested tar of files, named `*.tar`.
    Nested(Vec<(usize, u64)>),
    /// An old GNU sparse member: last piece's length and number of extension blocks.
    Sparse { tail: usize, ext_blocks: usize },
}

fn build_tar(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, m) in members.iter().enumerate() {
        match m {
            Member::File { size, seed, long_name } => {
                let name = if *long_name {
                    format!("{}/file-{i}.bin", "d".repeat(120))
                } else {
                    format!("file-{i}.bin")
                };
                let data = pseudo_random(*size, *seed | 1);
                let mut h = gnu_header("placeholder", *size as u64, 1_700_000_000 + i as u64);
                b.append_data(&mut h, &name, data.as_slice()).unwrap();
            }
            Member::Pax { size, seed } => {
                append_pax_file(&mut b, &format!("pax-{i}.bin"), &pseudo_random(*size, *seed | 1));
            }
            Member::Sparse { tail, ext_blocks } => {
                b.get_mut().extend_from_slice(&sparse_member(
                    &format!("sparse-{i}"),
                    *tail,
                    *ext_blocks,
                ));
            }
            Member::Nested(files) => {
                let inner: Vec<Member> = files
                    .iter()
                    .map(|&(size, seed)| Member::File { size, seed, long_name: false })
                    .collect();
                let inner = build_tar(&inner);
                let mut h = gnu_header("x", inner.len() as u64, 1_700_000_000);
                b.append_data(&mut h, format!("0/segments/seg-{i}.tar"), inner.as_slice()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A pax `x` header carrying `path` and `size`, then a ustar header whose own name and size
/// fields are wrong (size 0), as writers do when the real values do not fit.
fn append_pax_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut records = Vec::new();
    for (key, value) in [("path", path.to_string()), ("size", data.len().to_string())] {
        let body = format!(" {key}={value}\n");
        // The length counts its own digits.
        let total = (1..).map(|d| body.len() + d).find(|t| t.to_string().len() + body.len() == *t);
        records.extend_from_slice(format!("{}{body}", total.unwrap()).as_bytes());
    }
    let mut x = tar::Header::new_ustar();
    x.set_path("PaxHeaders/x").unwrap();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(records.len() as u64);
    x.set_cksum();
    b.append(&x, records.as_slice()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("short-wrong-name").unwrap();
    h.set_size(0);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(data);
    raw.resize(raw.len().next_multiple_of(512), 0);
    b.get_mut().extend_from_slice(&raw);
}

fn member_strategy() -> impl Strategy<Value = Member> {
    prop_oneof![
        (0usize..3000, any::<u64>(), any::<bool>())
            .prop_map(|(size, seed, long_name)| Member::File { size, seed, long_name }),
        (0usize..3000, any::<u64>()).prop_map(|(size, seed)| Member::Pax { size, seed }),
        prop::collection::vec((0usize..2500, any::<u64>()), 0..4).prop_map(Member::Nested),
        (1usize..600, 0usize..3).prop_map(|(tail, ext_blocks)| Member::Sparse { tail, ext_blocks }),
    ]
}

// ---------------------------------------------------------------------------------------
// Parameters

#[test]
fn validate_accepts_sane_params_and_names_bad_fields() {
    assert!(small(true).validate().is_ok());
    type Case = (fn(&mut ChunkerParams), &'static str);
    let cases: Vec<Case> = vec![
        (|p| p.min_size = 32, "min_size"),
        (|p| p.min_size = 65, "min_size"),
        (|p| p.avg_size = 128, "avg_size"),
        (|p| p.max_size = 64 * 1024 * 1024, "max_size"),
        (|p| p.max_size = 1023, "max_size"),
        (|p| p.min_size = 512, "min_size = 512 is larger than avg_size"),
        (|p| p.avg_size = 2048, "avg_size = 2048 is larger than max_size"),
    ];
    for (change, needle) in cases {
        let mut p = small(false);
        change(&mut p);
        let err = p.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains(needle), "{:?} should mention {needle}", err.message());
        assert!(Chunker::new(io::empty(), &p).is_err());
    }
}

#[test]
fn debug_hides_the_seed() {
    let shown = format!("{:?}", small(true));
    assert!(!shown.contains(&SEED.to_string()), "{shown}");
    assert!(shown.contains("redacted"));
}

// ---------------------------------------------------------------------------------------
// Plain chunking

#[test]
fn empty_input_gives_no_chunks() {
    assert!(chunk(b"", &small(true)).is_empty());
    assert!(chunk(b"", &small(false)).is_empty());
}

#[test]
fn plain_chunking_matches_fastcdc_on_the_whole_buffer() {
    let data = pseudo_random(200_000, 7);
    let lengths: Vec<usize> = chunk(&data, &small(false)).iter().map(Bytes::len).collect();
    let whole: Vec<usize> =
        FastCDC::with_level_and_seed(&data, 64, 256, 1024, Normalization::Level1, SEED)
            .map(|c| c.length)
            .collect();
    assert_eq!(lengths, whole);
}

#[test]
fn random_bytes_get_no_forced_cuts() {
    let data = pseudo_random(300_000, 11);
    assert!(forced_cuts(&data, &small(true)).is_empty());
    assert_eq!(chunk(&data, &small(true)), chunk(&data, &small(false)));
}

#[test]
fn memory_stays_within_two_windows() {
    let data = pseudo_random(1 << 20, 3);
    let params = small(true);
    for keep in [false, true] {
        let mut chunker = Chunker::new(Cursor::new(&data), &params).unwrap();
        let mut kept = Vec::new();
        while let Some(c) = chunker.next() {
            assert!(chunker.buf.capacity() <= 2 * params.max_size as usize);
            if keep {
                kept.push(c.unwrap());
            }
        }
    }
}

struct FailingReader {
    left: usize,
    interrupted: bool,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.interrupted {
            self.interrupted = true;
            return Err(io::Error::new(io::ErrorKind::Interrupted, "try again"));
        }
        if self.left == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = self.left.min(buf.len()).min(100);
        buf[..n].fill(0x5a);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn reader_errors_are_returned_once_and_end_the_stream() {
    let mut chunker =
        Chunker::new(FailingReader { left: 5000, interrupted: false }, &small(true)).unwrap();
    let mut total = 0;
    let err = loop {
        match chunker.next().unwrap() {
            Ok(c) => total += c.len(),
            Err(e) => break e,
        }
    };
    assert_eq!(err.to_string(), "disk on fire");
    assert!(total <= 5000);
    assert!(chunker.next().is_none());
}

// ---------------------------------------------------------------------------------------
// Tar-aware cut points

#[test]
fn big_member_gets_cuts_at_data_start_and_end() {
    let tar = build_tar(&[
        Member::File { size: 100, seed: 1, long_name: false },
        Member::File { size: 5000, seed: 2, long_name: false },
        Member::File { size: 10, seed: 3, long_name: false },
    ]);
    let spans = all_spans_of(&tar, 512);
    assert_eq!(spans.len(), 1);
    let (start, end, _) = spans[0];
    let cuts = cut_set(&check_invariants(&tar, &small(true)));
    assert!(cuts.contains(&start) && cuts.contains(&end), "{start}..{end} not in {cuts:?}");
}

/// The chunks that lie inside `start..end` (which must be cut points).
fn chunks_within(chunks: &[Bytes], start: u64, end: u64) -> Vec<Bytes> {
    let mut off = 0;
    let mut out = Vec::new();
    for c in chunks {
        if off >= start && off + c.len() as u64 <= end {
            out.push(c.clone());
        }
        off += c.len() as u64;
    }
    assert_eq!(out.iter().map(Bytes::len).sum::<usize>() as u64, end - start);
    out
}

#[test]
fn unchanged_member_keeps_its_chunks_when_header_or_neighbours_change() {
    let params = small(true);
    let big = pseudo_random(20_000, 99);
    let make = |mtime: u64, before: usize| {
        let mut b = tar::Builder::new(Vec::new());
        if before > 0 {
            let mut h = gnu_header("x", before as u64, 1);
            b.append_data(&mut h, "before.bin", pseudo_random(before, 5).as_slice()).unwrap();
        }
        let mut h = gnu_header("x", big.len() as u64, mtime);
        b.append_data(&mut h, "big.bin", big.as_slice()).unwrap();
        b.into_inner().unwrap()
    };
    let member_chunks = |tar: &[u8]| {
        let (start, end, _) =
            all_spans_of(tar, 512).into_iter().find(|s| s.2 == "big.bin").unwrap();
        let chunks = check_invariants(tar, &params);
        chunks_within(&chunks, start, end)
    };
    let base = member_chunks(&make(1_000, 0));
    assert_eq!(base.concat(), big);
    assert_eq!(member_chunks(&make(2_000, 0)), base, "mtime change moved the chunks");
    assert_eq!(member_chunks(&make(1_000, 777)), base, "inserted member moved the chunks");
    assert_eq!(member_chunks(&make(3_000, 1_301)), base);
}

#[test]
fn nested_tar_members_get_cuts_in_outer_offsets() {
    let tar = build_tar(&[
        Member::File { size: 300, seed: 1, long_name: true },
        Member::Nested(vec![(100, 2), (4000, 3), (700, 4)]),
        Member::File { size: 2000, seed: 5, long_name: false },
    ]);
    let spans = all_spans_of(&tar, 512);
    assert_eq!(spans.len(), 4, "{spans:?}"); // the nested tar, two of its files, the last file
    let cuts = cut_set(&check_invariants(&tar, &small(true)));
    for (start, end, name) in spans {
        assert!(cuts.contains(&start) && cuts.contains(&end), "{name}: {start}..{end}");
    }
}

#[test]
fn gnu_long_names_and_pax_headers_are_followed() {
    let tar = build_tar(&[
        Member::File { size: 1500, seed: 1, long_name: true },
        Member::Pax { size: 2500, seed: 2 },
        Member::File { size: 900, seed: 3, long_name: false },
    ]);
    let spans = all_spans_of(&tar, 512);
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert_eq!(spans[1].2, "pax-1.bin");
    let forced = forced_cuts(&tar, &small(true));
    let expected: BTreeSet<u64> = spans.iter().flat_map(|s| [s.0, s.1]).collect();
    assert_eq!(forced, expected);
    check_invariants(&tar, &small(true));
}

#[test]
fn pax_path_marks_a_member_as_a_nested_tar() {
    let inner = build_tar(&[Member::File { size: 3000, seed: 9, long_name: false }]);
    let mut b = tar::Builder::new(Vec::new());
    append_pax_file(&mut b, "0/segments/long-uuid-name.tar", &inner);
    let tar = b.into_inner().unwrap();
    let spans = all_spans_of(&tar, 512);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let forced = forced_cuts(&tar, &small(true));
    assert_eq!(forced, spans.iter().flat_map(|s| [s.0, s.1]).collect());
}

/// An old GNU sparse member (type `S`) with `ext_blocks` extension blocks of sparse map:
/// 512-byte pieces (the `tar` crate wants all but the last aligned) and a last one of `tail`
/// bytes.
fn sparse_member(name: &str, tail: usize, ext_blocks: usize) -> Vec<u8> {
    let entries = 4 + 21 * ext_blocks;
    let stored = 512 * (entries - 1) + tail;
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(stored as u64);
    h.set_mode(0o644);
    let mut map: Vec<(u64, u64)> = (0..entries)
        .map(|i| ((i * 1024) as u64, if i + 1 == entries { tail } else { 512 } as u64))
        .collect();
    let real = map.last().map(|&(o, n)| o + n).unwrap();
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}", width = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    };
    let raw = h.as_mut_bytes();
    let put = |slot: &mut [u8], (o, n): (u64, u64)| {
        octal(&mut slot[..12], o);
        octal(&mut slot[12..24], n);
    };
    let first: Vec<_> = map.drain(..4).collect();
    for (i, e) in first.into_iter().enumerate() {
        put(&mut raw[386 + 24 * i..386 + 24 * (i + 1)], e);
    }
    raw[482] = u8::from(ext_blocks > 0);
    octal(&mut raw[483..495], real);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    for b in 0..ext_blocks {
        let mut ext = [0u8; 512];
        for (i, e) in map.drain(..21).enumerate() {
            put(&mut ext[24 * i..24 * (i + 1)], e);
        }
        ext[504] = u8::from(b + 1 < ext_blocks);
        out.extend_from_slice(&ext);
    }
    out.extend_from_slice(&pinned_bytes(stored, stored as u64 + 1));
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

#[test]
fn sparse_members_are_cut_around_their_stored_data() {
    for ext_blocks in [0, 1, 3] {
        let mut tar = sparse_member("wal/open-1", 3000, ext_blocks);
        tar.extend_from_slice(&sparse_member("page_0.dat", 2000, 2));
        tar.extend_from_slice(&[0; 1024]);
        let spans = all_spans_of(&tar, 512);
        assert_eq!(spans.len(), 2, "the tar crate must read the fixture");
        assert_eq!(spans[0].0, 512 * (1 + ext_blocks as u64));
        let forced = forced_cuts(&tar, &small(true));
        assert_eq!(forced, spans.iter().flat_map(|s| [s.0, s.1]).collect());
        check_invariants(&tar, &small(true));
    }
}

#[test]
fn base256_sizes_are_read() {
    let data = pseudo_random(1500, 4);
    let mut h = gnu_header("big.bin", 0, 0);
    let field = &mut h.as_mut_bytes()[124..136];
    field.fill(0);
    field[0] = 0x80;
    field[10..12].copy_from_slice(&(data.len() as u16).to_be_bytes());
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&data);
    tar.resize(tar.len().next_multiple_of(512) + 1024, 0);
    assert_eq!(all_spans_of(&tar, 512), vec![(512, 2012, "big.bin".to_string())]);
    assert_eq!(forced_cuts(&tar, &small(true)), BTreeSet::from([512, 2012]));
}

#[test]
fn scanning_stops_at_end_of_archive_and_at_bad_checksums() {
    let tar = build_tar(&[Member::File { size: 2000, seed: 1, long_name: false }]);
    let mut finished = tar.clone();
    finished.extend_from_slice(&[0; 1024]);
    // A valid-looking tar after the end-of-archive marker is plain data.
    finished.extend_from_slice(&tar);
    assert_eq!(forced_cuts(&finished, &small(true)), BTreeSet::from([512, 2512]));

    let mut bad = build_tar(&[
        Member::File { size: 2000, seed: 1, long_name: false },
        Member::File { size: 2000, seed: 2, long_name: false },
        Member::File { size: 2000, seed: 3, long_name: false },
    ]);
    let second_header = 512 + 2048;
    bad[second_header + 10] ^= 0x01; // inside the name: only the checksum notices
    assert_eq!(forced_cuts(&bad, &small(true)), BTreeSet::from([512, 2512]));
    check_invariants(&bad, &small(true));
}

#[test]
fn nesting_is_capped_and_never_fails() {
    let mut tar = build_tar(&[Member::File { size: 3000, seed: 1, long_name: false }]);
    for _ in 0..12 {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = gnu_header("x", tar.len() as u64, 0);
        b.append_data(&mut h, "level.tar", tar.as_slice()).unwrap();
        tar = b.into_inner().unwrap();
    }
    let forced = forced_cuts(&tar, &small(true));
    assert_eq!(forced.len(), 2 * tar_scan::MAX_DEPTH);
    check_invariants(&tar, &small(true));
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_random_bytes(seed in any::<u64>(), len in 0usize..20_000, aware in any::<bool>()) {
        let data = pseudo_random(len, seed | 1);
        check_invariants(&data, &small(aware));
    }

    #[test]
    fn prop_tars(members in prop::collection::vec(member_strategy(), 0..6)) {
        let tar = build_tar(&members);
        let chunks = check_invariants(&tar, &small(true));
        let cuts = cut_set(&chunks);
        for (start, end, name) in all_spans_of(&tar, 512) {
            prop_assert!(cuts.contains(&start) && cuts.contains(&end), "{} {}..{}", name, start, end);
        }
        check_invariants(&tar, &small(false));
    }

    #[test]
    fn prop_truncated_tars(
        members in prop::collection::vec(member_strategy(), 1..6),
        keep in 0.0f64..1.0,
    ) {
        let tar = build_tar(&members);
        let cut_at = (tar.len() as f64 * keep) as usize;
        let truncated = &tar[..cut_at];
        let cuts = cut_set(&check_invariants(truncated, &small(true)));
        // Whatever was complete before the truncation is still cut around.
        for (start, end, name) in all_spans_of(&tar, 512) {
            if start <= cut_at as u64 {
                prop_assert!(cuts.contains(&start), "{} start {}", name, start);
            }
            if end <= cut_at as u64 {
                prop_assert!(cuts.contains(&end), "{} end {}", name, end);
            }
        }
    }

    #[test]
    fn prop_corrupted_tars(
        members in prop::collection::vec(member_strategy(), 1..6),
        flips in prop::collection::vec((0.0f64..1.0, any::<u8>()), 1..4),
        resized in prop::option::of((0.0f64..1.0, any::<[u8; 12]>())),
        garbage in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut tar = build_tar(&members);
        for (at, mask) in flips {
            let i = ((tar.len() - 1) as f64 * at) as usize;
            tar[i] ^= mask;
        }
        // A block gets a random size field and a valid checksum, so the scanner believes it.
        if let Some((at, size)) = resized {
            let block = (((tar.len() / 512).saturating_sub(1)) as f64 * at) as usize * 512;
            let header = &mut tar[block..block + 512];
            header[124..136].copy_from_slice(&size);
            header[148..156].fill(b' ');
            let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
            header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        tar.extend_from_slice(&garbage);
        check_invariants(&tar, &small(true));
    }
}

// ---------------------------------------------------------------------------------------
// Golden vectors: these pin the repository format. If they fail, cut points moved and every
// existing repository would stop deduplicating against new backups. Do not update them to
// make a test pass.

/// The golden cut points are pinned to these exact bytes (xorshift64, the same on every
/// platform and independent of the synth generator, which may change).
fn pinned_bytes(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn golden_cut_points_for_pseudo_random_input() {
    let data = pinned_bytes(3 << 20, 0x9E37_79B9_7F4A_7C15);
    let params = ChunkerParams {
        min_size: 64 << 10,
        avg_size: 256 << 10,
        max_size: 1 << 20,
        seed: 0x5176_6175_6c74,
        tar_aware: true,
        tar_threshold: 1 << 20,
    };
    let got = ends(&chunk(&data, &params));
    assert_eq!(got, GOLDEN_RANDOM);
}

const GOLDEN_RANDOM: &[u64] =
    &[338917, 603000, 938296, 1447538, 2171453, 2310438, 2574994, 2883235, 3145728];

/// A small deterministic tar: a config file, a nested segment tar with a big and a small
/// file, a sparse WAL file, and a big plain file.
fn golden_tar() -> Vec<u8> {
    let mut segment = tar::Builder::new(Vec::new());
    for (name, len, seed) in [("files/chunk_0.mmap", 6000, 21), ("files/segment.json", 300, 22)] {
        let mut h = gnu_header("x", len as u64, 1_700_000_123);
        segment.append_data(&mut h, name, pinned_bytes(len, seed).as_slice()).unwrap();
    }
    let segment = segment.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = gnu_header("x", 200, 1_700_000_001);
    b.append_data(&mut h, "config.json", pinned_bytes(200, 1).as_slice()).unwrap();
    let mut h = gnu_header("x", segment.len() as u64, 1_700_000_002);
    b.append_data(&mut h, "0/segments/a1b2.tar", segment.as_slice()).unwrap();
    b.get_mut().extend_from_slice(&sparse_member("0/wal/open-1", 2600, 1));
    let mut h = gnu_header("x", 9000, 1_700_000_003);
    b.append_data(&mut h, "0/big.bin", pinned_bytes(9000, 3).as_slice()).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn golden_cut_points_for_a_small_tar() {
    let tar = golden_tar();
    // If this fails, the fixture changed (e.g. a new `tar` crate), not the chunker.
    assert_eq!(blake3::hash(&tar).to_hex().as_str(), GOLDEN_TAR_HASH);
    let got = ends(&chunk(&tar, &small(true)));
    for forced in [1536, 10240, 2048, 8048, 11264, 26152, 27136, 36136] {
        assert!(got.contains(&forced), "forced cut {forced} missing");
    }
    assert_eq!(got, GOLDEN_TAR);
}

const GOLDEN_TAR_HASH: &str = "a6db975b786a3a87c514f285b8a86f2a0f3986fe73643b05d3acf097d49ce3d7";
/// Forced cuts among these: the segment tar's data 1536..10240, its `chunk_0.mmap` 2048..8048,
/// the sparse WAL's stored data 11264..26152, `0/big.bin` 27136..36136.
const GOLDEN_TAR: &[u64] = &[
    264, 542, 1060, 1536, 1800, 2048, 2413, 2772, 3233, 3512, 4190, 4507, 4821, 5109, 5454, 5783,
    5900, 6166, 6508, 6936, 7077, 7634, 8048, 8363, 8734, 8991, 10015, 10240, 10504, 10813, 11264,
    11689, 11756, 12053, 12265, 12616, 13026, 13651, 13790, 14179, 14258, 14508, 15025, 15309,
    15588, 15684, 15822, 16037, 16358, 16448, 16867, 17097, 17253, 17510, 17961, 18429, 18641,
    19183, 19692, 20088, 20239, 20496, 20789, 21098, 21258, 21382, 21953, 22238, 22328, 22786,
    23092, 23389, 23491, 23635, 24021, 24248, 24889, 25183, 25407, 25980, 26152, 26643, 27136,
    27497, 27663, 27887, 28744, 29101, 29414, 29667, 29923, 30113, 30549, 30818, 31103, 31319,
    31513, 31909, 32239, 32864, 33187, 33280, 33430, 33659, 33815, 33931, 34483, 34847, 35278,
    35406, 35793, 36136, 37160, 37376,
];

// ---------------------------------------------------------------------------------------
// Real Qdrant snapshots (shared/real-qdrant): skipped loudly when absent.

fn real_snapshot_dir() -> Option<std::path::PathBuf> {
    let candidates = [
        std::path::PathBuf::from("/work/shared/real-qdrant/snapshots"),
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/real-qdrant/snapshots"
        )),
    ];
    let found = candidates.iter().find(|p| p.is_dir()).cloned();
    if found.is_none() {
        eprintln!("SKIPPED: real Qdrant snapshots not found at {candidates:?}");
    }
    found
}

#[test]
fn real_snapshots_get_cuts_around_every_big_member() {
    let Some(dir) = real_snapshot_dir() else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot" || e == "tar"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no snapshots in {}", dir.display());
    let params = ChunkerParams {
        min_size: 16 << 10,
        avg_size: 64 << 10,
        max_size: 256 << 10,
        seed: SEED,
        tar_aware: true,
        tar_threshold: 16 << 10,
    };
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let chunks = chunk(&data, &params);
        assert_eq!(chunks.concat(), data, "{}", path.display());
        let cuts = cut_set(&chunks);
        let spans = all_spans_of(&data, params.tar_threshold);
        let nested = spans.iter().filter(|s| s.2.contains("::")).count();
        eprintln!(
            "{}: {} bytes, {} chunks, {} members >= threshold ({nested} inside nested tars)",
            path.file_name().unwrap().to_string_lossy(),
            data.len(),
            chunks.len(),
            spans.len()
        );
        assert!(!spans.is_empty());
        for (start, end, name) in spans {
            assert!(
                cuts.contains(&start) && cuts.contains(&end),
                "{}: member {name} data {start}..{end} is not cut around",
                path.display()
            );
        }
    }
}

/// Bytes of `new`'s chunks whose content is not among `old`'s chunks.
fn new_bytes(old: &[u8], new: &[u8], params: &ChunkerParams) -> (u64, usize) {
    let known: HashSet<blake3::Hash> = chunk(old, params).iter().map(|c| blake3::hash(c)).collect();
    let chunks = chunk(new, params);
    let fresh: u64 =
        chunks.iter().filter(|c| !known.contains(&blake3::hash(c))).map(|c| c.len() as u64).sum();
    (fresh, chunks.len())
}

#[test]
fn real_snapshots_tar_awareness_does_not_hurt_dedup() {
    let Some(dir) = real_snapshot_dir() else { return };
    for (old, new) in
        [("indexed-v0", "indexed-v1"), ("fixture-v0", "fixture-v1"), ("fixture-v1", "fixture-v2")]
    {
        let old_data = std::fs::read(dir.join(format!("{old}.snapshot"))).unwrap();
        let new_data = std::fs::read(dir.join(format!("{new}.snapshot"))).unwrap();
        let mut results = Vec::new();
        for (tar_aware, threshold) in
            [(false, 0), (true, 16 << 10), (true, 64 << 10), (true, 4 << 10)]
        {
            let params = ChunkerParams {
                min_size: 16 << 10,
                avg_size: 64 << 10,
                max_size: 256 << 10,
                seed: SEED,
                tar_aware,
                tar_threshold: threshold,
            };
            let (fresh, count) = new_bytes(&old_data, &new_data, &params);
            eprintln!(
                "dedup {old} -> {new} ({} bytes): tar_aware={tar_aware} threshold={threshold}: \
                 {fresh} new bytes ({:.1}%) in {count} chunks",
                new_data.len(),
                100.0 * fresh as f64 / new_data.len() as f64
            );
            results.push(fresh);
        }
        if old == "indexed-v0" {
            assert!(results[1] <= results[0], "tar-aware added bytes: {results:?}");
        }
    }
}
