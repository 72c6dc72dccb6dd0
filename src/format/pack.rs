//! Pack objects: many blobs in one age stream, then an encrypted header, then a trailer.
//!
//! ```text
//! pack    = data ‖ header ‖ trailer
//! data    = age file to the data recipients; plaintext = blob ‖ blob ‖ …
//! header  = age file to the metadata recipient; plaintext = PackHeader (below)
//! trailer = "QVPK" ‖ u32 version (1) ‖ u64 length of `header`          (16 bytes, LE)
//! PackHeader = "QVPH" ‖ u32 version (1) ‖ u64 data length ‖ u64 data payload start
//!              ‖ u32 count ‖ count × PackEntry
//! PackEntry  = chunk id (32) ‖ u64 offset in data plaintext ‖ u32 blob length ‖ u32 chunk length
//! ```
//!
//! One X25519 operation per pack (not per chunk) is what makes small chunks affordable.
//! Offsets are into the data plaintext; age's STREAM is seekable in 64 KiB segments, and the
//! payload start lets a reader turn a plaintext range into a ciphertext range.

use super::{put_header, ByteReader};
use crate::crypto;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use age::x25519;
use std::io::{Read, Seek, SeekFrom, Write};

pub const PACK_VERSION: u32 = 1;
pub const TRAILER_LEN: usize = 16;
const TRAILER_MAGIC: &[u8; 4] = b"QVPK";
const HEADER_MAGIC: &[u8; 4] = b"QVPH";
pub const ENTRY_LEN: usize = 48;
/// age STREAM: plaintext segments of 64 KiB, each followed by a 16-byte tag.
pub const AGE_SEGMENT: u64 = 64 * 1024;
pub const AGE_TAG: u64 = 16;

/// Where one blob lives in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub chunk: ChunkId,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// The decrypted pack header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackHeader {
    pub data_len: u64,
    pub payload_start: u64,
    pub entries: Vec<PackEntry>,
}

pub(crate) fn put_entry(out: &mut Vec<u8>, e: &PackEntry) {
    out.extend_from_slice(e.chunk.as_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.length.to_le_bytes());
    out.extend_from_slice(&e.raw_length.to_le_bytes());
}

pub(crate) fn read_entry(r: &mut ByteReader<'_>) -> Result<PackEntry> {
    Ok(PackEntry {
        chunk: ChunkId(r.id()?),
        offset: r.u64()?,
        length: r.u32()?,
        raw_length: r.u32()?,
    })
}

impl PackHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.entries.len() * ENTRY_LEN);
        put_header(&mut out, HEADER_MAGIC, PACK_VERSION);
        out.extend_from_slice(&self.data_len.to_le_bytes());
        out.extend_from_slice(&self.payload_start.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            put_entry(&mut out, e);
        }
        out
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<PackHeader> {
        let mut r = ByteReader::new(bytes, what);
        r.expect_header(HEADER_MAGIC, PACK_VERSION)?;
        let data_len = r.u64()?;
        let payload_start = r.u64()?;
        let count = r.u32()? as usize;
        if r.remaining() != count.saturating_mul(ENTRY_LEN) {
            return Err(Error::corrupt(format!(
                "{what} says it has {count} entries but holds {} bytes of entries",
                r.remaining()
            )));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let e = read_entry(&mut r)?;
            let end = e.offset.checked_add(u64::from(e.length));
            if end.is_none_or(|end| end > data_len) {
                return Err(Error::corrupt(format!(
                    "{what}: entry for chunk {} lies outside the pack data",
                    e.chunk
                )));
            }
            entries.push(e);
        }
        r.finish()?;
        Ok(PackHeader { data_len, payload_start, entries })
    }
}

/// The trailer's claim: how long the encrypted header before it is.
pub fn decode_trailer(trailer: &[u8], what: &str) -> Result<u64> {
    let mut r = ByteReader::new(trailer, what);
    r.expect_header(TRAILER_MAGIC, PACK_VERSION)?;
    let header_len = r.u64()?;
    r.finish()?;
    Ok(header_len)
}

/// Length in ciphertext of an age STREAM payload (nonce excluded) for `n` plaintext bytes.
pub fn age_payload_len(n: u64) -> u64 {
    let segments = n.div_ceil(AGE_SEGMENT).max(1);
    n + segments * AGE_TAG
}

/// Builds a pack, encrypting blobs as they are added so only one copy is held.
pub struct PackWriter {
    data: age::stream::StreamWriter<Vec<u8>>,
    entries: Vec<PackEntry>,
    plaintext_len: u64,
}

/// A finished pack, ready to upload.
pub struct SealedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub header: PackHeader,
}

impl PackWriter {
    pub fn new(data_recipients: &[x25519::Recipient], capacity: usize) -> Result<Self> {
        let data = crypto::encrypt_stream(data_recipients, Vec::with_capacity(capacity))?;
        Ok(PackWriter { data, entries: Vec::new(), plaintext_len: 0 })
    }

    /// Appends one blob (codec byte ‖ payload) for `chunk`.
    pub fn add(&mut self, chunk: ChunkId, blob: &[u8], raw_length: u32) -> Result<()> {
        self.data.write_all(blob).map_err(|e| Error::io("encrypting a pack", e))?;
        let length = u32::try_from(blob.len())
            .map_err(|_| Error::invalid_input("a blob larger than 4 GiB cannot be packed"))?;
        self.entries.push(PackEntry { chunk, offset: self.plaintext_len, length, raw_length });
        self.plaintext_len += blob.len() as u64;
        Ok(())
    }

    /// Plaintext bytes added so far (what the pack size target measures).
    pub fn len(&self) -> u64 {
        self.plaintext_len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encrypts the header to the metadata recipient and appends it and the trailer.
    pub fn finish(self, metadata_recipient: &x25519::Recipient) -> Result<SealedPack> {
        let mut bytes = self.data.finish().map_err(|e| Error::io("encrypting a pack", e))?;
        let data_len = bytes.len() as u64;
        let header = PackHeader {
            data_len,
            payload_start: data_len - age_payload_len(self.plaintext_len),
            entries: self.entries,
        };
        let sealed_header =
            crypto::encrypt(std::slice::from_ref(metadata_recipient), &header.encode())?;
        bytes.extend_from_slice(&sealed_header);
        put_header(&mut bytes, TRAILER_MAGIC, PACK_VERSION);
        bytes.extend_from_slice(&(sealed_header.len() as u64).to_le_bytes());
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        Ok(SealedPack { id, bytes, header })
    }
}

/// Reads the header of a whole pack held in memory. Needs only the metadata identity.
pub fn read_header(pack: &[u8], metadata: &x25519::Identity, what: &str) -> Result<PackHeader> {
    let (rest, header_len) = split_trailer(pack, what)?;
    let start = rest.len().checked_sub(header_len).ok_or_else(|| {
        Error::corrupt(format!("{what} is shorter than the header its trailer announces"))
    })?;
    let header_plain = crypto::decrypt(metadata, &rest[start..], &format!("{what} header"))?;
    let header = PackHeader::decode(&header_plain, &format!("{what} header"))?;
    if header.data_len != start as u64 {
        return Err(Error::corrupt(format!(
            "{what}: its header says the data is {} bytes, the pack holds {start}",
            header.data_len
        )));
    }
    Ok(header)
}

fn split_trailer<'a>(pack: &'a [u8], what: &str) -> Result<(&'a [u8], usize)> {
    let cut = pack.len().checked_sub(TRAILER_LEN).ok_or_else(|| {
        Error::corrupt(format!("{what} is {} bytes, too short to be a pack", pack.len()))
    })?;
    let header_len = decode_trailer(&pack[cut..], what)?;
    let header_len = usize::try_from(header_len)
        .map_err(|_| Error::corrupt(format!("{what} announces an impossible header length")))?;
    Ok((&pack[..cut], header_len))
}

/// A decrypting, seekable view of a pack's data section.
pub struct PackData<R: Read + Seek> {
    reader: age::stream::StreamReader<R>,
    what: String,
}

impl<R: Read + Seek> PackData<R> {
    /// Opens the data section (the first `header.data_len` bytes of `source`).
    pub fn open(source: R, identities: &[&dyn age::Identity], what: &str) -> Result<Self> {
        let reader = crypto::decrypt_stream(identities, source, what)?;
        Ok(PackData { reader, what: what.to_string() })
    }

    /// Reads the blob an entry points at (authenticated by age on the way).
    pub fn read_blob(&mut self, entry: &PackEntry) -> Result<Vec<u8>> {
        self.reader.seek(SeekFrom::Start(entry.offset)).map_err(|e| {
            Error::corrupt(format!(
                "{}: cannot seek to blob of chunk {}: {e}",
                self.what, entry.chunk
            ))
        })?;
        let mut blob = vec![0u8; entry.length as usize];
        self.reader.read_exact(&mut blob).map_err(|e| {
            Error::corrupt(format!(
                "{}: blob of chunk {} fails authentication or is cut short: {e}",
                self.what, entry.chunk
            ))
        })?;
        Ok(blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_payload_start() {
        let data_id = x25519::Identity::generate();
        let meta = x25519::Identity::generate();
        let mut w = PackWriter::new(&[data_id.to_public()], 1024).unwrap();
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 70_000 + usize::from(i)]).collect();
        for (i, b) in blobs.iter().enumerate() {
            w.add(ChunkId([i as u8; 32]), b, b.len() as u32).unwrap();
        }
        let sealed = w.finish(&meta.to_public()).unwrap();
        let header = read_header(&sealed.bytes, &meta, "pack").unwrap();
        assert_eq!(header, sealed.header);
        // The age header plus nonce precede the payload: a sanity bound, not a constant.
        assert!(header.payload_start > 16 && header.payload_start < 400);
        let data = &sealed.bytes[..header.data_len as usize];
        let mut pd = PackData::open(std::io::Cursor::new(data), &[&data_id], "pack").unwrap();
        for (e, b) in header.entries.iter().zip(&blobs).rev() {
            assert_eq!(&pd.read_blob(e).unwrap(), b);
        }
        // The metadata identity cannot read data.
        let err = PackData::open(std::io::Cursor::new(data), &[&meta], "pack").err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::KeyRejected);
    }

    #[test]
    fn truncated_pack_is_corrupt() {
        let meta = x25519::Identity::generate();
        let err = read_header(b"short", &meta, "pack 00").unwrap_err();
        assert_eq!(err.to_string(), "pack 00 is 5 bytes, too short to be a pack");
    }
}
