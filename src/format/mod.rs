//! The on-disk contract: pure encode/decode of every object in a repository, no I/O.
//!
//! `docs/design.md` is the normative description of these bytes; the golden tests in
//! `tests/golden.rs` pin them. Every binary plaintext starts with a 4-byte magic and a
//! little-endian u32 format version, so a reader refuses what it does not know.

pub mod config;
pub mod index;
pub mod keyfile;
pub mod list;
pub mod manifest;
pub mod pack;

use crate::error::{Error, ErrorKind, Result};

/// Bounds-checked little-endian reader over untrusted bytes; errors name the object.
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'a str) -> Self {
        ByteReader { buf, pos: 0, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end =
            self.pos.checked_add(n).filter(|&end| end <= self.buf.len()).ok_or_else(|| {
                Error::corrupt(format!(
                    "{} is truncated: needs {n} bytes at offset {}, has {}",
                    self.what,
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn id(&mut self) -> Result<[u8; 32]> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }

    /// Checks the magic and that the version is one of `known`; returns it.
    pub(crate) fn expect_header_in(&mut self, magic: &[u8; 4], known: &[u32]) -> Result<u32> {
        self.expect_magic(magic)?;
        let found = self.u32()?;
        if !known.contains(&found) {
            let newest = known.iter().copied().max().unwrap_or(0);
            return Err(unsupported_version(self.what, found, newest));
        }
        Ok(found)
    }

    fn expect_magic(&mut self, magic: &[u8; 4]) -> Result<()> {
        if self.take(4)? != magic {
            return Err(Error::corrupt(format!(
                "{} does not start with {:?}: it is not a qvault object of that kind",
                self.what,
                String::from_utf8_lossy(magic)
            )));
        }
        Ok(())
    }

    /// Checks the magic and that the version is one this build reads.
    pub(crate) fn expect_header(&mut self, magic: &[u8; 4], version: u32) -> Result<()> {
        if self.take(4)? != magic {
            return Err(Error::corrupt(format!(
                "{} does not start with {:?}: it is not a qvault object of that kind",
                self.what,
                String::from_utf8_lossy(magic)
            )));
        }
        let found = self.u32()?;
        if found != version {
            return Err(unsupported_version(self.what, found, version));
        }
        Ok(())
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails unless everything was consumed: trailing bytes mean a different format.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::corrupt(format!(
                "{} has {} unexpected trailing bytes",
                self.what,
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// The error for an object whose format version this build does not know.
pub(crate) fn unsupported_version(what: &str, found: u32, known: u32) -> Error {
    Error::new(
        ErrorKind::UnsupportedVersion,
        format!(
            "{what} has format version {found}, this qvault reads version {known}: \
             use a qvault release that supports version {found}"
        ),
    )
}

pub(crate) fn put_header(out: &mut Vec<u8>, magic: &[u8; 4], version: u32) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
}
