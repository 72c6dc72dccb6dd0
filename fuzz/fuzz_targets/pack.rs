//! Whole packs, as restore reads them: an error, never a panic.
//!
//! The first byte picks the mode, because random bytes never get past age's
//! authentication and the interesting parsers sit behind it:
//! - 0: the rest is a pack object as stored: `read_header` with a fixed metadata identity,
//!   and the data path (`PackData`) with a fixed data identity;
//! - 1: the rest is the header *plaintext*, sealed properly and appended to a valid data
//!   section, so `PackHeader` checks against real data and every entry it accepts is read;
//! - 2: the rest is one blob written with `PackWriter`, then read back and decoded like
//!   restore does, with the raw length from the blob's first 4 bytes.
#![no_main]

mod alloc_limit;

use age::x25519;
use libfuzzer_sys::fuzz_target;
use qvault::format::pack::{read_header, PackData, PackHeader, PackWriter};
use qvault::id::ChunkId;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::OnceLock;

const METADATA: &str = "AGE-SECRET-KEY-1V4VWGWAQ0N3C7YCKU4MH8R69Y23YRUKV5CMUAVD02R4F5RT2NVXSA9WNMJ";
const DATA: &str = "AGE-SECRET-KEY-166QVHR889P7CAJQYKL0MGH8PV6AASY39AP942ZGQMAWZTD8TTADQ7T6968";

struct Keys {
    metadata: x25519::Identity,
    data: x25519::Identity,
    /// A valid data section (three blobs) for mode 1.
    data_section: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let metadata = x25519::Identity::from_str(METADATA).expect("fixed identity");
        let data = x25519::Identity::from_str(DATA).expect("fixed identity");
        let mut writer = PackWriter::new(&[data.to_public()], 1 << 20).expect("writer");
        for (i, blob) in [&b"\x00abc"[..], b"\x01\x00", &[0u8; 70_000][..]].iter().enumerate() {
            writer.add(ChunkId([i as u8; 32]), blob, blob.len() as u32).expect("add");
        }
        let sealed = writer.finish(&metadata.to_public()).expect("finish");
        let data_section = sealed.bytes[..sealed.header.data_len as usize].to_vec();
        Keys { metadata, data, data_section }
    })
}

/// Reads and decodes every blob the header lists, as restore does.
fn read_all(data_section: &[u8], header: &PackHeader) {
    let keys = keys();
    let Ok(mut reader) = PackData::open(Cursor::new(data_section), &[&keys.data], "fuzz") else {
        return;
    };
    for entry in header.entries.iter().take(64) {
        if let Ok(blob) = reader.read_blob(entry) {
            let _ = qvault::codec::decode(&blob, entry.raw_length as usize);
        }
    }
}

fn seal_pack(data_section: &[u8], header_plain: &[u8]) -> Vec<u8> {
    let keys = keys();
    let header = qvault::crypto::encrypt(&[keys.metadata.to_public()], header_plain)
        .expect("encrypting to a fixed recipient");
    let mut pack = data_section.to_vec();
    pack.extend_from_slice(&header);
    pack.extend_from_slice(b"QVPK\x01\x00\x00\x00");
    pack.extend_from_slice(&(header.len() as u64).to_le_bytes());
    pack
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = keys();
    match mode % 3 {
        0 => {
            if let Ok(header) = read_header(rest, &keys.metadata, "fuzz") {
                read_all(&rest[..header.data_len as usize], &header);
            }
            let _ = PackData::open(Cursor::new(rest), &[&keys.data], "fuzz");
        }
        1 => {
            let pack = seal_pack(&keys.data_section, rest);
            if let Ok(header) = read_header(&pack, &keys.metadata, "fuzz") {
                assert_eq!(header.data_len as usize, keys.data_section.len());
                read_all(&keys.data_section, &header);
            }
        }
        _ => {
            let raw_length =
                rest.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let mut writer = PackWriter::new(&[keys.data.to_public()], rest.len()).expect("writer");
            writer.add(ChunkId([9; 32]), rest, raw_length).expect("add");
            let sealed = writer.finish(&keys.metadata.to_public()).expect("finish");
            let header = read_header(&sealed.bytes, &keys.metadata, "fuzz").expect("own pack");
            assert_eq!(header, sealed.header);
            let data_section = &sealed.bytes[..header.data_len as usize];
            let mut reader =
                PackData::open(Cursor::new(data_section), &[&keys.data], "fuzz").expect("open");
            let blob = reader.read_blob(&header.entries[0]).expect("own blob");
            assert_eq!(blob, rest);
            let _ = qvault::codec::decode(&blob, raw_length as usize);
        }
    }
});
