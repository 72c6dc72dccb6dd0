//! Backup manifests: what one backup holds, stream by stream, chunk by chunk.
//!
//! ```text
//! object    = age file to the metadata recipient; backup id = BLAKE3(object bytes)
//! plaintext = "QVMF" ‖ u32 version (1 or 2) ‖ zstd(JSON of Manifest)
//! ```
//!
//! Version 1 lists every chunk id of a stream inline (`chunks`); version 2 stores the list
//! as list blocks ([`super::list`]) and the stream record holds only the top (`list`), with
//! `chunks` empty. The version follows the record: a manifest is version 2 exactly when its
//! streams carry `list`, and a reader refuses a mix.
//!
//! A backup has one or more streams from the start: a cluster backup holds one per shard.

use super::list::{ChunkList, MAX_LEVELS, READ_MAX_IDS};
use super::{put_header, ByteReader};
use crate::error::{Error, Result};
use crate::id::ChunkId;
use std::collections::BTreeMap;

/// The newest manifest version this build reads and writes.
pub const MANIFEST_VERSION: u32 = 2;
const MAGIC: &[u8; 4] = b"QVMF";
/// A manifest's JSON is bounded (ids are 64 bytes each): refuse to inflate more than this.
/// The output grows with the data, so this is a cap, not an up-front allocation.
const MAX_JSON: usize = 1 << 30;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// RFC 3339 UTC time the backup started.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub host: String,
    /// `qvault x.y.z` that wrote it.
    pub tool_version: String,
    pub streams: Vec<StreamRecord>,
    pub summary: BackupStats,
}

/// One archived byte stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamRecord {
    /// A name unique within the backup (file name, `stdin`, collection name, …).
    pub name: String,
    pub kind: StreamKind,
    pub size: u64,
    /// Hex SHA-256 of the whole stream: Qdrant's checksum format.
    pub sha256: String,
    /// Hex BLAKE3 of the whole stream.
    pub blake3: String,
    /// Chunk ids in stream order (version 1); empty in version 2, which has `list`.
    pub chunks: Vec<ChunkId>,
    /// Version 2: the top of the stream's list-block tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ChunkList>,
    /// Where the stream came from (e.g. Qdrant collection config and info), free-form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
    /// Set when the source left paths out (`backup --dir` could not read them): the backup
    /// is incomplete. Absent in complete streams and in manifests older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<Unreadable>,
}

/// The paths a stream's source left out: how many, and the first [`UNREADABLE_NAMED`] of
/// them with why, in walk order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    pub count: u64,
    pub paths: Vec<UnreadablePath>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnreadablePath {
    pub path: String,
    pub error: String,
}

/// How many left-out paths a stream record names: a tree with a million unreadable files
/// must not make a million-line manifest; the count is always whole.
pub const UNREADABLE_NAMED: usize = 100;

impl Unreadable {
    /// The record of `paths` (each with its error), `None` when there are none.
    pub fn of(paths: &[(std::path::PathBuf, String)]) -> Option<Unreadable> {
        if paths.is_empty() {
            return None;
        }
        let named = paths.iter().take(UNREADABLE_NAMED);
        Some(Unreadable {
            count: paths.len() as u64,
            paths: named
                .map(|(p, e)| UnreadablePath { path: p.display().to_string(), error: e.clone() })
                .collect(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    File,
    Stdin,
    Directory,
    QdrantCollection,
    QdrantShard,
    QdrantFullStorage,
}

/// Counts recorded at backup time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupStats {
    pub bytes_read: u64,
    /// Bytes this backup added to the repository (packs, index files; not the manifest).
    pub bytes_added: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub duration_ms: u64,
}

impl StreamRecord {
    /// Data chunks in the stream, repeats included.
    pub fn chunk_count(&self) -> u64 {
        self.list.as_ref().map_or(self.chunks.len() as u64, |l| l.chunks)
    }
}

impl Manifest {
    /// 2 when the streams carry list-block trees, 1 when they list their chunks inline.
    pub fn version(&self) -> u32 {
        if self.streams.iter().any(|s| s.list.is_some()) {
            2
        } else {
            1
        }
    }

    /// Every stream is of the manifest's version, and a version-2 top is within bounds.
    fn check(&self, version: u32, what: &str) -> Result<()> {
        for s in &self.streams {
            let ok = match (&s.list, version) {
                (None, 1) => true,
                (Some(l), 2) => {
                    s.chunks.is_empty()
                        && l.levels <= MAX_LEVELS
                        && l.top.len() <= READ_MAX_IDS
                        && (l.levels > 0 || l.top.len() as u64 == l.chunks)
                }
                _ => false,
            };
            if !ok {
                return Err(Error::corrupt(format!(
                    "{what} is a version-{version} manifest, but stream {:?} does not record \
                     its chunks the way that version does",
                    s.name
                )));
            }
        }
        Ok(())
    }

    pub fn total_size(&self) -> u64 {
        self.streams.iter().map(|s| s.size).sum()
    }

    /// Paths the backup's sources left out, over all streams: 0 for a complete backup.
    pub fn unreadable_count(&self) -> u64 {
        self.streams.iter().filter_map(|s| s.unreadable.as_ref()).map(|u| u.count).sum()
    }

    /// The stream named `wanted`, or the only stream when `wanted` is `None`.
    ///
    /// Errors: [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) naming the streams there
    /// are when no stream has that name; `InvalidInput` when `wanted` is `None` and the
    /// backup has several (the caller must choose, e.g. with `--stream`).
    pub fn stream(&self, wanted: Option<&str>) -> Result<&StreamRecord> {
        let names = || self.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        match (wanted, self.streams.as_slice()) {
            (Some(name), streams) => streams.iter().find(|s| s.name == name).ok_or_else(|| {
                Error::not_found(format!(
                    "the backup has no stream {name:?}; its streams: {}",
                    names()
                ))
            }),
            (None, [only]) => Ok(only),
            (None, streams) => Err(Error::invalid_input(format!(
                "the backup has {} streams: choose one with --stream ({})",
                streams.len(),
                names()
            ))),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let version = self.version();
        self.check(version, "the new manifest")?;
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::invalid_input(format!("cannot serialise manifest: {e}")))?;
        let compressed =
            zstd::bulk::compress(&json, 3).map_err(|e| Error::io("compressing manifest", e))?;
        let mut out = Vec::with_capacity(compressed.len() + 8);
        put_header(&mut out, MAGIC, version);
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<Manifest> {
        let mut r = ByteReader::new(bytes, what);
        let version = r.expect_header_in(MAGIC, &[1, MANIFEST_VERSION])?;
        let json = crate::codec::zstd_decompress_bounded(r.rest(), MAX_JSON)
            .map_err(|e| Error::corrupt(format!("{what} does not decompress: {e}")))?;
        let manifest: Manifest = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(format!("{what} is not a valid manifest: {e}")))?;
        manifest.check(version, what)?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest side of the over-allocation the `codec` fuzz target found:
    /// `zstd::bulk::decompress` could reserve up to `MAX_JSON` (1 GiB) for a few bytes of
    /// frame header that claim a large content size.
    #[test]
    fn manifest_frame_claiming_a_huge_size_does_not_allocate_it() {
        // A zstd frame header declaring a 1 GiB content size, then nothing.
        let mut plain = b"QVMF\x01\x00\x00\x00".to_vec();
        plain.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0x80, 0x00, 0x00, 0x00, 0x40]);
        let err = Manifest::decode(&plain, "backup 00").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    }
}
