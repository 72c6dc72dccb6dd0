//! Blob encoding: one codec byte, then the payload. Pure and sync.
//!
//! | byte | payload |
//! |---|---|
//! | 0 | the chunk, raw (zstd did not make it smaller) |
//! | 1 | one zstd frame of the chunk |

use crate::error::{Error, Result};

pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;

/// Compression settings recorded in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodecParams {
    pub algorithm: CompressionAlgorithm,
    pub level: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    Zstd,
    None,
}

impl Default for CodecParams {
    fn default() -> Self {
        CodecParams { algorithm: CompressionAlgorithm::Zstd, level: 3 }
    }
}

/// Encodes a chunk as a blob: zstd when that is smaller, raw otherwise.
pub fn encode(chunk: &[u8], params: &CodecParams) -> Result<Vec<u8>> {
    Encoder::new(params)?.encode(chunk)
}

/// A reusable encoder for many chunks: one zstd context instead of one per chunk (creating
/// a context showed up at ~1% of a backup's CPU with 64 KiB chunks).
pub struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    pub fn new(params: &CodecParams) -> Result<Self> {
        let zstd = match params.algorithm {
            CompressionAlgorithm::Zstd => Some(
                zstd::bulk::Compressor::new(params.level)
                    .map_err(|e| Error::io("creating a zstd compressor", e))?,
            ),
            CompressionAlgorithm::None => None,
        };
        Ok(Encoder { zstd })
    }

    pub fn encode(&mut self, chunk: &[u8]) -> Result<Vec<u8>> {
        if let Some(zstd) = &mut self.zstd {
            let compressed =
                zstd.compress(chunk).map_err(|e| Error::io("compressing a chunk", e))?;
            if compressed.len() < chunk.len() {
                let mut out = Vec::with_capacity(compressed.len() + 1);
                out.push(CODEC_ZSTD);
                out.extend_from_slice(&compressed);
                return Ok(out);
            }
        }
        let mut out = Vec::with_capacity(chunk.len() + 1);
        out.push(CODEC_RAW);
        out.extend_from_slice(chunk);
        Ok(out)
    }
}

/// Decodes a blob back to the chunk; `raw_length` (from the pack header) bounds the output
/// so a corrupt blob cannot make us allocate without limit.
pub fn decode(blob: &[u8], raw_length: usize) -> Result<Vec<u8>> {
    let (codec, payload) = split_codec(blob)?;
    let chunk = match codec {
        CODEC_RAW => payload.to_vec(),
        _ => zstd_decompress_bounded(payload, raw_length)
            .map_err(|e| Error::corrupt(format!("blob does not decompress: {e}")))?,
    };
    check_length(chunk, raw_length)
}

/// Largest chunk any chunker setting produces (FastCDC 2020's maximum `max_size`): a length
/// claim above it is damage, whatever the blob says.
pub const MAX_CHUNK_LEN: usize = 16 * 1024 * 1024;

/// A reusable decoder for many blobs (one zstd context, output sized exactly once).
///
/// Unlike [`decode`], it reserves `raw_length` up front, so it refuses lengths above
/// [`MAX_CHUNK_LEN`]: a damaged index entry costs at most that much memory.
pub struct Decoder {
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Decoder {
    pub fn new() -> Result<Self> {
        let zstd = zstd::bulk::Decompressor::new()
            .map_err(|e| Error::io("creating a zstd decompressor", e))?;
        Ok(Decoder { zstd })
    }

    pub fn decode(&mut self, blob: &[u8], raw_length: usize) -> Result<Vec<u8>> {
        check_claim(raw_length)?;
        let (codec, payload) = split_codec(blob)?;
        let chunk = match codec {
            CODEC_RAW => payload.to_vec(),
            _ => {
                let mut out = Vec::with_capacity(raw_length);
                // A frame that would decode past `raw_length` fails here (no room), so the
                // output never outgrows the claim.
                self.zstd
                    .decompress_to_buffer(payload, &mut out)
                    .map_err(|e| Error::corrupt(format!("blob does not decompress: {e}")))?;
                out
            }
        };
        check_length(chunk, raw_length)
    }

    /// Decodes a blob into `out`, which is exactly as long as the chunk (its `raw_length`
    /// from the pack header): for callers that place many chunks in one buffer. Errors as
    /// [`Decoder::decode`]: a blob that decodes to another length is corrupt.
    pub fn decode_into(&mut self, blob: &[u8], out: &mut [u8]) -> Result<()> {
        check_claim(out.len())?;
        let (codec, payload) = split_codec(blob)?;
        let written = match codec {
            CODEC_RAW => {
                if payload.len() == out.len() {
                    out.copy_from_slice(payload);
                }
                payload.len()
            }
            _ => self
                .zstd
                .decompress_to_buffer(payload, out)
                .map_err(|e| Error::corrupt(format!("blob does not decompress: {e}")))?,
        };
        length_matches(written, out.len())
    }
}

/// A length claim above [`MAX_CHUNK_LEN`] is damage: refused before anything is reserved.
pub(crate) fn check_claim(raw_length: usize) -> Result<()> {
    if raw_length > MAX_CHUNK_LEN {
        return Err(Error::corrupt(format!(
            "blob claims a {raw_length}-byte chunk, more than any chunker makes ({MAX_CHUNK_LEN})"
        )));
    }
    Ok(())
}

fn split_codec(blob: &[u8]) -> Result<(u8, &[u8])> {
    let (codec, payload) =
        blob.split_first().ok_or_else(|| Error::corrupt("empty blob: it has no codec byte"))?;
    match *codec {
        CODEC_RAW | CODEC_ZSTD => Ok((*codec, payload)),
        other => Err(Error::corrupt(format!("blob has unknown codec byte {other}"))),
    }
}

fn check_length(chunk: Vec<u8>, raw_length: usize) -> Result<Vec<u8>> {
    length_matches(chunk.len(), raw_length)?;
    Ok(chunk)
}

fn length_matches(decoded: usize, raw_length: usize) -> Result<()> {
    if decoded != raw_length {
        return Err(Error::corrupt(format!(
            "blob decodes to {decoded} bytes, its header says {raw_length}"
        )));
    }
    Ok(())
}

/// What a bounded decompression reserves up front; it grows from there with the data.
const INITIAL_CAPACITY: usize = 1 << 20;

/// Decompresses zstd `payload` to at most `limit` bytes.
///
/// The output grows with what the frames really produce, never with a size the frame
/// header or our own metadata claims: `zstd::bulk::decompress` reserves the claimed size
/// (or `limit`) up front, so two damaged bytes could make it allocate gigabytes.
pub(crate) fn zstd_decompress_bounded(payload: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::with_buffer(payload)?;
    let mut out = Vec::with_capacity(limit.min(INITIAL_CAPACITY));
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(bound).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it decompresses to more than {limit} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn incompressible_data_is_stored_raw() {
        let data: Vec<u8> =
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let blob = encode(&data, &CodecParams::default()).unwrap();
        assert!(blob[0] == CODEC_RAW || blob.len() <= data.len());
        let zeros = vec![0u8; 4096];
        assert_eq!(encode(&zeros, &CodecParams::default()).unwrap()[0], CODEC_ZSTD);
    }

    #[test]
    fn unknown_codec_is_corrupt() {
        let err = decode(&[9, 1, 2], 2).unwrap_err();
        assert_eq!(err.to_string(), "blob has unknown codec byte 9");
    }

    /// Found by fuzzing (`fuzz/` target `codec`): a 2-byte blob whose header claimed a
    /// 1.8 GB chunk made `decode` reserve 1.8 GB before zstd looked at the payload.
    #[test]
    fn damaged_blob_claiming_a_huge_chunk_does_not_allocate_it() {
        let err = decode(&[CODEC_ZSTD, 0xfa], 0x6b00_2400).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        // A frame that decodes to more than the header says is refused, not truncated.
        let frame = zstd::bulk::compress(&[7u8; 5000], 3).unwrap();
        let blob = [&[CODEC_ZSTD][..], &frame].concat();
        assert!(decode(&blob, 4999).is_err());
        assert_eq!(decode(&blob, 5000).unwrap(), vec![7u8; 5000]);
    }

    #[test]
    fn decoder_refuses_what_decode_refuses_and_huge_claims() {
        let mut decoder = Decoder::new().unwrap();
        let frame = zstd::bulk::compress(&[7u8; 5000], 3).unwrap();
        let blob = [&[CODEC_ZSTD][..], &frame].concat();
        assert_eq!(decoder.decode(&blob, 4999).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        assert_eq!(decoder.decode(&blob, 5001).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        assert_eq!(decoder.decode(&blob, 5000).unwrap(), vec![7u8; 5000]);
        let err = decoder.decode(&[CODEC_ZSTD, 0xfa], MAX_CHUNK_LEN + 1).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert_eq!(
            decoder.decode(&[9, 1], 1).unwrap_err().to_string(),
            "blob has unknown codec byte 9"
        );
    }

    /// `decode_into` takes the chunk's length from its buffer: a blob of another length,
    /// raw or zstd, longer or shorter, is refused with the same words as `decode`.
    #[test]
    fn decode_into_refuses_a_blob_of_another_length() {
        let mut decoder = Decoder::new().unwrap();
        let frame = zstd::bulk::compress(&[7u8; 5000], 3).unwrap();
        let zstd_blob = [&[CODEC_ZSTD][..], &frame].concat();
        let raw_blob = [&[CODEC_RAW][..], &[1u8, 2, 3][..]].concat();
        for (blob, len) in [(&zstd_blob, 4999), (&zstd_blob, 5001), (&raw_blob, 2), (&raw_blob, 4)]
        {
            let err = decoder.decode_into(blob, &mut vec![0; len]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{len}");
        }
        let err = decoder.decode_into(&raw_blob, &mut [0; 4]).unwrap_err();
        assert_eq!(err.to_string(), "blob decodes to 3 bytes, its header says 4");
        let mut out = [0u8; 3];
        decoder.decode_into(&raw_blob, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
    }

    proptest! {
        #[test]
        fn decoder_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), zeros in 0usize..5000) {
            let mut data = data;
            data.extend(std::iter::repeat_n(0, zeros));
            let blob = encode(&data, &CodecParams::default()).unwrap();
            prop_assert_eq!(Decoder::new().unwrap().decode(&blob, data.len()).unwrap(), data.clone());
            // Into a buffer left dirty by an earlier chunk, as restore's pool hands them out.
            let mut out = vec![0xa5; data.len()];
            Decoder::new().unwrap().decode_into(&blob, &mut out).unwrap();
            prop_assert_eq!(out, data);
        }

        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), zeros in 0usize..5000) {
            let mut data = data;
            data.extend(std::iter::repeat_n(0, zeros));
            let blob = encode(&data, &CodecParams::default()).unwrap();
            prop_assert_eq!(decode(&blob, data.len()).unwrap(), data);
        }
    }
}
