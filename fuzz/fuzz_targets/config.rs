//! `Config::decode` on arbitrary bytes: an error, never a panic. A config that decodes
//! must also survive MAC checking and re-encoding.
#![no_main]

mod alloc_limit;

use libfuzzer_sys::fuzz_target;
use qvault::crypto::RepositoryKey;
use qvault::format::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = Config::decode(data, "fuzz") {
        let key = RepositoryKey::from_parts([7; 32], age::x25519::Identity::generate());
        let _ = config.verify(&key, "fuzz");
        let encoded = config.encode().expect("a decoded config encodes");
        let again = Config::decode(&encoded, "fuzz").expect("an encoded config decodes");
        assert_eq!(again, config);
    }
});
