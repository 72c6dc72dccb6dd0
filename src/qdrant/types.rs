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
                    .map(|(k, v)| (k.clone(), without_nulls(v)))
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
    /// `None` when a snapshot with these (backed-up) params may be recovered into an
    /// existing collection with `target`'s, else what differs.
    ///
    /// Qdrant's own rule (v1.18.3 to v1.19, `recover_snapshot_impl` in
    /// `lib/storage/src/content_manager/snapshots/recover.rs`): the dense `vectors` config
    /// equal (`VectorsConfig`'s `PartialEq`: every field of every vector) and the same
    /// `shard_number`. Nothing else is compared: sparse vectors are not, and
    /// `CollectionParams::check_compatible` (`lib/collection/src/config.rs`), not called
    /// there, ignores them too ("Sets may differ via named vector CRUD"). After recovery the
    /// collection keeps its own config (captured in `real-qdrant/more`, group 8) and Qdrant
    /// adds to the segments each vector the collection has and they lack
    /// (`update_all_vector_names` in `lib/segment/src/segment/vector_name_ops.rs`, the
    /// "Segment is missing vector" warning of group 2), never removing one.
    ///
    /// qvault refuses one case Qdrant accepts: a sparse vector the backup has and the target
    /// lacks. Its recovered data would stay in the segments under a name the collection
    /// does not know, where no query reaches it. A sparse vector present on both sides
    /// with other params (index, modifier) is accepted, as Qdrant does; the target's apply.
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
        let names = |v: &Option<Value>| -> Vec<String> {
            v.as_ref()
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let theirs = names(&target.sparse_vectors);
        let missing: Vec<String> =
            names(&self.sparse_vectors).into_iter().filter(|n| !theirs.contains(n)).collect();
        if !missing.is_empty() {
            return Some(format!(
                "sparse vector(s) `{}` backed up but missing from the existing collection: \
                 Qdrant would recover their data where no query can reach it",
                missing.join("`, `")
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> CollectionParams {
        serde_json::from_value(v).unwrap()
    }

    /// Qdrant compares dense vectors and shard_number only; qvault adds the missing sparse
    /// vector (its data would be unreachable) and accepts other sparse params.
    #[test]
    fn sparse_vectors_are_refused_only_when_the_target_lacks_one() {
        let dense = json!({"size": 4, "distance": "Cosine"});
        let backup = params(json!({"vectors": dense, "sparse_vectors": {"sp": {}}}));
        let same = params(json!({"vectors": dense, "sparse_vectors": {"sp": {}}}));
        let other_params = params(json!({"vectors": dense,
            "sparse_vectors": {"sp": {"modifier": "idf", "index": {"on_disk": true}}}}));
        let extra = params(json!({"vectors": dense, "sparse_vectors": {"sp": {}, "more": {}}}));
        let none = params(json!({"vectors": dense}));
        assert_eq!(backup.incompatibility(&same), None);
        assert_eq!(backup.incompatibility(&other_params), None);
        assert_eq!(backup.incompatibility(&extra), None);
        let refused = backup.incompatibility(&none).unwrap();
        assert!(refused.starts_with("sparse vector(s) `sp` backed up but missing"), "{refused}");
        assert_eq!(none.incompatibility(&extra), None, "extra sparse vectors on the target");
    }

    #[test]
    fn dense_vector_params_compare_nested_fields_with_nulls_as_unset() {
        let a = params(json!({"vectors": {"size": 4, "distance": "Dot",
            "hnsw_config": {"m": 32, "ef_construct": null}}}));
        let b =
            params(json!({"vectors": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 32}}}));
        let c =
            params(json!({"vectors": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 16}}}));
        assert_eq!(a.incompatibility(&b), None);
        assert!(a.incompatibility(&c).unwrap().starts_with("vectors differ"));
    }
}
