//! Serde types for the parts of Qdrant's REST answers qvault reads.
//!
//! Only the fields qvault relies on are typed; everything else is kept as raw JSON
//! (`CollectionInfo::raw`) so a backup records the collection exactly as Qdrant reported it,
//! including fields newer Qdrant versions add.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /`: the server's name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    #[serde(default)]
    pub title: String,
    pub version: String,
    #[serde(default)]
    pub commit: Option<String>,
}

/// An alias as `GET /aliases` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasDescription {
    pub alias_name: String,
    pub collection_name: String,
}

/// A snapshot as Qdrant lists it (`SnapshotDescription`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDescription {
    /// Chosen by the server: `{collection}-{peer_id}-{YYYY-MM-DD-HH-MM-SS}.snapshot`,
    /// `{collection}-shard-{id}-{…}.snapshot` or `full-snapshot-{…}.snapshot`.
    pub name: String,
    /// `YYYY-MM-DDTHH:MM:SS`; null on file systems without a birth time.
    #[serde(default)]
    pub creation_time: Option<String>,
    pub size: u64,
    /// SHA-256 of the file, lowercase hex; null when Qdrant keeps snapshots on S3 and absent
    /// for files uploaded by upload-recover.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// Which snapshot family a call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SnapshotScope {
    /// `/collections/{c}/snapshots`
    Collection(String),
    /// `/collections/{c}/shards/{id}/snapshots` (the shard must be local to the node)
    Shard { collection: String, shard_id: u32 },
    /// `/snapshots` (full storage; Qdrant has no REST restore for these)
    FullStorage,
}

impl SnapshotScope {
    pub fn collection(name: impl Into<String>) -> Self {
        SnapshotScope::Collection(name.into())
    }
    pub fn shard(collection: impl Into<String>, shard_id: u32) -> Self {
        SnapshotScope::Shard { collection: collection.into(), shard_id }
    }
    /// The collection the scope belongs to, if any.
    pub fn collection_name(&self) -> Option<&str> {
        match self {
            SnapshotScope::Collection(c) | SnapshotScope::Shard { collection: c, .. } => Some(c),
            SnapshotScope::FullStorage => None,
        }
    }
}

impl fmt::Display for SnapshotScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotScope::Collection(c) => write!(f, "collection `{c}`"),
            SnapshotScope::Shard { collection, shard_id } => {
                write!(f, "shard {shard_id} of collection `{collection}`")
            }
            SnapshotScope::FullStorage => f.write_str("full storage"),
        }
    }
}

/// `priority` of a recovery: whose data wins when the snapshot and the cluster disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotPriority {
    /// The snapshot's data wins (Qdrant's default since v1.10).
    #[default]
    Snapshot,
    /// The cluster's existing data wins.
    Replica,
    /// No synchronisation (advanced; Qdrant documents it for manual recovery).
    NoSync,
}

impl SnapshotPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotPriority::Snapshot => "snapshot",
            SnapshotPriority::Replica => "replica",
            SnapshotPriority::NoSync => "no_sync",
        }
    }
}

impl std::str::FromStr for SnapshotPriority {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "snapshot" => Ok(SnapshotPriority::Snapshot),
            "replica" => Ok(SnapshotPriority::Replica),
            "no_sync" => Ok(SnapshotPriority::NoSync),
            other => Err(crate::Error::invalid_input(format!(
                "unknown snapshot priority `{other}`: use snapshot, replica or no_sync"
            ))),
        }
    }
}

/// Parameters of one dense vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorParams {
    pub size: u64,
    /// `Cosine`, `Euclid`, `Dot` or `Manhattan`.
    pub distance: String,
    /// `on_disk`, `datatype`, `hnsw_config`, `multivector_config`, … as Qdrant sent them.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `config.params.vectors`: one unnamed vector, or a map of named vectors.
///
/// A collection created with the wrong body (`{"vector_size": …}`) reports `{}`, which
/// parses as `Named` with no entries: no dense vectors at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorsConfig {
    Single(VectorParams),
    Named(BTreeMap<String, VectorParams>),
}

impl VectorsConfig {
    /// True when the collection has no dense vectors (e.g. created with a wrong body).
    pub fn is_empty(&self) -> bool {
        matches!(self, VectorsConfig::Named(m) if m.is_empty())
    }

    /// Whether two configs describe the same vectors (size and distance of each vector).
    pub fn same_shape(&self, other: &VectorsConfig) -> bool {
        fn key(p: &VectorParams) -> (u64, &str) {
            (p.size, p.distance.as_str())
        }
        match (self, other) {
            (VectorsConfig::Single(a), VectorsConfig::Single(b)) => key(a) == key(b),
            (VectorsConfig::Named(a), VectorsConfig::Named(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((na, pa), (nb, pb))| na == nb && key(pa) == key(pb))
            }
            _ => false,
        }
    }

    /// Qdrant's own rule for recovering a snapshot into an existing collection: the vectors
    /// configs must be equal in every field (`on_disk`, `datatype`, `multivector_config`,
    /// vector-level `hnsw_config` and `quantization_config` included), and a single vector
    /// differs from a map holding it under `""` (all captured as refused in
    /// `real-qdrant/more`, group 2). Absent and `null` fields are the same thing.
    pub fn recoverable_into(&self, target: &VectorsConfig) -> bool {
        match (self, target) {
            (VectorsConfig::Single(a), VectorsConfig::Single(b)) => a.same_params(b),
            (VectorsConfig::Named(a), VectorsConfig::Named(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((na, pa), (nb, pb))| na == nb && pa.same_params(pb))
            }
            _ => false,
        }
    }
}

impl VectorParams {
    /// Equal in every field Qdrant reported, `null` counting as absent.
    pub fn same_params(&self, other: &VectorParams) -> bool {
        self.size == other.size && self.distance == other.distance && {
            let set = |m: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            set(&self.other) == set(&other.other)
        }
    }
}

impl Default for VectorsConfig {
    fn default() -> Self {
        VectorsConfig::Named(BTreeMap::new())
    }
}

/// `config.params` of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionParams {
    #[serde(default)]
    pub vectors: VectorsConfig,
    #[serde(default = "one")]
    pub shard_number: u32,
    #[serde(default)]
    pub replication_factor: Option<u32>,
    #[serde(default)]
    pub sparse_vectors: Option<Value>,
}

impl CollectionParams {
    /// `None` when Qdrant accepts a snapshot with these (backed-up) params into an existing
    /// collection with `target`'s, else what differs. Qdrant compares the dense vectors
    /// exactly and the shard number; the captures show it accepts a target with extra
    /// sparse vectors, so only the backup's sparse vectors must exist in the target with
    /// the same params (a missing one is refused here: not proven safe).
    pub fn incompatibility(&self, target: &CollectionParams) -> Option<String> {
        if !self.vectors.recoverable_into(&target.vectors) {
            return Some(format!(
                "vectors differ: existing {}, backed up {}",
                json(&target.vectors),
                json(&self.vectors)
            ));
        }
        if self.shard_number != target.shard_number {
            return Some(format!(
                "shard_number differs: existing {}, backed up {}",
                target.shard_number, self.shard_number
            ));
        }
        let sparse = |v: &Option<Value>| -> BTreeMap<String, Value> {
            v.as_ref()
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), without_nulls(v))).collect())
                .unwrap_or_default()
        };
        let (ours, theirs) = (sparse(&self.sparse_vectors), sparse(&target.sparse_vectors));
        for (name, params) in &ours {
            if theirs.get(name) != Some(params) {
                return Some(format!(
                    "sparse vector `{name}` differs: existing {}, backed up {params}",
                    theirs.get(name).map_or_else(|| "none".to_string(), Value::to_string)
                ));
            }
        }
        None
    }
}

/// `v` with `null` object fields left out, recursively (Qdrant omits what is unset).
pub(crate) fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A config as compact JSON, for messages.
fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

fn one() -> u32 {
    1
}

/// `GET /collections/{c}`: typed essentials plus the full raw `result`.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// `green`, `yellow`, `grey` or `red`.
    pub status: Option<String>,
    /// Approximate in Qdrant (it counts points in segments); may be absent on old servers.
    pub points_count: Option<u64>,
    pub segments_count: Option<u64>,
    pub params: CollectionParams,
    /// `result.config` exactly as Qdrant sent it (params, hnsw, optimizer, wal, quantization).
    pub config: Value,
    /// The whole `result` object exactly as Qdrant sent it.
    pub raw: Value,
}

/// `GET /collections/{c}/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionClusterInfo {
    pub peer_id: u64,
    pub shard_count: u32,
    #[serde(default)]
    pub local_shards: Vec<LocalShardInfo>,
    #[serde(default)]
    pub remote_shards: Vec<RemoteShardInfo>,
    #[serde(default)]
    pub shard_transfers: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalShardInfo {
    pub shard_id: u32,
    #[serde(default)]
    pub shard_key: Option<Value>,
    #[serde(default)]
    pub points_count: u64,
    /// `Active`, `Dead`, `Partial`, `Initializing`, `Listener`, …
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteShardInfo {
    pub shard_id: u32,
    #[serde(default)]
    pub shard_key: Option<Value>,
    pub peer_id: u64,
    pub state: String,
}
