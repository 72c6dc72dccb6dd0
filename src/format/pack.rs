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
use std::ops::Range;

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

/// Length of the data section of a pack whose age payload starts at `payload_start` and
/// holds `plaintext_len` bytes.
pub fn data_len(payload_start: u64, plaintext_len: u64) -> u64 {
    payload_start + age_payload_len(plaintext_len)
}

/// The bytes of the data section to fetch to read every blob within `plaintext` (a range
/// of blob offsets): whole STREAM segments, from the one holding the byte before the range
/// (see [`PackData::read_blob`]) to the one holding its last byte, clipped to the data.
pub fn data_range(payload_start: u64, plaintext_len: u64, plaintext: Range<u64>) -> Range<u64> {
    let encrypted_segment = AGE_SEGMENT + AGE_TAG;
    let first = plaintext.start.saturating_sub(1) / AGE_SEGMENT;
    let end = plaintext.end.div_ceil(AGE_SEGMENT).max(first + 1);
    let data_len = data_len(payload_start, plaintext_len);
    let start = (payload_start + first * encrypted_segment).min(data_len);
    start..(payload_start + end * encrypted_segment).min(data_len)
}

/// Where the age payload starts in a pack whose first bytes are `prefix`: after the header's
/// closing `--- <mac>` line and the 16-byte STREAM nonce. `None` when the prefix is too short
/// to tell. Only locates; age authenticates the header itself when the data is opened.
pub fn payload_start(prefix: &[u8]) -> Option<u64> {
    const MAC_LINE: &[u8] = b"\n--- ";
    const NONCE_LEN: usize = 16;
    let mac = prefix.windows(MAC_LINE.len()).position(|w| w == MAC_LINE)?;
    let line_end = mac + 1 + prefix[mac + 1..].iter().position(|&b| b == b'\n')?;
    let start = line_end + 1 + NONCE_LEN;
    (start <= prefix.len()).then_some(start as u64)
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
    ///
    /// Reads only the segments holding the blob (and, for a blob starting on a segment
    /// boundary, the segment before it), so `source` may be a sparse view of the pack with
    /// just those bytes: age's seek to a segment boundary other than the current one works
    /// out the stream length by decrypting the *last* segment, and seeking one byte earlier
    /// and reading that byte avoids it. Offset 0 needs neither as long as it is read first.
    pub fn read_blob(&mut self, entry: &PackEntry) -> Result<Vec<u8>> {
        let mut blob = Vec::new();
        self.read_blob_into(entry, &mut blob)?;
        Ok(blob)
    }

    /// [`PackData::read_blob`] into `blob` (replacing what it held), so a caller reading
    /// many blobs reuses one buffer.
    pub fn read_blob_into(&mut self, entry: &PackEntry, blob: &mut Vec<u8>) -> Result<()> {
        let seek_error = |e: std::io::Error| {
            Error::corrupt(format!(
                "{}: cannot seek to blob of chunk {}: {e}",
                self.what, entry.chunk
            ))
        };
        if entry.offset > 0 && entry.offset % AGE_SEGMENT == 0 {
            self.reader.seek(SeekFrom::Start(entry.offset - 1)).map_err(seek_error)?;
            let mut byte = [0u8; 1];
            self.reader.read_exact(&mut byte).map_err(seek_error)?;
        } else {
            self.reader.seek(SeekFrom::Start(entry.offset)).map_err(seek_error)?;
        }
        // The length comes from an index entry: bound it before allocating. A blob is at
        // most its chunk plus the codec byte.
        if entry.length as usize > crate::codec::MAX_CHUNK_LEN + 1 {
            return Err(Error::corrupt(format!(
                "{}: the entry for chunk {} claims a {}-byte blob, larger than any chunk",
                self.what, entry.chunk, entry.length
            )));
        }
        blob.resize(entry.length as usize, 0);
        self.reader.read_exact(blob).map_err(|e| {
            Error::corrupt(format!(
                "{}: blob of chunk {} fails authentication or is cut short: {e}",
                self.what, entry.chunk
            ))
        })
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
    fn payload_start_and_data_range_match_the_sealed_pack() {
        let data_id = x25519::Identity::generate();
        let meta = x25519::Identity::generate();
        for len in [1usize, 65_536, 65_537, 200_000] {
            let mut w = PackWriter::new(&[data_id.to_public()], 1024).unwrap();
            w.add(ChunkId([1; 32]), &vec![5u8; len], len as u32).unwrap();
            let sealed = w.finish(&meta.to_public()).unwrap();
            let h = &sealed.header;
            assert_eq!(payload_start(&sealed.bytes), Some(h.payload_start));
            assert_eq!(payload_start(&sealed.bytes[..h.payload_start as usize - 1]), None);
            assert_eq!(data_len(h.payload_start, len as u64), h.data_len);
            let all = data_range(h.payload_start, len as u64, 0..len as u64);
            assert_eq!(all, h.payload_start..h.data_len);
        }
        // Segments: 0..65_536 is segment 0; 65_536.. needs segment 0 too (the byte before).
        let seg = AGE_SEGMENT + AGE_TAG;
        assert_eq!(data_range(100, 300_000, 0..10), 100..100 + seg);
        assert_eq!(data_range(100, 300_000, 65_536..65_540), 100..100 + 2 * seg);
        assert_eq!(data_range(100, 300_000, 65_537..131_073), 100 + seg..100 + 3 * seg);
    }

    #[test]
    fn truncated_pack_is_corrupt() {
        let meta = x25519::Identity::generate();
        let err = read_header(b"short", &meta, "pack 00").unwrap_err();
        assert_eq!(err.to_string(), "pack 00 is 5 bytes, too short to be a pack");
    }
}
