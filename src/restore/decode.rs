//! Decoding a fetched piece: decrypt its blobs, decompress them, check every chunk id.

use super::fetch::{Fetched, Window};
use super::pool::BufferPool;
use super::{Piece, Place};
use crate::codec;
use crate::crypto::RepositoryKey;
use crate::error::{Error, Result};
use crate::format::pack::{PackData, PackEntry};
use age::x25519;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// What decoding needs, shared by every piece of one restore.
pub(crate) struct DecodeContext {
    pub(crate) identities: Vec<x25519::Identity>,
    pub(crate) key: RepositoryKey,
    pub(crate) place: Place,
    /// Where decoded pieces live until written (see `pool`).
    pub(crate) pool: Arc<BufferPool>,
}

impl DecodeContext {
    /// Decrypts, decompresses and checks the piece's chunks; returns them in stream order,
    /// all slices of one buffer from the pool (it returns there when the last is dropped).
    pub(crate) fn decode(&self, piece: &Piece, fetched: Fetched) -> Result<Vec<Bytes>> {
        let refs: Vec<&dyn age::Identity> =
            self.identities.iter().map(|i| i as &dyn age::Identity).collect();
        let what = format!("pack {}", piece.pack);
        let mut data = PackData::open(Window::new(fetched), &refs, &what)
            .map_err(|e| e.context(self.place.piece(piece)))?;
        let mut decoder = codec::Decoder::new()?;
        // Forward through the pack, each blob once: age reads segment by segment, and
        // offset 0 must come first (see `PackData::read_blob`).
        let mut order: Vec<usize> = (0..piece.entries.len()).collect();
        order.sort_by_key(|&i| piece.entries[i].offset);
        // Where each chunk lands in the piece's buffer; a chunk the stream repeats within
        // the piece (same blob) shares the place of its first copy.
        let mut places: Vec<Range<usize>> = vec![0..0; piece.entries.len()];
        let mut decoded_len = 0usize;
        let mut previous: Option<usize> = None;
        for &i in &order {
            let entry = &piece.entries[i];
            match previous {
                Some(p) if piece.entries[p].offset == entry.offset => {
                    places[i] = places[p].clone();
                }
                _ => {
                    let len = entry.raw_length as usize;
                    codec::check_claim(len)
                        .map_err(|e| e.context(self.place.at(&piece.pack, &entry.chunk)))?;
                    places[i] = decoded_len..decoded_len + len;
                    decoded_len += len;
                    previous = Some(i);
                }
            }
        }
        let mut buffer = self.pool.take(decoded_len);
        let out = buffer.as_mut_slice();
        let mut blob = Vec::new();
        let mut previous: Option<u64> = None;
        for &i in &order {
            let entry = &piece.entries[i];
            if previous == Some(entry.offset) {
                continue;
            }
            decode_checked(
                &mut data,
                &mut decoder,
                &self.key,
                entry,
                &mut blob,
                &mut out[places[i].clone()],
            )
            .map_err(|e| e.context(self.place.at(&piece.pack, &entry.chunk)))?;
            previous = Some(entry.offset);
        }
        let buffer = buffer.freeze();
        Ok(places.into_iter().map(|place| buffer.slice(place)).collect())
    }
}

/// Reads one blob, decodes it and checks it against its chunk id: what restore and
/// `verify --read-data` both trust a chunk on.
pub(crate) fn read_chunk<R: std::io::Read + std::io::Seek>(
    data: &mut PackData<R>,
    decoder: &mut codec::Decoder,
    key: &RepositoryKey,
    entry: &PackEntry,
) -> Result<Vec<u8>> {
    let blob = data.read_blob(entry)?;
    let chunk = decoder.decode(&blob, entry.raw_length as usize)?;
    check_id(key, &chunk, entry)?;
    Ok(chunk)
}

/// [`read_chunk`] into `out` (exactly the chunk's length), through the reusable `blob`.
fn decode_checked<R: std::io::Read + std::io::Seek>(
    data: &mut PackData<R>,
    decoder: &mut codec::Decoder,
    key: &RepositoryKey,
    entry: &PackEntry,
    blob: &mut Vec<u8>,
    out: &mut [u8],
) -> Result<()> {
    data.read_blob_into(entry, blob)?;
    decoder.decode_into(blob, out)?;
    check_id(key, out, entry)
}

fn check_id(key: &RepositoryKey, chunk: &[u8], entry: &PackEntry) -> Result<()> {
    if key.chunk_id(chunk) != entry.chunk {
        return Err(Error::corrupt(
            "the chunk's content does not match its id: the pack is damaged",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{self, PackWriter, AGE_SEGMENT};
    use crate::id::BackupId;

    /// A pack whose blobs start at 0, exactly on segment boundaries and in between, and a
    /// piece-decoder that sees only what `data_range` says to fetch.
    #[test]
    fn pieces_decode_from_their_range_alone_in_any_order() {
        let key = RepositoryKey::generate();
        let data_id = x25519::Identity::generate();
        let segment = AGE_SEGMENT as usize;
        // Raw blobs are one codec byte longer than their chunk: these land blobs at 0,
        // 65_536, 131_072, 132_073, 197_610 and 300_011.
        let sizes = [segment - 1, segment - 1, 1000, segment - 1 + 1, 102_400, 5];
        let chunks: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| qvault_synth::pseudo_random(n, i as u64))
            .collect();
        let mut writer = PackWriter::new(&[data_id.to_public()], 1 << 20).unwrap();
        for chunk in &chunks {
            let blob = [&[codec::CODEC_RAW][..], chunk].concat();
            writer.add(key.chunk_id(chunk), &blob, chunk.len() as u32).unwrap();
        }
        let sealed = writer.finish(&key.metadata_recipient()).unwrap();
        let entries = sealed.header.entries.clone();
        assert_eq!(entries[1].offset, AGE_SEGMENT);
        assert_eq!(entries[2].offset, 2 * AGE_SEGMENT);
        let plaintext_len = entries.iter().map(|e| e.offset + u64::from(e.length)).max().unwrap();
        let context = DecodeContext {
            identities: vec![data_id],
            key,
            place: Place { backup: BackupId([7; 32]), stream: "s".into() },
            // Smaller than some pieces: those take buffers of their own.
            pool: BufferPool::new(100_000, 2),
        };
        let payload_start = pack::payload_start(&sealed.bytes).unwrap();
        for order in [
            vec![0],
            vec![1],
            vec![2],
            vec![2, 1],
            vec![3, 3, 0, 3],
            vec![5],
            vec![4, 5],
            vec![5, 0, 2],
            vec![1, 2, 3, 4, 5],
        ] {
            let piece = Piece {
                pack: sealed.id,
                pack_plaintext_len: plaintext_len,
                entries: order.iter().map(|&i| entries[i]).collect(),
                seqs: (0..order.len() as u64).collect(),
                stream_start: 0,
            };
            let range = pack::data_range(payload_start, plaintext_len, piece.span());
            let fetched = Fetched {
                header: Bytes::copy_from_slice(&sealed.bytes[..payload_start as usize]),
                window_start: range.start,
                window: Bytes::copy_from_slice(
                    &sealed.bytes[range.start as usize..range.end as usize],
                ),
                data_len: sealed.header.data_len,
            };
            let decoded =
                context.decode(&piece, fetched).unwrap_or_else(|e| panic!("{order:?}: {e}"));
            let expected: Vec<&[u8]> = order.iter().map(|&i| chunks[i].as_slice()).collect();
            let decoded: Vec<&[u8]> = decoded.iter().map(|b| b.as_ref()).collect();
            assert_eq!(decoded, expected, "{order:?}");
        }
    }
}
