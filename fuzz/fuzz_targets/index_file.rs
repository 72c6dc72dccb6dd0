//! `IndexFile::decode` on arbitrary plaintext: an error, never a panic or an allocation
//! the bytes cannot justify; what decodes re-encodes to the same bytes.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use qvault::format::index::IndexFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = IndexFile::decode(data, "fuzz") {
        assert_eq!(file.encode(), data);
    }
});
