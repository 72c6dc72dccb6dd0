//! Backing up straight from a Qdrant node: create a snapshot, stream its download into the
//! backup pipeline, record where it came from, and delete it from the node again.
//!
//! ```text
//! version; config, info, cluster of every scope (fails before anything is created)
//!   │
//!   ▼ per stream, when the pipeline asks for it:
//! info, cluster, exact count ─► create snapshot (wait=true) ─► stream its download ─┐
//!                                                                                  │ read, checked
//!                   delete it from the node, before the next snapshot is created ◄─┘
//! ```
//!
//! Snapshots are created one at a time, when the pipeline reaches their stream, and deleted
//! as soon as it has read and checked them: a snapshot is a full copy of the collection, so
//! with many collections at most one of them takes space on the node, and none waits there
//! while others stream. The manifest's provenance and the SHA-256 the pipeline checks
//! against (Qdrant's checksum) come from that create call, which is why the pipeline takes
//! its streams from a [`StreamSources`] rather than a list made up front.

use std::io::Read;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use std::collections::BTreeMap;

use super::aliases::{all_aliases, pointing_at, resolve};
use super::client::QdrantClient;
pub use super::create::CreateOptions;
use super::create::{create_snapshot, snapshots_before};
use super::provenance::{NodeProvenance, QdrantProvenance, SnapshotProvenance, StoredCollection};
use super::sample::{record_sample, SampleOptions};
use super::shard_keys::{is_custom, shard_keys};
use super::types::{AliasDescription, ServerVersion, SnapshotDescription, SnapshotScope};
use crate::backup::{
    backup_from, BackupOptions, BackupSummary, Progress, StreamSource, StreamSources,
};
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamKind;
use crate::repo::Repository;

/// What to archive from one Qdrant node.
#[derive(Clone, Debug, Default)]
pub struct QdrantBackupOptions {
    /// Collection, shard or full-storage snapshots; one stream each, in this order.
    pub scopes: Vec<SnapshotScope>,
    /// Add a collection snapshot of every collection the node lists.
    pub all_collections: bool,
    /// Archive this existing snapshot instead of creating one (exactly one scope); it is
    /// never deleted.
    pub existing_snapshot: Option<String>,
    /// Leave the created snapshots on the node.
    pub keep_remote: bool,
    /// How snapshots are created: `wait=false` and polling, and how long to wait.
    pub create: CreateOptions,
    /// The point sample recorded for the restore test; `None` (the default here, while
    /// the CLI samples unless `--no-sample`) records none.
    pub sample: Option<SampleOptions>,
}

/// A snapshot qvault created and what became of it on the node.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RemoteSnapshot {
    /// `collection \`c\``, `shard 0 of collection \`c\`` or `full storage`.
    pub scope: String,
    pub name: String,
    pub outcome: SnapshotFate,
}

/// What became of a snapshot the backup used. Shown and serialized as the text `--json`
/// has always carried: `deleted`, `kept`, `not ours`, `on the node` or `delete failed: …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotFate {
    Deleted,
    /// Left on the node as asked (`--keep-remote`).
    Kept,
    /// An existing snapshot (`--snapshot NAME`): qvault never deletes it.
    NotOurs,
    /// Never released: the backup stopped before it could be.
    OnTheNode,
    /// Deleting it failed, with the error; it is still on the node.
    DeleteFailed(String),
}

impl SnapshotFate {
    /// The fate's name: the shown text without the error of a failed delete.
    pub fn as_str(&self) -> &'static str {
        match self {
            SnapshotFate::Deleted => "deleted",
            SnapshotFate::Kept => "kept",
            SnapshotFate::NotOurs => "not ours",
            SnapshotFate::OnTheNode => "on the node",
            SnapshotFate::DeleteFailed(_) => "delete failed",
        }
    }

    /// Whether the snapshot should be gone but is still on the node.
    pub fn delete_failed(&self) -> bool {
        matches!(self, SnapshotFate::DeleteFailed(_))
    }
}

impl std::fmt::Display for SnapshotFate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotFate::DeleteFailed(e) => write!(f, "delete failed: {e}"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl serde::Serialize for SnapshotFate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Compares the fate's name ([`SnapshotFate::as_str`]).
impl PartialEq<&str> for SnapshotFate {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The result of a Qdrant backup.
#[derive(Clone, Debug)]
pub struct QdrantBackupReport {
    pub summary: BackupSummary,
    pub qdrant_version: String,
    pub snapshots: Vec<RemoteSnapshot>,
}

impl QdrantBackupReport {
    /// Snapshots that should have been deleted but are still on the node.
    pub fn left_on_node(&self) -> impl Iterator<Item = &RemoteSnapshot> {
        self.snapshots.iter().filter(|s| s.outcome.delete_failed())
    }
}

/// The stream name of a scope inside a backup.
pub fn stream_name(scope: &SnapshotScope) -> String {
    match scope {
        SnapshotScope::Collection(c) => c.clone(),
        SnapshotScope::Shard { collection, shard_id } => format!("{collection}/shard-{shard_id}"),
        SnapshotScope::FullStorage => "full-storage".to_string(),
    }
}

fn stream_kind(scope: &SnapshotScope) -> StreamKind {
    match scope {
        SnapshotScope::Collection(_) => StreamKind::QdrantCollection,
        SnapshotScope::Shard { .. } => StreamKind::QdrantShard,
        SnapshotScope::FullStorage => StreamKind::QdrantFullStorage,
    }
}

/// A snapshot the backup used, and what became of it.
struct Used {
    scope: SnapshotScope,
    name: String,
    created: bool,
    /// `None` while it is still on the node for the pipeline to read.
    outcome: Option<SnapshotFate>,
    /// Set while a snapshot this run created (and does not keep) is on the node.
    held: Option<crate::held::Token>,
}

impl Used {
    /// A snapshot the backup reads: `created` by this run or an existing one (`--snapshot`);
    /// `held` while a snapshot it created (and does not keep) is on the node.
    fn new(
        scope: &SnapshotScope,
        name: &str,
        created: bool,
        held: Option<crate::held::Token>,
    ) -> Used {
        Used { scope: scope.clone(), name: name.to_string(), created, outcome: None, held }
    }
}

/// The backup's streams, one snapshot at a time: each is created (or, with `--snapshot`,
/// looked up) when the pipeline asks for its stream, and released when the pipeline asks
/// for the next one or the backup ends.
struct SnapshotStreams<'a> {
    client: &'a QdrantClient,
    version: ServerVersion,
    scopes: std::vec::IntoIter<SnapshotScope>,
    existing_snapshot: Option<String>,
    keep_remote: bool,
    create: CreateOptions,
    sample: Option<SampleOptions>,
    /// Every alias on the node, read once: recorded with the collections they point at.
    aliases: Vec<AliasDescription>,
    /// Stream name → the alias the user named instead of the collection.
    requested_as: BTreeMap<String, String>,
    used: Vec<Used>,
    /// Errors of the downloads, in Qdrant's words (the pipeline sees only read errors).
    download_errors: Arc<Mutex<Vec<String>>>,
}

impl SnapshotStreams<'_> {
    async fn open(&mut self, scope: SnapshotScope) -> Result<StreamSource> {
        let client = self.client;
        // Read again, not taken from the preflight: earlier streams may have taken hours.
        let mut source = describe_source(client, &scope, &self.version).await?;
        if let Some(c) = scope.collection_name() {
            let aliases = pointing_at(&self.aliases, c);
            source.aliases = (!aliases.is_empty()).then_some(aliases);
            source.requested_as = self.requested_as.get(&stream_name(&scope)).cloned();
        }
        let (snapshot, created) = match &self.existing_snapshot {
            Some(name) => {
                let snapshot = existing_snapshot(client, &scope, name).await?;
                self.used.push(Used::new(&scope, &snapshot.name, false, None));
                (snapshot, false)
            }
            None => {
                let before = snapshots_before(client, &scope).await?;
                add_exact_counts(client, &scope, &mut source).await?;
                record_sample(client, &scope, self.sample.as_ref(), &mut source).await;
                let snapshot = create_snapshot(client, &scope, &before, &self.create).await?;
                // Recorded at once, so that a failure of the count below, or a signal during
                // it, deletes the snapshot too.
                let held = (!self.keep_remote)
                    .then(|| super::create::hold_snapshot(client, &scope, &snapshot.name));
                self.used.push(Used::new(&scope, &snapshot.name, true, held));
                // Counted again so restore knows the range a snapshot taken while clients
                // wrote may hold; recorded only when it differs, so backups of quiet
                // collections keep the provenance shape they always had.
                if let (SnapshotScope::Collection(c), Some(before)) =
                    (&scope, source.exact_points_count)
                {
                    let after = client.count_points(c, true).await?;
                    source.exact_points_count_after = (after != before).then_some(after);
                }
                (snapshot, true)
            }
        };
        source.snapshot = Some(SnapshotProvenance::new(&snapshot, created));
        Ok(StreamSource {
            name: stream_name(&scope),
            kind: stream_kind(&scope),
            reader: lazy_download(client, &scope, &snapshot.name, &self.download_errors),
            source: Some(source.to_source()?),
            expected_sha256: snapshot.checksum,
            left_out: None,
        })
    }

    /// Deletes every snapshot still on the node that qvault created (unless asked to keep
    /// them), noting what happened to each.
    async fn release(&mut self) {
        let client = self.client;
        for used in self.used.iter_mut().filter(|u| u.outcome.is_none()) {
            let outcome = if !used.created {
                SnapshotFate::NotOurs
            } else if self.keep_remote {
                SnapshotFate::Kept
            } else {
                match client.delete_snapshot(&used.scope, &used.name, true).await {
                    Ok(()) => SnapshotFate::Deleted,
                    Err(e) => {
                        tracing::warn!("{e}");
                        SnapshotFate::DeleteFailed(e.to_string())
                    }
                }
            };
            if let Some(held) = used.held.take() {
                crate::held::let_go(held);
            }
            used.outcome = Some(outcome);
        }
    }

    fn report(&self) -> Vec<RemoteSnapshot> {
        self.used
            .iter()
            .map(|u| RemoteSnapshot {
                scope: u.scope.to_string(),
                name: u.name.clone(),
                outcome: u.outcome.clone().unwrap_or(SnapshotFate::OnTheNode),
            })
            .collect()
    }
}

impl StreamSources for SnapshotStreams<'_> {
    async fn next_stream(&mut self) -> Result<Option<StreamSource>> {
        // Asked for the next stream: the pipeline has read and checked the previous one.
        self.release().await;
        match self.scopes.next() {
            Some(scope) => self.open(scope).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Archives snapshots of `client`'s node into `repo` as one backup, one stream per scope.
///
/// Guarantees: a backup is recorded only when every download completed and matched the
/// checksum Qdrant reported; each snapshot is created only when its stream is due and the
/// snapshots qvault created are deleted from the node as soon as they were read, and also
/// when the backup fails (unless `keep_remote`); the error says what was left.
pub async fn backup_qdrant(
    repo: &Repository,
    client: &QdrantClient,
    options: &QdrantBackupOptions,
    backup_options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<QdrantBackupReport> {
    let version = client.version().await?;
    let aliases = all_aliases(client).await?;
    let (scopes, requested_as) = resolve_scopes(client, options, &aliases).await?;

    // Everything read before the first snapshot is created: a missing collection, a shard
    // on another node or a bad key fails here, with nothing to clean up on the node.
    for scope in &scopes {
        describe_source(client, scope, &version).await?;
    }

    let mut streams = SnapshotStreams {
        client,
        version: version.clone(),
        scopes: scopes.into_iter(),
        existing_snapshot: options.existing_snapshot.clone(),
        keep_remote: options.keep_remote,
        create: options.create,
        sample: options.sample,
        aliases,
        requested_as,
        used: Vec::new(),
        download_errors: Arc::default(),
    };
    let result = backup_from(repo, &mut streams, backup_options, progress).await;
    // After a success every snapshot is released already; after a failure, the one being
    // read (or created) is still on the node.
    streams.release().await;
    let snapshots = streams.report();
    match result {
        Ok(summary) => {
            Ok(QdrantBackupReport { summary, qdrant_version: version.version, snapshots })
        }
        Err(e) => {
            let note = cleanup_note(&snapshots, options.keep_remote);
            // A download that broke shows up in the pipeline as a read error; report it as
            // the Qdrant failure it is, with Qdrant's own words.
            let downloads = streams.download_errors.lock().map(|d| d.clone()).unwrap_or_default();
            let e = match downloads.first() {
                Some(first) if e.kind() == ErrorKind::Io => Error::new(
                    ErrorKind::Qdrant,
                    format!("backup failed, no backup recorded{note}: {first}"),
                ),
                _ => e.context(format!("from Qdrant at {}{note}", client.url())),
            };
            Err(e)
        }
    }
}

/// The scopes to back up, an alias given as a collection replaced by its collection (the
/// returned map says which stream was asked for by which alias).
async fn resolve_scopes(
    client: &QdrantClient,
    options: &QdrantBackupOptions,
    aliases: &[AliasDescription],
) -> Result<(Vec<SnapshotScope>, BTreeMap<String, String>)> {
    let mut requested_as = BTreeMap::new();
    let mut scopes: Vec<SnapshotScope> = options
        .scopes
        .iter()
        .map(|scope| {
            let real = scope.collection_name().and_then(|c| resolve(aliases, c));
            let (Some(real), Some(alias)) = (real, scope.collection_name()) else {
                return scope.clone();
            };
            let resolved = match scope {
                SnapshotScope::Shard { shard_id, .. } => SnapshotScope::shard(real, *shard_id),
                _ => SnapshotScope::collection(real),
            };
            requested_as.insert(stream_name(&resolved), alias.to_string());
            resolved
        })
        .collect();
    if options.all_collections {
        for name in client.list_collections().await? {
            let scope = SnapshotScope::Collection(name);
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    if scopes.is_empty() {
        return Err(Error::invalid_input(if options.all_collections {
            format!("Qdrant at {} has no collections: nothing to back up", client.url())
        } else {
            "nothing to back up: name a collection (--collection), --all-collections or \
             --full-storage"
                .to_string()
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &scopes {
        if !seen.insert(stream_name(s)) {
            return Err(Error::invalid_input(format!("{s} is named twice: name it once")));
        }
    }
    if options.existing_snapshot.is_some() && scopes.len() != 1 {
        return Err(Error::invalid_input(
            "--snapshot NAME archives one existing snapshot: give exactly one collection, \
             shard or --full-storage with it",
        ));
    }
    Ok((scopes, requested_as))
}

/// The manifest's provenance of a scope: node, version, collection config and info.
async fn describe_source(
    client: &QdrantClient,
    scope: &SnapshotScope,
    version: &ServerVersion,
) -> Result<QdrantProvenance> {
    let mut source = QdrantProvenance::new(NodeProvenance {
        url: client.url().to_string(),
        version: version.version.clone(),
        commit: version.commit.clone(),
    });
    match scope {
        SnapshotScope::Collection(c) | SnapshotScope::Shard { collection: c, .. } => {
            let info = client.collection_info(c).await?;
            let cluster = client.collection_cluster_info(c).await?;
            source.collection = Some(c.clone());
            source.config = Some(info.config.clone());
            source.collection_info = Some(info.raw.clone());
            source.cluster = Some(serde_json::to_value(&cluster).unwrap_or_default());
            if is_custom(Some(&info.config)) {
                source.shard_keys = Some(shard_keys(&cluster));
            }
            match scope {
                SnapshotScope::Shard { shard_id, .. } => {
                    let local = cluster.local_shards.iter().find(|s| s.shard_id == *shard_id);
                    let Some(local) = local else {
                        let elsewhere = cluster
                            .remote_shards
                            .iter()
                            .find(|s| s.shard_id == *shard_id)
                            .map(|s| format!(" (peer {} holds it)", s.peer_id))
                            .unwrap_or_default();
                        return Err(Error::invalid_input(format!(
                            "{scope} is not local to Qdrant at {}{elsewhere}: snapshot it on \
                             the node that holds it",
                            client.url()
                        )));
                    };
                    source.shard_id = Some(*shard_id);
                    source.points_count = Some(Some(local.points_count));
                }
                _ => source.points_count = Some(info.points_count),
            }
        }
        SnapshotScope::FullStorage => {
            let mut collections = std::collections::BTreeMap::new();
            for c in client.list_collections().await? {
                let info = client.collection_info(&c).await?;
                let stored = StoredCollection {
                    config: info.config,
                    points_count: info.points_count,
                    exact_points_count: None,
                };
                collections.insert(c, stored);
            }
            source.collections = Some(collections);
        }
    }
    Ok(source)
}

/// Adds Qdrant's exact point counts to `source`, counted just before the snapshot is made:
/// `exact_points_count` for a collection, and per collection for full storage. Restore
/// compares against it (collection info's `points_count`, also recorded, is an estimate).
///
/// Writes between the count and the snapshot make it a lower or upper bound of what the
/// snapshot holds. Skipped for shards (Qdrant counts whole collections only) and for a
/// collection with a shard this node does not hold: the count covers the whole cluster, the
/// node's snapshot only its local shards.
async fn add_exact_counts(
    client: &QdrantClient,
    scope: &SnapshotScope,
    source: &mut QdrantProvenance,
) -> Result<()> {
    match scope {
        SnapshotScope::Collection(c) => {
            source.exact_points_count = exact_count_if_local(client, c).await?;
        }
        SnapshotScope::Shard { .. } => {}
        SnapshotScope::FullStorage => {
            for (c, stored) in source.collections.iter_mut().flatten() {
                stored.exact_points_count = exact_count_if_local(client, c).await?;
            }
        }
    }
    Ok(())
}

/// The exact point count of `collection` when every shard of it is local to the node.
async fn exact_count_if_local(client: &QdrantClient, collection: &str) -> Result<Option<u64>> {
    let cluster = client.collection_cluster_info(collection).await?;
    let all_local = cluster
        .remote_shards
        .iter()
        .all(|r| cluster.local_shards.iter().any(|l| l.shard_id == r.shard_id));
    if !all_local {
        return Ok(None);
    }
    client.count_points(collection, true).await.map(Some)
}

async fn existing_snapshot(
    client: &QdrantClient,
    scope: &SnapshotScope,
    name: &str,
) -> Result<SnapshotDescription> {
    let list = client.list_snapshots(scope).await?;
    list.into_iter().find(|s| s.name == name).ok_or_else(|| {
        Error::not_found(format!(
            "Qdrant at {} has no snapshot `{name}` of {scope}; list them with `qvault qdrant \
             snapshots list`",
            client.url()
        ))
    })
}

/// A blocking reader over the snapshot's download, which starts on the first read. Errors
/// of the download are also noted in `errors`, so the caller can name the real cause.
fn lazy_download(
    client: &QdrantClient,
    scope: &SnapshotScope,
    name: &str,
    errors: &Arc<Mutex<Vec<String>>>,
) -> Box<dyn Read + Send> {
    let client = client.clone();
    let scope = scope.clone();
    let name = name.to_string();
    let errors = Arc::clone(errors);
    let stream = futures::stream::once(async move {
        client.download_snapshot(&scope, &name).await.map(|d| d.into_stream())
    })
    .try_flatten()
    .inspect_err(move |e: &Error| {
        if let Ok(mut list) = errors.lock() {
            list.push(e.message().to_string());
        }
    })
    .map_err(std::io::Error::other)
    .boxed();
    let reader = tokio_util::io::StreamReader::new(stream);
    // The backup pipeline reads on a blocking thread, where bridging to async is allowed.
    Box::new(tokio_util::io::SyncIoBridge::new(reader))
}

fn cleanup_note(snapshots: &[RemoteSnapshot], keep: bool) -> String {
    let created: Vec<&RemoteSnapshot> =
        snapshots.iter().filter(|s| s.outcome != SnapshotFate::NotOurs).collect();
    if created.is_empty() {
        return String::new();
    }
    let failed: Vec<&str> =
        created.iter().filter(|s| s.outcome.delete_failed()).map(|s| s.name.as_str()).collect();
    if keep {
        let names: Vec<&str> = created.iter().map(|s| s.name.as_str()).collect();
        format!(" (snapshots kept on the node as asked: {})", names.join(", "))
    } else if failed.is_empty() {
        " (the snapshots qvault created were deleted from the node)".to_string()
    } else {
        format!(
            " (could not delete {} from the node: delete them with `qvault qdrant snapshots \
             delete`)",
            failed.join(", ")
        )
    }
}
