//! `codec::decode` with the raw length taken from the input (the first 4 bytes, LE): an
//! error, never a panic or an allocation the blob cannot justify.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (length, blob) = data.split_at(4);
    let raw_length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
    if let Ok(chunk) = qvault::codec::decode(blob, raw_length as usize) {
        assert_eq!(chunk.len(), raw_length as usize);
    }
});
