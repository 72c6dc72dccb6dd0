//! Keys and encryption: age throughout, keyed BLAKE3 for chunk ids.
//!
//! Two roles (see `docs/design.md`, "Keys"):
//! - the **data identity** (age X25519) decrypts pack contents; only restore hosts hold it;
//! - the **repository key** ([`RepositoryKey`]) holds the master secret (chunk-id key,
//!   chunker seed, config MAC key are derived from it) and the metadata identity that opens
//!   pack headers, index files and manifests. Backup hosts hold only this.
//!
//! Nothing secret implements `Display`, and every `Debug` here prints `[redacted]`.

use crate::error::{Error, ErrorKind, Result};
use crate::id::ChunkId;
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

/// Domain-separation contexts for subkeys derived from the master secret. Changing any of
/// these changes every chunk id: they are part of the format (docs/design.md, "Keys").
const CONTEXT_CHUNK_ID: &str = "qvault 2026-11-24 chunk id key v1";
const CONTEXT_CHUNKER_SEED: &str = "qvault 2026-11-24 chunker seed v1";
const CONTEXT_CONFIG_MAC: &str = "qvault 2026-11-24 config mac key v1";

/// A value that must never be printed.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// Access for the code that really needs the secret; grep for `expose` to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secret a backup host needs: write, dedup and list, but not read data.
#[derive(Clone)]
pub struct RepositoryKey {
    master: Secret<[u8; 32]>,
    chunk_id_key: Secret<[u8; 32]>,
    chunker_seed: u64,
    config_mac_key: Secret<[u8; 32]>,
    metadata_identity: x25519::Identity,
}

impl fmt::Debug for RepositoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepositoryKey([redacted])")
    }
}

impl RepositoryKey {
    /// A fresh key with a random master secret and metadata identity.
    pub fn generate() -> Self {
        let mut master = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut master);
        RepositoryKey::from_parts(master, x25519::Identity::generate())
    }

    /// Rebuilds a key from its stored parts (see `format::keyfile`).
    pub fn from_parts(master: [u8; 32], metadata_identity: x25519::Identity) -> Self {
        let chunk_id_key = blake3::derive_key(CONTEXT_CHUNK_ID, &master);
        let seed_bytes = blake3::derive_key(CONTEXT_CHUNKER_SEED, &master);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        RepositoryKey {
            master: Secret(master),
            chunk_id_key: Secret(chunk_id_key),
            chunker_seed: u64::from_le_bytes(seed),
            config_mac_key: Secret(blake3::derive_key(CONTEXT_CONFIG_MAC, &master)),
            metadata_identity,
        }
    }

    /// The master secret, for serialising the key file only.
    pub(crate) fn master(&self) -> &[u8; 32] {
        self.master.expose()
    }

    /// The metadata identity as its `AGE-SECRET-KEY-1…` string, for the key file only.
    pub(crate) fn metadata_identity_string(&self) -> SecretString {
        self.metadata_identity.to_string()
    }

    /// A chunk's id: keyed BLAKE3, so ids reveal nothing about plaintext to storage.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(self.chunk_id_key.expose(), data).as_bytes())
    }

    /// The per-repository FastCDC seed: cut points depend on a secret, so chunk sizes do
    /// not fingerprint known files.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// MAC over the config body, so storage cannot slip in its own data recipient.
    pub fn config_mac(&self, body: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(self.config_mac_key.expose(), body).as_bytes()
    }

    pub fn metadata_recipient(&self) -> x25519::Recipient {
        self.metadata_identity.to_public()
    }

    pub fn metadata_identity(&self) -> &x25519::Identity {
        &self.metadata_identity
    }

    /// Encrypts metadata (pack header, index file, manifest) to the metadata recipient.
    pub fn seal_metadata(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        encrypt(&[self.metadata_recipient()], plaintext)
    }

    /// Decrypts metadata; `what` names the object for the error message.
    pub fn open_metadata(&self, ciphertext: &[u8], what: &str) -> Result<Vec<u8>> {
        decrypt(&self.metadata_identity, ciphertext, what)
    }
}

/// Parses an `age1…` recipient.
pub fn parse_recipient(s: &str) -> Result<x25519::Recipient> {
    x25519::Recipient::from_str(s.trim()).map_err(|e| {
        Error::invalid_input(format!(
            "{s:?} is not an age X25519 recipient ({e}): give a public key starting with age1"
        ))
    })
}

/// Encrypts `plaintext` to `recipients` as one binary age file.
pub fn encrypt(recipients: &[x25519::Recipient], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encrypt_stream(recipients, &mut out)?;
    writer.write_all(plaintext).map_err(|e| Error::io("encrypting", e))?;
    writer.finish().map_err(|e| Error::io("encrypting", e))?;
    Ok(out)
}

/// Starts a streaming age encryption to `recipients` writing into `out`.
pub fn encrypt_stream<W: Write>(
    recipients: &[x25519::Recipient],
    out: W,
) -> Result<age::stream::StreamWriter<W>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::invalid_input(format!("cannot encrypt: {e}")))?;
    encryptor.wrap_output(out).map_err(|e| Error::io("writing age header", e))
}

/// Decrypts a whole binary age file with one identity.
pub fn decrypt(identity: &dyn age::Identity, ciphertext: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut reader = decrypt_stream(&[identity], ciphertext, what)?;
    let mut out = Vec::with_capacity(ciphertext.len());
    reader
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(format!("{what} fails authentication: {e}")))?;
    Ok(out)
}

/// Opens a (seekable) decrypting reader over an age file.
pub fn decrypt_stream<R: Read>(
    identities: &[&dyn age::Identity],
    input: R,
    what: &str,
) -> Result<age::stream::StreamReader<R>> {
    let decryptor = age::Decryptor::new(input)
        .map_err(|e| Error::corrupt(format!("{what} is not a readable age file: {e}")))?;
    decryptor.decrypt(identities.iter().copied()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => Error::new(
            ErrorKind::KeyRejected,
            format!("{what} is not encrypted to the key given: check --identity / --key"),
        ),
        other => Error::corrupt(format!("{what} cannot be decrypted: {other}")),
    })
}

/// Wraps `plaintext` with a passphrase (age scrypt), ASCII-armored for key files.
pub fn passphrase_wrap(plaintext: &[u8], passphrase: &Secret<String>) -> Result<Vec<u8>> {
    let encryptor =
        age::Encryptor::with_user_passphrase(SecretString::from(passphrase.expose().clone()));
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| Error::io("armoring key file", e))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|e| Error::io("encrypting key", e))?;
    writer.write_all(plaintext).map_err(|e| Error::io("encrypting key", e))?;
    let armor = writer.finish().map_err(|e| Error::io("encrypting key", e))?;
    armor.finish().map_err(|e| Error::io("armoring key file", e))?;
    Ok(out)
}

/// True when `bytes` look like an age file (armored or binary) rather than plaintext.
pub fn is_age_file(bytes: &[u8]) -> bool {
    bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        || bytes.starts_with(b"age-encryption.org/")
}

/// Unwraps a passphrase-protected key file; `what` names it (a path) for errors.
pub fn passphrase_unwrap(bytes: &[u8], passphrase: &Secret<String>, what: &str) -> Result<Vec<u8>> {
    let reader = age::armor::ArmoredReader::new(bytes);
    let decryptor = age::Decryptor::new(reader)
        .map_err(|e| Error::corrupt(format!("{what} is not a readable age file: {e}")))?;
    if !decryptor.is_scrypt() {
        return Err(Error::invalid_input(format!(
            "{what} is encrypted to a public key, not a passphrase: it cannot be opened here"
        )));
    }
    let identity = age::scrypt::Identity::new(SecretString::from(passphrase.expose().clone()));
    let mut reader =
        decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(|_| {
            Error::new(
                ErrorKind::KeyRejected,
                format!("the passphrase does not open {what}: check QVAULT_PASSPHRASE"),
            )
        })?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(format!("{what} fails authentication: {e}")))?;
    Ok(out)
}

/// Data identities from an identity file's text: `AGE-SECRET-KEY-1…` lines, `#` comments.
pub fn parse_identities(text: &str, what: &str) -> Result<Vec<x25519::Identity>> {
    let mut identities = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = x25519::Identity::from_str(line).map_err(|_| {
            Error::invalid_input(format!(
                "{what} holds a line that is not an age X25519 identity (AGE-SECRET-KEY-1…)"
            ))
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(Error::invalid_input(format!("{what} holds no age identity")));
    }
    Ok(identities)
}

/// The text of a new identity file, with its public key as a comment like age-keygen.
pub fn identity_file_text(identity: &x25519::Identity, created: &str) -> String {
    format!(
        "# created: {created}\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let key = RepositoryKey::generate();
        let shown = format!("{key:?}");
        assert_eq!(shown, "RepositoryKey([redacted])");
        assert_eq!(format!("{:?}", Secret::new("hunter2".to_string())), "[redacted]");
    }

    #[test]
    fn derived_keys_are_stable() {
        let key = RepositoryKey::from_parts([7u8; 32], x25519::Identity::generate());
        // Pinned: these derivations are part of the on-disk format.
        assert_eq!(
            key.chunk_id(b"qvault").to_hex(),
            hex::encode(
                blake3::keyed_hash(&blake3::derive_key(CONTEXT_CHUNK_ID, &[7u8; 32]), b"qvault")
                    .as_bytes()
            )
        );
    }

    #[test]
    fn metadata_round_trip_and_wrong_key() {
        let key = RepositoryKey::generate();
        let sealed = key.seal_metadata(b"hello").unwrap();
        assert_eq!(key.open_metadata(&sealed, "x").unwrap(), b"hello");
        let other = RepositoryKey::generate();
        let err = other.open_metadata(&sealed, "index file 00").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyRejected);
    }
}
