//! What opening a repository says when its `config` or a `keys/` object is damaged or
//! missing: the object's path, and what to do.
//!
//! Guarantees:
//! - A `config` missing or unreadable where a repository's objects are stored (`data/`,
//!   `index/`, `backups/`) is `Corrupt` (exit 5) and says to restore `config` from a copy,
//!   never to run `init` (a new key could not read the stored backups); `init` refuses such a
//!   location. Only where nothing else is stored is it "no repository" (exit 3).
//! - A key object meant for the identity given that does not open, or is missing though the
//!   config lists its recipient, is `Corrupt`, named, with what to do; a key that is not for
//!   this identity or of a newer version keeps its error.
//! - A newer format version keeps its own error (exit 7).
//! - An `init` that fails (a full or read-only disk) removes the key objects it wrote, and
//!   `keys/` when that leaves it empty, so the same init runs once the cause is fixed. Only
//!   those: init wrote nothing before it found the location held no repository.

use super::CONFIG_PATH;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::Storage;

/// The directories only a qvault repository's objects live in.
const DATA_DIRS: [&str; 3] = ["data/", "index/", "backups/"];

/// Which of [`DATA_DIRS`] hold an object at `storage`. Asked only where a `config` is
/// missing or unreadable; a listing that fails counts as empty (the caller's error stands).
async fn data_dirs(storage: &Storage) -> Vec<&'static str> {
    let mut held = Vec::new();
    for dir in DATA_DIRS {
        if storage.list(dir).await.is_ok_and(|objects| !objects.is_empty()) {
            held.push(dir);
        }
    }
    held
}

fn missing_config(location: &str, held: &[&str]) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "the repository at {location} holds backups ({}) but its `{CONFIG_PATH}` object is \
             missing: restore `{CONFIG_PATH}` from a copy of the repository (a replica, a storage \
             snapshot or an earlier object version); do not run `qvault init` here, it would make \
             a new repository key that cannot read these backups",
            held.join(", ")
        ),
    )
}

/// The key object of a recipient the config lists is gone: damage (exit 5), named, with
/// what to do — not "wrong identity", which would send the operator looking for another.
pub(super) fn missing_key(location: &str, path: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "the key object {path} in {location} is missing, though the repository's config \
             lists its recipient: restore it from a copy of the repository (a replica, a \
             storage snapshot or an earlier object version), or open the repository with \
             another data identity or the repository key (--key)"
        ),
    )
}

/// A key object that does not open as a key file, though it is meant for this identity:
/// damaged (exit 5), named, with what to do. A key that is not for this identity, or of a
/// newer format, keeps its own error.
pub(super) fn damaged_key(location: &str, path: &str, e: Error) -> Error {
    if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::InvalidInput) {
        return Error::new(
            ErrorKind::Corrupt,
            format!(
                "the key object {path} in {location} is damaged ({e}): restore it from a copy \
                 of the repository (a replica, a storage snapshot or an earlier object version), \
                 or open the repository with another data identity or the repository key (--key)"
            ),
        );
    }
    e
}

/// The error for a `config` that is not there.
pub(super) async fn no_config(storage: &Storage) -> Error {
    let held = data_dirs(storage).await;
    if !held.is_empty() {
        return missing_config(storage.location(), &held);
    }
    Error::new(
        ErrorKind::NotARepository,
        format!(
            "there is no qvault repository at {}: check --repo, or create one with `qvault init`",
            storage.location()
        ),
    )
}

/// The error for a `config` that does not decode (`e`, from [`crate::format::config`]).
pub(super) async fn unreadable_config(storage: &Storage, e: Error) -> Error {
    if !matches!(e.kind(), ErrorKind::NotARepository | ErrorKind::Corrupt) {
        return e;
    }
    let location = storage.location();
    if e.kind() == ErrorKind::NotARepository && data_dirs(storage).await.is_empty() {
        return Error::new(
            ErrorKind::NotARepository,
            format!(
                "{e}: the object `{CONFIG_PATH}` there is not qvault's, so {location} is not a \
                 qvault repository: check --repo"
            ),
        );
    }
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "the repository's `{CONFIG_PATH}` object at {location} is damaged ({e}): restore \
             `{CONFIG_PATH}` from a copy of the repository (a replica, a storage snapshot or an \
             earlier object version); do not run `qvault init` here, it would make a new \
             repository key"
        ),
    )
}

pub(super) async fn refuse_orphaned_data(storage: &Storage) -> Result<()> {
    let held = data_dirs(storage).await;
    if held.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Refused,
        format!(
            "refusing to init: {} holds a qvault repository's objects ({}) but no \
             `{CONFIG_PATH}`; a new repository here would have a new key that cannot read \
             them: restore `{CONFIG_PATH}` from a copy of the repository, or init somewhere \
             empty",
            storage.location(),
            held.join(", ")
        ),
    ))
}

/// `error` (what failed `init`), after removing the key objects in `written` that init wrote
/// before it; an object it could not remove is named in the error. Not when another init
/// wrote `config` first (the keys then belong to it).
pub(super) async fn remove_partial_init(
    storage: &Storage,
    written: &[String],
    error: Error,
) -> Error {
    if error.kind() == ErrorKind::AlreadyExists {
        // Another init won the race for `config`: the keys are its repository's now.
        return error;
    }
    let mut left = Vec::new();
    for path in written {
        if storage.delete(path).await.is_err() {
            left.push(path.as_str());
        }
    }
    if left.is_empty() {
        // The empty directory a filesystem keeps would make the location "not empty" for
        // the next init; object stores have no directories (nothing to delete).
        let _ = storage.delete("keys/").await;
        return error;
    }
    error.context(format_args!(
        "init could not remove what it wrote ({}: delete it before running init again)",
        left.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Repository;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_missing_config_is_no_repository_only_where_nothing_else_is_stored() {
        let storage = Storage::memory();
        let e = Repository::read_config(&storage).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotARepository, "{e}");
        assert!(refuse_orphaned_data(&storage).await.is_ok());

        storage.write("index/00ff", Bytes::from_static(b"x")).await.unwrap();
        let e = Repository::read_config(&storage).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("holds backups (index/)"), "{e}");
        assert!(e.to_string().contains("do not run `qvault init` here"), "{e}");
        let e = refuse_orphaned_data(&storage).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    }

    #[tokio::test]
    async fn a_config_that_does_not_decode_is_damaged_where_backups_are_stored() {
        let storage = Storage::memory();
        storage.write(CONFIG_PATH, Bytes::from_static(b"garbage")).await.unwrap();
        let e = Repository::read_config(&storage).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotARepository, "{e}");
        assert!(e.to_string().contains("is not a qvault repository: check --repo"), "{e}");

        storage.write("backups/00ff", Bytes::from_static(b"x")).await.unwrap();
        let e = Repository::read_config(&storage).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("restore `config` from a copy"), "{e}");
    }
}
