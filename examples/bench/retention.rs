//! Retention (issue 13), the qvault side: forget every backup but the last and prune twice
//! (the first run marks, the second deletes), measured in this process. Once with a data
//! identity (it also repacks partly used packs), once on a copy of the repository opened as
//! a backup host would open it (repository key only: it deletes wholly unused packs and
//! never repacks).

use std::path::Path;

use qvault::id::BackupId;
use qvault::repo::{Cache, Credentials, Repository};
use qvault::storage::Storage;

use crate::measure::{Meter, Step};
use crate::BoxError;

/// Deletes the manifests of `forget`, then prunes twice with the default options. `input`
/// is the repository's size before.
pub async fn forget_prune(
    repo: &Repository,
    forget: &[BackupId],
    name: &str,
    input: u64,
) -> Result<Step, BoxError> {
    let options = qvault::prune::PruneOptions::default();
    let m = Meter::start();
    for id in forget {
        repo.delete_manifest(*id).await?;
    }
    qvault::prune::prune(repo, &options).await?;
    qvault::prune::prune(repo, &options).await?;
    Ok(m.stop(name, input))
}

/// A copy of the repository directory `from` at `to`, to prune it a second way.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The repository at `dir` opened with only the repository key `admin` exports, and a cache
/// of its own.
pub async fn open_key_only(admin: &Repository, dir: &Path) -> Result<Repository, BoxError> {
    let key = qvault::format::keyfile::decode(admin.export_key()?.expose(), "key")?;
    let storage = Storage::open(dir.to_str().ok_or("--dir is not UTF-8")?, &Default::default())?;
    let credentials = Credentials { identities: vec![], key: Some(key) };
    Ok(Repository::open(storage, credentials, &Cache::InMemory).await?)
}
