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
    if params.algorithm == CompressionAlgorithm::Zstd {
        let mut out = Vec::with_capacity(chunk.len() / 2 + 64);
        out.push(CODEC_ZSTD);
        let compressed = zstd::bulk::compress(chunk, params.level)
            .map_err(|e| Error::io("compressing a chunk", e))?;
        if compressed.len() < chunk.len() {
            out.extend_from_slice(&compressed);
            return Ok(out);
        }
    }
    let mut out = Vec::with_capacity(chunk.len() + 1);
    out.push(CODEC_RAW);
    out.extend_from_slice(chunk);
    Ok(out)
}

/// Decodes a blob back to the chunk; `raw_length` (from the pack header) bounds the output
/// so a corrupt blob cannot make us allocate without limit.
pub fn decode(blob: &[u8], raw_length: usize) -> Result<Vec<u8>> {
    let (codec, payload) =
        blob.split_first().ok_or_else(|| Error::corrupt("empty blob: it has no codec byte"))?;
    let chunk = match *codec {
        CODEC_RAW => payload.to_vec(),
        CODEC_ZSTD => zstd::bulk::decompress(payload, raw_length)
            .map_err(|e| Error::corrupt(format!("blob does not decompress: {e}")))?,
        other => return Err(Error::corrupt(format!("blob has unknown codec byte {other}"))),
    };
    if chunk.len() != raw_length {
        return Err(Error::corrupt(format!(
            "blob decodes to {} bytes, its header says {raw_length}",
            chunk.len()
        )));
    }
    Ok(chunk)
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

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), zeros in 0usize..5000) {
            let mut data = data;
            data.extend(std::iter::repeat_n(0, zeros));
            let blob = encode(&data, &CodecParams::default()).unwrap();
            prop_assert_eq!(decode(&blob, data.len()).unwrap(), data);
        }
    }
}
