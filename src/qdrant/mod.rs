//! Qdrant's REST API, as qvault uses it: collections, snapshots (collection, shard and full
//! storage), streaming download, streaming upload-recover and URL recover.
//!
//! The contract (paths, verbs, envelopes, status codes, plain-text error bodies) is the one
//! Qdrant really serves, documented in the project's `qdrant-api.md` and checked against
//! captures of a real server.

pub mod aliases;
pub mod backup;
mod client;
pub mod cluster;
mod create;
pub mod drill;
pub mod files;
mod pipe;
pub mod provenance;
pub mod restore;
pub mod sample;
pub mod serve;
pub mod shard_keys;
pub mod streams;
mod types;

pub use client::{
    http_status, PointId, PointRecord, QdrantClient, QdrantOptions, RecoverOptions, RecoverOutcome,
    ScoredPoint, ScrollPage, SnapshotDownload,
};
pub use provenance::QdrantProvenance;
pub use types::{
    AliasDescription, CollectionClusterInfo, CollectionInfo, CollectionParams, LocalShardInfo,
    RemoteShardInfo, ServerVersion, SnapshotDescription, SnapshotPriority, SnapshotScope,
    VectorParams, VectorsConfig,
};
