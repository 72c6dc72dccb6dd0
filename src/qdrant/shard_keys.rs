//! Custom sharding (shard keys): what a backup records and what a restore needs in place.
//!
//! Qdrant recovers a snapshot's shards by shard id and fills only shards that exist; a
//! custom-sharded collection has a shard only once its key was created, ids counting from
//! 1 in creation order (captured in `real-qdrant/more/`, group 3). So a restore into a
//! collection without the keys answers 200 with 0 points, and keys created in another
//! order put one tenant's points under another's key.
//!
//! Guarantees: a backup of a custom-sharded collection records each key with its shard ids
//! (the shape of the snapshot's `shard_key_mapping.json`); a restore proceeds only into a
//! collection whose keys map to exactly the backed-up shard ids, and otherwise refuses
//! before anything is sent, listing the calls that create the keys in the right order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::QdrantClient;
use super::types::CollectionClusterInfo;
use crate::error::{Error, ErrorKind, Result};

/// One shard key and the shards it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardKey {
    pub key: Value,
    pub shard_ids: Vec<u32>,
}

/// Whether a collection config (`config`, as collection info shows it) is custom-sharded.
pub fn is_custom(config: Option<&Value>) -> bool {
    config.and_then(|c| c.pointer("/params/sharding_method")).and_then(Value::as_str)
        == Some("custom")
}

/// The shard keys cluster info shows, each with its sorted shard ids, in creation order
/// (by smallest shard id).
pub fn shard_keys(cluster: &CollectionClusterInfo) -> Vec<ShardKey> {
    let mut by_key: BTreeMap<String, ShardKey> = BTreeMap::new();
    let local = cluster.local_shards.iter().map(|s| (s.shard_id, &s.shard_key));
    let remote = cluster.remote_shards.iter().map(|s| (s.shard_id, &s.shard_key));
    for (id, key) in local.chain(remote) {
        let Some(key) = key.as_ref().filter(|k| !k.is_null()) else { continue };
        let entry = by_key
            .entry(key.to_string())
            .or_insert_with(|| ShardKey { key: key.clone(), shard_ids: Vec::new() });
        if !entry.shard_ids.contains(&id) {
            entry.shard_ids.push(id);
        }
    }
    let mut keys: Vec<ShardKey> = by_key.into_values().collect();
    for k in &mut keys {
        k.shard_ids.sort_unstable();
    }
    keys.sort_by_key(|k| k.shard_ids.first().copied());
    keys
}

/// Refuses a restore of a custom-sharded backup unless `collection` exists on the node
/// (and is not about to be dropped) with the backed-up keys on the same shard ids.
pub async fn check_target(
    client: &QdrantClient,
    collection: &str,
    recorded: Option<&[ShardKey]>,
    target_usable: bool,
) -> Result<()> {
    let url = client.url();
    let Some(recorded) = recorded.filter(|r| !r.is_empty()) else {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "collection `{collection}` was backed up with custom sharding but the backup \
                 does not record its shard keys: Qdrant would recover 0 points into a collection \
                 without them. Restore the stream to a file with --to, read \
                 `shard_key_mapping.json` in it, create `{collection}` on Qdrant at {url} with \
                 `sharding_method: custom` and those keys in the order of their shard ids, then \
                 restore into it"
            ),
        ));
    };
    if target_usable {
        let have = shard_keys(&client.collection_cluster_info(collection).await?);
        if have == recorded {
            return Ok(());
        }
    }
    let calls: Vec<String> = recorded
        .iter()
        .map(|k| {
            format!(
                "PUT /collections/{collection}/shards {{\"shard_key\": {}, \"shard_number\": {}}}",
                k.key,
                k.shard_ids.len()
            )
        })
        .collect();
    Err(Error::new(
        ErrorKind::Refused,
        format!(
            "collection `{collection}` was backed up with custom sharding, and Qdrant recovers \
             shards by id into keys that already exist (else 0 points, or points under the \
             wrong key). Create `{collection}` on Qdrant at {url} with the backup's config \
             (`sharding_method: custom`; see `qvault show`), then its shard keys in this order: \
             {}; then run the restore again",
            calls.join("; ")
        ),
    ))
}
