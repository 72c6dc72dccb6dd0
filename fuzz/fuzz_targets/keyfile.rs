//! `keyfile::decode` on arbitrary bytes (the plaintext of `keys/<recipient>` and of
//! exported key files): an error, never a panic.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((id, key)) = qvault::format::keyfile::decode(data, "fuzz") {
        let encoded = qvault::format::keyfile::encode(&key, id).expect("a decoded key encodes");
        let (again, _) = qvault::format::keyfile::decode(encoded.expose(), "fuzz")
            .expect("an encoded key decodes");
        assert_eq!(again, id);
    }
});
