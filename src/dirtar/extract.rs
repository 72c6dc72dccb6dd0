//! Extraction of a directory tar stream into a staging directory.
//!
//! Guarantees, whatever the stream holds:
//! - nothing is written outside `dest`: entry paths with `..` or a root are refused, and no
//!   entry is ever written *through* a symlink (every parent of an entry must be a real
//!   directory, files are created with `O_NOFOLLOW | O_EXCL` after removing whatever an
//!   earlier entry left at that name). Symlinks themselves are restored as they were,
//!   relative, absolute or dangling: a link is data, only following it is dangerous.
//! - a hard link's target must be an earlier entry inside `dest`;
//! - a directory's mode and mtime are applied after everything under it is written (deepest
//!   first, as tar does), so read-only directories restore for a non-root user;
//! - runs of zero blocks in file data are written as holes, so preallocated sparse files
//!   (Qdrant's WAL segments and mmap files) stay sparse.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Zero runs are detected per block of this size (a common filesystem block): a block of
/// zeros is skipped with a seek instead of written.
const HOLE_BLOCK: usize = 4096;
const COPY_BUF: usize = 64 * HOLE_BLOCK;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// A path inside the target directory, or an error naming the entry.
pub(super) fn safe_relative(path: &Path, what: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "{what} `{}` would be written outside the target directory (absolute \
                         path or `..`): refusing to extract this stream",
                        path.display()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// A directory whose mode and mtime wait until everything under it is written.
struct PendingDir {
    path: PathBuf,
    mode: u32,
    mtime: u64,
}

/// Extracts the tar stream `reader` into `dest` (an existing, empty directory). Returns the
/// number of entries extracted.
pub(super) fn extract<R: Read>(reader: R, dest: &Path) -> Result<u64> {
    let mut archive = tar::Archive::new(reader);
    let mut pending: Vec<PendingDir> = Vec::new();
    let mut count = 0u64;
    let entries = archive.entries().map_err(|e| Error::io("reading the restored tar stream", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io("reading the restored tar stream", e))?;
        let path = entry.path().map_err(|e| Error::io("reading a tar entry's path", e))?;
        let rel = safe_relative(&path, "tar entry")?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let full = prepare_parent(dest, &rel)?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let what = |e: io::Error| Error::io(format!("extracting {}", rel.display()), e);
        if kind.is_dir() {
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_existing(&full).map_err(what)?;
                    fs::create_dir(&full).map_err(what)?;
                }
                Err(_) => fs::create_dir(&full).map_err(what)?,
            }
            pending.push(PendingDir { path: full, mode, mtime });
        } else if kind.is_symlink() {
            let target = entry.link_name().map_err(what)?.unwrap_or_default().into_owned();
            remove_existing(&full).map_err(what)?;
            make_symlink(&target, &full).map_err(what)?;
            set_times(&full, mtime, false).map_err(what)?;
        } else if kind.is_hard_link() {
            let target = entry.link_name().map_err(what)?.unwrap_or_default().into_owned();
            let target_rel =
                safe_relative(&target, &format!("hard link target of {}", rel.display()))?;
            let source = checked_existing(dest, &target_rel, &rel)?;
            remove_existing(&full).map_err(what)?;
            fs::hard_link(&source, &full).map_err(what)?;
        } else if kind.is_file() || kind == tar::EntryType::GNUSparse {
            remove_existing(&full).map_err(what)?;
            let mut file = create_new_nofollow(&full).map_err(what)?;
            write_sparse(&mut entry, &mut file).map_err(what)?;
            drop(file);
            set_path_mode(&full, mode).map_err(what)?;
            set_times(&full, mtime, false).map_err(what)?;
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            let shown = rel.display().to_string();
            tracing::warn!(entry = %crate::redact::printable(&shown), "skipping a special file (fifo or device) in the stream");
            continue;
        }
        count += 1;
    }
    // Deepest first: a read-only directory is closed only after everything under it.
    pending.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for dir in &pending {
        // A later entry may have replaced the directory (by a symlink, say): chmod would
        // follow it out of the tree.
        if !fs::symlink_metadata(&dir.path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let what =
            |e: io::Error| Error::io(format!("setting the mode of {}", dir.path.display()), e);
        set_path_mode(&dir.path, dir.mode).map_err(what)?;
        set_times(&dir.path, dir.mtime, true).map_err(what)?;
    }
    // Read the end-of-archive blocks (and anything after them) so the restore's writer
    // never finds the pipe closed on a valid stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| Error::io("reading the restored tar stream", e))?;
    Ok(count)
}

/// `dest/rel`, after making sure every parent of it inside `dest` is a real directory
/// (created if missing): an earlier symlink entry must never redirect a later write.
fn prepare_parent(dest: &Path, rel: &Path) -> Result<PathBuf> {
    let mut at = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(through_link(rel, &at, dest)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)
                    .map_err(|e| Error::io(format!("creating {}", at.display()), e))?,
                Err(e) => return Err(Error::io(format!("reading {}", at.display()), e)),
            }
        }
    }
    Ok(dest.join(rel))
}

fn through_link(rel: &Path, at: &Path, dest: &Path) -> Error {
    let shown = at.strip_prefix(dest).unwrap_or(at);
    Error::new(
        ErrorKind::Refused,
        format!(
            "tar entry `{}` would be written through `{}`, which is not a directory (a \
             symlink or a file): refusing to extract this stream",
            rel.display(),
            shown.display()
        ),
    )
}

/// The path of an earlier, non-directory entry `target` that a hard link `rel` names.
fn checked_existing(dest: &Path, target: &Path, rel: &Path) -> Result<PathBuf> {
    let full = prepare_parent(dest, target)?;
    match fs::symlink_metadata(&full) {
        Ok(m) if !m.is_dir() => Ok(full),
        _ => Err(Error::new(
            ErrorKind::Refused,
            format!(
                "hard link `{}` names `{}`, which is not an earlier file of the stream: \
                 refusing to extract this stream",
                rel.display(),
                target.display()
            ),
        )),
    }
}

/// Removes what an earlier entry left at `path` (tar's "unlink first"); a directory stays
/// only if it is empty-removable, else the error surfaces.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies an entry's data, seeking over whole zero blocks so they stay holes; the final
/// `set_len` keeps a trailing hole.
fn write_sparse(data: &mut impl Read, file: &mut fs::File) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut len = 0u64;
    let mut pending_seek = 0i64;
    loop {
        let n = read_full(data, &mut buf)?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(HOLE_BLOCK) {
            if block == ZEROS.as_slice() {
                pending_seek += HOLE_BLOCK as i64;
            } else {
                if pending_seek > 0 {
                    file.seek(SeekFrom::Current(pending_seek))?;
                    pending_seek = 0;
                }
                file.write_all(block)?;
            }
            len += block.len() as u64;
        }
    }
    file.set_len(len)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(not(unix))]
fn from_secs(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[cfg(unix)]
fn create_new_nofollow(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(not(unix))]
fn create_new_nofollow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}

/// Sets `path`'s permission bits (a no-op where there are none to set).
#[cfg(unix)]
fn set_path_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_path_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn make_symlink(target: &Path, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn make_symlink(target: &Path, at: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, at)
}

/// Sets `path`'s mtime (atime too, to the same value) without following a symlink.
#[cfg(unix)]
fn set_times(path: &Path, mtime: u64, _is_dir: bool) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))?;
    let secs = libc::time_t::try_from(mtime).unwrap_or(libc::time_t::MAX);
    let t = libc::timespec { tv_sec: secs, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two initialized timespecs.
    let rc = unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn set_times(path: &Path, mtime: u64, is_dir: bool) -> io::Result<()> {
    if is_dir {
        return Ok(());
    }
    fs::File::options().write(true).open(path)?.set_modified(from_secs(mtime))
}

/// Removes a staging tree even when it holds read-only directories (a failed restore must
/// leave nothing behind, also for a non-root user).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(dir: &Path) {
        let _ = set_path_mode(dir, 0o700);
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(path);
    fs::remove_dir_all(path)
}
