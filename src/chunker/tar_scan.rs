//! A streaming tar scanner that reports where the data of big members starts and ends.
//!
//! Guarantees:
//! - It never fails and never panics: whatever bytes it is fed, the worst outcome is that it
//!   stops reporting cut points for the tar level it could not follow.
//! - Its memory is bounded: one 512-byte block and a few integers per tar level, at most
//!   [`MAX_DEPTH`] levels, whatever the size of names, pax records or sparse maps.
//! - Every member whose data size is at least the threshold yields two cut offsets, at the
//!   start and at the end of its stored data (absolute offsets in the outermost stream). A
//!   member at offset `x` is reported no later than the call to [`TarScanner::feed`] that
//!   passes byte `x - 1`, so a consumer that has fed bytes up to `y` knows every cut `<= y`.
//!
//! Members whose name ends in `.tar` and that pass the threshold are scanned as tars too
//! (Qdrant stores every segment as a nested tar), with offsets still in the outer stream.

use std::collections::BTreeSet;

const BLOCK: usize = 512;
const BLOCK_U64: u64 = BLOCK as u64;

/// How many tar levels are followed (the outermost counts as one). Deeper tars are chunked
/// as plain data of their parent member; the cap bounds memory on crafted input.
pub(crate) const MAX_DEPTH: usize = 8;

/// Watches a byte stream, finds tar members and reports forced cut offsets.
pub(crate) struct TarScanner {
    /// Stream offset of the next byte [`TarScanner::feed`] will see.
    pos: u64,
    threshold: u64,
    /// `levels[0]` is the outer stream; the last one is the tar currently being read.
    levels: Vec<Level>,
}

impl TarScanner {
    /// A scanner for a stream that starts at offset 0; members whose data is at least
    /// `threshold` bytes get cut points.
    pub(crate) fn new(threshold: u64) -> Self {
        TarScanner { pos: 0, threshold, levels: vec![Level::new(u64::MAX)] }
    }

    /// Feeds the next bytes of the stream, adding the cut offsets they reveal to `cuts`.
    pub(crate) fn feed(&mut self, mut data: &[u8], cuts: &mut BTreeSet<u64>) {
        while !data.is_empty() {
            // A nested tar ends exactly where its member's data ends in the parent.
            while self.levels.len() > 1 && self.levels.last().is_some_and(|l| l.end <= self.pos) {
                self.levels.pop();
            }
            let depth = self.levels.len();
            let Some(top) = self.levels.last_mut() else {
                return;
            };
            let room = top.end.saturating_sub(self.pos);
            let limit = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
            let (used, nested_end) = top.step(&data[..limit], self.pos, self.threshold, cuts);
            let used = used.min(limit);
            self.pos += used as u64;
            data = &data[used..];
            if let Some(end) = nested_end {
                if depth < MAX_DEPTH && end > self.pos {
                    self.levels.push(Level::new(end));
                }
            }
        }
    }
}

/// The scanner's state for one tar (the outer stream or a nested member).
struct Level {
    /// Offset where this tar's bytes end: its member's data end in the parent level.
    end: u64,
    state: State,
    block: [u8; BLOCK],
    block_len: usize,
    zero_blocks: u8,
    /// What GNU long-name and pax `x` headers said about the next member.
    next: MemberMeta,
    /// What pax `g` headers said about all following members.
    global: MemberMeta,
}

#[derive(Clone, Copy, Default)]
struct MemberMeta {
    size: Option<u64>,
    is_tar: Option<bool>,
}

impl MemberMeta {
    fn overlay(&mut self, newer: MemberMeta) {
        self.size = newer.size.or(self.size);
        self.is_tar = newer.is_tar.or(self.is_tar);
    }
}

enum State {
    /// Collecting a header block.
    Header,
    /// Collecting the extension blocks of an old GNU sparse member (its data follows them).
    SparseExt { size: u64, is_tar: bool },
    /// Passing over a member's data and the padding to the next block boundary.
    Data { data_end: u64, padded_end: u64, sink: Sink },
    /// This level is no longer followed (end of archive, bad checksum, impossible sizes).
    Done,
}

/// What to do with a member's data bytes.
enum Sink {
    Skip,
    LongName(NameTail),
    Pax { parser: PaxParser, global: bool },
}

impl Level {
    fn new(end: u64) -> Self {
        Level {
            end,
            state: State::Header,
            block: [0; BLOCK],
            block_len: 0,
            zero_blocks: 0,
            next: MemberMeta::default(),
            global: MemberMeta::default(),
        }
    }

    /// Consumes a prefix of `data` (which starts at stream offset `pos`), returning how many
    /// bytes it used and, when a nested tar starts, the offset where it ends.
    fn step(
        &mut self,
        data: &[u8],
        pos: u64,
        threshold: u64,
        cuts: &mut BTreeSet<u64>,
    ) -> (usize, Option<u64>) {
        match &mut self.state {
            State::Done => (data.len(), None),
            State::Header | State::SparseExt { .. } => {
                let take = (BLOCK - self.block_len).min(data.len());
                self.block[self.block_len..self.block_len + take].copy_from_slice(&data[..take]);
                self.block_len += take;
                if self.block_len < BLOCK {
                    return (take, None);
                }
                self.block_len = 0;
                (take, self.on_block(pos + take as u64, threshold, cuts))
            }
            State::Data { data_end, padded_end, sink } => {
                let left = usize::try_from(padded_end.saturating_sub(pos)).unwrap_or(usize::MAX);
                // Only reachable if offsets went wrong; leaving the state makes progress.
                if left == 0 {
                    self.finish_data();
                    return (0, None);
                }
                let take = left.min(data.len());
                if pos < *data_end {
                    let in_data = usize::try_from(*data_end - pos).unwrap_or(usize::MAX);
                    sink.feed(&data[..take.min(in_data)]);
                }
                if take == left {
                    self.finish_data();
                }
                (take, None)
            }
        }
    }

    /// Handles a complete block; `after` is the offset just past it.
    fn on_block(&mut self, after: u64, threshold: u64, cuts: &mut BTreeSet<u64>) -> Option<u64> {
        if let State::SparseExt { size, is_tar } = self.state {
            if self.block[504] != 0 {
                return None;
            }
            return self.start_member(after, size, is_tar, threshold, cuts);
        }
        if self.block.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks >= 2 {
                self.state = State::Done;
            }
            return None;
        }
        self.zero_blocks = 0;
        if !checksum_ok(&self.block) {
            self.state = State::Done;
            return None;
        }
        let Some(header_size) = parse_numeric(&self.block[124..136]) else {
            self.state = State::Done;
            return None;
        };
        let typeflag = self.block[156];
        match typeflag {
            b'L' => self.start_data(after, header_size, Sink::LongName(NameTail::default())),
            b'K' => self.start_data(after, header_size, Sink::Skip),
            b'x' | b'g' => {
                let sink = Sink::Pax { parser: PaxParser::default(), global: typeflag == b'g' };
                self.start_data(after, header_size, sink);
            }
            _ => {
                let mut meta = self.global;
                meta.overlay(self.next);
                self.next = MemberMeta::default();
                let size = meta.size.unwrap_or(header_size);
                let is_tar = meta.is_tar.unwrap_or_else(|| header_name_is_tar(&self.block));
                if typeflag == b'S' && self.block[482] != 0 {
                    self.state = State::SparseExt { size, is_tar };
                    return None;
                }
                return self.start_member(after, size, is_tar, threshold, cuts);
            }
        }
        None
    }

    /// A member's data starts at `start`: report cuts, and ask for a nested level for tars.
    fn start_member(
        &mut self,
        start: u64,
        size: u64,
        is_tar: bool,
        threshold: u64,
        cuts: &mut BTreeSet<u64>,
    ) -> Option<u64> {
        self.start_data(start, size, Sink::Skip);
        if matches!(self.state, State::Done) || size < threshold {
            return None;
        }
        let end = start + size; // checked by start_data
        cuts.insert(start);
        cuts.insert(end);
        (is_tar && size > 0).then_some(end)
    }

    fn start_data(&mut self, start: u64, size: u64, sink: Sink) {
        let padded = size.checked_next_multiple_of(BLOCK_U64);
        let ends = padded.and_then(|p| Some((start.checked_add(size)?, start.checked_add(p)?)));
        match ends {
            // Data that overruns the enclosing member means we lost track of this tar.
            Some((data_end, padded_end)) if data_end <= self.end => {
                self.state = State::Data { data_end, padded_end, sink };
                if padded_end == start {
                    self.finish_data();
                }
            }
            _ => self.state = State::Done,
        }
    }

    fn finish_data(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Header);
        if let State::Data { sink, .. } = state {
            match sink {
                Sink::Skip => {}
                Sink::LongName(tail) => self.next.is_tar = Some(tail.is_tar()),
                Sink::Pax { parser, global: false } => self.next.overlay(parser.finish()),
                Sink::Pax { parser, global: true } => self.global.overlay(parser.finish()),
            }
        }
    }
}

impl Sink {
    fn feed(&mut self, bytes: &[u8]) {
        match self {
            Sink::Skip => {}
            Sink::LongName(tail) => tail.push(bytes),
            Sink::Pax { parser, .. } => parser.push(bytes),
        }
    }
}

/// Whether the header's own name field ends in `.tar`. With a ustar prefix the full name is
/// `prefix/name`, which ends as `name` does.
fn header_name_is_tar(block: &[u8; BLOCK]) -> bool {
    let name = &block[..100];
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    name[..len].ends_with(b".tar")
}

/// The header checksum: the octal number at 148..156 must equal the sum of the header's
/// bytes with that field read as spaces (unsigned, or signed as some old tars wrote it).
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&block[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// A numeric header field: octal text, or GNU base-256 when the top bit of the first byte is
/// set. Negative and oversized values are `None`.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    if first & 0x40 != 0 {
        return None; // negative
    }
    let mut value = u64::from(first & 0x3f);
    for &b in rest {
        if value >> 56 != 0 {
            return None;
        }
        value = (value << 8) | u64::from(b);
    }
    Some(value)
}

/// Octal digits after optional leading spaces, ended by NUL, space or the field's end.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ')?;
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in &field[start..] {
        match b {
            b'0'..=b'7' => {
                value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
                digits += 1;
            }
            0 | b' ' => break,
            _ => return None,
        }
    }
    (digits > 0).then_some(value)
}

/// Remembers whether a NUL-terminated name streamed through it ends in `.tar`.
#[derive(Default)]
struct NameTail {
    last: [u8; 4],
    len: usize,
    ended: bool,
}

impl NameTail {
    fn push(&mut self, bytes: &[u8]) {
        if self.ended {
            return;
        }
        let name = match bytes.iter().position(|&b| b == 0) {
            Some(nul) => {
                self.ended = true;
                &bytes[..nul]
            }
            None => bytes,
        };
        for &b in &name[name.len().saturating_sub(4)..] {
            self.last.rotate_left(1);
            self.last[3] = b;
            self.len = self.len.saturating_add(1);
        }
    }

    fn is_tar(&self) -> bool {
        self.len >= 4 && &self.last == b".tar"
    }
}

/// Streams pax records (`"<len> <key>=<value>\n"`), keeping only `size` and whether `path`
/// ends in `.tar`. A malformed record stops the parse; what was parsed before it stands.
#[derive(Default)]
struct PaxParser {
    state: PaxState,
    /// Declared length of the current record and how many of its bytes were seen.
    record_len: u64,
    seen: u64,
    digits: u8,
    key: [u8; 4],
    key_len: usize,
    /// The `size` value so far; `None` once it is not a decimal number that fits.
    size: Option<u64>,
    size_digits: usize,
    path: NameTail,
    result: MemberMeta,
}

#[derive(Default, PartialEq)]
enum PaxState {
    #[default]
    Length,
    Key,
    Value,
    Broken,
}

impl PaxParser {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.state == PaxState::Broken {
                return;
            }
            self.seen += 1;
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            PaxState::Length => match b {
                b'0'..=b'9' if self.digits < 19 => {
                    self.record_len = self.record_len * 10 + u64::from(b - b'0');
                    self.digits += 1;
                }
                b' ' if self.digits > 0 => self.state = PaxState::Key,
                _ => self.state = PaxState::Broken,
            },
            PaxState::Key if self.seen >= self.record_len => self.state = PaxState::Broken,
            PaxState::Key => {
                if b == b'=' {
                    self.state = PaxState::Value;
                    self.size = Some(0);
                    self.size_digits = 0;
                    self.path = NameTail::default();
                } else {
                    if self.key_len < self.key.len() {
                        self.key[self.key_len] = b;
                    }
                    self.key_len += 1;
                }
            }
            PaxState::Value if self.seen == self.record_len => {
                // The record's last byte is its newline.
                if b != b'\n' {
                    self.state = PaxState::Broken;
                    return;
                }
                match self.key() {
                    // An empty or malformed value leaves the size as the header says.
                    Some(b"size") if self.size_digits > 0 => self.result.size = self.size,
                    Some(b"path") => self.result.is_tar = Some(self.path.is_tar()),
                    _ => {}
                }
                self.state = PaxState::Length;
                self.record_len = 0;
                self.seen = 0;
                self.digits = 0;
                self.key_len = 0;
            }
            PaxState::Value => match self.key() {
                Some(b"size") => {
                    self.size_digits += 1;
                    self.size = match b {
                        b'0'..=b'9' => self
                            .size
                            .and_then(|v| v.checked_mul(10)?.checked_add(u64::from(b - b'0'))),
                        _ => None,
                    };
                }
                Some(b"path") => self.path.push(&[b]),
                _ => {}
            },
            PaxState::Broken => {}
        }
    }

    fn key(&self) -> Option<&[u8]> {
        (self.key_len <= self.key.len()).then(|| &self.key[..self.key_len])
    }

    fn finish(self) -> MemberMeta {
        self.result
    }
}
