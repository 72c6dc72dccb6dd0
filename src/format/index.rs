//! Index files: which chunks each pack holds, so nobody has to read pack headers.
//!
//! ```text
//! object    = age file to the metadata recipient; id = BLAKE3(object bytes)
//! plaintext = "QVIX" ‖ u32 version (1) ‖ u32 pack count
//!             ‖ per pack: pack id (32) ‖ u32 entry count ‖ entries (PackEntry, 48 bytes each)
//! ```

use super::pack::{put_entry, read_entry, PackEntry, ENTRY_LEN};
use super::{put_header, ByteReader};
use crate::error::{Error, Result};
use crate::id::PackId;

pub const INDEX_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"QVIX";

/// One pack and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    pub pack: PackId,
    pub entries: Vec<PackEntry>,
}

/// The plaintext of an index file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.packs.iter().map(|p| p.entries.len()).sum();
        let mut out = Vec::with_capacity(12 + self.packs.len() * 36 + entries * ENTRY_LEN);
        put_header(&mut out, MAGIC, INDEX_VERSION);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(p.pack.as_bytes());
            out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
            for e in &p.entries {
                put_entry(&mut out, e);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<IndexFile> {
        let mut r = ByteReader::new(bytes, what);
        r.expect_header(MAGIC, INDEX_VERSION)?;
        let count = r.u32()? as usize;
        // Each pack needs at least 36 bytes: refuse counts the bytes cannot hold before
        // allocating for them.
        if count > r.remaining() / 36 {
            return Err(Error::corrupt(format!(
                "{what} claims {count} packs, too many for its size"
            )));
        }
        let mut packs = Vec::with_capacity(count);
        for _ in 0..count {
            let pack = PackId(r.id()?);
            let n = r.u32()? as usize;
            if n > r.remaining() / ENTRY_LEN {
                return Err(Error::corrupt(format!(
                    "{what}: pack {pack} claims {n} entries, too many for the file's size"
                )));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(read_entry(&mut r)?);
            }
            packs.push(IndexedPack { pack, entries });
        }
        r.finish()?;
        Ok(IndexFile { packs })
    }
}
