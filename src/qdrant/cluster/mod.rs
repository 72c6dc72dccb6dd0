//! Qdrant clusters: the topology of a distributed collection as its nodes report it, and
//! which replica of each shard to read.
//!
//! Guarantees: every node given is asked (`GET /collections/{c}/cluster`); a node that
//! cannot be reached is recorded as down, never skipped silently, while a node that answers
//! with an error fails the read (a missing collection is not a down node); a replica's state
//! is the one its own node reports when that node answered; a shard is read only from an
//! `Active` replica on a node that answered, the reads spread over the nodes.
//!
//! Qdrant's `GET /cluster` lists peers with their internal p2p URIs only, so qvault must be
//! given every node's REST URL; peers are matched to URLs by the `peer_id` each node
//! reports about itself (captured in `real-qdrant/cluster/`).

pub mod backup;
pub mod restore;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::client::{http_status, QdrantClient};
use super::types::{CollectionClusterInfo, ServerVersion};
use crate::error::{Error, ErrorKind, Result};

/// A down node is noticed after this many retries of its first call, not the usual five.
const PROBE_RETRIES: u32 = 1;

/// The nodes of one Qdrant cluster, by REST URL (one node is a cluster of one).
#[derive(Clone, Debug)]
pub struct ClusterNodes {
    clients: Vec<QdrantClient>,
}

impl ClusterNodes {
    pub fn new(clients: Vec<QdrantClient>) -> Result<Self> {
        if clients.is_empty() {
            return Err(Error::invalid_input("a Qdrant cluster needs at least one --qdrant URL"));
        }
        let mut urls: Vec<&str> = clients.iter().map(QdrantClient::url).collect();
        urls.sort_unstable();
        if let Some(w) = urls.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid_input(format!(
                "Qdrant node {} is given twice: give each node's URL once",
                w[0]
            )));
        }
        Ok(ClusterNodes { clients })
    }

    pub fn clients(&self) -> &[QdrantClient] {
        &self.clients
    }

    /// The node with this URL (as [`QdrantClient::url`] shows it).
    fn index_of(&self, url: &str) -> Option<usize> {
        self.clients.iter().position(|c| c.url() == url)
    }

    pub fn urls(&self) -> Vec<String> {
        self.clients.iter().map(|c| c.url().to_string()).collect()
    }
}

/// A collection's shards and replicas as the nodes reported them: what a cluster backup
/// records, and what restore reads on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub collection: String,
    pub shard_count: u32,
    /// Every node given, in order.
    pub nodes: Vec<NodeSeen>,
    /// Shard id → its replicas.
    pub shards: BTreeMap<u32, Vec<ReplicaSeen>>,
    /// When the nodes were asked (RFC 3339, UTC).
    pub seen_at: String,
}

/// A node given with `--qdrant`, and what it said about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSeen {
    pub url: String,
    /// Absent when the node could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<u64>,
    /// Why the node could not be reached; absent when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

/// One replica of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSeen {
    pub peer_id: u64,
    /// `Active`, `Dead`, `Partial`, … as Qdrant reported it.
    pub state: String,
    /// The REST URL of the replica's node, when that node was given and answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The shard's points on this replica, as its own node counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_count: Option<u64>,
}

impl Topology {
    /// Asks every node for `collection`'s cluster info and merges the answers.
    pub async fn read(nodes: &ClusterNodes, collection: &str) -> Result<Topology> {
        let seen_at = now_rfc3339();
        let mut seen = Vec::new();
        let mut answers: Vec<(usize, CollectionClusterInfo)> = Vec::new();
        for (i, client) in nodes.clients.iter().enumerate() {
            let probe = client.with_retries(PROBE_RETRIES)?;
            match probe.collection_cluster_info(collection).await {
                Ok(info) => {
                    seen.push(NodeSeen {
                        url: client.url().to_string(),
                        peer_id: Some(info.peer_id),
                        down: None,
                    });
                    answers.push((i, info));
                }
                // No HTTP answer at all: the node is down (or unreachable from here).
                Err(e) if http_status(&e).is_none() && e.kind() == ErrorKind::Qdrant => {
                    tracing::warn!("{e}");
                    seen.push(NodeSeen {
                        url: client.url().to_string(),
                        peer_id: None,
                        down: Some(e.message().to_string()),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if answers.is_empty() {
            return Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "no Qdrant node answered about collection `{collection}`: {}; check that \
                     the nodes are up and the URLs are their REST addresses",
                    down_list(&seen)
                ),
            ));
        }
        let counts: BTreeMap<String, u32> = answers
            .iter()
            .map(|(i, a)| (nodes.clients[*i].url().to_string(), a.shard_count))
            .collect();
        if counts.values().any(|n| Some(n) != counts.values().next()) {
            let each: Vec<String> = counts.iter().map(|(u, n)| format!("{u}: {n}")).collect();
            return Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "the nodes disagree on the shard count of collection `{collection}` ({}): \
                     give the nodes of one cluster only, or retry when a resharding is done",
                    each.join(", ")
                ),
            ));
        }
        let url_of: BTreeMap<u64, String> =
            answers.iter().map(|(i, a)| (a.peer_id, nodes.clients[*i].url().to_string())).collect();
        let mut shards: BTreeMap<u32, Vec<ReplicaSeen>> = BTreeMap::new();
        // A node's word on its own replicas wins over what others report about them.
        for (_, a) in &answers {
            for l in &a.local_shards {
                shards.entry(l.shard_id).or_default().push(ReplicaSeen {
                    peer_id: a.peer_id,
                    state: l.state.clone(),
                    url: url_of.get(&a.peer_id).cloned(),
                    points_count: Some(l.points_count),
                });
            }
        }
        for (_, a) in &answers {
            for r in &a.remote_shards {
                let replicas = shards.entry(r.shard_id).or_default();
                if !replicas.iter().any(|x| x.peer_id == r.peer_id) {
                    replicas.push(ReplicaSeen {
                        peer_id: r.peer_id,
                        state: r.state.clone(),
                        url: url_of.get(&r.peer_id).cloned(),
                        points_count: None,
                    });
                }
            }
        }
        for replicas in shards.values_mut() {
            replicas.sort_by_key(|r| r.peer_id);
        }
        let shard_count = answers.iter().map(|(_, a)| a.shard_count).max().unwrap_or(0);
        Ok(Topology {
            collection: collection.to_string(),
            shard_count,
            nodes: seen,
            shards,
            seen_at,
        })
    }

    /// The nodes (indexes into `nodes`) holding an Active replica of `shard`, among those
    /// that answered.
    pub fn hosts(&self, shard: u32, nodes: &ClusterNodes) -> Vec<usize> {
        let replicas = self.shards.get(&shard).map(Vec::as_slice).unwrap_or_default();
        replicas
            .iter()
            .filter(|r| r.state == "Active")
            .filter_map(|r| r.url.as_deref().and_then(|u| nodes.index_of(u)))
            .collect()
    }

    /// The nodes that could not be reached.
    pub fn down(&self) -> impl Iterator<Item = &NodeSeen> {
        self.nodes.iter().filter(|n| n.down.is_some())
    }

    /// One node to read each shard from: an `Active` replica on a node that answered,
    /// spreading the shards over the nodes. Shards with no such replica are returned
    /// apart, with why.
    pub fn pick_readers(&self, nodes: &ClusterNodes) -> (BTreeMap<u32, usize>, Vec<Unreadable>) {
        let mut load = vec![0usize; nodes.clients.len()];
        let mut picked = BTreeMap::new();
        let mut unreadable = Vec::new();
        for (shard, replicas) in &self.shards {
            let best = self.hosts(*shard, nodes).into_iter().min_by_key(|i| (load[*i], *i));
            match best {
                Some(i) => {
                    load[i] += 1;
                    picked.insert(*shard, i);
                }
                None => unreadable.push(Unreadable {
                    shard_id: *shard,
                    why: self.why_unreadable(*shard, replicas),
                }),
            }
        }
        (picked, unreadable)
    }

    fn why_unreadable(&self, shard: u32, replicas: &[ReplicaSeen]) -> String {
        let each: Vec<String> = replicas
            .iter()
            .map(|r| match (&r.url, r.state.as_str()) {
                (Some(url), state) => format!("peer {} at {url} is {state}", r.peer_id),
                (None, _) => format!(
                    "peer {} is on no node that answered (down, or its URL not given)",
                    r.peer_id
                ),
            })
            .collect();
        let down = match self.down().count() {
            0 => String::new(),
            _ => format!("; down: {}", down_list(&self.nodes)),
        };
        format!(
            "shard {shard} of collection `{}` has no reachable Active replica: {}{down}",
            self.collection,
            each.join("; ")
        )
    }
}

/// A shard no node can give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub shard_id: u32,
    /// Names the shard, each replica's peer, node and state, and the nodes that were down.
    pub why: String,
}

fn down_list(nodes: &[NodeSeen]) -> String {
    let down: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.down.as_ref().map(|why| format!("{} ({why})", n.url)))
        .collect();
    down.join(", ")
}

/// The first node that answers (with few retries, so down nodes are passed quickly) and
/// its version.
pub(super) async fn first_node(nodes: &ClusterNodes) -> Result<(QdrantClient, ServerVersion)> {
    let mut down = Vec::new();
    for client in &nodes.clients {
        let probe = client.with_retries(PROBE_RETRIES)?;
        match probe.version().await {
            Ok(v) => return Ok((client.clone(), v)),
            Err(e) if http_status(&e).is_none() && e.kind() == ErrorKind::Qdrant => {
                down.push(format!("{} ({})", client.url(), e.message()));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::new(
        ErrorKind::Qdrant,
        format!(
            "no Qdrant node answered: {}; check that the nodes are up and the URLs are their \
             REST addresses",
            down.join(", ")
        ),
    ))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(peer_id: u64, state: &str, url: Option<&str>) -> ReplicaSeen {
        ReplicaSeen {
            peer_id,
            state: state.into(),
            url: url.map(str::to_owned),
            points_count: None,
        }
    }

    #[test]
    fn readers_spread_over_nodes_and_skip_dead_or_unreachable_replicas() {
        let clients = ["http://a:6333/", "http://b:6333/", "http://c:6333/"]
            .iter()
            .map(|u| QdrantClient::new(crate::qdrant::QdrantOptions::new(*u)).unwrap())
            .collect();
        let nodes = ClusterNodes::new(clients).unwrap();
        let (a, b, c) = (Some("http://a:6333/"), Some("http://b:6333/"), Some("http://c:6333/"));
        let mut shards = BTreeMap::new();
        // As captured: shard 0 on b and c, 1 on a and b, 2 on a and c.
        shards.insert(0, vec![replica(2, "Active", b), replica(3, "Active", c)]);
        shards.insert(1, vec![replica(1, "Active", a), replica(2, "Active", b)]);
        shards.insert(2, vec![replica(1, "Active", a), replica(3, "Active", c)]);
        shards.insert(3, vec![replica(1, "Dead", a), replica(4, "Active", None)]);
        let topology = Topology {
            collection: "c".into(),
            shard_count: 4,
            nodes: Vec::new(),
            shards,
            seen_at: String::new(),
        };
        let (picked, unreadable) = topology.pick_readers(&nodes);
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), vec![(0, 1), (1, 0), (2, 2)]);
        assert_eq!(unreadable.len(), 1);
        assert_eq!(
            unreadable[0].why,
            "shard 3 of collection `c` has no reachable Active replica: peer 1 at \
             http://a:6333/ is Dead; peer 4 is on no node that answered (down, or its URL not \
             given)"
        );
    }
}
