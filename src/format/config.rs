//! The repository `config` object: plaintext JSON, readable without keys, so every reader
//! can gate on the format version before touching anything else.
//!
//! It is authenticated, not secret: `mac` is keyed BLAKE3 (config MAC key, derived from the
//! repository key) over the JSON of every other field, so storage cannot add a recipient of
//! its own or weaken parameters without every key holder noticing.

use crate::codec::CodecParams;
use crate::crypto::RepositoryKey;
use crate::error::{Error, ErrorKind, Result};
use crate::id::RepositoryId;

/// The version new repositories get: 2 (list blocks, docs/design.md "Format version 2").
/// A repository keeps the version it was created with; this build reads both.
pub const CONFIG_VERSION: u32 = 2;
pub const CONFIG_VERSIONS: [u32; 2] = [1, 2];
pub const FORMAT: &str = "qvault-repository";
pub const CHUNKER_ALGORITHM: &str = "fastcdc-2020";
pub const CHUNK_ID_ALGORITHM: &str = "blake3-keyed";
pub const ENCRYPTION_ALGORITHM: &str = "age-x25519";

/// Chunker parameters as stored; the seed is secret and comes from the repository key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerConfig {
    pub algorithm: String,
    /// FastCDC normalization level.
    pub normalization: u32,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// Force cut points around tar members of at least `tar_threshold` bytes.
    pub tar_aware: bool,
    pub tar_threshold: u64,
}

impl ChunkerConfig {
    /// The chunker's parameters with the repository's secret seed.
    pub fn params(&self, seed: u64) -> crate::chunker::ChunkerParams {
        crate::chunker::ChunkerParams {
            min_size: self.min_size,
            avg_size: self.avg_size,
            max_size: self.max_size,
            seed,
            tar_aware: self.tar_aware,
            tar_threshold: self.tar_threshold,
        }
    }
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        ChunkerConfig {
            algorithm: CHUNKER_ALGORITHM.to_string(),
            normalization: CHUNKER_NORMALIZATION,
            // 64 KiB on average: against 256 KiB it stores 10% less on a copy-on-write
            // series and 38% less on scattered in-place rewrites (docs/benchmarks.md).
            min_size: 16 * 1024,
            avg_size: 64 * 1024,
            max_size: 256 * 1024,
            tar_aware: true,
            tar_threshold: 64 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: RepositoryId,
    pub created: String,
    /// age X25519 public keys that pack data is encrypted to.
    pub data_recipients: Vec<String>,
    pub chunker: ChunkerConfig,
    pub chunk_id: String,
    pub compression: CodecParams,
    pub encryption: String,
    /// Target plaintext bytes per pack.
    pub pack_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Config {
    /// A new config with default parameters; call [`Config::seal`] before storing it.
    pub fn new(id: RepositoryId, created: String, data_recipients: Vec<String>) -> Self {
        Config {
            format: FORMAT.to_string(),
            version: CONFIG_VERSION,
            id,
            created,
            data_recipients,
            chunker: ChunkerConfig::default(),
            chunk_id: CHUNK_ID_ALGORITHM.to_string(),
            compression: CodecParams::default(),
            encryption: ENCRYPTION_ALGORITHM.to_string(),
            pack_size: 16 * 1024 * 1024,
            mac: None,
        }
    }

    /// Whether the repository stores chunk lists as list blocks (format version 2).
    pub fn list_blocks(&self) -> bool {
        self.version >= 2
    }

    fn body(&self) -> Result<Vec<u8>> {
        let mut body = self.clone();
        body.mac = None;
        serde_json::to_vec(&body)
            .map_err(|e| Error::invalid_input(format!("cannot serialise config: {e}")))
    }

    /// Sets the MAC with the repository key.
    pub fn seal(&mut self, key: &RepositoryKey) -> Result<()> {
        self.mac = Some(hex::encode(key.config_mac(&self.body()?)));
        Ok(())
    }

    /// Checks the MAC; `location` names the repository for the error.
    pub fn verify(&self, key: &RepositoryKey, location: &str) -> Result<()> {
        let expected = hex::encode(key.config_mac(&self.body()?));
        if self.mac.as_deref() != Some(expected.as_str()) {
            return Err(Error::corrupt(format!(
                "the config of {location} fails its MAC check: it was changed by someone \
                 without the repository key (or the key belongs to another repository); \
                 do not write to it until you know why"
            )));
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::invalid_input(format!("cannot serialise config: {e}")))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses a config, gating on format and version before anything else.
    pub fn decode(bytes: &[u8], location: &str) -> Result<Config> {
        let not_repo = || {
            Error::new(
                ErrorKind::NotARepository,
                format!("{location} has a `config` that is not a qvault repository config"),
            )
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| not_repo())?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(not_repo());
        }
        let version = value.get("version").and_then(|v| v.as_u64()).ok_or_else(not_repo)?;
        if !CONFIG_VERSIONS.iter().any(|&v| u64::from(v) == version) {
            return Err(super::unsupported_version(
                &format!("the repository at {location}"),
                u32::try_from(version).unwrap_or(u32::MAX),
                CONFIG_VERSION,
            ));
        }
        // Compression is an enum: check its name before serde turns an unknown one into
        // "damaged", since a newer qvault may have written it.
        let compression = value.pointer("/compression/algorithm").and_then(|a| a.as_str());
        if let Some(found) = compression.filter(|a| !COMPRESSION_ALGORITHMS.contains(a)) {
            return Err(unknown_algorithm(location, "compression", found, COMPRESSION_ALGORITHMS));
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| Error::corrupt(format!("the config of {location} is damaged: {e}")))?;
        for (what, found, known) in [
            ("chunker", config.chunker.algorithm.as_str(), CHUNKER_ALGORITHM),
            ("chunk id", config.chunk_id.as_str(), CHUNK_ID_ALGORITHM),
            ("encryption", config.encryption.as_str(), ENCRYPTION_ALGORITHM),
        ] {
            if found != known {
                return Err(unknown_algorithm(location, what, found, &[known]));
            }
        }
        // Stored so that a future level is recorded, and refused here until it is built:
        // chunking at another level would cut elsewhere and silently lose all dedup.
        if config.chunker.normalization != CHUNKER_NORMALIZATION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "the repository at {location} uses FastCDC normalization level {}, this \
                     qvault implements only level {CHUNKER_NORMALIZATION}: use a newer qvault",
                    config.chunker.normalization
                ),
            ));
        }
        Ok(config)
    }
}

/// The FastCDC normalization level the chunker implements (`chunker::NORMALIZATION`).
pub const CHUNKER_NORMALIZATION: u32 = 1;

/// Compression names this build reads (`CompressionAlgorithm`'s serde names).
const COMPRESSION_ALGORITHMS: &[&str] = &["zstd", "none"];

fn unknown_algorithm(location: &str, what: &str, found: &str, known: &[&str]) -> Error {
    Error::new(
        ErrorKind::UnsupportedVersion,
        format!(
            "the repository at {location} uses {what} algorithm {found:?}, \
             this qvault knows only {known:?}: use a newer qvault"
        ),
    )
}
