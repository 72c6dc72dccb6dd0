//! The filesystem backend's own parts: the repository directory is created only when a
//! write asks for it, and every object appears whole or not at all.
//!
//! - `write` goes through OpenDAL's atomic write: a complete file in [`FS_TMP_DIR`], then
//!   a rename into place.
//! - `write_new` writes a complete file in [`FS_TMP_DIR`] and hard-links it to its name;
//!   the link fails if the name is taken, so two writers can never both win.
//! - `list` hides [`FS_TMP_DIR`].
//! - a temporary file a killed run left in [`FS_TMP_DIR`] is removed by the next backup
//!   once it is older than [`STALE_TMP_AGE`] ([`Storage::remove_stale_temporaries`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use opendal::Operator;

use super::{Ops, Storage};
use crate::error::{Error, ErrorKind, Result};

/// Directory inside a filesystem repository for files being written; they are renamed into
/// place when complete. `list` hides it.
pub(super) const FS_TMP_DIR: &str = ".qvault-tmp";

/// A temporary file older than this belongs to a run that died (killed, crashed, host
/// lost): a live write finishes its file well within it, because every storage operation is
/// limited to `timeout` (60 s by default) per attempt and gives up after its retries. An
/// hour leaves a wide margin for a slow disk or a raised `--timeout` while a backup on
/// another host writes into the same repository directory.
pub const STALE_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What [`Storage::remove_stale_temporaries`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaleTemporaries {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Clone)]
pub(super) struct FsOp {
    pub(super) op: Operator,
    /// Canonical root, for `write_new`'s own temp-file-and-link.
    pub(super) root: PathBuf,
}

impl Storage {
    pub(super) async fn fs_op(&self, create: bool) -> Result<Option<FsOp>> {
        let Ops::Fs { root, settings, built } = &self.inner.ops else {
            return Ok(None);
        };
        if let Some(fs) = lock(built).clone() {
            return Ok(Some(fs));
        }
        let display = &self.inner.display;
        match tokio::fs::metadata(root).await {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Storage,
                    format!("repository location {display} is not a directory"),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                tokio::fs::create_dir_all(root).await.map_err(|e| {
                    Error::new(
                        ErrorKind::Storage,
                        format!("cannot create the repository directory {display}: {e}"),
                    )
                    .with_source(e)
                })?;
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Storage,
                    format!("cannot access the repository directory {display}: {e}"),
                )
                .with_source(e))
            }
        }
        let canonical = tokio::fs::canonicalize(root).await.map_err(|e| {
            Error::new(
                ErrorKind::Storage,
                format!("cannot access the repository directory {display}: {e}"),
            )
            .with_source(e)
        })?;
        let tmp = canonical.join(FS_TMP_DIR);
        let builder = opendal::services::Fs::default()
            .root(&canonical.to_string_lossy())
            .atomic_write_dir(&tmp.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| {
            Error::new(
                ErrorKind::Storage,
                format!("cannot open the repository directory {display}: {e}"),
            )
            .with_source(e)
        })?;
        let fs = FsOp { op: settings.apply(op), root: canonical };
        *lock(built) = Some(fs.clone());
        Ok(Some(fs))
    }

    /// Filesystem `write_new`: write a temp file completely, then hard-link it to the final
    /// name. `link` fails if the name exists, so this is atomic and never exposes a partial
    /// file, unlike an exists-check followed by a rename.
    pub(super) async fn fs_write_new(&self, root: &Path, path: &str, data: Bytes) -> Result<()> {
        let target = root.join(path);
        let tmp = root.join(FS_TMP_DIR).join(format!("new-{:016x}", rand::random::<u64>()));
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(parent) = tmp.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let linked = (|| {
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
                std::fs::hard_link(&tmp, &target)
            })();
            // The temp file is only a staging name; remove it whatever happened.
            let _ = std::fs::remove_file(&tmp);
            linked
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(self.already_exists(path))
            }
            Ok(Err(e)) => Err(Error::new(
                ErrorKind::Storage,
                format!("writing {path} in {}: {e}", self.inner.display),
            )
            .with_source(e)),
            Err(e) => Err(Error::new(
                ErrorKind::Storage,
                format!("writing {path} in {}: the write task failed: {e}", self.inner.display),
            )),
        }
    }
}

impl Storage {
    /// Removes temporary files older than `older_than` from a filesystem repository's
    /// [`FS_TMP_DIR`] (partial objects of killed runs; they are never read, only taking
    /// space). Other backends keep no temporaries: nothing to do. Backups call this at
    /// start with [`STALE_TMP_AGE`].
    pub async fn remove_stale_temporaries(
        &self,
        older_than: std::time::Duration,
    ) -> Result<StaleTemporaries> {
        let Some(fs) = self.fs_op(false).await? else { return Ok(StaleTemporaries::default()) };
        let dir = fs.root.join(FS_TMP_DIR);
        let display = self.inner.display.clone();
        let task = tokio::task::spawn_blocking(move || remove_old_files(&dir, older_than));
        match task.await {
            Ok(Ok(removed)) => Ok(removed),
            Ok(Err(e)) => Err(Error::new(
                ErrorKind::Storage,
                format!("cleaning {FS_TMP_DIR}/ in {display}: {e}"),
            )
            .with_source(e)),
            Err(e) => Err(Error::new(
                ErrorKind::Storage,
                format!("cleaning {FS_TMP_DIR}/ in {display}: the task failed: {e}"),
            )),
        }
    }
}

fn remove_old_files(
    dir: &Path,
    older_than: std::time::Duration,
) -> std::io::Result<StaleTemporaries> {
    let mut removed = StaleTemporaries::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    let now = std::time::SystemTime::now();
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let inner = remove_old_files(&entry.path(), older_than)?;
            removed.files += inner.files;
            removed.bytes += inner.bytes;
            continue;
        }
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if age.is_some_and(|a| a > older_than) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.files += 1;
                    removed.bytes += meta.len();
                }
                // Another run cleaned it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// A poisoned lock only means another thread panicked while caching an operator; the
/// cached value (an `Option<FsOp>`) is still consistent, so keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
