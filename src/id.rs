//! 32-byte identifiers: chunks, packs, index files and backups.
//!
//! All print as lowercase hex; [`std::fmt::Debug`] shows the first 8 hex digits, which is
//! enough to tell them apart in logs.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// Full lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::invalid_input(format!(
                        "{} {s:?} is not 64 hex digits",
                        $what
                    ))
                })?;
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::from_hex(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A chunk's id: keyed BLAKE3 of its plaintext, keyed with the repository's chunk-id key.
    ChunkId,
    "chunk id"
);
id_type!(
    /// A pack's id: plain BLAKE3 of the pack object's bytes (which are ciphertext).
    PackId,
    "pack id"
);
id_type!(
    /// An index file's id: plain BLAKE3 of the stored object's bytes.
    IndexId,
    "index file id"
);
id_type!(
    /// A backup's id: plain BLAKE3 of the stored manifest object's bytes.
    BackupId,
    "backup id"
);
id_type!(
    /// A repository's id, chosen at random by `init`.
    RepositoryId,
    "repository id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(id.to_string().parse::<ChunkId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), "ChunkId(abababab)");
    }

    #[test]
    fn bad_hex_names_the_kind() {
        let err = "xyz".parse::<BackupId>().unwrap_err();
        assert_eq!(err.to_string(), "backup id \"xyz\" is not 64 hex digits");
    }
}
