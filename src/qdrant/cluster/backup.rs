//! Backing up a distributed collection shard by shard, from every node of the cluster.
//!
//! ```text
//! every node: GET /collections/{c}/cluster ─► Topology (down nodes noted)
//!   │ one Active replica per shard, spread over the nodes; none for a shard ─► stop
//!   ▼ per shard, when the pipeline asks for it (on the node picked):
//! cluster info again (still local and Active?) ─► GET …/shards/{id}/snapshot (streamed)
//!                        refused (403/404/405/501) ─► create → download → delete
//! ```
//!
//! Guarantees: one stream per shard (`{collection}/shard-{id}`), each recording the
//! collection's config, the topology seen, the replica it was read from and when; a shard
//! with no reachable Active replica fails the backup before anything is read, naming the
//! shard, its replicas and the nodes that were down, unless `allow_partial` (then every
//! stream records the missing shards). Streamed reads store nothing on the node; a fallback
//! snapshot is deleted as soon as it was read, and also when the backup fails.
//!
//! Shards are read one after another, each as of its own time: Qdrant has no cross-shard
//! snapshot, so a backup of a collection being written is not a point-in-time copy of it.

use std::io::Read;
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{first_node, now_rfc3339, ClusterNodes, Topology, Unreadable};
use crate::backup::{
    backup_from, BackupOptions, BackupSummary, Progress, StreamSource, StreamSources,
};
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamKind;
use crate::qdrant::aliases::{all_aliases, pointing_at, resolve};
use crate::qdrant::backup::{stream_name, CreateOptions, RemoteSnapshot, SnapshotFate};
use crate::qdrant::client::{http_status, QdrantClient};
use crate::qdrant::create::{create_snapshot, snapshots_before};
use crate::qdrant::provenance::{NodeProvenance, QdrantProvenance, ReadVia, SnapshotProvenance};
use crate::qdrant::shard_keys::{is_custom, shard_keys};
use crate::qdrant::types::{ServerVersion, SnapshotScope};
use crate::repo::Repository;

/// What to back up from a cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterBackupOptions {
    /// Collections (or aliases of them); every shard of each is one stream.
    pub collections: Vec<String>,
    /// Record the shards that can be read when some cannot (the backup says which lack).
    pub allow_partial: bool,
    /// How a fallback shard snapshot is created.
    pub create: CreateOptions,
}

/// Which replica a shard was read from, and how.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShardRead {
    pub stream: String,
    pub url: String,
    pub peer_id: u64,
    pub via: ReadVia,
}

/// The result of a cluster backup.
#[derive(Clone, Debug)]
pub struct ClusterBackupReport {
    pub summary: BackupSummary,
    /// The version of the first node that answered.
    pub qdrant_version: String,
    pub reads: Vec<ShardRead>,
    /// Shards left out (only with `allow_partial`), each with why.
    pub missing: Vec<Unreadable>,
    /// Fallback snapshots qvault created, and what became of them.
    pub snapshots: Vec<RemoteSnapshot>,
}

/// One collection's read plan.
struct CollectionPlan {
    collection: String,
    requested_as: Option<String>,
    aliases: Vec<String>,
    topology: Topology,
    missing: Vec<u32>,
}

/// A fallback snapshot on a node, to delete once read.
struct Pending {
    node: usize,
    scope: SnapshotScope,
    name: String,
    held: crate::held::Token,
}

struct ShardStreams<'a> {
    nodes: &'a ClusterNodes,
    plans: Vec<CollectionPlan>,
    /// (plan, shard, nodes with an Active replica, the one picked first) in read order.
    queue: std::vec::IntoIter<(usize, u32, Vec<usize>)>,
    versions: Vec<Option<ServerVersion>>,
    create: CreateOptions,
    pending: Option<Pending>,
    reads: Vec<ShardRead>,
    snapshots: Vec<RemoteSnapshot>,
    download_errors: Arc<Mutex<Vec<String>>>,
}

impl ShardStreams<'_> {
    async fn version(&mut self, node: usize, client: &QdrantClient) -> Result<ServerVersion> {
        if let Some(v) = &self.versions[node] {
            return Ok(v.clone());
        }
        let v = client.version().await?;
        self.versions[node] = Some(v.clone());
        Ok(v)
    }

    /// Opens `shard` on the first of `nodes` that gives it: a node that cannot be reached,
    /// fails (5xx) or no longer holds an Active replica passes the shard to the next one.
    async fn open(&mut self, plan: usize, shard: u32, nodes: &[usize]) -> Result<StreamSource> {
        let mut failed = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let another = i + 1 < nodes.len();
            match self.open_on(plan, shard, *node, another).await {
                Ok(source) => return Ok(source),
                Err(e) if another && replica_failed(&e) => {
                    tracing::warn!("{e}; reading shard {shard} from another replica");
                    // A fallback snapshot made before the failure is not left behind.
                    self.release().await;
                    failed.push(e.to_string());
                }
                Err(e) if failed.is_empty() => return Err(e),
                Err(e) => {
                    return Err(e.context(format!(
                        "every replica failed; before this one: {}",
                        failed.join("; ")
                    )))
                }
            }
        }
        Err(Error::new(ErrorKind::Qdrant, format!("no replica of shard {shard} to read")))
    }

    /// Opens `shard` on `node`; with `another` replica to try, after few retries.
    async fn open_on(
        &mut self,
        plan: usize,
        shard: u32,
        node: usize,
        another: bool,
    ) -> Result<StreamSource> {
        let client = &match another {
            // A node that went down since the topology was read passes the shard on quickly.
            true => self.nodes.clients()[node].with_retries(super::PROBE_RETRIES)?,
            false => self.nodes.clients()[node].clone(),
        };
        let version = self.version(node, client).await?;
        let plan = &self.plans[plan];
        let c = plan.collection.as_str();
        let scope = SnapshotScope::shard(c, shard);
        // Read again right before the shard: the cluster may have moved it since.
        let info = client.collection_info(c).await?;
        let cluster = client.collection_cluster_info(c).await?;
        let Some(local) =
            cluster.local_shards.iter().find(|s| s.shard_id == shard && s.state == "Active")
        else {
            return Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "{scope} is no longer an Active replica on Qdrant at {}: the cluster \
                     changed while the backup ran; run the backup again",
                    client.url()
                ),
            ));
        };
        let mut source = QdrantProvenance::new(NodeProvenance {
            url: client.url().to_string(),
            version: version.version.clone(),
            commit: version.commit.clone(),
        });
        source.collection = Some(c.to_string());
        source.config = Some(info.config.clone());
        source.collection_info = Some(info.raw.clone());
        source.cluster = Some(serde_json::to_value(&cluster).unwrap_or_default());
        source.shard_id = Some(shard);
        source.points_count = Some(Some(local.points_count));
        if is_custom(Some(&info.config)) {
            source.shard_keys = Some(shard_keys(&cluster));
        }
        source.aliases = (!plan.aliases.is_empty()).then(|| plan.aliases.clone());
        source.requested_as = plan.requested_as.clone();
        source.topology = Some(plan.topology.clone());
        source.missing_shards = (!plan.missing.is_empty()).then(|| plan.missing.clone());
        source.collection_exact_count = Some(client.count_points(c, true).await?);
        source.read_at = Some(now_rfc3339());

        let (download, via, expected) = match client.stream_shard_snapshot(c, shard).await {
            Ok(d) => (d, ReadVia::Streamed, None),
            Err(e) if http_status(&e).is_some_and(|s| matches!(s, 403 | 404 | 405 | 501)) => {
                tracing::warn!("{e}; creating a shard snapshot instead");
                let before = snapshots_before(client, &scope).await?;
                let snapshot = create_snapshot(client, &scope, &before, &self.create).await?;
                let name = snapshot.name.clone();
                let held = crate::qdrant::create::hold_snapshot(client, &scope, &name);
                self.pending =
                    Some(Pending { node, scope: scope.clone(), name: name.clone(), held });
                source.snapshot = Some(SnapshotProvenance::new(&snapshot, true));
                let d = client.download_snapshot(&scope, &name).await?;
                (d, ReadVia::Snapshot, snapshot.checksum)
            }
            Err(e) => return Err(e),
        };
        source.read_via = Some(via);
        self.reads.push(ShardRead {
            stream: stream_name(&scope),
            url: client.url().to_string(),
            peer_id: cluster.peer_id,
            via,
        });
        Ok(StreamSource {
            name: stream_name(&scope),
            kind: StreamKind::QdrantShard,
            reader: blocking_reader(download.into_stream(), &self.download_errors),
            source: Some(source.to_source()?),
            expected_sha256: expected,
            left_out: None,
        })
    }

    /// Deletes the fallback snapshot read last, if any.
    async fn release(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let client = &self.nodes.clients()[p.node];
        let outcome = match client.delete_snapshot(&p.scope, &p.name, true).await {
            Ok(()) => SnapshotFate::Deleted,
            Err(e) => {
                tracing::warn!("{e}");
                SnapshotFate::DeleteFailed(e.to_string())
            }
        };
        crate::held::let_go(p.held);
        self.snapshots.push(RemoteSnapshot { scope: p.scope.to_string(), name: p.name, outcome });
    }
}

impl StreamSources for ShardStreams<'_> {
    async fn next_stream(&mut self) -> Result<Option<StreamSource>> {
        self.release().await;
        match self.queue.next() {
            Some((plan, shard, nodes)) => self.open(plan, shard, &nodes).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Whether `e` is the replica's failure (another replica may serve the shard): no answer,
/// a server error, or a replica that is no longer local and Active.
fn replica_failed(e: &Error) -> bool {
    e.kind() == ErrorKind::Qdrant && http_status(e).is_none_or(|s| s >= 500)
}

/// A blocking reader over a download stream, noting its errors in `errors` so the caller
/// can name the real cause (the pipeline sees only an I/O error).
fn blocking_reader(
    stream: BoxStream<'static, Result<bytes::Bytes>>,
    errors: &Arc<Mutex<Vec<String>>>,
) -> Box<dyn Read + Send> {
    let errors = Arc::clone(errors);
    let stream = stream
        .inspect_err(move |e: &Error| {
            if let Ok(mut list) = errors.lock() {
                list.push(e.message().to_string());
            }
        })
        .map_err(std::io::Error::other)
        .boxed();
    // The backup pipeline reads on a blocking thread, where bridging to async is allowed.
    Box::new(tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream)))
}

/// Backs up every shard of `options.collections` from the cluster's `nodes` as one backup.
/// See the module docs for what is guaranteed.
pub async fn backup_cluster(
    repo: &Repository,
    nodes: &ClusterNodes,
    options: &ClusterBackupOptions,
    backup_options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<ClusterBackupReport> {
    if options.collections.is_empty() {
        return Err(Error::invalid_input(
            "a cluster backup needs the collections to back up: give --collection NAME",
        ));
    }
    let (first, version) = first_node(nodes).await?;
    // Aliases are cluster-wide: any node lists them all.
    let aliases = all_aliases(&first).await?;
    let mut plans = Vec::new();
    let mut queue = Vec::new();
    let mut missing = Vec::new();
    for asked in &options.collections {
        let (collection, requested_as) = match resolve(&aliases, asked) {
            Some(real) => (real.to_string(), Some(asked.clone())),
            None => (asked.clone(), None),
        };
        if plans.iter().any(|p: &CollectionPlan| p.collection == collection) {
            return Err(Error::invalid_input(format!(
                "collection `{collection}` is named twice: name it once"
            )));
        }
        let topology = Topology::read(nodes, &collection).await?;
        let (readers, unreadable) = topology.pick_readers(nodes);
        for (shard, node) in readers {
            let mut candidates = vec![node];
            candidates.extend(topology.hosts(shard, nodes).into_iter().filter(|n| *n != node));
            queue.push((plans.len(), shard, candidates));
        }
        plans.push(CollectionPlan {
            aliases: pointing_at(&aliases, &collection),
            collection,
            requested_as,
            topology,
            missing: unreadable.iter().map(|u| u.shard_id).collect(),
        });
        missing.extend(unreadable);
    }
    if !missing.is_empty() && !options.allow_partial {
        let why: Vec<&str> = missing.iter().map(|u| u.why.as_str()).collect();
        return Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "{}. Nothing was backed up: bring a replica of each shard back, or pass \
                 --allow-partial to record the other shards (the backup then says which it \
                 lacks)",
                why.join(". ")
            ),
        ));
    }
    if queue.is_empty() {
        return Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "no shard of {} can be read from Qdrant at {}: nothing was backed up",
                options.collections.join(", "),
                nodes.urls().join(", ")
            ),
        ));
    }

    let mut streams = ShardStreams {
        nodes,
        plans,
        queue: queue.into_iter(),
        versions: vec![None; nodes.clients().len()],
        create: options.create,
        pending: None,
        reads: Vec::new(),
        snapshots: Vec::new(),
        download_errors: Arc::default(),
    };
    let result = backup_from(repo, &mut streams, backup_options, progress).await;
    streams.release().await;
    match result {
        Ok(summary) => Ok(ClusterBackupReport {
            summary,
            qdrant_version: version.version,
            reads: streams.reads,
            missing,
            snapshots: streams.snapshots,
        }),
        Err(e) => {
            let left: Vec<&str> = streams
                .snapshots
                .iter()
                .filter(|s| s.outcome.delete_failed())
                .map(|s| s.name.as_str())
                .collect();
            let note = match left.as_slice() {
                [] => String::new(),
                names => format!(
                    " (could not delete {} from the node: delete them with `qvault qdrant \
                     snapshots delete`)",
                    names.join(", ")
                ),
            };
            let downloads = streams.download_errors.lock().map(|d| d.clone()).unwrap_or_default();
            Err(match downloads.first() {
                Some(first) if e.kind() == ErrorKind::Io => Error::new(
                    ErrorKind::Qdrant,
                    format!("backup failed, no backup recorded{note}: {first}"),
                ),
                _ => e.context(format!(
                    "from the Qdrant cluster at {}{note}",
                    nodes.urls().join(", ")
                )),
            })
        }
    }
}

/// What `show` says about a backup's cluster streams: where each shard came from and when,
/// that shards are not consistent with each other, and which shards a partial backup lacks.
pub fn describe(streams: &[crate::format::manifest::StreamRecord]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut missing = std::collections::BTreeMap::new();
    for s in streams {
        let Some(p) = QdrantProvenance::from_source(s.source.as_ref()) else { continue };
        let Some(topology) = &p.topology else { continue };
        let via = match p.read_via {
            Some(ReadVia::Snapshot) => "a shard snapshot",
            _ => "the streamed shard snapshot",
        };
        lines.push(format!(
            "{}: read from {} at {} via {via}",
            s.name,
            p.qdrant.url,
            p.read_at.as_deref().unwrap_or("?")
        ));
        if let Some(m) = p.missing_shards.filter(|m| !m.is_empty()) {
            missing.insert(topology.collection.clone(), m);
        }
    }
    if lines.is_empty() {
        return lines;
    }
    lines.push(
        "Qdrant gives no cross-shard consistency: each shard is as of its own read time, so \
         writes during the backup may be in one shard and not in another"
            .to_string(),
    );
    for (collection, shards) in missing {
        let ids: Vec<String> = shards.iter().map(u32::to_string).collect();
        lines.push(format!(
            "PARTIAL: collection `{collection}` lacks shard(s) {} (no reachable Active replica \
             at backup time)",
            ids.join(", ")
        ));
    }
    lines
}
