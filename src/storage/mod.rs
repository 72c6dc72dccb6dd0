//! The repository's storage: a thin layer over an OpenDAL [`Operator`].
//!
//! Everything above this module talks to [`Storage`] only, so backends differ in one place:
//! how a location is opened, which layers wrap it, and how their errors become
//! [`crate::Error`]s that name the location and the object and say what to do.
//!
//! Guarantees every backend gives through this type:
//! - `write` is all-or-nothing for readers (S3/GCS/Azure PUTs are atomic; the filesystem
//!   writes a temporary file and renames it into place).
//! - `list` is recursive, files only, paths relative to the repository root, sorted.
//! - `delete` of a missing object succeeds, so interrupted prunes can simply be rerun.
//! - A filesystem repository directory is never created by `open` or by reads, so a mistyped
//!   path shows up as NotFound instead of an empty repository appearing somewhere.

mod location;

use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::Operator;

use crate::error::{Error, ErrorKind, Result};
use location::Location;

/// Default number of retries of a failed operation (with exponential backoff and jitter).
const DEFAULT_RETRIES: usize = 5;
/// Default limit for one whole operation.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit for one I/O step (a chunk of a read or write) within an operation.
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of operations in flight against the backend.
const DEFAULT_CONCURRENCY: usize = 16;
/// Directory inside a filesystem repository for files being written; they are renamed into
/// place when complete. `list` hides it.
const FS_TMP_DIR: &str = ".qvault-tmp";

/// How to reach a backend. Values left `None` fall back to the environment, then to defaults.
#[derive(Clone, Default)]
pub struct StorageOptions {
    /// S3 endpoint URL (e.g. `http://127.0.0.1:9000`); default: `AWS_ENDPOINT_URL`, then AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region; default: `AWS_REGION`, then `us-east-1`.
    pub s3_region: Option<String>,
    /// Access key id; default: `AWS_ACCESS_KEY_ID` (Azure: storage account name).
    pub access_key_id: Option<String>,
    /// Secret access key; default: `AWS_SECRET_ACCESS_KEY` (Azure: storage account key).
    pub secret_access_key: Option<String>,
    /// Limit for one whole operation (default 60 s).
    pub timeout: Option<Duration>,
    /// Limit for one I/O step inside an operation (default 30 s).
    pub io_timeout: Option<Duration>,
    /// Retries of a failed operation (default 5).
    pub retries: Option<usize>,
    /// Operations in flight (default 16).
    pub concurrency: Option<usize>,
}

impl fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("StorageOptions")
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("timeout", &self.timeout)
            .field("io_timeout", &self.io_timeout)
            .field("retries", &self.retries)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// One object found by [`Storage::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the repository root, `/`-separated (e.g. `data/ab/abcd…`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Which service a [`Storage`] talks to; chooses the wording of error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Memory,
    Fs,
    S3,
    #[cfg_attr(not(feature = "azure"), allow(dead_code))]
    Azblob,
    #[cfg_attr(not(feature = "gcs"), allow(dead_code))]
    Gcs,
    #[cfg_attr(not(feature = "webdav"), allow(dead_code))]
    Webdav,
    #[cfg_attr(not(feature = "sftp"), allow(dead_code))]
    Sftp,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory storage",
            Backend::Fs => "the filesystem",
            Backend::S3 => "S3",
            Backend::Azblob => "Azure Blob Storage",
            Backend::Gcs => "Google Cloud Storage",
            Backend::Webdav => "the WebDAV server",
            Backend::Sftp => "the SFTP server",
        }
    }

    /// What to check when the backend refuses access.
    fn credentials_hint(self) -> &'static str {
        match self {
            Backend::Memory => "this should not happen with memory storage",
            Backend::Fs => "check the permissions of the repository directory",
            Backend::S3 => {
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the access key options) \
                 and that the key may use this bucket"
            }
            Backend::Azblob => {
                "check AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY and the container's access policy"
            }
            Backend::Gcs => {
                "check GOOGLE_APPLICATION_CREDENTIALS and the service account's bucket roles"
            }
            Backend::Webdav => "check the user and password in the location",
            Backend::Sftp => "check the SSH user and key (ssh-agent or ~/.ssh/config)",
        }
    }
}

/// A repository's storage. Cheap to clone: clones share the operator and its limits.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    /// The location as the user wrote it, secrets replaced by `***`.
    display: String,
    backend: Backend,
    /// The server address, for "cannot reach" messages (network backends only).
    endpoint: Option<String>,
    ops: Ops,
}

enum Ops {
    /// Built at `open`.
    Ready(Operator),
    /// A filesystem repository. OpenDAL's fs builder creates its root directory, so the
    /// operator is built only once the directory exists (or a write asks for it).
    Fs { root: PathBuf, settings: Settings, built: Mutex<Option<FsOp>> },
}

#[derive(Clone)]
struct FsOp {
    op: Operator,
    /// Canonical root, for `write_new`'s own temp-file-and-link.
    root: PathBuf,
}

#[derive(Clone, Copy)]
struct Settings {
    timeout: Duration,
    io_timeout: Duration,
    retries: usize,
    concurrency: usize,
}

impl Settings {
    fn from_options(o: &StorageOptions) -> Settings {
        Settings {
            timeout: o.timeout.unwrap_or(DEFAULT_TIMEOUT),
            io_timeout: o.io_timeout.unwrap_or(DEFAULT_IO_TIMEOUT),
            retries: o.retries.unwrap_or(DEFAULT_RETRIES),
            concurrency: o.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
        }
    }

    /// Timeout innermost so each retry gets a fresh timeout (OpenDAL documents that the
    /// other order drops retry futures mid-request); the concurrency limit outermost so an
    /// operation waiting for a permit does not eat into its own timeout.
    fn apply(self, op: Operator) -> Operator {
        op.layer(TimeoutLayer::new().with_timeout(self.timeout).with_io_timeout(self.io_timeout))
            .layer(RetryLayer::new().with_max_times(self.retries).with_jitter())
            .layer(ConcurrentLimitLayer::new(self.concurrency))
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").field("location", &self.inner.display).finish()
    }
}

/// What an operation was doing, for error messages.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Stat,
    List,
    Delete,
    Check,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Read => "reading",
            Op::Write => "writing",
            Op::Stat => "looking up",
            Op::List => "listing",
            Op::Delete => "deleting",
            Op::Check => "checking",
        }
    }
}

impl Storage {
    /// Opens the repository storage at `location` (see the module docs for the forms).
    /// Makes no network call and creates nothing; use [`Storage::check_reachable`] to test
    /// the connection and [`Storage::create_root`] to create a filesystem repository.
    pub fn open(location: &str, options: &StorageOptions) -> Result<Storage> {
        let parsed = location::parse(location)?;
        let settings = Settings::from_options(options);
        let display = parsed.display.clone();
        let (backend, endpoint, ops) = match parsed.location {
            Location::Fs { root } => {
                (Backend::Fs, None, Ops::Fs { root, settings, built: Mutex::new(None) })
            }
            Location::S3 { bucket, prefix } => {
                let (op, endpoint) = build_s3(&display, &bucket, &prefix, options)?;
                (Backend::S3, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Azblob { container, prefix } => {
                let (op, endpoint) = backends::azblob(&display, &container, &prefix, options)?;
                (Backend::Azblob, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Gcs { bucket, prefix } => {
                let (op, endpoint) = backends::gcs(&display, &bucket, &prefix, options)?;
                (Backend::Gcs, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Webdav { endpoint, root, user } => {
                let op = backends::webdav(
                    &display,
                    &endpoint,
                    &root,
                    user.as_deref(),
                    parsed.password.as_deref(),
                )?;
                (Backend::Webdav, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Sftp { user, host, port, root } => {
                let (op, endpoint) = backends::sftp(&display, user.as_deref(), &host, port, &root)?;
                (Backend::Sftp, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
        };
        Ok(Storage { inner: Arc::new(Inner { display, backend, endpoint, ops }) })
    }

    /// An empty in-memory storage, for tests. Each call gives a new, separate store.
    pub fn memory() -> Storage {
        Storage {
            inner: Arc::new(Inner {
                display: "memory://".to_string(),
                backend: Backend::Memory,
                endpoint: None,
                ops: Ops::Ready(memory_operator()),
            }),
        }
    }

    /// The location for display: as given, with any password replaced by `***`.
    pub fn location(&self) -> &str {
        &self.inner.display
    }

    /// Creates the repository directory (and its parents) for a filesystem location; a
    /// no-op for object stores, whose "directories" need no creating.
    pub async fn create_root(&self) -> Result<()> {
        if let Ops::Fs { .. } = &self.inner.ops {
            self.fs_op(true).await?;
        }
        Ok(())
    }

    /// Reads a whole object. A missing object is `ErrorKind::NotFound`.
    pub async fn read(&self, path: &str) -> Result<Bytes> {
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(path));
        };
        let buf = op.read(path).await.map_err(|e| self.map_err(Op::Read, path, e))?;
        Ok(buf.to_bytes())
    }

    /// Reads the bytes `range` of an object. A range past the end of the object is
    /// `ErrorKind::Corrupt`: callers take ranges from the index, so the object is too short.
    pub async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end {
            return Err(Error::invalid_input(format!(
                "reading {path} in {}: invalid byte range {}..{}",
                self.inner.display, range.start, range.end
            )));
        }
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(path));
        };
        if range.start == range.end {
            // OpenDAL treats an empty range as "to the end"; still report a missing object.
            op.stat(path).await.map_err(|e| self.map_err(Op::Read, path, e))?;
            return Ok(Bytes::new());
        }
        let want = range.end - range.start;
        let buf = op
            .read_with(path)
            .range(range.clone())
            .await
            .map_err(|e| self.map_err(Op::Read, path, e))?;
        if buf.len() as u64 != want {
            return Err(Error::corrupt(format!(
                "{path} in {} is shorter than expected: asked for bytes {}..{}, got {} bytes",
                self.inner.display,
                range.start,
                range.end,
                buf.len()
            )));
        }
        Ok(buf.to_bytes())
    }

    /// Writes a whole object, replacing any existing one. Readers see the old object or the
    /// new one, never a part. Creates a filesystem repository's directory if missing.
    pub async fn write(&self, path: &str, data: Bytes) -> Result<()> {
        check_path(&self.inner.display, path)?;
        let Some(op) = self.op(true).await? else {
            return Err(self.missing_root(path));
        };
        op.write(path, data).await.map_err(|e| self.map_err(Op::Write, path, e))?;
        Ok(())
    }

    /// Writes an object that must not exist yet: `ErrorKind::AlreadyExists` if it does.
    ///
    /// Atomic on the filesystem (hard link of a complete temp file, which fails if the name
    /// is taken) and in memory. On object stores it sends a conditional PUT
    /// (`If-None-Match: *`), atomic on servers that honour it (AWS S3 since 2024, GCS,
    /// Azure); because some S3-compatible servers ignore that header, it also checks for the
    /// object first, which is only best effort: two writers racing on such a server can
    /// both succeed, the later one winning.
    pub async fn write_new(&self, path: &str, data: Bytes) -> Result<()> {
        check_path(&self.inner.display, path)?;
        if let Ops::Fs { .. } = &self.inner.ops {
            let fs = self.fs_op(true).await?.ok_or_else(|| self.missing_root(path))?;
            return self.fs_write_new(&fs.root, path, data).await;
        }
        let Some(op) = self.op(true).await? else {
            return Err(self.missing_root(path));
        };
        if op.exists(path).await.map_err(|e| self.map_err(Op::Stat, path, e))? {
            return Err(self.already_exists(path));
        }
        let result = if op.info().capability().write_with_if_not_exists {
            op.write_with(path, data).if_not_exists(true).await
        } else {
            op.write(path, data).await
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
                ) =>
            {
                Err(self.already_exists(path))
            }
            Err(e) => Err(self.map_err(Op::Write, path, e)),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        let Some(op) = self.op(false).await? else {
            return Ok(false);
        };
        op.exists(path).await.map_err(|e| self.map_err(Op::Stat, path, e))
    }

    /// The size of an object in bytes. A missing object is `ErrorKind::NotFound`.
    pub async fn size(&self, path: &str) -> Result<u64> {
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(path));
        };
        let meta = op.stat(path).await.map_err(|e| self.map_err(Op::Stat, path, e))?;
        Ok(meta.content_length())
    }

    /// All objects under `dir` (e.g. `"data/"`, or `""` for everything), recursively, files
    /// only, with paths relative to the repository root, sorted by path. A missing
    /// directory lists as empty.
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let Some(op) = self.op(false).await? else {
            return Ok(Vec::new());
        };
        // OpenDAL lists a directory only when the path ends with '/'.
        let dir = if dir.is_empty() || dir == "/" {
            "/".to_string()
        } else if dir.ends_with('/') {
            dir.to_string()
        } else {
            format!("{dir}/")
        };
        let entries = op
            .list_with(&dir)
            .recursive(true)
            .await
            .map_err(|e| self.map_err(Op::List, &dir, e))?;
        let tmp_prefix = format!("{FS_TMP_DIR}/");
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if !entry.metadata().mode().is_file() || entry.path().starts_with(&tmp_prefix) {
                continue;
            }
            let path = entry.path().trim_start_matches('/').to_string();
            let listed = entry.metadata().content_length();
            let size = if listed > 0 {
                listed
            } else {
                // Some services leave sizes out of listings (shown as 0): ask to be sure.
                op.stat(&path).await.map_err(|e| self.map_err(Op::Stat, &path, e))?.content_length()
            };
            out.push(ObjectInfo { path, size });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Deletes an object; deleting a missing object succeeds.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let Some(op) = self.op(false).await? else {
            return Ok(());
        };
        match op.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.map_err(Op::Delete, path, e)),
        }
    }

    /// One cheap call (a one-entry listing) that surfaces wrong credentials, a missing
    /// bucket or an unreachable server with a clear message. A filesystem location that
    /// does not exist is `ErrorKind::NotFound` (create it with [`Storage::create_root`]).
    pub async fn check_reachable(&self) -> Result<()> {
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(""));
        };
        let mut lister =
            op.lister_with("/").limit(1).await.map_err(|e| self.map_err(Op::Check, "", e))?;
        use futures::StreamExt;
        match lister.next().await {
            Some(Err(e)) => Err(self.map_err(Op::Check, "", e)),
            _ => Ok(()),
        }
    }

    /// The operator, building a filesystem one on demand. `None`: a filesystem repository
    /// directory that does not exist and `create` was false.
    async fn op(&self, create: bool) -> Result<Option<Operator>> {
        match &self.inner.ops {
            Ops::Ready(op) => Ok(Some(op.clone())),
            Ops::Fs { .. } => Ok(self.fs_op(create).await?.map(|f| f.op)),
        }
    }

    async fn fs_op(&self, create: bool) -> Result<Option<FsOp>> {
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
    async fn fs_write_new(&self, root: &Path, path: &str, data: Bytes) -> Result<()> {
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

    fn missing_root(&self, path: &str) -> Error {
        let what = if path.is_empty() { String::new() } else { format!("{path}: ") };
        Error::not_found(format!(
            "{what}repository location {} does not exist (no such directory)",
            self.inner.display
        ))
    }

    fn already_exists(&self, path: &str) -> Error {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("{path} already exists in {}", self.inner.display),
        )
    }

    /// Turns an OpenDAL error into one that names the location and object and says what to
    /// do. The OpenDAL error is kept as the source, not in the message: its context lists
    /// request details that are noise for users.
    fn map_err(&self, op: Op, path: &str, e: opendal::Error) -> Error {
        let loc = &self.inner.display;
        let backend = self.inner.backend;
        let object =
            if path.is_empty() || path == "/" { String::new() } else { format!(" {path}") };
        let what = format!("{}{object} in {loc}", op.verb());
        let detail = format!("{e:?}").to_ascii_lowercase();
        let (kind, message) = match e.kind() {
            // S3 reports a missing bucket as a configuration error; for qvault it means the
            // repository is not there.
            _ if detail.contains("nosuchbucket") || detail.contains("containernotfound") => (
                ErrorKind::NotFound,
                format!(
                    "{} says the bucket or container of {loc} does not exist (while {}{object}): \
                     create it first or check the name",
                    backend.name(),
                    op.verb()
                ),
            ),
            // A range read past the end of an object: the index promised bytes that are not
            // there, so the object is damaged or truncated.
            _ if detail.contains("too little data") => (
                ErrorKind::Corrupt,
                format!("{}is shorter than the requested range in {loc}", trail(path)),
            ),
            opendal::ErrorKind::NotFound => match op {
                Op::Check | Op::List if backend != Backend::Fs => (
                    ErrorKind::NotFound,
                    format!(
                        "{} says {loc} does not exist: create the bucket or container first",
                        backend.name()
                    ),
                ),
                _ => (ErrorKind::NotFound, format!("{}not found in {loc}", trail(path))),
            },
            opendal::ErrorKind::PermissionDenied => {
                let status = if detail.contains("403") { " (403)" } else { "" };
                (
                    ErrorKind::Storage,
                    format!(
                        "{} refused the credentials for {loc}{status} while {}{object}: {}",
                        backend.name(),
                        op.verb(),
                        backend.credentials_hint()
                    ),
                )
            }
            _ if is_connection_failure(&detail) => {
                let endpoint = self.inner.endpoint.as_deref().unwrap_or("the server");
                (
                    ErrorKind::Storage,
                    format!("cannot reach {endpoint} for {what}: is the server running?"),
                )
            }
            _ if detail.contains("credential") => (
                ErrorKind::Storage,
                format!(
                    "no usable credentials for {loc} while {}{object}: {}",
                    op.verb(),
                    backend.credentials_hint()
                ),
            ),
            _ if detail.contains("timeout") || detail.contains("timed out") => (
                ErrorKind::Storage,
                format!("{} timed out while {what}; retry, or raise the timeout", backend.name()),
            ),
            opendal::ErrorKind::RangeNotSatisfied => (
                ErrorKind::Corrupt,
                format!("{}is shorter than the requested range in {loc}", trail(path)),
            ),
            opendal::ErrorKind::RateLimited => (
                ErrorKind::Storage,
                format!(
                    "{} kept rate-limiting requests while {what}; retry later or lower the \
                     concurrency",
                    backend.name()
                ),
            ),
            other => (
                ErrorKind::Storage,
                format!("{} failed while {what}: {other}: {}", backend.name(), e.message()),
            ),
        };
        Error::new(kind, message).with_source(e)
    }
}

/// The memory service's builder has no failure path (it only normalises its root), so the
/// `Result` from `Operator::new` is always `Ok`.
#[allow(clippy::expect_used)]
fn memory_operator() -> Operator {
    Operator::new(opendal::services::Memory::default()).expect("the memory service always builds")
}

/// `"path: "` or nothing, to start a message about an object.
fn trail(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path} ")
    }
}

/// Whether an error (in lowercase Debug form, which includes the source chain) says the
/// server could not be connected to at all.
fn is_connection_failure(detail: &str) -> bool {
    detail.contains("connection refused")
        || detail.contains("tcp connect error")
        || detail.contains("error trying to connect")
        || detail.contains("dns error")
        || detail.contains("failed to lookup address")
        || detail.contains("no route to host")
}

/// Object paths come from qvault itself, but a path escaping the root must never be written.
fn check_path(display: &str, path: &str) -> Result<()> {
    let p = Path::new(path);
    let escapes = path.is_empty()
        || path.ends_with('/')
        || p.components().any(|c| !matches!(c, Component::Normal(_)));
    if escapes {
        return Err(Error::invalid_input(format!(
            "invalid object path {path:?} in {display}: expected a relative path like data/ab/cd"
        )));
    }
    Ok(())
}

/// A poisoned lock only means another thread panicked while caching an operator; the
/// cached value (an `Option<FsOp>`) is still consistent, so keep using it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// S3: endpoint, region and credentials from options, then the environment.
fn build_s3(
    display: &str,
    bucket: &str,
    prefix: &str,
    options: &StorageOptions,
) -> Result<(Operator, String)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let region = options.s3_region.clone().or_else(|| env("AWS_REGION")).unwrap_or_else(|| {
        // S3-compatible servers ignore the region but signatures need one.
        "us-east-1".to_string()
    });
    let endpoint = options.s3_endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
    let mut builder = opendal::services::S3::default()
        .bucket(bucket)
        .root(prefix)
        .region(&region)
        // Never query the EC2 instance metadata service: off EC2 it only adds a long
        // timeout before a "no credentials" error.
        .disable_ec2_metadata();
    if let Some(ep) = &endpoint {
        builder = builder.endpoint(ep.trim_end_matches('/'));
    }
    let key = options.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret = options.secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    if let (Some(key), Some(secret)) = (&key, &secret) {
        builder = builder.access_key_id(key).secret_access_key(secret);
    }
    let op = Operator::new(builder).map_err(|e| {
        Error::invalid_input(format!("cannot configure S3 for {display}: {}", e.message()))
            .with_source(e)
    })?;
    let shown = endpoint
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    Ok((op, shown))
}

/// Builders for backends behind cargo features; without the feature each returns an
/// error naming the feature.
mod backends {
    #[allow(unused_imports)]
    use super::{Error, Operator, Result, StorageOptions};

    #[allow(dead_code)]
    fn not_built(display: &str, what: &str, feature: &str) -> Error {
        Error::invalid_input(format!(
            "repository location {display}: {what} support is not in this build; rebuild \
             qvault with `cargo install qvault --features {feature}`"
        ))
    }

    #[allow(dead_code)]
    fn config_err(display: &str, what: &str, e: opendal::Error) -> Error {
        Error::invalid_input(format!("cannot configure {what} for {display}: {}", e.message()))
            .with_source(e)
    }

    #[allow(dead_code)]
    fn env(k: &str) -> Option<String> {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    }

    #[cfg(feature = "azure")]
    pub(super) fn azblob(
        display: &str,
        container: &str,
        prefix: &str,
        options: &StorageOptions,
    ) -> Result<(Operator, String)> {
        let account = options.access_key_id.clone().or_else(|| env("AZURE_STORAGE_ACCOUNT"));
        let key = options.secret_access_key.clone().or_else(|| env("AZURE_STORAGE_KEY"));
        let endpoint = env("AZURE_STORAGE_ENDPOINT")
            .or_else(|| account.as_ref().map(|a| format!("https://{a}.blob.core.windows.net")));
        let Some(endpoint) = endpoint else {
            return Err(Error::invalid_input(format!(
                "repository location {display}: set AZURE_STORAGE_ACCOUNT (and \
                 AZURE_STORAGE_KEY) or AZURE_STORAGE_ENDPOINT"
            )));
        };
        let mut b = opendal::services::Azblob::default()
            .container(container)
            .root(prefix)
            .endpoint(&endpoint);
        if let Some(a) = &account {
            b = b.account_name(a);
        }
        if let Some(k) = &key {
            b = b.account_key(k);
        }
        let op = Operator::new(b).map_err(|e| config_err(display, "Azure Blob Storage", e))?;
        Ok((op, endpoint))
    }

    #[cfg(not(feature = "azure"))]
    pub(super) fn azblob(
        display: &str,
        _: &str,
        _: &str,
        _: &StorageOptions,
    ) -> Result<(Operator, String)> {
        Err(not_built(display, "Azure Blob Storage", "azure"))
    }

    #[cfg(feature = "gcs")]
    pub(super) fn gcs(
        display: &str,
        bucket: &str,
        prefix: &str,
        _options: &StorageOptions,
    ) -> Result<(Operator, String)> {
        let mut b = opendal::services::Gcs::default().bucket(bucket).root(prefix);
        if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
            b = b.credential_path(&path);
        }
        let op = Operator::new(b).map_err(|e| config_err(display, "Google Cloud Storage", e))?;
        Ok((op, "https://storage.googleapis.com".to_string()))
    }

    #[cfg(not(feature = "gcs"))]
    pub(super) fn gcs(
        display: &str,
        _: &str,
        _: &str,
        _: &StorageOptions,
    ) -> Result<(Operator, String)> {
        Err(not_built(display, "Google Cloud Storage", "gcs"))
    }

    #[cfg(feature = "webdav")]
    pub(super) fn webdav(
        display: &str,
        endpoint: &str,
        root: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<Operator> {
        let mut b = opendal::services::Webdav::default().endpoint(endpoint).root(root);
        if let Some(u) = user {
            b = b.username(u);
        }
        if let Some(p) = password {
            b = b.password(p);
        }
        Operator::new(b).map_err(|e| config_err(display, "WebDAV", e))
    }

    #[cfg(not(feature = "webdav"))]
    pub(super) fn webdav(
        display: &str,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<Operator> {
        Err(not_built(display, "WebDAV", "webdav"))
    }

    #[cfg(feature = "sftp")]
    pub(super) fn sftp(
        display: &str,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        root: &str,
    ) -> Result<(Operator, String)> {
        let endpoint = match port {
            Some(p) => format!("ssh://{host}:{p}"),
            None => format!("ssh://{host}"),
        };
        let mut b = opendal::services::Sftp::default().endpoint(&endpoint).root(root);
        if let Some(u) = user {
            b = b.user(u);
        }
        let op = Operator::new(b).map_err(|e| config_err(display, "SFTP", e))?;
        Ok((op, endpoint))
    }

    #[cfg(not(feature = "sftp"))]
    pub(super) fn sftp(
        display: &str,
        _: Option<&str>,
        _: &str,
        _: Option<u16>,
        _: &str,
    ) -> Result<(Operator, String)> {
        Err(not_built(display, "SFTP", "sftp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_redacts_secrets() {
        let o = StorageOptions {
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("verysecret".into()),
            ..Default::default()
        };
        let d = format!("{o:?}");
        assert!(!d.contains("AKIAEXAMPLE") && !d.contains("verysecret"), "{d}");
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["", "../x", "/etc/passwd", "a/../../b", "dir/"] {
            assert_eq!(check_path("loc", p).unwrap_err().kind(), ErrorKind::InvalidInput, "{p}");
        }
        check_path("loc", "data/ab/cd").unwrap();
    }

    #[test]
    fn feature_gated_schemes_name_their_feature() {
        let cases = [
            ("azblob://c/p", "azure", cfg!(feature = "azure")),
            ("gcs://b/p", "gcs", cfg!(feature = "gcs")),
            ("webdav://h/p", "webdav", cfg!(feature = "webdav")),
            ("sftp://u@h/p", "sftp", cfg!(feature = "sftp")),
        ];
        for (loc, feature, enabled) in cases {
            if enabled {
                continue;
            }
            let e = Storage::open(loc, &StorageOptions::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains(&format!("--features {feature}")), "{}", e.message());
        }
    }
}
