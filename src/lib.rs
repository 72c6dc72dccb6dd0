//! qvault: encrypted, deduplicated backups of Qdrant snapshots on any storage backend.
//!
//! # Layout: the data path in module names
//!
//! ```text
//! backup:  backup::source ─► chunker ─► backup::chunks (keyed id, dedup against index,
//!          codec) ─► backup::packer (format::pack, age) ─► backup::upload (storage,
//!          index files) ─► manifest (format::manifest), last
//! restore: restore::plan (RestorePlan: chunk → pack pieces, from index) ─► restore::fetch
//!          (range reads) ─► restore::decode (age, codec, id check) ─► restore::execute
//!          (ordered writer, whole-stream hashes) ─► restore::target / qdrant::restore
//! ```
//!
//! Around them: [`repo`] opens a repository (config, keys, version gate) and owns the
//! [`storage`] and the [`index`] (the SQLite local index; [`index::sync`] keeps it in step
//! with storage); [`format`](mod@format) is the on-disk contract (pure, no I/O; `docs/design.md`);
//! [`verify`], [`repair`], [`retention`] (forget) and [`refs`] (what a backup references)
//! work on whole repositories; [`qdrant`] talks to Qdrant. The CLI (`src/cli/`) is glue
//! over these. `docs/architecture.md` says where everything lives and why.
//!
//! # Example
//!
//! Create a repository, back up a stream and restore it, all in memory:
//!
//! ```
//! use qvault::backup::{backup, BackupOptions, StreamSource};
//! use qvault::format::manifest::StreamKind;
//! use qvault::repo::{Cache, Credentials, InitOptions, Repository};
//! use qvault::restore::{restore_stream, RestoreOptions};
//! use qvault::storage::Storage;
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> qvault::Result<()> {
//! let storage = Storage::memory();
//! let identity = age::x25519::Identity::generate();
//! let options = InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
//! Repository::init(storage.clone(), options, &Cache::InMemory).await?;
//!
//! let credentials = Credentials { identities: vec![identity], key: None };
//! let repo = Repository::open(storage, credentials, &Cache::InMemory).await?;
//! let data = b"a Qdrant snapshot, or any stream".to_vec();
//! let source = StreamSource {
//!     name: "example".into(),
//!     kind: StreamKind::File,
//!     reader: Box::new(std::io::Cursor::new(data.clone())),
//!     source: None,
//!     expected_sha256: None,
//!     left_out: None,
//! };
//! let options = BackupOptions { allow_empty: false, ..Default::default() };
//! let done = backup(&repo, vec![source], &options, Default::default()).await?;
//!
//! let stream = done.manifest.stream(None)?;
//! let (restored, _summary) =
//!     restore_stream(&repo, done.id, stream, Vec::new(), &RestoreOptions::default()).await?;
//! assert_eq!(restored, data);
//! # Ok(())
//! # }
//! ```

pub mod alloc;
pub mod backup;
pub mod check;
pub mod chunker;
pub mod codec;
pub mod copy;
pub mod crypto;
pub(crate) mod digest;
pub mod dirtar;
pub mod error;
pub mod format;
pub mod held;
pub mod id;
pub mod index;
pub mod oplog;
mod partial;
pub mod prune;
pub mod qdrant;
pub mod redact;
pub mod refs;
pub mod repair;
pub mod repo;
pub mod report;
pub mod restore;
pub mod restore_test;
pub mod retention;
pub mod stats;
pub mod storage;
pub mod trust;
pub mod verify;

pub use backup::{backup, BackupOptions, BackupSummary, StreamSource};
pub use error::{Error, ErrorKind, Result};
pub use format::manifest::{Manifest, StreamKind, StreamRecord};
pub use id::{BackupId, ChunkId, IndexId, PackId, RepositoryId};
pub use repo::{Cache, Credentials, InitOptions, Repository};
pub use restore::{restore_stream, RestoreOptions, RestorePlan, RestoreSummary};
pub use storage::Storage;
