//! The repository key as bytes: the plaintext inside `keys/<recipient>` and exported key files.
//!
//! ```json
//! {"format": "qvault-repository-key", "version": 1, "repository": "<hex id>",
//!  "master": "<64 hex>", "metadata_identity": "AGE-SECRET-KEY-1…"}
//! ```

use crate::crypto::{RepositoryKey, Secret};
use crate::error::{Error, Result};
use crate::id::RepositoryId;
use age::secrecy::ExposeSecret;
use std::str::FromStr;

pub const KEYFILE_VERSION: u32 = 1;
const FORMAT: &str = "qvault-repository-key";

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFileJson {
    format: String,
    version: u32,
    repository: RepositoryId,
    master: String,
    metadata_identity: String,
}

/// Serialises a repository key; the result is secret.
pub fn encode(key: &RepositoryKey, repository: RepositoryId) -> Result<Secret<Vec<u8>>> {
    let json = KeyFileJson {
        format: FORMAT.to_string(),
        version: KEYFILE_VERSION,
        repository,
        master: hex::encode(key.master()),
        metadata_identity: key.metadata_identity_string().expose_secret().to_string(),
    };
    let mut bytes = serde_json::to_vec_pretty(&json)
        .map_err(|e| Error::invalid_input(format!("cannot serialise key: {e}")))?;
    bytes.push(b'\n');
    Ok(Secret::new(bytes))
}

/// Parses a repository key; `what` names the file for errors (never its contents).
pub fn decode(bytes: &[u8], what: &str) -> Result<(RepositoryId, RepositoryKey)> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| Error::corrupt(format!("{what} is not a qvault repository key file")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(Error::invalid_input(format!("{what} is not a qvault repository key file")));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version != u64::from(KEYFILE_VERSION) {
        return Err(super::unsupported_version(what, version as u32, KEYFILE_VERSION));
    }
    let json: KeyFileJson = serde_json::from_value(value)
        .map_err(|_| Error::corrupt(format!("{what} is a damaged repository key file")))?;
    let mut master = [0u8; 32];
    hex::decode_to_slice(&json.master, &mut master)
        .map_err(|_| Error::corrupt(format!("{what} holds a damaged master secret")))?;
    let identity = age::x25519::Identity::from_str(&json.metadata_identity)
        .map_err(|_| Error::corrupt(format!("{what} holds a damaged metadata identity")))?;
    Ok((json.repository, RepositoryKey::from_parts(master, identity)))
}
