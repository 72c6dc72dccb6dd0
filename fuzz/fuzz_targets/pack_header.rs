//! The plaintext pack header and the 16-byte trailer on arbitrary bytes: an error, never a
//! panic; what decodes re-encodes to the same bytes.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use qvault::format::pack::{decode_trailer, PackHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = PackHeader::decode(data, "fuzz") {
        assert_eq!(header.encode(), data);
    }
    let _ = decode_trailer(data, "fuzz");
});
