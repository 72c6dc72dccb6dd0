//! Raw tar output in the exact dialect Qdrant's snapshots use.
//!
//! The `tar` crate cannot write old-GNU sparse members (type `S` with the sparse map in the
//! header and extension blocks), and it would also normalise fields Qdrant leaves odd (type
//! `\0`, NUL-filled uid fields), so headers are assembled by hand here.
//!
//! Two header styles occur in real snapshots:
//! - [`Style::Memory`]: members Qdrant builds in memory (the nested segment tars and the small
//!   JSON files of the outer tar): type `\0`, mode `0000644`, uid/gid fields all NUL, mtime 0.
//! - [`Style::Disk`]: members copied from files (everything inside a segment tar, the WAL,
//!   the clocks): type `0` or `S`, mode `0100644`, octal zero uid/gid/dev, a real mtime.
//!
//! Both use the old GNU magic `ustar  \0`.

use std::io::{self, Write};

pub(crate) const BLOCK: u64 = 512;
const BUF_CAP: usize = 1 << 18;

/// Buffered, counting output. The only buffer in the writer: its size is fixed, so memory
/// does not depend on what is written.
pub(crate) struct Sink<W: Write> {
    out: W,
    buf: Vec<u8>,
    flushed: u64,
}

impl<W: Write> Sink<W> {
    pub(crate) fn new(out: W) -> Self {
        Sink { out, buf: Vec::with_capacity(BUF_CAP), flushed: 0 }
    }

    /// Bytes written so far (flushed or buffered).
    pub(crate) fn position(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > BUF_CAP {
            self.flush_buf()?;
            if bytes.len() >= BUF_CAP {
                self.out.write_all(bytes)?;
                self.flushed += bytes.len() as u64;
                return Ok(());
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends `n` bytes and returns them for the caller to fill in place (saves a copy for
    /// vector data). `n` must stay well below the buffer capacity.
    pub(crate) fn space(&mut self, n: usize) -> io::Result<&mut [u8]> {
        if self.buf.len() + n > BUF_CAP {
            self.flush_buf()?;
        }
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        Ok(&mut self.buf[start..])
    }

    pub(crate) fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(Z.len() as u64) as usize;
            self.put(&Z[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Zero padding after `len` data bytes up to the next 512-byte block.
    pub(crate) fn pad_block(&mut self, len: u64) -> io::Result<()> {
        self.zeros(pad512(len) - len)
    }

    pub(crate) fn finish(mut self) -> io::Result<u64> {
        self.flush_buf()?;
        self.out.flush()?;
        Ok(self.flushed)
    }
}

pub(crate) fn pad512(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    Memory,
    Disk,
}

/// What a member's data is: plain bytes, or a GNU sparse file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Regular {
        size: u64,
    },
    /// `map` lists `(offset, length)` data regions in order followed, as GNU tar and Qdrant
    /// write it, by a terminating `(apparent, 0)` entry. The stored data is the regions'
    /// bytes back to back.
    Sparse {
        apparent: u64,
        map: Vec<(u64, u64)>,
    },
}

impl Layout {
    /// Bytes of data stored in the archive for this member (before block padding).
    pub(crate) fn stored(&self) -> u64 {
        match self {
            Layout::Regular { size } => *size,
            Layout::Sparse { map, .. } => map.iter().map(|&(_, len)| len).sum(),
        }
    }

    /// A preallocated file of `apparent` bytes of which the first `data` bytes were written
    /// (Qdrant's mmap files): one data region then a hole, or only a hole when nothing was
    /// written. A file without a hole is a plain member, as in the real snapshots.
    pub(crate) fn preallocated(apparent: u64, data: u64) -> Layout {
        let data = data.min(apparent);
        if data == apparent && apparent > 0 {
            Layout::Regular { size: apparent }
        } else if data == 0 {
            Layout::Sparse { apparent, map: vec![(apparent, 0)] }
        } else {
            Layout::Sparse { apparent, map: vec![(0, data), (apparent, 0)] }
        }
    }
}

pub(crate) struct MemberHeader<'a> {
    pub(crate) name: &'a str,
    pub(crate) mtime: u64,
    pub(crate) style: Style,
    pub(crate) layout: Layout,
}

/// Sparse entries in the main header, and per extension block.
const MAIN_SPARSE: usize = 4;
const EXT_SPARSE: usize = 21;
const NAME_LEN: usize = 100;

impl MemberHeader<'_> {
    /// Header bytes (long-name record, header, sparse extension blocks) before the data.
    pub(crate) fn header_len(&self) -> u64 {
        let mut blocks = 1;
        if self.name.len() >= NAME_LEN {
            blocks += 1 + pad512(self.name.len() as u64 + 1) / BLOCK;
        }
        if let Layout::Sparse { map, .. } = &self.layout {
            if map.len() > MAIN_SPARSE {
                blocks += (map.len() - MAIN_SPARSE).div_ceil(EXT_SPARSE) as u64;
            }
        }
        blocks * BLOCK
    }

    /// Whole member in the archive: headers plus block-padded stored data.
    pub(crate) fn total_len(&self) -> u64 {
        self.header_len() + pad512(self.layout.stored())
    }

    pub(crate) fn write<W: Write>(&self, sink: &mut Sink<W>) -> io::Result<()> {
        let name = self.name.as_bytes();
        if name.len() >= NAME_LEN {
            // GNU long name: a `././@LongLink` record whose data is the NUL-terminated name.
            let len = name.len() as u64 + 1;
            let mut h = base_header(b"././@LongLink", 0, Style::Memory, b'L', len);
            finish_checksum(&mut h);
            sink.put(&h)?;
            sink.put(name)?;
            sink.put(&[0])?;
            sink.pad_block(len)?;
        }
        let short = &name[..name.len().min(NAME_LEN)];
        match &self.layout {
            Layout::Regular { size } => {
                let kind = match self.style {
                    Style::Memory => 0,
                    Style::Disk => b'0',
                };
                let mut h = base_header(short, self.mtime, self.style, kind, *size);
                finish_checksum(&mut h);
                sink.put(&h)
            }
            Layout::Sparse { apparent, map } => {
                let stored = self.layout.stored();
                let mut h = base_header(short, self.mtime, self.style, b'S', stored);
                for (i, &(off, len)) in map.iter().take(MAIN_SPARSE).enumerate() {
                    let at = 386 + i * 24;
                    octal(&mut h[at..at + 12], off);
                    octal(&mut h[at + 12..at + 24], len);
                }
                if map.len() > MAIN_SPARSE {
                    h[482] = 1;
                }
                octal(&mut h[483..495], *apparent);
                finish_checksum(&mut h);
                sink.put(&h)?;
                let rest = map.get(MAIN_SPARSE..).unwrap_or(&[]);
                let mut chunks = rest.chunks(EXT_SPARSE).peekable();
                while let Some(chunk) = chunks.next() {
                    let mut ext = [0u8; 512];
                    for (i, &(off, len)) in chunk.iter().enumerate() {
                        let at = i * 24;
                        octal(&mut ext[at..at + 12], off);
                        octal(&mut ext[at + 12..at + 24], len);
                    }
                    if chunks.peek().is_some() {
                        ext[504] = 1;
                    }
                    sink.put(&ext)?;
                }
                Ok(())
            }
        }
    }
}

fn base_header(name: &[u8], mtime: u64, style: Style, kind: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    match style {
        Style::Memory => {
            h[100..108].copy_from_slice(b"0000644\0");
        }
        Style::Disk => {
            h[100..108].copy_from_slice(b"0100644\0");
            h[108..116].copy_from_slice(b"0000000\0");
            h[116..124].copy_from_slice(b"0000000\0");
            h[329..337].copy_from_slice(b"0000000\0");
            h[337..345].copy_from_slice(b"0000000\0");
        }
    }
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0");
    h
}

/// Checksum as Qdrant's writer emits it: seven octal digits and a NUL.
fn finish_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let mut field = [0u8; 8];
    octal(&mut field, u64::from(sum));
    h[148..156].copy_from_slice(&field);
}

/// Zero-padded octal with a trailing NUL; values too large for the field (files of 8 GiB and
/// more) use the GNU base-256 form, which readers of GNU tars accept.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits < 22 && value >= 1u64 << (3 * digits) {
        field.fill(0);
        let be = value.to_be_bytes();
        let n = field.len().min(8);
        let len = field.len();
        field[len - n..].copy_from_slice(&be[8 - n..]);
        field[0] |= 0x80;
        return;
    }
    let mut v = value;
    for i in (0..digits).rev() {
        field[i] = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn write_member(out: &mut Sink<&mut Vec<u8>>, h: &MemberHeader<'_>, data: &[u8]) {
        let before = out.position();
        h.write(out).unwrap();
        out.put(data).unwrap();
        out.pad_block(data.len() as u64).unwrap();
        assert_eq!(out.position() - before, h.total_len());
    }

    #[test]
    fn sparse_with_extension_blocks_and_long_names_read_back() {
        // 30 regions: 4 in the header, the rest over two extension blocks.
        let mut map = Vec::new();
        let mut data = Vec::new();
        for i in 0..30u64 {
            map.push((i * 8192, 512));
            data.extend(std::iter::repeat_n(i as u8 + 1, 512));
        }
        let apparent = 30 * 8192 + 100;
        map.push((apparent, 0));
        let long = "d/".repeat(70) + "file.bin";
        let mut bytes = Vec::new();
        let mut sink = Sink::new(&mut bytes);
        let h = MemberHeader {
            name: &long,
            mtime: 1_700_000_000,
            style: Style::Disk,
            layout: Layout::Sparse { apparent, map },
        };
        write_member(&mut sink, &h, &data);
        let plain = MemberHeader {
            name: "x.json",
            mtime: 0,
            style: Style::Memory,
            layout: Layout::Regular { size: 3 },
        };
        write_member(&mut sink, &plain, b"abc");
        sink.zeros(1024).unwrap();
        sink.finish().unwrap();

        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
        assert_eq!(e.size(), apparent);
        assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
        let mut got = Vec::new();
        e.read_to_end(&mut got).unwrap();
        assert_eq!(got.len() as u64, apparent);
        for i in 0..30usize {
            assert!(got[i * 8192..i * 8192 + 512].iter().all(|&b| b == i as u8 + 1));
            assert!(got[i * 8192 + 512..(i + 1) * 8192].iter().all(|&b| b == 0));
        }
        drop(e);
        let mut e = entries.next().unwrap().unwrap();
        let mut got = Vec::new();
        e.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");
        assert!(entries.next().is_none());
    }

    #[test]
    fn large_sizes_use_base256() {
        let mut f = [0u8; 12];
        octal(&mut f, 9 << 30);
        assert_eq!(f[0] & 0x80, 0x80);
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[124..136].copy_from_slice(&f);
        assert_eq!(h.entry_size().unwrap(), 9 << 30);
        octal(&mut f, 0o777);
        assert_eq!(&f, b"00000000777\0");
    }
}
