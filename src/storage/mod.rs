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
//!
//! Rooms: `location` parses locations, `builders` makes each backend's operator, `errors`
//! turns OpenDAL errors into ours (and words retry warnings), `fs` holds the filesystem's
//! own directory handling and atomic writes.

mod builders;
mod errors;
mod faults;
mod fs;
mod location;

use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::Operator;

use crate::error::{Error, Result};
use errors::{Backend, Op, RetryNote};
use fs::{FsOp, Put, FS_TMP_DIR};
use location::Location;

pub use errors::BackendError;
pub use faults::FaultPlan;
pub use fs::{StaleTemporaries, STALE_TMP_AGE};
pub use location::check as check_location;

/// Default number of retries of a failed operation (with exponential backoff and jitter).
const DEFAULT_RETRIES: usize = 5;
/// Default limit for one whole operation.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit for one I/O step (a chunk of a read or write) within an operation.
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of operations in flight against the backend.
const DEFAULT_CONCURRENCY: usize = 16;

/// How to reach a backend. Values left `None` fall back to the environment, then to defaults.
#[derive(Clone, Default)]
pub struct StorageOptions {
    /// S3 endpoint URL (e.g. `http://127.0.0.1:9000`); default: `AWS_ENDPOINT_URL`, then AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region; default: `AWS_REGION`, then `us-east-1`.
    pub s3_region: Option<String>,
    /// S3 access key id; default: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// S3 secret access key; default: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Azure Blob endpoint; default: `AZURE_STORAGE_ENDPOINT`, then the account's.
    pub azure_endpoint: Option<String>,
    /// Azure storage account; default: `AZURE_STORAGE_ACCOUNT`.
    pub azure_account: Option<String>,
    /// Azure storage account key; default: `AZURE_STORAGE_KEY`.
    pub azure_key: Option<String>,
    /// Google service-account file; default: `GOOGLE_APPLICATION_CREDENTIALS`.
    pub gcs_credential_file: Option<String>,
    /// WebDAV password when the location has none (`webdav://user@host/…`).
    pub webdav_password: Option<String>,
    /// Limit for one whole operation (default 60 s).
    pub timeout: Option<Duration>,
    /// Limit for one I/O step inside an operation (default 30 s).
    pub io_timeout: Option<Duration>,
    /// Retries of a failed operation (default 5; a filesystem repository never retries:
    /// see `Settings::apply_local`).
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
            .field("azure_endpoint", &self.azure_endpoint)
            .field("azure_account", &self.azure_account)
            .field("azure_key", &redacted(&self.azure_key))
            .field("gcs_credential_file", &self.gcs_credential_file)
            .field("webdav_password", &redacted(&self.webdav_password))
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
    /// Test-only fault injection ([`Storage::memory_with_faults`]); `None` in real use.
    faults: Option<faults::Faults>,
}

enum Ops {
    /// Built at `open`.
    Ready(Operator),
    /// A filesystem repository. OpenDAL's fs builder creates its root directory, so the
    /// operator is built only once the directory exists (or a write asks for it).
    Fs { root: PathBuf, settings: Settings, built: Mutex<Option<FsOp>> },
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
            .layer(
                RetryLayer::new().with_max_times(self.retries).with_jitter().with_notify(RetryNote),
            )
            .layer(ConcurrentLimitLayer::new(self.concurrency))
    }

    /// [`Settings::apply`] without the retries, for a filesystem repository. OpenDAL marks
    /// every I/O error other than not-found, permission-denied, already-exists and
    /// unsupported as temporary, so a full disk (ENOSPC) or a read-only mount (EROFS) was
    /// retried with backoff for ~50 s before the command failed. Local filesystem errors do
    /// not heal by waiting, and a network filesystem's client retries below us (an NFS hard
    /// mount blocks until its server answers), so one attempt is the honest answer.
    fn apply_local(self, op: Operator) -> Operator {
        op.layer(TimeoutLayer::new().with_timeout(self.timeout).with_io_timeout(self.io_timeout))
            .layer(ConcurrentLimitLayer::new(self.concurrency))
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").field("location", &self.inner.display).finish()
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
                let (op, endpoint) = builders::s3(&display, &bucket, &prefix, options)?;
                (Backend::S3, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Azblob { container, prefix } => {
                let (op, endpoint) = builders::azblob(&display, &container, &prefix, options)?;
                (Backend::Azblob, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Gcs { bucket, prefix } => {
                let (op, endpoint) = builders::gcs(&display, &bucket, &prefix, options)?;
                (Backend::Gcs, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Webdav { endpoint, root, user } => {
                let op = builders::webdav(
                    &display,
                    &endpoint,
                    &root,
                    user.as_deref(),
                    // A password written in the location is the most specific one.
                    parsed.password.as_deref().or(options.webdav_password.as_deref()),
                )?;
                (Backend::Webdav, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
            Location::Sftp { user, host, port, root } => {
                let (op, endpoint) = builders::sftp(&display, user.as_deref(), &host, port, &root)?;
                (Backend::Sftp, Some(endpoint), Ops::Ready(settings.apply(op)))
            }
        };
        Ok(Storage { inner: Arc::new(Inner { display, backend, endpoint, ops, faults: None }) })
    }

    /// An empty in-memory storage, for tests. Each call gives a new, separate store.
    pub fn memory() -> Storage {
        Storage {
            inner: Arc::new(Inner {
                display: "memory://".to_string(),
                backend: Backend::Memory,
                endpoint: None,
                ops: Ops::Ready(memory_operator()),
                faults: None,
            }),
        }
    }

    /// For fault-injection tests: an in-memory storage whose requests fail, stall or lose
    /// their answer as `plan` says, and a fault-free handle on the same objects (to check
    /// afterwards what really was stored).
    #[doc(hidden)]
    pub fn memory_with_faults(plan: FaultPlan) -> (Storage, Storage) {
        let op = memory_operator();
        let make = |faults| Storage {
            inner: Arc::new(Inner {
                display: "memory://".to_string(),
                backend: Backend::Memory,
                endpoint: None,
                ops: Ops::Ready(op.clone()),
                faults,
            }),
        };
        (make(Some(faults::Faults::new(plan))), make(None))
    }

    /// Applies an injected fault to one request: `Err` for a failure, `Ok(true)` when the
    /// request must run and then report its answer lost.
    async fn inject(&self, op: &'static str, path: &str) -> Result<bool> {
        let Some(f) = &self.inner.faults else { return Ok(false) };
        match f.next(op, path).await {
            faults::Fault::None => Ok(false),
            faults::Fault::Fail => Err(faults::injected(&self.inner.display, op, path, false)),
            faults::Fault::Cut => Ok(true),
        }
    }

    fn lost(&self, cut: bool, op: &str, path: &str) -> Result<()> {
        if cut {
            return Err(faults::injected(&self.inner.display, op, path, true));
        }
        Ok(())
    }

    /// The location for display: as given, with any password replaced by `***`.
    pub fn location(&self) -> &str {
        &self.inner.display
    }

    /// The directory of a filesystem location; `None` for object stores.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        match &self.inner.ops {
            Ops::Fs { root, .. } => Some(root),
            _ => None,
        }
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
        self.inject("read", path).await?;
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(path));
        };
        let buf = op.read(path).await.map_err(|e| self.map_err(Op::Read, path, e))?;
        Ok(buf.to_bytes())
    }

    /// Reads the bytes `range` of an object. A range past the end of the object is
    /// `ErrorKind::Corrupt`: callers take ranges from the index, so the object is too short.
    pub async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        self.inject("read", path).await?;
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
        self.forget_cached(path, range.end).await;
        Ok(buf.to_bytes())
    }

    /// Writes a whole object, replacing any existing one. Readers see the old object or the
    /// new one, never a part. Creates a filesystem repository's directory if missing.
    pub async fn write(&self, path: &str, data: Bytes) -> Result<()> {
        check_path(&self.inner.display, path)?;
        let cut = self.inject("write", path).await?;
        if let Ops::Fs { .. } = &self.inner.ops {
            let fs = self.fs_op(true).await?.ok_or_else(|| self.missing_root(path))?;
            self.fs_put(&fs.root, path, data, Put::Replace).await?;
            return self.lost(cut, "write", path);
        }
        let Some(op) = self.op(true).await? else {
            return Err(self.missing_root(path));
        };
        op.write(path, data).await.map_err(|e| self.map_err(Op::Write, path, e))?;
        self.lost(cut, "write", path)
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
        let cut = self.inject("write", path).await?;
        self.write_new_once(path, data).await?;
        self.lost(cut, "write", path)
    }

    async fn write_new_once(&self, path: &str, data: Bytes) -> Result<()> {
        check_path(&self.inner.display, path)?;
        if let Ops::Fs { .. } = &self.inner.ops {
            let fs = self.fs_op(true).await?.ok_or_else(|| self.missing_root(path))?;
            return self.fs_put(&fs.root, path, data, Put::New).await;
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
        self.inject("stat", path).await?;
        let Some(op) = self.op(false).await? else {
            return Ok(false);
        };
        op.exists(path).await.map_err(|e| self.map_err(Op::Stat, path, e))
    }

    /// The size of an object in bytes. A missing object is `ErrorKind::NotFound`.
    pub async fn size(&self, path: &str) -> Result<u64> {
        self.inject("stat", path).await?;
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(path));
        };
        let meta = op.stat(path).await.map_err(|e| self.map_err(Op::Stat, path, e))?;
        Ok(meta.content_length())
    }

    /// When the storage last modified an object, by the storage's own clock; `None` when
    /// the backend does not say. A missing object is `ErrorKind::NotFound`.
    pub async fn modified(&self, path: &str) -> Result<Option<std::time::SystemTime>> {
        let Some(op) = self.op(false).await? else {
            return Err(self.missing_root(path));
        };
        let meta = op.stat(path).await.map_err(|e| self.map_err(Op::Stat, path, e))?;
        Ok(meta.last_modified().map(std::time::SystemTime::from))
    }

    /// All objects under `dir` (e.g. `"data/"`, or `""` for everything), recursively, files
    /// only, with paths relative to the repository root, sorted by path. A missing
    /// directory lists as empty.
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.inject("list", dir).await?;
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
        let cut = self.inject("delete", path).await?;
        self.delete_once(path).await?;
        self.lost(cut, "delete", path)
    }

    async fn delete_once(&self, path: &str) -> Result<()> {
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
}

/// The memory service's builder has no failure path (it only normalises its root), so the
/// `Result` from `Operator::new` is always `Ok`.
#[allow(clippy::expect_used)]
fn memory_operator() -> Operator {
    Operator::new(opendal::services::Memory::default()).expect("the memory service always builds")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
