//! The filesystem backend's own parts: the repository directory is created only when a
//! write asks for it, and every object appears whole or not at all.
//!
//! - `write` writes a complete, synced file in [`FS_TMP_DIR`], then renames it into place.
//! - `write_new` writes the same and hard-links it to its name; the link fails if the name
//!   is taken, so two writers can never both win.
//! - either removes its temp file when it fails (a full disk is left no fuller).
//! - `list` hides [`FS_TMP_DIR`].
//! - a temporary file a killed run left in [`FS_TMP_DIR`] is removed by the next backup
//!   once it is older than [`STALE_TMP_AGE`] ([`Storage::remove_stale_temporaries`]).
//! - a range read (restore's pieces, pack headers) leaves the bytes it read out of the
//!   kernel's page cache ([`Storage::forget_cached`]): a restore reads each byte once, and
//!   a repository larger than free memory otherwise fills the cache and makes every later
//!   read pay for reclaiming it (a 16 GiB restore spent 22 s of system time against 1.7 s
//!   for 4 GiB, −20% throughput; docs/benchmarks.md "Scale"), while evicting what the host
//!   (a Qdrant node) keeps there. borg drops what it writes for the same reason.

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
        let fs = FsOp { op: settings.apply_local(op), root: canonical };
        *lock(built) = Some(fs.clone());
        Ok(Some(fs))
    }

    /// Advises the kernel that `path`'s bytes up to `end` (just read) are not needed again:
    /// a filesystem repository's pages leave the page cache. From the object's start, not
    /// from the read's: the kernel drops only whole folios (up to 2 MiB on current kernels)
    /// inside the range, so a folio a piece shares with the one before stays cached until a
    /// later read's range covers it whole; restore reads a pack's pieces in offset order.
    /// Advice only: nothing changes on other backends, and a failure (an object gone, an old
    /// kernel) is ignored.
    pub(super) async fn forget_cached(&self, path: &str, end: u64) {
        let Ok(Some(fs)) = self.fs_op(false).await else {
            return;
        };
        let file = fs.root.join(path);
        let _ = tokio::task::spawn_blocking(move || drop_cached(&file, 0..end)).await;
    }

    /// Filesystem `write` and `write_new`: write a temp file in [`FS_TMP_DIR`] completely
    /// and sync it, then put it in place — `rename` for `write` (replaces), `hard_link` for
    /// `write_new` (fails if the name exists, so atomic and never exposing a partial file,
    /// unlike an exists-check followed by a rename). The temp file is removed whatever
    /// happened: a write that fails on a full disk leaves nothing behind to keep it full
    /// (OpenDAL's own atomic write left its temp file on a failed write).
    pub(super) async fn fs_put(
        &self,
        root: &Path,
        path: &str,
        data: Bytes,
        mode: Put,
    ) -> Result<()> {
        let target = root.join(path);
        let tmp = root.join(FS_TMP_DIR).join(format!("new-{:016x}", rand::random::<u64>()));
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(parent) = tmp.parent() {
                create_dir(parent)?;
            }
            if let Some(parent) = target.parent() {
                create_dir(parent)?;
            }
            let placed = (|| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(not_the_target)?;
                f.write_all(&data)?;
                f.sync_all()?;
                match mode {
                    Put::Replace => std::fs::rename(&tmp, &target).map_err(not_the_target),
                    Put::New => std::fs::hard_link(&tmp, &target),
                }
            })();
            // The temp file is only a staging name; remove it whatever happened (after a
            // rename it is gone already).
            let _ = std::fs::remove_file(&tmp);
            placed
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(self.already_exists(path))
            }
            Ok(Err(e)) => Err(Error::new(
                ErrorKind::Storage,
                format!("writing {path} in {}: {}", self.inner.display, io_advice(&e)),
            )
            .with_source(e)),
            Err(e) => Err(Error::new(
                ErrorKind::Storage,
                format!("writing {path} in {}: the write task failed: {e}", self.inner.display),
            )),
        }
    }
}

/// How [`Storage::fs_put`] puts its complete temp file in place.
#[derive(Clone, Copy, Debug)]
pub(super) enum Put {
    /// `write`: replace any object of that name.
    Replace,
    /// `write_new`: fail with `AlreadyExists` if the name is taken.
    New,
}

/// An I/O error as a sentence with what to do for the two a repository fills up or is
/// mounted into.
fn io_advice(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => format!(
            "{e}: the repository's filesystem is full; free space there and run the command \
             again (in a repository with backups, `qvault forget` and `qvault prune` free space)"
        ),
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "{e}: the repository's filesystem is mounted read-only; remount it read-write \
             or run the command where it is writable"
        ),
        _ => e.to_string(),
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
/// Creates `dir` and its parents. A file (or a dangling link) in the way is "not a
/// directory", never "already exists": only the target's own name taken means that, and a
/// lease written into a `locks` that is a file must fail as a storage error.
fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::other(format!(
                "{} (or a directory above it) exists and is not a directory",
                dir.display()
            ))
        } else {
            e
        }
    })
}

/// An `AlreadyExists` from anything but the final link is not about the target's name.
fn not_the_target(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        std::io::Error::other(e.to_string())
    } else {
        e
    }
}

#[cfg(target_os = "linux")]
fn drop_cached(file: &Path, range: std::ops::Range<u64>) {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(file) else {
        return;
    };
    let (Ok(start), Ok(len)) = (i64::try_from(range.start), i64::try_from(range.end - range.start))
    else {
        return;
    };
    // SAFETY: posix_fadvise only gives the kernel advice about a descriptor this function
    // owns for the duration of the call; it reads and writes no memory of ours.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &Path, _range: std::ops::Range<u64>) {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Which of `len` bytes' pages of `file` are in the page cache (mincore on a mapping).
    #[allow(clippy::unwrap_used)]
    fn resident_pages(file: &Path, len: usize) -> usize {
        let f = std::fs::File::open(file).unwrap();
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }

    /// A range read leaves the pages up to its end out of the page cache, where the
    /// filesystem honours the advice (tmpfs does not: skipped, loudly).
    #[tokio::test]
    async fn a_range_read_leaves_its_pages_out_of_the_page_cache() {
        // Under target/, on disk: /tmp may be tmpfs, whose pages are the file itself.
        let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        let dir = tempfile::tempdir_in(&base).unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let len = 1 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        storage.write("data/ab/pack", Bytes::from(data.clone())).await.unwrap();
        let file = std::fs::canonicalize(dir.path()).unwrap().join("data/ab/pack");
        // Written back and read, so every page is clean and cached.
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), data);
        if resident_pages(&file, len) == 0 {
            eprintln!("SKIPPED: the page cache of {} cannot be observed", file.display());
            return;
        }
        let control = dir.path().join("control");
        std::fs::write(&control, &data).unwrap();
        std::fs::File::open(&control).unwrap().sync_all().unwrap();
        std::fs::read(&control).unwrap();
        drop_cached(&control, 0..len as u64);
        if resident_pages(&control, len) != 0 {
            eprintln!("SKIPPED: {} ignores POSIX_FADV_DONTNEED (tmpfs?)", base.display());
            return;
        }

        let read = storage.read_range("data/ab/pack", 4096..len as u64).await.unwrap();
        assert_eq!(&read[..], &data[4096..]);
        assert_eq!(resident_pages(&file, len), 0, "of {} pages", len / 4096);
    }
}
