//! Recognising a repository's key again, for those who open it with a data identity.
//!
//! An identity holder gets the repository key by decrypting `keys/<its recipient>`. age
//! encrypts to public keys, so anyone who can write the storage can put *their own*
//! repository key there, encrypted to the same recipient, with a `config` MAC'd by it and
//! listing their own data recipient: everything would open and check, and new backups would
//! be readable by them (docs/design.md, attacker section). The repository key cannot change
//! without a new repository, so its public half — the **repository key fingerprint**, the
//! metadata recipient `age1…` — identifies it. Two defences, both on the CLI's side:
//!
//! - `--expect-key age1…` (or `expect_key` in the config file): the operator states it,
//!   which also protects machines with no memory (a Kubernetes CronJob);
//! - [`KnownRepositories`]: trust on first use, like SSH's known_hosts. The first open of a
//!   location records the repository id and fingerprint; a later open that presents another
//!   one is refused.

use crate::error::{Error, ErrorKind, Result};
use crate::id::RepositoryId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What was seen at one location.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownRepository {
    pub id: String,
    pub key: String,
}

/// Whether a location was known before this open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    FirstUse,
    Known,
}

/// A JSON file of location → repository id and key fingerprint.
#[derive(Clone, Debug)]
pub struct KnownRepositories {
    path: PathBuf,
}

impl KnownRepositories {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        KnownRepositories { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compares what `location` presents with what was seen there before, recording it on
    /// first use. A different id or key is `KeyRejected`.
    pub fn check(&self, location: &str, id: &RepositoryId, key: &str) -> Result<Verdict> {
        let mut known = self.read()?;
        let seen = KnownRepository { id: id.to_hex(), key: key.to_string() };
        match known.get(location) {
            Some(before) if *before == seen => Ok(Verdict::Known),
            Some(before) => Err(Error::new(
                ErrorKind::KeyRejected,
                format!(
                    "the repository at {location} is not the one this machine used before: it \
                     presents repository {} with key {}, but {} recorded repository {} with key \
                     {}. Someone with write access to the storage may have replaced `config` \
                     and `keys/` so that new backups would be readable by them. If you \
                     re-created the repository yourself, delete its entry from that file.",
                    seen.id,
                    seen.key,
                    self.path.display(),
                    before.id,
                    before.key
                ),
            )),
            None => {
                known.insert(location.to_string(), seen);
                self.write(&known)?;
                Ok(Verdict::FirstUse)
            }
        }
    }

    fn read(&self) -> Result<BTreeMap<String, KnownRepository>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(format!(
                    "{} is not a list of known repositories ({e}): fix or delete it",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    fn write(&self, known: &BTreeMap<String, KnownRepository>) -> Result<()> {
        let io = |what: &str, e| Error::io(format!("{what} {}", self.path.display()), e);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        }
        let mut text = serde_json::to_vec_pretty(known).map_err(|e| {
            Error::invalid_input(format!("cannot serialise known repositories: {e}"))
        })?;
        text.push(b'\n');
        let temp = self.path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&temp, text).map_err(|e| io("writing", e))?;
        std::fs::rename(&temp, &self.path).map_err(|e| io("replacing", e))
    }
}

/// The operator's stated fingerprint against the one the repository presents.
pub fn check_expected(location: &str, expected: &str, key: &str) -> Result<()> {
    if expected.trim() == key {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::KeyRejected,
        format!(
            "the repository at {location} presents repository key {key}, not the expected \
             {}: someone with write access to the storage may have replaced `config` and \
             `keys/`. Check --expect-key / QVAULT_EXPECT_KEY against `qvault key list` on a \
             machine you trust.",
            expected.trim()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_records_then_the_same_passes_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownRepositories::at(dir.path().join("sub/known.json"));
        let id = RepositoryId([1; 32]);
        assert_eq!(known.check("/r", &id, "age1one").unwrap(), Verdict::FirstUse);
        assert_eq!(known.check("/r", &id, "age1one").unwrap(), Verdict::Known);
        // Another location is independent.
        assert_eq!(
            known.check("/s", &RepositoryId([2; 32]), "age1two").unwrap(),
            Verdict::FirstUse
        );
        let err = known.check("/r", &id, "age1evil").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyRejected);
        assert!(err.to_string().contains("presents repository 0101"), "{err}");
        assert!(err.to_string().contains("with key age1evil"), "{err}");
        assert!(err.to_string().contains("recorded repository 0101"), "{err}");
        // A re-created repository (new id) at a known location is refused too.
        let err = known.check("/r", &RepositoryId([3; 32]), "age1one").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyRejected);
        // The refusal did not overwrite what was recorded.
        assert_eq!(known.check("/r", &id, "age1one").unwrap(), Verdict::Known);
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known.json");
        std::fs::write(&path, "not json").unwrap();
        let err =
            KnownRepositories::at(&path).check("/r", &RepositoryId([1; 32]), "k").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("fix or delete it"), "{err}");
    }

    #[test]
    fn an_expected_key_must_match() {
        check_expected("/r", " age1a\n", "age1a").unwrap();
        let err = check_expected("/r", "age1a", "age1b").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyRejected);
        assert!(err.to_string().contains("presents repository key age1b, not the expected age1a"));
    }
}
