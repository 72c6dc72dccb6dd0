//! qvault: encrypted, deduplicated backups of Qdrant snapshots on any storage backend.

pub mod alloc;
pub mod backup;
pub mod chunker;
pub mod codec;
pub mod crypto;
pub mod digest;
pub mod dirtar;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod prune;
pub mod qdrant;
pub(crate) mod redact;
pub mod refs;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod stats;
pub mod storage;
pub mod synth;
pub mod trust;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
pub use id::{BackupId, ChunkId, IndexId, PackId, RepositoryId};
