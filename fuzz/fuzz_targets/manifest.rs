//! `Manifest::decode` on arbitrary plaintext: an error, never a panic.
//!
//! The first byte picks the mode: even, the rest is the plaintext as stored; odd, the rest
//! is wrapped as `"QVMF" ‖ 1 ‖ zstd(rest)` so the fuzzer reaches the JSON parser.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use qvault::format::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let plaintext = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut out = b"QVMF\x01\x00\x00\x00".to_vec();
        out.extend(zstd::bulk::compress(rest, 1).expect("zstd compresses"));
        out
    };
    if let Ok(manifest) = Manifest::decode(&plaintext, "fuzz") {
        let encoded = manifest.encode().expect("a decoded manifest encodes");
        let again = Manifest::decode(&encoded, "fuzz").expect("an encoded manifest decodes");
        assert_eq!(again, manifest);
    }
});
