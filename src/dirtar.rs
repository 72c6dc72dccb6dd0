//! A directory as a tar stream and back: `backup --dir` (e.g. a stopped Qdrant node's
//! storage directory) and `restore --to-dir`.
//!
//! The stream is deterministic so that unchanged files dedup run to run: entries in sorted
//! (byte) order, headers built only from mode, uid, gid, size and the real mtime (no user or
//! group names looked up, no atime/ctime). A file that changes size while it is read fails
//! the backup instead of producing a corrupt tar.
//!
//! Extraction refuses absolute paths, `..` and links that point outside the directory, and
//! extracts into a hidden staging directory that is renamed into place only after
//! `restore_stream` checked every chunk and the whole stream.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Tar bytes handed from the producer thread to the reader per piece, and pieces in flight.
const PIECE: usize = 256 * 1024;
const PIECES_IN_FLIGHT: usize = 4;

/// A blocking reader producing `dir` as a deterministic tar stream. The tree is walked on a
/// thread of its own; memory is bounded by a few pieces in flight.
pub fn tar_reader(dir: &Path) -> Result<Box<dyn Read + Send>> {
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
            let result = append_tree(&mut builder, &root, Path::new("")).and_then(|()| {
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

/// Appends `root/rel` and everything under it, children in sorted order.
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path, rel: &Path) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(&dir)
        .map_err(|e| with_path(e, &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| with_path(e, &dir))?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let full = root.join(&rel_path);
        let meta = fs::symlink_metadata(&full).map_err(|e| with_path(e, &full))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = header_for(&meta, tar::EntryType::Directory, 0);
            builder.append_data(&mut h, &rel_path, io::empty())?;
            append_tree(builder, root, &rel_path)?;
        } else if ft.is_file() {
            let size = meta.len();
            let mut h = header_for(&meta, tar::EntryType::Regular, size);
            let file = fs::File::open(&full).map_err(|e| with_path(e, &full))?;
            let exact = ExactReader { inner: file.take(size), remaining: size, path: full.clone() };
            builder.append_data(&mut h, &rel_path, exact)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| with_path(e, &full))?;
            let mut h = header_for(&meta, tar::EntryType::Symlink, 0);
            builder.append_link(&mut h, &rel_path, &target)?;
        } else {
            tracing::warn!(path = %full.display(), "skipping a special file (socket, fifo or device)");
        }
    }
    Ok(())
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

/// A path inside the target directory, or an error naming the entry.
fn safe_relative(path: &Path, what: &str) -> Result<PathBuf> {
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

/// A staging directory beside `target` and a writer that extracts a tar stream into it.
pub struct DirExtractor {
    staging: PathBuf,
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
        let name = target
            .file_name()
            .map_or_else(|| "restore".into(), |n| n.to_string_lossy().to_string());
        let nonce: u32 = rand::random();
        let staging = target.with_file_name(format!(".{name}.qvault-partial-{nonce:08x}"));
        fs::create_dir_all(&staging)
            .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
        let (tx, rx) = crossbeam_channel::bounded::<io::Result<Vec<u8>>>(PIECES_IN_FLIGHT);
        let dest = staging.clone();
        let worker = std::thread::Builder::new()
            .name("qvault-dir-extract".into())
            .spawn(move || extract(ChannelReader { rx, current: Vec::new(), pos: 0 }, &dest))
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
        fs::rename(&self.staging, &self.target).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", self.staging.display(), self.target.display()),
                e,
            )
        })?;
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
        // Not finished: nothing half-extracted is left behind.
        if self.staging.exists() {
            self.writer = None;
            if let Some(w) = self.worker.take() {
                let _ = w.join();
            }
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn extract<R: Read>(reader: R, dest: &Path) -> Result<u64> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let mut count = 0u64;
    let entries = archive.entries().map_err(|e| Error::io("reading the restored tar stream", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io("reading the restored tar stream", e))?;
        let path = entry.path().map_err(|e| Error::io("reading a tar entry's path", e))?;
        let rel = safe_relative(&path, "tar entry")?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| Error::io(format!("reading the link target of {}", rel.display()), e))?
                .unwrap_or_default();
            // A link target is resolved from the link's directory (symlink) or the root (hard
            // link); either way `..` or an absolute path could reach outside.
            safe_relative(&target, &format!("link target of {}", rel.display()))?;
        }
        let unpacked = entry
            .unpack_in(dest)
            .map_err(|e| Error::io(format!("extracting {}", rel.display()), e))?;
        if !unpacked {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "tar entry `{}` would be written outside the target directory",
                    rel.display()
                ),
            ));
        }
        count += 1;
    }
    // Read the end-of-archive blocks (and anything after them) so the restore's writer
    // never finds the pipe closed on a valid stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| Error::io("reading the restored tar stream", e))?;
    Ok(count)
}
