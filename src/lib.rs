//! qvault: encrypted, deduplicated backups of Qdrant snapshots on any storage backend.

pub mod error;
pub mod id;
pub mod synth;

pub use error::{Error, ErrorKind, Result};
pub use id::{BackupId, ChunkId, IndexId, PackId, RepositoryId};
