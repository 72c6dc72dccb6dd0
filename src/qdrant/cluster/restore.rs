//! Restoring a cluster backup shard by shard, into a cluster of any size (one node too).
//!
//! ```text
//! plan: the backup's shard streams, config, shard_number; the target's version and
//!       existing collection (other shard_number, other vectors, points) ── refuse? ─► stop
//!   │
//! create the collection (backup's config and shard_number; --replication-factor)
//!   ▼
//! every target node: GET /collections/{c}/cluster ─► which node hosts which shard
//!   ▼ per shard: that node confirms it hosts the shard, then
//! POST …/shards/{id}/snapshots/upload?priority=snapshot&checksum=… (streamed)
//!   ▼
//! per-shard and total point counts == the backup's
//! ```
//!
//! Guarantees: every refusal comes before anything is created or sent; each shard is
//! uploaded once, to a node that reports the shard among its own local shards right before
//! the upload (Qdrant answers 200 to an upload on a node that does not host the shard and
//! silently adds a replica there); the upload is streamed, checked chunk by chunk and by
//! Qdrant against the stream's SHA-256; the uploaded file is deleted from the node
//! afterwards (or named in a warning); success means every shard and the total hold the
//! points the backup recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{first_node, ClusterNodes, Topology};
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::{Manifest, StreamKind};
use crate::id::BackupId;
use crate::qdrant::aliases::{all_aliases, plan_aliases, pointing_at};
use crate::qdrant::client::RecoverOptions;
use crate::qdrant::provenance::QdrantProvenance;
use crate::qdrant::restore::{upload_stream, versions_compatible};
use crate::qdrant::shard_keys::is_custom;
use crate::qdrant::types::{without_nulls, SnapshotPriority, SnapshotScope};
use crate::repo::Repository;
use crate::restore::{RestoreOptions, RestorePlan};

#[derive(Clone, Debug, Default)]
pub struct ClusterRestoreOptions {
    /// Restore into this collection instead of the one backed up.
    pub collection: Option<String>,
    /// Replicas per shard on the target (default: the backup's).
    pub replication_factor: Option<u32>,
    /// Qdrant's recovery priority; default `snapshot` (the snapshot's data wins).
    pub priority: Option<SnapshotPriority>,
    /// Drop an existing collection first.
    pub replace: bool,
    /// Recreate the aliases the backup recorded (never moving one that points elsewhere).
    pub aliases: bool,
    /// Restore despite a Qdrant version qvault cannot vouch for, or missing shards.
    pub force: bool,
    pub restore: RestoreOptions,
}

/// One shard stream and what it must hold once restored.
#[derive(Clone, Debug)]
pub struct ShardPlan {
    pub shard_id: u32,
    pub plan: RestorePlan,
    /// The shard's points on the replica the backup read.
    pub expected_points: Option<u64>,
}

impl serde::Serialize for ShardPlan {
    /// `shard_id`, the stream's `stream`, `sha256` and `bytes`, and `expected_points`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct View<'a> {
            shard_id: u32,
            stream: &'a str,
            sha256: &'a str,
            bytes: u64,
            expected_points: Option<u64>,
        }
        let stream = &self.plan.stream;
        View {
            shard_id: self.shard_id,
            stream: &stream.name,
            sha256: &stream.sha256,
            bytes: stream.size,
            expected_points: self.expected_points,
        }
        .serialize(s)
    }
}

/// What a cluster restore will do, after its checks passed; a dry run's `--json` prints it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterRestorePlan {
    #[serde(rename = "id")]
    pub backup: BackupId,
    pub collection: String,
    pub shard_number: u32,
    pub shards: Vec<ShardPlan>,
    /// The body of `PUT /collections/{c}`, when the collection is created.
    pub create: Option<Value>,
    /// Drop the existing collection first (`--replace`).
    pub drop_existing: bool,
    #[serde(rename = "qdrant_version")]
    pub target_version: String,
    /// Warnings the checks raised but `force` overrode.
    pub forced: Vec<String>,
    /// Aliases to create once the restore is checked: the backup's (`--aliases`) and those
    /// that pointed at a collection `--replace` drops (Qdrant drops them with it).
    pub aliases: Vec<String>,
    /// Aliases the backup recorded that this restore leaves out (no `--aliases`).
    pub aliases_left_out: Vec<String>,
    /// The smallest and largest exact count of the collection the backup took before its
    /// shards (`None` for a partial backup, or one that did not count).
    pub expected_total: Option<(u64, u64)>,
}

/// One restored shard.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShardRestored {
    pub shard_id: u32,
    /// The node the shard was uploaded to (one that hosts it).
    pub url: String,
    pub bytes: u64,
    pub points_count: Option<u64>,
    pub expected_points: Option<u64>,
}

/// What a cluster restore did; `--json` prints it as is: the plan's `id`, `collection`,
/// `shard_number`, `qdrant_version` and `forced`, then what became of each shard.
#[derive(Clone, Debug)]
pub struct ClusterRestoreReport {
    pub plan: ClusterRestorePlan,
    pub shards: Vec<ShardRestored>,
    /// Qdrant's exact count of the collection after the restore.
    pub points_count: u64,
    pub duration: Duration,
    pub warnings: Vec<String>,
}

impl serde::Serialize for ClusterRestoreReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The plan's own shard list is left out: the report's `shards` say what became of each.
        #[derive(serde::Serialize)]
        struct View<'a> {
            id: BackupId,
            collection: &'a str,
            shard_number: u32,
            qdrant_version: &'a str,
            forced: &'a [String],
            shards: &'a [ShardRestored],
            points_count: u64,
            seconds: f64,
            warnings: &'a [String],
        }
        let plan = &self.plan;
        View {
            id: plan.backup,
            collection: &plan.collection,
            shard_number: plan.shard_number,
            qdrant_version: &plan.target_version,
            forced: &plan.forced,
            shards: &self.shards,
            points_count: self.points_count,
            seconds: self.duration.as_secs_f64(),
            warnings: &self.warnings,
        }
        .serialize(s)
    }
}

/// The body that creates a collection like the backed-up one: its params (vectors, sparse
/// vectors, shard_number, sharding, replication, on-disk payload) and its HNSW, optimizer,
/// WAL, quantization and strict-mode configs, unset (`null`) fields left out.
pub fn create_body(config: &Value, replication_factor: Option<u32>) -> Value {
    let mut body = without_nulls(config.get("params").unwrap_or(&json!({})));
    if let (Some(rf), Some(o)) = (replication_factor, body.as_object_mut()) {
        o.insert("replication_factor".into(), json!(rf));
    }
    // Collection info says `optimizer_config`; the create call wants `optimizers_config`.
    let sections = [
        ("hnsw_config", "hnsw_config"),
        ("optimizer_config", "optimizers_config"),
        ("wal_config", "wal_config"),
        ("quantization_config", "quantization_config"),
        ("strict_mode_config", "strict_mode_config"),
    ];
    for (from, to) in sections {
        if let (Some(v), Some(o)) =
            (config.get(from).filter(|v| !v.is_null()), body.as_object_mut())
        {
            o.insert(to.into(), without_nulls(v));
        }
    }
    body
}

/// Whether `manifest` is a cluster backup: shard streams that recorded a topology.
pub fn is_cluster_backup(manifest: &Manifest) -> bool {
    manifest.streams.iter().any(|s| {
        s.kind == StreamKind::QdrantShard
            && QdrantProvenance::from_source(s.source.as_ref())
                .is_some_and(|p| p.topology.is_some())
    })
}

/// Checks that the shard streams of `backup` can go into the cluster `nodes` and plans it;
/// changes nothing on the nodes. Refusals are [`ErrorKind::Refused`].
pub async fn plan_cluster_restore(
    repo: &Repository,
    nodes: &ClusterNodes,
    backup: BackupId,
    manifest: &Manifest,
    options: &ClusterRestoreOptions,
) -> Result<ClusterRestorePlan> {
    let mut forced = Vec::new();
    let mut refuse = |msg: String| -> Result<()> {
        if options.force {
            tracing::warn!("--force: {msg}");
            forced.push(msg);
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Refused, format!("{msg}; pass --force to restore anyway")))
        }
    };
    let mut streams = Vec::new();
    for s in manifest.streams.iter().filter(|s| s.kind == StreamKind::QdrantShard) {
        let Some(p) = QdrantProvenance::from_source(s.source.as_ref()) else { continue };
        let (Some(c), Some(id)) = (p.collection.clone(), p.shard_id) else { continue };
        streams.push((c, id, p, s));
    }
    let collections: BTreeSet<&str> = streams.iter().map(|s| s.0.as_str()).collect();
    let source = match collections.iter().collect::<Vec<_>>().as_slice() {
        [one] => one.to_string(),
        [] => {
            return Err(Error::invalid_input(format!(
                "backup {backup} holds no Qdrant shard streams: restore it into a single node \
                 with one --qdrant URL"
            )))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|s| **s).collect();
            return Err(Error::invalid_input(format!(
                "backup {backup} holds shards of collections {}: a cluster restore takes one; \
                 pick its shards with --stream, or restore one collection at a time",
                names.join(", ")
            )));
        }
    };
    let collection = options.collection.clone().unwrap_or_else(|| source.clone());
    streams.sort_by_key(|s| s.1);
    let first = &streams[0].2;
    let Some(params) = first.params() else {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "backup {backup} does not record the config of collection `{source}`, so it \
                 cannot be created on the target: create it yourself, then restore each shard \
                 with --stream"
            ),
        ));
    };
    if is_custom(first.config.as_ref()) {
        return Err(Error::new(
            ErrorKind::Refused,
            format!(
                "collection `{source}` uses custom sharding: a cluster restore of it is not \
                 supported yet. Create `{collection}` with its shard keys (see `qvault show \
                 {backup}`), then restore each shard stream with --stream"
            ),
        ));
    }
    let shard_number = params.shard_number;
    let have: BTreeSet<u32> = streams.iter().map(|s| s.1).collect();
    let lacking: Vec<String> =
        (0..shard_number).filter(|id| !have.contains(id)).map(|id| id.to_string()).collect();
    if !lacking.is_empty() {
        refuse(format!(
            "backup {backup} lacks shard(s) {} of collection `{source}` (a partial backup): \
             they would be restored empty",
            lacking.join(", ")
        ))?;
    }

    let (client, version) = first_node(nodes).await?;
    let target_version = version.version;
    let backup_version = first.qdrant.version.clone();
    if !versions_compatible(&backup_version, &target_version) {
        refuse(format!(
            "backup {backup} holds shards made by Qdrant {backup_version}, and Qdrant at {} is \
             {target_version}: Qdrant recovers snapshots of its own minor version or the \
             previous one only",
            client.url()
        ))?;
    }
    let existing = match client.collection_info(&collection).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let config = first.config.clone().unwrap_or_default();
    let body = create_body(&config, options.replication_factor);
    let (create, drop_existing) = match &existing {
        None => (Some(body), false),
        Some(_) if options.replace => (Some(body), true),
        Some(info) => {
            let url = client.url();
            if info.params.shard_number != shard_number {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "collection `{collection}` exists on Qdrant at {url} with shard_number \
                         {}, and backup {backup} has {shard_number} shards: Qdrant recovers \
                         shards by id, so they cannot go into it. Restore into a new \
                         collection with --collection NEW_NAME, or --replace to drop \
                         `{collection}` and create it with the backup's layout",
                        info.params.shard_number
                    ),
                ));
            }
            if let Some(difference) = params.incompatibility(&info.params) {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "collection `{collection}` exists on Qdrant at {url} and Qdrant would \
                         refuse backup {backup} into it ({difference}). Restore into a new \
                         collection with --collection NEW_NAME, or use --replace"
                    ),
                ));
            }
            let points = client.count_points(&collection, true).await?;
            if points > 0 {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "collection `{collection}` exists on Qdrant at {url} and holds {points} \
                         points: pass --replace to drop it and restore exactly backup {backup}, \
                         or restore into a new collection with --collection NEW_NAME"
                    ),
                ));
            }
            (None, false)
        }
    };
    let kept = match drop_existing {
        true => pointing_at(&all_aliases(&client).await?, &collection),
        false => Vec::new(),
    };
    let recorded = first.aliases.clone().unwrap_or_default();
    let wanted: &[String] = if options.aliases { &recorded } else { &[] };
    let aliases = plan_aliases(&client, &collection, wanted, &kept).await?;
    let aliases_left_out = if options.aliases { Vec::new() } else { recorded.clone() };
    let counts: Option<Vec<u64>> = streams.iter().map(|s| s.2.collection_exact_count).collect();
    let expected_total = counts
        .filter(|_| lacking.is_empty())
        .and_then(|c| Some((*c.iter().min()?, *c.iter().max()?)));
    let mut shards = Vec::with_capacity(streams.len());
    for (_, shard_id, p, stream) in &streams {
        shards.push(ShardPlan {
            shard_id: *shard_id,
            plan: RestorePlan::new(repo, backup, stream).await?,
            expected_points: p.points_count.flatten(),
        });
    }
    Ok(ClusterRestorePlan {
        backup,
        collection,
        shard_number,
        shards,
        create,
        drop_existing,
        target_version,
        forced,
        aliases,
        aliases_left_out,
        expected_total,
    })
}

/// Executes `plan` into the cluster `nodes` (see the module docs for the guarantees).
pub async fn restore_cluster(
    repo: &Repository,
    nodes: &ClusterNodes,
    plan: &ClusterRestorePlan,
    options: &ClusterRestoreOptions,
) -> Result<ClusterRestoreReport> {
    // Fails now rather than after the collection was created.
    repo.data_identities("restoring a backup into Qdrant")?;
    let started = Instant::now();
    let c = plan.collection.as_str();
    let (first, _) = first_node(nodes).await?;
    if plan.drop_existing {
        first.delete_collection(c).await.map_err(|e| {
            e.context(format!("--replace: dropping collection `{c}` before the restore"))
        })?;
    }
    if let Some(body) = &plan.create {
        first.create_collection(c, body).await.map_err(|e| {
            e.context(format!("creating collection `{c}` for backup {}", plan.backup))
        })?;
    }
    let topology = settled_topology(nodes, c).await?;
    let (hosts, _) = topology.pick_readers(nodes);
    if let Some(unhosted) = plan.shards.iter().find(|s| !hosts.contains_key(&s.shard_id)) {
        let why = topology
            .pick_readers(nodes)
            .1
            .into_iter()
            .find(|u| u.shard_id == unhosted.shard_id)
            .map_or_else(|| format!("shard {} does not exist", unhosted.shard_id), |u| u.why);
        return Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "{why}. Nothing was uploaded; collection `{c}` was created on the target: give \
                 every target node's URL with --qdrant, then restore again with --replace"
            ),
        ));
    }

    let mut restored: Vec<ShardRestored> = Vec::new();
    let mut warnings = Vec::new();
    for shard in &plan.shards {
        let client = &nodes.clients()[hosts[&shard.shard_id]];
        let scope = SnapshotScope::shard(c, shard.shard_id);
        let done = || {
            let ids: Vec<String> = restored.iter().map(|r| r.shard_id.to_string()).collect();
            match ids.as_slice() {
                [] => "no shard was restored".to_string(),
                ids => format!("shard(s) {} were restored", ids.join(", ")),
            }
        };
        // The node's own word, right before sending: an upload to a node that does not
        // host the shard answers 200 and adds a replica there.
        let local = client.collection_cluster_info(c).await?;
        if !local.local_shards.iter().any(|l| l.shard_id == shard.shard_id) {
            return Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "{scope} is no longer hosted by Qdrant at {} (the cluster moved it): \
                     nothing was sent there, {}; restore again with --replace",
                    client.url(),
                    done()
                ),
            ));
        }
        let filename =
            format!("{c}-shard-{}-qvault-{}.snapshot", shard.shard_id, &plan.backup.to_hex()[..12]);
        let recover = RecoverOptions {
            priority: Some(options.priority.unwrap_or(SnapshotPriority::Snapshot)),
            checksum: Some(shard.plan.stream.sha256.clone()),
            wait: true,
            filename: Some(filename.clone()),
        };
        let summary = upload_stream(repo, &shard.plan, client, &scope, &recover, &options.restore)
            .await
            .map_err(|e| e.context(done()))?;
        if let Err(e) = client.delete_snapshot(&scope, &filename, true).await {
            warnings.push(format!(
                "could not delete the uploaded file `{filename}` of {scope} from Qdrant at {} \
                 ({e}); delete it with `qvault qdrant snapshots delete`",
                client.url()
            ));
        }
        restored.push(ShardRestored {
            shard_id: shard.shard_id,
            url: client.url().to_string(),
            bytes: summary.bytes,
            points_count: None,
            expected_points: shard.expected_points,
        });
    }

    let points_count = check_counts(nodes, plan, &mut restored, &mut warnings).await?;
    // With `priority=snapshot` Qdrant marks the shard's other replicas Dead and refills them
    // from the restored one (`recover_shard_snapshot_impl` in Qdrant's
    // `src/common/snapshots.rs`): say so while that is under way.
    let after = Topology::read(nodes, c).await?;
    let refilling: Vec<String> = after
        .shards
        .iter()
        .filter(|(_, replicas)| replicas.iter().any(|r| r.state != "Active"))
        .map(|(id, _)| id.to_string())
        .collect();
    if !refilling.is_empty() {
        warnings.push(format!(
            "Qdrant is refilling the other replicas of shard(s) {} of `{c}` from the restored \
             ones: until their state is Active again (GET /collections/{c}/cluster), those \
             shards have one working replica",
            refilling.join(", ")
        ));
    }
    if !plan.aliases.is_empty() {
        let (first, _) = first_node(nodes).await?;
        first.create_aliases(c, &plan.aliases).await.map_err(|e| {
            e.context(format!(
                "`{c}` was restored and checked, but its aliases {} were not all created",
                plan.aliases.join(", ")
            ))
        })?;
    }
    for w in &plan.forced {
        warnings.push(format!("forced: {w}"));
    }
    if !plan.aliases_left_out.is_empty() {
        warnings.push(format!(
            "the backup recorded aliases {} pointing at the collection; they were not \
             recreated: restore with --aliases, or create them yourself",
            plan.aliases_left_out.join(", ")
        ));
    }
    Ok(ClusterRestoreReport {
        plan: plan.clone(),
        shards: restored,
        points_count,
        duration: started.elapsed(),
        warnings,
    })
}

/// How long a new collection may take to show on every node with its replicas Active.
const SETTLE: Duration = Duration::from_secs(15);

/// The target's topology once a new collection has reached every node (consensus applies
/// it on each node in turn) and no replica given is still initializing. Gives up after
/// [`SETTLE`] and returns what it saw, so the caller names what is missing.
async fn settled_topology(nodes: &ClusterNodes, collection: &str) -> Result<Topology> {
    let started = Instant::now();
    loop {
        let late = started.elapsed() > SETTLE;
        match Topology::read(nodes, collection).await {
            Ok(t) if late || t.shards.values().flatten().all(|r| r.state == "Active") => {
                return Ok(t)
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && !late => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads each restored shard's points on its node and the collection's exact count, and
/// fails unless the exact count is the one the backup took (within the range it saw when
/// clients wrote). Per-shard figures are Qdrant's estimates (cluster info counts with
/// `exact: false`): a difference there is a warning when the exact total decides, and an
/// error only for backups that recorded no exact count.
async fn check_counts(
    nodes: &ClusterNodes,
    plan: &ClusterRestorePlan,
    restored: &mut [ShardRestored],
    warnings: &mut Vec<String>,
) -> Result<u64> {
    let c = plan.collection.as_str();
    let mut by_url: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for client in nodes.clients() {
        if restored.iter().any(|r| r.url == client.url()) {
            let info = client.collection_cluster_info(c).await?;
            let local = info.local_shards.iter().map(|l| (l.shard_id, l.points_count)).collect();
            by_url.insert(client.url().to_string(), local);
        }
    }
    let mut shard_diffs = Vec::new();
    for r in restored.iter_mut() {
        r.points_count = by_url.get(&r.url).and_then(|m| m.get(&r.shard_id)).copied();
        if let (Some(want), Some(have)) = (r.expected_points, r.points_count) {
            if want != have {
                shard_diffs
                    .push(format!("shard {} holds {have} points, the backup {want}", r.shard_id));
            }
        }
    }
    let (first, _) = first_node(nodes).await?;
    let total = first.count_points(c, true).await?;
    let mut wrong = Vec::new();
    match plan.expected_total {
        Some((low, high)) => {
            if !shard_diffs.is_empty() {
                warnings.push(format!(
                    "by Qdrant's per-shard estimates, {} (the exact total matches)",
                    shard_diffs.join("; ")
                ));
            }
            if !(low..=high).contains(&total) {
                let counted = match low == high {
                    true => format!("{low}"),
                    false => format!("{low} to {high} while its shards were read"),
                };
                wrong.push(format!(
                    "the collection holds {total} points (exact count), the backup counted \
                     {counted}"
                ));
            } else if low != high {
                warnings.push(format!(
                    "`{c}` holds {total} points: clients wrote while backup {} read its shards \
                     (it counted {low} to {high}), and Qdrant gives no cross-shard consistency",
                    plan.backup
                ));
            }
        }
        None => {
            wrong.extend(shard_diffs);
            let expected: Option<u64> = restored.iter().map(|r| r.expected_points).sum();
            if let Some(want) = expected.filter(|w| *w != total) {
                wrong.push(format!("the collection holds {total} points, the backup {want}"));
            }
        }
    }
    if wrong.is_empty() {
        return Ok(total);
    }
    Err(Error::new(
        ErrorKind::Qdrant,
        format!(
            "collection `{c}` was restored from backup {} but {}: the recovery is incomplete; \
             check the Qdrant logs and restore again with --replace",
            plan.backup,
            wrong.join("; ")
        ),
    ))
}
