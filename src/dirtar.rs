//! A directory as a tar stream and back: `backup --dir` (e.g. a stopped Qdrant node's
//! storage directory) and `restore --to-dir`.
//!
//! The stream is deterministic so that unchanged files dedup run to run: entries in sorted
//! (byte) order, headers built only from mode, uid, gid, size and the real mtime (no user or
//! group names looked up, no atime/ctime). A file that changes size while it is read fails
//! the backup instead of producing a corrupt tar.
//!
//! The stream holds directories (empty ones too), regular files, symlinks as symlinks
//! (relative, absolute or dangling: their targets are not followed) and hard links (a file
//! with several names inside the tree is stored once, later names as tar hard links), with
//! mode, mtime and raw byte names (not UTF-8, any length: GNU long-name records). Sockets,
//! fifos and devices are skipped with a warning.
//!
//! Extraction (see `extract`) refuses absolute paths and `..`, never writes *through* a
//! symlink, applies directory modes after their contents, keeps zero runs as holes, and
//! extracts into a hidden staging directory that is renamed into place only after
//! `restore_stream` checked every chunk and the whole stream.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::redact::printable;

mod extract;
pub(crate) use extract::remove_tree;

/// Tar bytes handed from the producer thread to the reader per piece, and pieces in flight.
const PIECE: usize = 256 * 1024;
const PIECES_IN_FLIGHT: usize = 4;

/// Paths under a `backup --dir` tree that could not be read and were left out of the stream
/// (a file or directory without read permission, a file that vanished during the walk), with
/// why. Filled by the walking thread while the stream is read; complete once it has ended.
#[derive(Clone, Debug, Default)]
pub struct Unreadable(std::sync::Arc<std::sync::Mutex<Vec<(PathBuf, String)>>>);

impl Unreadable {
    /// The paths skipped so far, in walk order, each with its error.
    pub fn paths(&self) -> Vec<(PathBuf, String)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn push(&self, path: &Path, e: &io::Error) {
        let shown = path.display().to_string();
        tracing::warn!("could not read {}: {e}; left out of the backup", printable(&shown));
        let mut v = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        v.push((path.to_path_buf(), e.to_string()));
    }
}

/// A blocking reader producing `dir` as a deterministic tar stream. The tree is walked on a
/// thread of its own; memory is bounded by a few pieces in flight. Any entry that cannot be
/// read fails the stream; see [`tar_reader_skipping`] for `backup --dir`'s behaviour.
pub fn tar_reader(dir: &Path) -> Result<Box<dyn Read + Send>> {
    tar_reader_with(dir, None)
}

/// [`tar_reader`], but a file or directory below `dir` that cannot be opened (no permission,
/// vanished since it was listed) is left out with a warning and recorded in the returned
/// [`Unreadable`], as restic does: the backup holds everything else. A read that fails
/// after a file's header was written still fails the stream (the tar would be corrupt).
pub fn tar_reader_skipping(dir: &Path) -> Result<(Box<dyn Read + Send>, Unreadable)> {
    let unreadable = Unreadable::default();
    Ok((tar_reader_with(dir, Some(unreadable.clone()))?, unreadable))
}

fn tar_reader_with(dir: &Path, skip: Option<Unreadable>) -> Result<Box<dyn Read + Send>> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid_input(format!(
            "{} is not a directory: --dir takes a directory (use --file for a file)",
            dir.display()
        )));
    }
    let (tx, rx) = crossbeam_channel::bounded::<io::Result<Vec<u8>>>(PIECES_IN_FLIGHT);
    let root = dir.to_path_buf();
    std::thread::Builder::new()
        .name("qvault-dir-tar".into())
        .spawn(move || {
            let writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(PIECE) };
            let mut builder = tar::Builder::new(writer);
            let mut walk = Walk { root: &root, seen: HardLinks::default(), skip };
            let result = list_dir(&root)
                .map_err(|e| with_path(e, &root))
                .and_then(|names| walk.append(&mut builder, Path::new(""), names))
                // Before the end-of-archive marker, so a moved root fails the stream.
                .and_then(|()| root_unchanged(&root, &meta))
                .and_then(|()| {
                    let mut w = builder.into_inner()?;
                    w.flush()
                });
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
        })
        .map_err(|e| Error::io("starting the directory reader thread", e))?;
    Ok(Box::new(ChannelReader { rx, current: Vec::new(), pos: 0 }))
}

/// The directory being backed up must still be the one the walk started in. Moved or
/// removed during the walk, every path under it fails to read: with skipping on, that was
/// recorded as a backup with most of the tree "unreadable" (found by a tester: 1,462
/// warnings and exit 10); it fails the stream instead, so nothing is recorded.
fn root_unchanged(root: &Path, at_start: &fs::Metadata) -> io::Result<()> {
    let moved = || {
        io::Error::other(format!(
            "{} was moved or removed while it was being backed up: nothing was recorded; \
             back it up again once it stays in place",
            root.display()
        ))
    };
    let now = fs::metadata(root).map_err(|_| moved())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (now.dev(), now.ino()) != (at_start.dev(), at_start.ino()) {
            return Err(moved());
        }
    }
    #[cfg(not(unix))]
    let _ = (now, at_start);
    Ok(())
}

/// Writes in `PIECE`-sized pieces to a channel (tar builder → backup, restore → tar
/// extraction). A closed channel is `BrokenPipe`: the reading side stopped.
struct ChannelWriter {
    tx: crossbeam_channel::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE));
        self.tx
            .send(Ok(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reading side stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

struct ChannelReader {
    rx: crossbeam_channel::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.rx.recv() {
                Ok(Ok(piece)) => {
                    self.current = piece;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer finished (it sends its error before hanging up).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn header_for(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    }
    #[cfg(not(unix))]
    {
        h.set_mode(if meta.is_dir() { 0o755 } else { 0o644 });
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        h.set_mtime(mtime);
    }
    h
}

/// The names in `dir`, sorted (byte order). The error does not name `dir`: callers do.
fn list_dir(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<std::ffi::OsString> =
        fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// One walk of a tree into a tar stream.
struct Walk<'a> {
    root: &'a Path,
    /// A multiply-linked file's (device, inode) → the first name it was stored under, so
    /// later names become hard links instead of second copies.
    seen: HardLinks,
    /// Where entries that cannot be opened are recorded; `None`: they fail the stream.
    skip: Option<Unreadable>,
}

impl Walk<'_> {
    /// `Ok` after recording `e` for `path` when skipping, else the error.
    fn unreadable(&self, path: &Path, e: io::Error) -> io::Result<()> {
        match &self.skip {
            Some(skip) => {
                skip.push(path, &e);
                Ok(())
            }
            None => Err(with_path(e, path)),
        }
    }

    /// Appends the entries `names` of `root/rel` and everything under them, in that order.
    fn append<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        rel: &Path,
        names: Vec<std::ffi::OsString>,
    ) -> io::Result<()> {
        for name in names {
            let rel_path = rel.join(&name);
            let full = self.root.join(&rel_path);
            let meta = match fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                Err(e) => {
                    self.unreadable(&full, e)?;
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                // Listed first: a directory that cannot be read is stored empty.
                let children = match list_dir(&full) {
                    Ok(children) => children,
                    Err(e) => {
                        self.unreadable(&full, e)?;
                        Vec::new()
                    }
                };
                let mut h = header_for(&meta, tar::EntryType::Directory, 0);
                builder.append_data(&mut h, &rel_path, io::empty())?;
                self.append(builder, &rel_path, children)?;
            } else if ft.is_file() {
                if let Some(first) = self.seen.first_name(&meta, &rel_path) {
                    let mut h = header_for(&meta, tar::EntryType::Link, 0);
                    builder.append_link(&mut h, &rel_path, first)?;
                    continue;
                }
                let file = match fs::File::open(&full) {
                    Ok(file) => file,
                    Err(e) => {
                        self.seen.forget(&meta, &rel_path);
                        self.unreadable(&full, e)?;
                        continue;
                    }
                };
                let size = meta.len();
                let mut h = header_for(&meta, tar::EntryType::Regular, size);
                let exact =
                    ExactReader { inner: file.take(size), remaining: size, path: full.clone() };
                builder.append_data(&mut h, &rel_path, exact)?;
            } else if ft.is_symlink() {
                let target = match fs::read_link(&full) {
                    Ok(target) => target,
                    Err(e) => {
                        self.unreadable(&full, e)?;
                        continue;
                    }
                };
                let mut h = header_for(&meta, tar::EntryType::Symlink, 0);
                builder.append_link(&mut h, &rel_path, &target)?;
            } else {
                let shown = full.display().to_string();
                tracing::warn!(path = %printable(&shown), "skipping a special file (socket, fifo or device)");
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct HardLinks(std::collections::HashMap<(u64, u64), PathBuf>);

impl HardLinks {
    /// The name a file with several links was first stored under; records `rel` when this
    /// is its first name.
    #[cfg(unix)]
    fn first_name(&mut self, meta: &fs::Metadata, rel: &Path) -> Option<&Path> {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() < 2 {
            return None;
        }
        match self.0.entry((meta.dev(), meta.ino())) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut().as_path()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(rel.to_path_buf());
                None
            }
        }
    }

    #[cfg(not(unix))]
    fn first_name(&mut self, _meta: &fs::Metadata, _rel: &Path) -> Option<&Path> {
        None
    }

    /// Undoes [`HardLinks::first_name`] recording `rel`: it was not stored, so a later name
    /// of the same file must not become a link to it.
    #[cfg(unix)]
    fn forget(&mut self, meta: &fs::Metadata, rel: &Path) {
        use std::os::unix::fs::MetadataExt;
        let key = (meta.dev(), meta.ino());
        if self.0.get(&key).is_some_and(|first| first == rel) {
            self.0.remove(&key);
        }
    }

    #[cfg(not(unix))]
    fn forget(&mut self, _meta: &fs::Metadata, _rel: &Path) {}
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads exactly `remaining` bytes or fails: a file that shrank while being archived would
/// otherwise leave a corrupt tar.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    path: PathBuf,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.inner.read(out)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was being backed up: stop the Qdrant node before \
                     backing up its storage directory",
                    self.path.display()
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A staging directory beside `target` and a writer that extracts a tar stream into it.
pub struct DirExtractor {
    staging: crate::partial::Partial,
    target: PathBuf,
    /// `None` once the extraction is joined.
    writer: Option<ChannelWriter>,
    worker: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl DirExtractor {
    /// Prepares to extract into `target`, which must not exist or be an empty directory.
    pub fn new(target: &Path) -> Result<DirExtractor> {
        if target.exists() {
            let empty = fs::read_dir(target)
                .map(|mut d| d.next().is_none())
                .map_err(|e| Error::io(format!("reading {}", target.display()), e))?;
            if !empty {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not empty: choose a new directory for --to-dir",
                        target.display()
                    ),
                ));
            }
        }
        let staging = crate::partial::Partial::beside(target);
        fs::create_dir_all(staging.path())
            .map_err(|e| Error::io(format!("creating {}", staging.path().display()), e))?;
        let (tx, rx) = crossbeam_channel::bounded::<io::Result<Vec<u8>>>(PIECES_IN_FLIGHT);
        let dest = staging.path().to_path_buf();
        let worker = std::thread::Builder::new()
            .name("qvault-dir-extract".into())
            .spawn(move || {
                extract::extract(ChannelReader { rx, current: Vec::new(), pos: 0 }, &dest)
            })
            .map_err(|e| Error::io("starting the extraction thread", e))?;
        Ok(DirExtractor {
            staging,
            target: target.to_path_buf(),
            writer: Some(ChannelWriter { tx, buf: Vec::with_capacity(PIECE) }),
            worker: Some(worker),
        })
    }

    /// Call after `restore_stream` succeeded: waits for the extraction and moves the
    /// staging directory into place. Returns the number of entries extracted.
    pub fn finish(mut self) -> Result<u64> {
        let result = self.join();
        let entries = result?;
        if self.target.exists() {
            fs::remove_dir(&self.target)
                .map_err(|e| Error::io(format!("replacing empty {}", self.target.display()), e))?;
        }
        fs::rename(self.staging.path(), &self.target).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", self.staging.path().display(), self.target.display()),
                e,
            )
        })?;
        self.staging.placed();
        Ok(entries)
    }

    fn join(&mut self) -> Result<u64> {
        if let Some(mut writer) = self.writer.take() {
            let _ = writer.send();
        }
        match self.worker.take() {
            Some(w) => w.join().map_err(|_| Error::new(ErrorKind::Io, "the extraction failed"))?,
            None => Ok(0),
        }
    }

    /// Passes a write or flush to the channel; when the extraction stopped early (a refused
    /// path, a full disk) its error is the one to report, not the closed channel.
    fn forward<T>(
        &mut self,
        op: impl FnOnce(&mut ChannelWriter) -> io::Result<T>,
        done: T,
    ) -> io::Result<T> {
        let Some(writer) = self.writer.as_mut() else { return Ok(done) };
        match op(writer) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                let cause = match self.join() {
                    Err(e) => e.to_string(),
                    Ok(_) => "the tar stream ended before the data did".to_string(),
                };
                Err(io::Error::other(cause))
            }
            other => other,
        }
    }
}

impl Write for DirExtractor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.forward(|w| w.write(data), data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.forward(|w| w.flush(), ())
    }
}

impl Drop for DirExtractor {
    fn drop(&mut self) {
        // Not finished: the extraction ends before `staging` (dropped after this) removes
        // what it wrote, so nothing half-extracted is left behind.
        self.writer = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tars `names` of `root` as a walk that listed them before one vanished.
    fn walk_names(root: &Path, names: &[&str], skip: Option<Unreadable>) -> io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut walk = Walk { root, seen: HardLinks::default(), skip };
        let names = names.iter().map(std::ffi::OsString::from).collect();
        walk.append(&mut builder, Path::new(""), names)?;
        builder.into_inner()
    }

    fn entries(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            out.push(entry.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        out
    }

    #[test]
    fn a_file_that_vanished_during_the_walk_is_left_out_and_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"aaa").unwrap();
        fs::write(dir.path().join("c"), b"ccc").unwrap();
        let unreadable = Unreadable::default();
        let tar = walk_names(dir.path(), &["a", "b", "c"], Some(unreadable.clone())).unwrap();
        assert_eq!(entries(&tar), ["a", "c"]);
        let skipped = unreadable.paths();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0, dir.path().join("b"));
        assert!(skipped[0].1.contains("No such file"), "{skipped:?}");
    }

    #[test]
    fn a_root_moved_or_replaced_during_the_walk_fails_the_stream() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("r");
        std::fs::create_dir(&root).unwrap();
        let at_start = std::fs::metadata(&root).unwrap();
        root_unchanged(&root, &at_start).unwrap();
        std::fs::rename(&root, base.path().join("gone")).unwrap();
        let err = root_unchanged(&root, &at_start).unwrap_err();
        assert!(err.to_string().contains("was moved or removed while it was being backed up"));
        // Another directory under the same name is not the one walked.
        std::fs::create_dir(&root).unwrap();
        assert!(root_unchanged(&root, &at_start).is_err());
    }

    #[test]
    fn without_skipping_a_vanished_file_fails_the_stream_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"aaa").unwrap();
        let e = walk_names(dir.path(), &["a", "b"], None).unwrap_err();
        assert!(e.to_string().contains(&dir.path().join("b").display().to_string()), "{e}");
    }
}
