//! Cluster mode: several fake nodes sharing one placement of shards and replicas, as
//! captured on a real 3-node Qdrant 1.18.3 cluster (`real-qdrant/cluster/`).
//!
//! What is modelled:
//! - One placement per collection (shard → the nodes holding a replica, each with a state)
//!   that every node reads: `GET /collections/{c}/cluster` answers the node's own
//!   `local_shards` (id, points, state) and the other replicas as `remote_shards`.
//! - A node serves only its local shards: the streamed `GET …/shards/{id}/snapshot` answers
//!   400 in plain text and the shard snapshot calls 400 JSON, with the captured message.
//! - `PUT /collections/{c}` on any node creates the collection for the whole cluster,
//!   placing shard `s`'s replicas on nodes `s`, `s+1`, … (mod the node count); on two nodes
//!   with three shards and replication 1 this gives the captured placement.
//! - `POST …/shards/{id}/snapshots/upload` checks `checksum`, records the upload (node,
//!   shard, whether the node hosted the shard) and replaces the shard's data on every
//!   replica. On a node that does not host the shard it answers 200 and **adds a replica
//!   there** (the captured footgun).
//! - A stopped node refuses connections; the others still list its replicas as Active (a
//!   peer that just died is not marked Dead until an update fails on it).
//!
//! Where it knowingly differs: points are counted per shard from what the test set or what
//! was uploaded (by the bytes' SHA-256), not from segments; shard transfers never happen
//! (the other replicas of a recovered shard are not marked Dead); a stray replica appears at
//! once; aliases are kept per node, not shared through consensus.

use super::*;

/// A node's place in a cluster.
#[derive(Clone)]
pub(super) struct Membership {
    state: Arc<Mutex<ClusterInner>>,
    node: usize,
}

/// One shard snapshot upload a node received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardUpload {
    pub node: usize,
    pub collection: String,
    pub shard_id: u32,
    /// Whether the node hosted a replica of the shard when the upload arrived: `false` is
    /// the stray-replica trap.
    pub hosted: bool,
    pub sha256: String,
    pub priority: Option<String>,
}

#[derive(Default)]
struct ClusterInner {
    peers: Vec<u64>,
    collections: BTreeMap<String, ClusterCollection>,
    uploads: Vec<ShardUpload>,
}

/// SHA-256 of shard bytes → the points a shard recovered from them holds, for every fake
/// cluster of the process: a target cluster learns what a source cluster's shard held, as
/// a real one reads it from the segments.
static POINTS_BY_SHA: std::sync::LazyLock<Mutex<HashMap<String, u64>>> =
    std::sync::LazyLock::new(Mutex::default);

#[derive(Clone)]
struct ClusterCollection {
    config: Value,
    /// shard → (node, state) of each replica.
    placement: BTreeMap<u32, Vec<(usize, String)>>,
    data: BTreeMap<u32, (Bytes, u64)>,
    /// Shard snapshots stored on each node: (node, shard, name).
    snapshots: BTreeMap<(usize, u32, String), Stored>,
}

impl ClusterCollection {
    fn hosts(&self, shard: u32, node: usize) -> bool {
        self.placement.get(&shard).is_some_and(|r| r.iter().any(|(n, _)| *n == node))
    }

    fn points(&self, shard: u32) -> u64 {
        self.data.get(&shard).map_or(0, |d| d.1)
    }

    fn total_points(&self) -> u64 {
        self.placement.keys().map(|s| self.points(*s)).sum()
    }
}

/// Fake nodes sharing one placement; node `i` has peer id `peer_ids()[i]`.
pub struct FakeCluster {
    pub nodes: Vec<FakeQdrant>,
    state: Arc<Mutex<ClusterInner>>,
}

impl FakeCluster {
    pub async fn start(n: usize) -> FakeCluster {
        // Peer ids like the captured ones: large, and not in node order.
        let peers: Vec<u64> =
            (0..n as u64).map(|i| 4_261_088_233_680_840 + (n as u64 - i) * 1_000_003).collect();
        let state =
            Arc::new(Mutex::new(ClusterInner { peers: peers.clone(), ..Default::default() }));
        let mut nodes = Vec::new();
        for (node, peer_id) in peers.into_iter().enumerate() {
            let opts = FakeOptions { peer_id, ..FakeOptions::default() };
            let member = Membership { state: Arc::clone(&state), node };
            nodes.push(FakeQdrant::start_member(opts, Some(member)).await);
        }
        FakeCluster { nodes, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClusterInner> {
        self.state.lock().unwrap()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(FakeQdrant::url).collect()
    }

    pub fn peer_ids(&self) -> Vec<u64> {
        self.lock().peers.clone()
    }

    /// Creates `name` with the body's config and replicas placed as given (shard → nodes),
    /// all Active and empty.
    pub fn create_collection(&self, name: &str, body: Value, placement: &[(u32, &[usize])]) {
        let placement = placement
            .iter()
            .map(|(s, nodes)| (*s, nodes.iter().map(|n| (*n, "Active".to_string())).collect()))
            .collect();
        let col = ClusterCollection {
            config: config_from_create_body(&body),
            placement,
            data: BTreeMap::new(),
            snapshots: BTreeMap::new(),
        };
        self.lock().collections.insert(name.into(), col);
    }

    /// The bytes a snapshot of `shard` gives on every replica, and its points; a shard
    /// later recovered from these bytes holds as many.
    pub fn set_shard(&self, collection: &str, shard: u32, bytes: impl Into<Bytes>, points: u64) {
        let bytes = bytes.into();
        POINTS_BY_SHA.lock().unwrap().insert(sha256_hex(&bytes), points);
        let mut inner = self.lock();
        inner.collections.get_mut(collection).unwrap().data.insert(shard, (bytes, points));
    }

    /// Sets the state one replica reports (`Dead`, `Partial`, …).
    pub fn set_replica_state(&self, collection: &str, shard: u32, node: usize, state: &str) {
        let mut inner = self.lock();
        let replicas = inner.collections.get_mut(collection).unwrap().placement.get_mut(&shard);
        for r in replicas.unwrap().iter_mut().filter(|r| r.0 == node) {
            r.1 = state.to_string();
        }
    }

    /// shard → the nodes holding a replica of it.
    pub fn placement(&self, collection: &str) -> BTreeMap<u32, Vec<usize>> {
        let inner = self.lock();
        let Some(col) = inner.collections.get(collection) else { return BTreeMap::new() };
        col.placement.iter().map(|(s, r)| (*s, r.iter().map(|(n, _)| *n).collect())).collect()
    }

    /// The bytes a shard holds now (set, or last uploaded), on every replica.
    pub fn shard_bytes(&self, collection: &str, shard: u32) -> Option<Vec<u8>> {
        self.lock().collections.get(collection)?.data.get(&shard).map(|d| d.0.to_vec())
    }

    pub fn points(&self, collection: &str) -> Option<u64> {
        self.lock().collections.get(collection).map(ClusterCollection::total_points)
    }

    pub fn config(&self, collection: &str) -> Option<Value> {
        self.lock().collections.get(collection).map(|c| c.config.clone())
    }

    /// Every shard snapshot upload any node received, in order.
    pub fn uploads(&self) -> Vec<ShardUpload> {
        self.lock().uploads.clone()
    }

    /// Names of shard snapshots stored on `node`.
    pub fn shard_snapshot_names(&self, node: usize) -> Vec<String> {
        let inner = self.lock();
        let stored = inner.collections.values().flat_map(|c| c.snapshots.keys());
        stored.filter(|(n, _, _)| *n == node).map(|(_, _, name)| name.clone()).collect()
    }

    /// Stops node `i`: its port refuses connections from now on.
    pub fn stop(&self, i: usize) {
        self.nodes[i].stop();
    }
}

/// The routes a cluster node answers from the shared placement; `Err(req)` for everything
/// else (a collection the cluster does not know, or a non-cluster call).
pub(super) async fn cluster_route(
    shared: &Arc<Shared>,
    access: Access,
    method: &Method,
    uri: &str,
    segs: &[&str],
    q: &HashMap<String, String>,
    req: Request,
) -> Result<Response, Request> {
    let Some(member) = shared.cluster.clone() else { return Err(req) };
    let node = member.node;
    let Some(c) = segs.get(1).filter(|_| segs.first() == Some(&"collections")) else {
        return Err(req);
    };
    let c = c.to_string();
    let known = member.state.lock().unwrap().collections.contains_key(&c);
    let writes = *method != Method::GET && !matches!(segs, [_, _, "points", "count"]);
    if access == Access::ReadOnly && writes && known {
        return Ok(ro_json_resp());
    }
    let wait = q.get("wait").map(|w| w != "false").unwrap_or(true);
    match (method.clone(), &segs[2..]) {
        (Method::PUT, []) if !known => {
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return Ok(r),
            };
            let mut inner = member.state.lock().unwrap();
            let n = inner.peers.len();
            let config = config_from_create_body(&body);
            let shards = config["params"]["shard_number"].as_u64().unwrap_or(1) as u32;
            let rf = (config["params"]["replication_factor"].as_u64().unwrap_or(1) as usize).min(n);
            let placement = (0..shards)
                .map(|s| {
                    let nodes = (0..rf).map(|k| ((s as usize + k) % n, "Active".to_string()));
                    (s, nodes.collect())
                })
                .collect();
            let col = ClusterCollection {
                config,
                placement,
                data: BTreeMap::new(),
                snapshots: BTreeMap::new(),
            };
            inner.collections.insert(c, col);
            Ok(ok(json!(true)))
        }
        _ if !known => Err(req),
        (Method::PUT, []) => {
            Ok(err_json(400, &format!("Wrong input: Collection `{c}` already exists!")))
        }
        (Method::GET, []) => {
            let inner = member.state.lock().unwrap();
            let col = &inner.collections[&c];
            Ok(ok(json!({
                "status": "green", "optimizer_status": "ok", "indexed_vectors_count": 0,
                "points_count": col.total_points(), "segments_count": 2 * col.placement.len(),
                "config": col.config, "payload_schema": {}, "update_queue": {"length": 0}
            })))
        }
        (Method::DELETE, []) => {
            member.state.lock().unwrap().collections.remove(&c);
            // Deleting a collection drops its aliases (kept per node here).
            shared.inner.lock().unwrap().aliases.retain(|_, col| *col != c);
            Ok(ok(json!(true)))
        }
        (Method::POST, ["points", "count"]) => {
            let inner = member.state.lock().unwrap();
            Ok(ok(json!({"count": inner.collections[&c].total_points()})))
        }
        (Method::GET, ["cluster"]) => {
            let inner = member.state.lock().unwrap();
            Ok(ok(collection_cluster(&inner, &c, node)))
        }
        (method, ["shards", id, rest @ ..]) => {
            let Ok(shard) = id.parse::<u32>() else {
                return Ok(err_json(400, &format!("Wrong input: invalid shard id `{id}`")));
            };
            let not_local =
                format!("Wrong input: Shard {shard} is not a local or queue proxy shard");
            let (local, bytes) = {
                let inner = member.state.lock().unwrap();
                let col = &inner.collections[&c];
                (
                    col.hosts(shard, node),
                    col.data.get(&shard).map(|d| d.0.clone()).unwrap_or_default(),
                )
            };
            match (method, rest) {
                (Method::POST, ["snapshots", "upload"]) => {
                    Ok(shard_upload(shared, &member, &c, shard, req, q, wait).await)
                }
                _ if !local && rest == ["snapshot"] => Ok(err_text(400, &not_local)),
                _ if !local => Ok(err_json(400, &not_local)),
                (Method::GET, ["snapshot"]) => {
                    let (ts, _) = now_parts();
                    let name = format!("{c}-shard-{shard}-{ts}.snapshot");
                    let headers = HeaderMap::new();
                    Ok(download(shared, &Method::GET, uri, &name, bytes, &headers, false))
                }
                (Method::POST, ["snapshots"]) => {
                    let mut inner = member.state.lock().unwrap();
                    let col = inner.collections.get_mut(&c).unwrap();
                    let prefix = format!("{c}-shard-{shard}");
                    let (name, ct) = unique_name(&prefix, |n| {
                        col.snapshots.contains_key(&(node, shard, n.to_string()))
                    });
                    let stored =
                        Stored { checksum: Some(sha256_hex(&bytes)), bytes, creation_time: ct };
                    let answer = description(&name, &stored);
                    col.snapshots.insert((node, shard, name), stored);
                    Ok(finished(wait, answer))
                }
                (Method::GET, ["snapshots"]) => {
                    let inner = member.state.lock().unwrap();
                    let list = inner.collections[&c]
                        .snapshots
                        .iter()
                        .filter(|((n, s, _), _)| *n == node && *s == shard)
                        .map(|((_, _, name), s)| description(name, s))
                        .collect();
                    Ok(ok(Value::Array(list)))
                }
                (Method::GET, ["snapshots", name]) => {
                    let key = (node, shard, name.to_string());
                    let stored =
                        member.state.lock().unwrap().collections[&c].snapshots.get(&key).cloned();
                    Ok(match stored {
                        None => err_text(404, &missing_snapshot(name)),
                        Some(s) => {
                            download(shared, &Method::GET, uri, name, s.bytes, req.headers(), true)
                        }
                    })
                }
                (Method::DELETE, ["snapshots", name]) => {
                    let mut inner = member.state.lock().unwrap();
                    let col = inner.collections.get_mut(&c).unwrap();
                    Ok(match col.snapshots.remove(&(node, shard, name.to_string())) {
                        None => err_json(404, &missing_snapshot(name)),
                        Some(_) => finished(wait, json!(true)),
                    })
                }
                _ => Ok(no_route()),
            }
        }
        _ => Err(req),
    }
}

/// Whether `c` is a collection of the node's cluster (aliases may point at it).
pub(super) fn cluster_knows(shared: &Shared, c: &str) -> bool {
    let Some(member) = &shared.cluster else { return false };
    member.state.lock().unwrap().collections.contains_key(c)
}

/// `GET /collections/{c}/cluster` as node `node` answers it.
fn collection_cluster(inner: &ClusterInner, c: &str, node: usize) -> Value {
    let col = &inner.collections[c];
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (shard, replicas) in &col.placement {
        for (n, state) in replicas {
            if *n == node {
                local.push(
                    json!({"shard_id": shard, "points_count": col.points(*shard), "state": state}),
                );
            } else {
                remote.push(json!({"shard_id": shard, "peer_id": inner.peers[*n], "state": state}));
            }
        }
    }
    json!({"peer_id": inner.peers[node], "shard_count": col.placement.len(),
        "local_shards": local, "remote_shards": remote, "shard_transfers": []})
}

/// A shard snapshot upload: the checksum, the record, the data on every replica, the
/// uploaded file left in the node's snapshots, and a stray replica when not hosted.
async fn shard_upload(
    shared: &Arc<Shared>,
    member: &Membership,
    c: &str,
    shard: u32,
    req: Request,
    q: &HashMap<String, String>,
    wait: bool,
) -> Response {
    let _ = shared;
    let (filename, data) = match multipart_file(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let actual = sha256_hex(&data);
    if let Some(given) = q.get("checksum").filter(|g| !g.eq_ignore_ascii_case(&actual)) {
        return err_json(400, &format!("Checksum mismatch: expected {actual}, actual {given}"));
    }
    let node = member.node;
    let mut inner = member.state.lock().unwrap();
    let points = POINTS_BY_SHA.lock().unwrap().get(&actual).copied().unwrap_or(0);
    let col = inner.collections.get_mut(c).unwrap();
    if !col.placement.contains_key(&shard) {
        return err_json(404, &format!("Not found: shard {shard} not found"));
    }
    let hosted = col.hosts(shard, node);
    if !hosted {
        col.placement.get_mut(&shard).unwrap().push((node, "Active".to_string()));
    }
    let (_, ct) = now_parts();
    let data = Bytes::from(data);
    let stored = Stored { bytes: data.clone(), creation_time: ct, checksum: None };
    col.snapshots.insert((node, shard, filename), stored);
    col.data.insert(shard, (data, points));
    inner.uploads.push(ShardUpload {
        node,
        collection: c.to_string(),
        shard_id: shard,
        hosted,
        sha256: actual,
        priority: q.get("priority").cloned(),
    });
    if wait {
        ok(Value::Null)
    } else {
        accepted()
    }
}
