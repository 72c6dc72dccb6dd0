//! Content-defined chunking: FastCDC 2020 with tar-aware forced cut points.
//!
//! Guarantees of [`Chunker`]:
//! - The chunks, concatenated, are exactly the input; empty input gives no chunks.
//! - Every chunk is non-empty and at most `max_size` bytes. A chunk is shorter than
//!   `min_size` only when it ends at a forced cut point or at the end of the input.
//! - Cut points depend only on the bytes, the parameters and the seed, never on how the
//!   reader splits its reads.
//! - Memory stays around `2 × max_size` whatever the input size (plus what the caller keeps:
//!   chunks are zero-copy slices of the read buffer, so a chunk that is held keeps its part of
//!   that buffer's allocation alive).
//! - Only I/O errors of the reader are errors. Malformed, truncated or non-tar input is
//!   chunked, just with fewer (or no) forced cut points.
//!
//! With `tar_aware`, every tar member whose data is at least `tar_threshold` bytes gets forced
//! cut points at the start and the end of its data, also inside nested `.tar` members (Qdrant
//! stores each segment as a nested tar). FastCDC runs independently inside each span between
//! forced cut points, so an unchanged big file yields the same chunks whatever moved around it
//! or changed in its header.
//!
//! The cut points are part of the repository format: `fastcdc` is pinned with `=` and golden
//! tests in this module fail if they move.

mod tar_scan;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{self, Normalization};

use crate::error::{Error, Result};
use tar_scan::TarScanner;

/// FastCDC's normalization level; part of the format, like the sizes and the seed.
const NORMALIZATION: Normalization = Normalization::Level1;

/// The parameters that fix where chunks are cut. Stored with the repository: changing any
/// of them changes every cut point and so defeats dedup against older backups.
///
/// `Debug` does not print the seed: it is derived from the repository key.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    /// No chunk is shorter, except at a forced cut point or the end of the input.
    pub min_size: u32,
    /// The size FastCDC aims for.
    pub avg_size: u32,
    /// No chunk is longer.
    pub max_size: u32,
    /// XORed into FastCDC's gear table so cut points do not reveal content.
    pub seed: u64,
    /// Whether tar members get forced cut points.
    pub tar_aware: bool,
    /// Members with at least this many data bytes get forced cut points.
    pub tar_threshold: u64,
}

impl std::fmt::Debug for ChunkerParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkerParams")
            .field("min_size", &self.min_size)
            .field("avg_size", &self.avg_size)
            .field("max_size", &self.max_size)
            .field("seed", &"<redacted>")
            .field("tar_aware", &self.tar_aware)
            .field("tar_threshold", &self.tar_threshold)
            .finish()
    }
}

impl ChunkerParams {
    /// Checks the sizes against FastCDC 2020's limits: each within its range, all even,
    /// and `min_size <= avg_size <= max_size`. The error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("min_size", self.min_size, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX),
            ("avg_size", self.avg_size, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX),
            ("max_size", self.max_size, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX),
        ];
        for (field, value, low, high) in sizes {
            let value = value as usize;
            if value < low || value > high {
                return Err(Error::invalid_input(format!(
                    "chunker parameter {field} = {value} is out of range: FastCDC 2020 accepts \
                     {low} to {high} bytes; choose a {field} in that range"
                )));
            }
            if value % 2 != 0 {
                return Err(Error::invalid_input(format!(
                    "chunker parameter {field} = {value} is odd: FastCDC 2020 needs even sizes; \
                     use {} or {}",
                    value - 1,
                    value + 1
                )));
            }
        }
        if self.min_size > self.avg_size {
            return Err(Error::invalid_input(format!(
                "chunker parameter min_size = {} is larger than avg_size = {}: choose \
                 min_size <= avg_size <= max_size",
                self.min_size, self.avg_size
            )));
        }
        if self.avg_size > self.max_size {
            return Err(Error::invalid_input(format!(
                "chunker parameter avg_size = {} is larger than max_size = {}: choose \
                 min_size <= avg_size <= max_size",
                self.avg_size, self.max_size
            )));
        }
        Ok(())
    }
}

/// Splits a byte stream into content-defined chunks; see the module docs for the guarantees.
///
/// After the reader fails (other than `Interrupted`, which is retried), the iterator yields
/// that error once and then ends.
pub struct Chunker<R: Read> {
    reader: R,
    /// `buf[..filled]` is read but not yet emitted; `buf[filled..]` is initialised scratch
    /// space for the next read, kept so that bytes are zeroed once, not once per read.
    buf: BytesMut,
    filled: usize,
    /// Stream offset of `buf[0]`.
    offset: u64,
    eof: bool,
    failed: bool,
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    scanner: Option<TarScanner>,
    /// Forced cut offsets not yet passed, from the scanner. Every forced cut at or below the
    /// read position is in here before a chunk can cross it.
    forced: BTreeSet<u64>,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`; fails only when `params` do not validate. Reads nothing yet.
    pub fn new(reader: R, params: &ChunkerParams) -> Result<Self> {
        params.validate()?;
        let (mask_s, mask_l) = v2020::select_masks(params.avg_size as usize, NORMALIZATION);
        let (gear, gear_ls) = v2020::get_gear_with_seed(params.seed);
        Ok(Chunker {
            reader,
            buf: BytesMut::new(),
            filled: 0,
            offset: 0,
            eof: false,
            failed: false,
            min_size: params.min_size as usize,
            avg_size: params.avg_size as usize,
            max_size: params.max_size as usize,
            mask_s,
            mask_l,
            gear,
            gear_ls,
            scanner: params.tar_aware.then(|| TarScanner::new(params.tar_threshold)),
            forced: BTreeSet::new(),
        })
    }

    /// Reads until `max_size` bytes are buffered or the input ends, because FastCDC needs a
    /// full window to place a cut exactly where it would in any other read pattern.
    fn fill(&mut self) -> io::Result<()> {
        while !self.eof && self.filled < self.max_size {
            let want = self.max_size - self.filled;
            if self.buf.len() < self.filled + want {
                if self.buf.capacity() < self.filled + want {
                    // Room for a whole window beyond what is kept, so reallocations (which
                    // copy at most one window) happen about once per window of input.
                    self.buf.reserve((2 * self.max_size).saturating_sub(self.buf.len()));
                }
                self.buf.resize(self.filled + want, 0);
            }
            let target = &mut self.buf[self.filled..self.filled + want];
            let n = match self.reader.read(target) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
                break;
            }
            let n = n.min(want); // a misbehaving reader must not make us emit garbage
            if let Some(scanner) = &mut self.scanner {
                scanner.feed(&self.buf[self.filled..self.filled + n], &mut self.forced);
            }
            self.filled += n;
        }
        Ok(())
    }

    /// Length of the next chunk of `buf[..filled]` (which must not be empty).
    fn next_cut(&mut self) -> usize {
        while self.forced.first().is_some_and(|&c| c <= self.offset) {
            self.forced.pop_first();
        }
        let mut window = self.filled;
        if let Some(&cut) = self.forced.first() {
            window = window.min(usize::try_from(cut - self.offset).unwrap_or(usize::MAX));
        }
        let (_, len) = v2020::cut_gear(
            &self.buf[..window],
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        len.clamp(1, window)
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.fill() {
            self.failed = true;
            return Some(Err(e));
        }
        if self.filled == 0 {
            return None;
        }
        let len = self.next_cut();
        self.filled -= len;
        self.offset += len as u64;
        Some(Ok(self.buf.split_to(len).freeze()))
    }
}

impl<R: Read> std::iter::FusedIterator for Chunker<R> {}
