//! Where a Qdrant stream came from: the manifest's `streams[].source` of a Qdrant backup,
//! written by `qdrant::backup` and read back by `qdrant::restore`.
//!
//! Guarantees: the JSON is the shape qvault has always written, key for key: optional
//! facts are left out when unknown (`shard_id`, `exact_points_count`, …), while the fields
//! that were always written keep their `null` (`qdrant.commit`, `points_count`, the
//! snapshot's `checksum` and `creation_time`); `tests/fixtures/provenance/` holds sources
//! written before this type existed and must round-trip byte for byte. Qdrant's own
//! documents (`config`, `collection_info`, `cluster`) are kept as Qdrant sent them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::cluster::Topology;
use super::sample::PointSample;
use super::shard_keys::ShardKey;
use super::types::{CollectionParams, SnapshotDescription};
use crate::error::{Error, ErrorKind, Result};

/// The Qdrant facts of one stream.
///
/// Collection streams carry `collection`, `config`, `collection_info`, `cluster`,
/// `points_count` and (when every shard was local) `exact_points_count`; shard streams the
/// same with `shard_id` and the shard's `points_count` instead of an exact count; full-storage
/// streams carry `collections` instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QdrantProvenance {
    pub qdrant: NodeProvenance,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The collection's `config` from collection info.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub config: Option<Value>,
    /// Qdrant's whole collection info answer.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub collection_info: Option<Value>,
    /// The collection's cluster layout on the node, as Qdrant reported it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub cluster: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<u32>,
    /// Collection info's estimate (for a shard: cluster info's count of it). Written for
    /// collections and shards, as `null` when Qdrant gave none; absent for full storage.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub points_count: Option<Option<u64>>,
    /// Qdrant's exact count, taken just before the snapshot was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_points_count: Option<u64>,
    /// Qdrant's exact count again, taken just after the snapshot was made. With clients
    /// writing, the snapshot holds a count between the two. Absent when it equals
    /// `exact_points_count` (no writes seen) and in older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_points_count_after: Option<u64>,
    /// The aliases that pointed at the collection at backup; absent when none did (and in
    /// older backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// The alias the backup was asked for (`--collection ALIAS`), resolved to `collection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_as: Option<String>,
    /// Custom sharding: each shard key and its shard ids, in creation order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_keys: Option<Vec<ShardKey>>,
    /// A shard read by a cluster backup (`--qdrant` given per node, or `--streamed`): the
    /// collection's shards and replicas as the nodes reported them when the backup started.
    /// Absent in other backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// When this shard was read (RFC 3339, UTC). The shards of one backup are read one
    /// after another: Qdrant gives no consistency across shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    /// How the shard was read: `streamed` (nothing stored on the node) or `snapshot`
    /// (created, downloaded, deleted, where the streamed call was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_via: Option<ReadVia>,
    /// Cluster backups: Qdrant's exact count of the whole collection, taken right before
    /// this shard was read. Restore compares the restored collection's exact count with the
    /// range of these over the backup's shards (one value when nothing was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_exact_count: Option<u64>,
    /// Shards of the collection this backup does not hold (`--allow-partial`: no reachable
    /// Active replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_shards: Option<Vec<u32>>,
    /// Full storage: every collection on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<BTreeMap<String, StoredCollection>>,
    /// Absent only while the backup has not made the snapshot yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProvenance>,
    /// Sampled point hashes and probe queries for the restore test; absent with
    /// `--no-sample`, for shards and full storage, and in older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<PointSample>,
}

/// How a cluster backup read a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadVia {
    /// `GET …/shards/{id}/snapshot`: built while sent, nothing stored on the node.
    Streamed,
    /// A shard snapshot created on the node, downloaded and deleted.
    Snapshot,
}

/// The node a snapshot came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProvenance {
    /// The node's URL, password redacted.
    pub url: String,
    pub version: String,
    pub commit: Option<String>,
}

/// One collection of a full-storage snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredCollection {
    pub config: Value,
    pub points_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_points_count: Option<u64>,
}

/// The snapshot a stream holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProvenance {
    pub name: String,
    pub size: u64,
    /// Qdrant's SHA-256 (hex) of the file, when it reported one.
    pub checksum: Option<String>,
    pub creation_time: Option<String>,
    /// `false` for an existing snapshot archived with `--snapshot NAME`.
    pub created_by_qvault: bool,
}

impl SnapshotProvenance {
    pub fn new(snapshot: &SnapshotDescription, created_by_qvault: bool) -> Self {
        SnapshotProvenance {
            name: snapshot.name.clone(),
            size: snapshot.size,
            checksum: snapshot.checksum.clone(),
            creation_time: snapshot.creation_time.clone(),
            created_by_qvault,
        }
    }
}

impl QdrantProvenance {
    /// The node's facts only; the backup adds the scope's and the snapshot's.
    pub fn new(qdrant: NodeProvenance) -> Self {
        QdrantProvenance {
            qdrant,
            collection: None,
            config: None,
            collection_info: None,
            cluster: None,
            shard_id: None,
            points_count: None,
            exact_points_count: None,
            exact_points_count_after: None,
            aliases: None,
            requested_as: None,
            shard_keys: None,
            topology: None,
            read_at: None,
            read_via: None,
            collection_exact_count: None,
            missing_shards: None,
            collections: None,
            snapshot: None,
            sample: None,
        }
    }

    /// Reads a stream's `source`; `None` when it holds none, or not one a Qdrant backup
    /// wrote (a file stream's `{"path": …}`, a hand-edited manifest).
    pub fn from_source(source: Option<&Value>) -> Option<Self> {
        let value = source?;
        match Self::deserialize(value) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("stream source is not a Qdrant provenance: {e}");
                None
            }
        }
    }

    /// The JSON recorded as the stream's `source`.
    pub fn to_source(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| {
            Error::new(
                ErrorKind::Qdrant,
                format!(
                    "recording where the snapshot of Qdrant at {} came from: {e}; Qdrant's \
                     answers could not be stored as JSON",
                    self.qdrant.url
                ),
            )
        })
    }

    /// The collection's parameters as recorded in `config.params`.
    pub fn params(&self) -> Option<CollectionParams> {
        let params = self.config.as_ref()?.get("params")?;
        serde_json::from_value(params.clone()).ok()
    }

    /// The smallest and largest exact count around the snapshot, when both were taken:
    /// the snapshot holds a count in this range even while clients wrote.
    pub fn exact_points_range(&self) -> Option<(u64, u64)> {
        let (a, b) = (self.exact_points_count?, self.exact_points_count_after?);
        Some((a.min(b), a.max(b)))
    }

    /// The points the snapshot held and whether that is an exact count: the exact count
    /// when recorded, else collection info's (or cluster info's) estimate.
    pub fn expected_points(&self) -> (Option<u64>, bool) {
        match self.exact_points_count {
            Some(n) => (Some(n), true),
            None => (self.points_count.flatten(), false),
        }
    }
}

/// Tells "present, maybe `null`" (`Some(…)`) from "absent" (`None`, via `default`), so a
/// `null` the backup wrote is written again.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/provenance/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap().trim_end().to_string()
    }

    /// Sources written by the `json!` code that came before this type: every key, `null`
    /// and omission must come back unchanged.
    #[test]
    fn provenance_written_before_the_type_round_trips_byte_for_byte() {
        for name in [
            "collection.json",
            "shard.json",
            "full-storage.json",
            "existing-snapshot-with-nulls.json",
        ] {
            let on_disk = fixture(name);
            let value: Value = serde_json::from_str(&on_disk).unwrap();
            let prov = QdrantProvenance::from_source(Some(&value)).unwrap();
            let again = serde_json::to_string(&prov.to_source().unwrap()).unwrap();
            assert_eq!(again, on_disk, "{name}");
        }
    }

    #[test]
    fn restore_reads_the_exact_count_before_the_estimate() {
        let value: Value = serde_json::from_str(&fixture("collection.json")).unwrap();
        let prov = QdrantProvenance::from_source(Some(&value)).unwrap();
        assert_eq!(prov.expected_points(), (Some(3000), true));
        assert_eq!(prov.params().unwrap().shard_number, 1);

        let value: Value =
            serde_json::from_str(&fixture("existing-snapshot-with-nulls.json")).unwrap();
        let prov = QdrantProvenance::from_source(Some(&value)).unwrap();
        assert_eq!(prov.expected_points(), (None, false));
        assert_eq!(prov.qdrant.commit, None);

        let shard: Value = serde_json::from_str(&fixture("shard.json")).unwrap();
        let prov = QdrantProvenance::from_source(Some(&shard)).unwrap();
        assert_eq!((prov.shard_id, prov.expected_points()), (Some(0), (Some(3000), false)));
    }

    /// A cluster shard's source: the topology, read time and method round-trip, and a
    /// source written before them reads with all four absent.
    #[test]
    fn cluster_fields_round_trip_and_are_absent_from_older_sources() {
        let value: Value = serde_json::json!({
            "qdrant": {"url": "http://n1:6333/", "version": "1.18.3", "commit": null},
            "collection": "c", "shard_id": 1, "points_count": 1104,
            "topology": {"collection": "c", "shard_count": 3, "seen_at": "2026-11-30T07:00:00Z",
                "nodes": [{"url": "http://n0:6333/", "down": "connection refused"},
                          {"url": "http://n1:6333/", "peer_id": 57}],
                "shards": {"1": [{"peer_id": 42, "state": "Active"},
                                 {"peer_id": 57, "state": "Active", "url": "http://n1:6333/", "points_count": 1104}]}},
            "read_at": "2026-11-30T07:00:01Z", "read_via": "streamed", "missing_shards": [0]
        });
        let prov = QdrantProvenance::from_source(Some(&value)).unwrap();
        let topology = prov.topology.as_ref().unwrap();
        assert_eq!(topology.shards[&1][1].points_count, Some(1104));
        assert_eq!(topology.nodes[0].peer_id, None);
        assert_eq!(prov.read_via, Some(ReadVia::Streamed));
        assert_eq!(prov.missing_shards, Some(vec![0]));
        assert_eq!(prov.to_source().unwrap(), value);

        let shard: Value = serde_json::from_str(&fixture("shard.json")).unwrap();
        let old = QdrantProvenance::from_source(Some(&shard)).unwrap();
        assert_eq!(
            (old.topology, old.read_at, old.read_via, old.missing_shards),
            (None, None, None, None)
        );
    }

    #[test]
    fn a_file_streams_source_is_no_provenance() {
        assert_eq!(QdrantProvenance::from_source(Some(&serde_json::json!({"path": "/x"}))), None);
        assert_eq!(QdrantProvenance::from_source(None), None);
    }
}
