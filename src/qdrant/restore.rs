//! Restoring a backup's stream into a Qdrant node: checks first, then the reassembled
//! snapshot streamed as Qdrant's upload-recover, then proof that it worked.
//!
//! ```text
//! check target (version, existing collection's vectors + shard_number) ── refuse? ──► stop
//!   │ ok
//! restore::execute ─Write─► UploadWriter ─bounded channel─► multipart body ─► Qdrant upload
//!   (every chunk and the whole stream checked; a failure errors the body)     │ recovered
//! exact point count == backup's ◄── delete the uploaded file from the snapshots dir ◄┘
//! ```
//!
//! Nothing touches disk on this side. Qdrant recovers only from a complete multipart body,
//! and the body completes only after the whole-stream hash was checked; `checksum=` makes
//! Qdrant check the SHA-256 itself as well.

use std::time::{Duration, Instant};

use super::aliases::{all_aliases, plan_aliases, pointing_at};
use super::client::{QdrantClient, RecoverOptions};
use super::pipe::pipe;
use super::provenance::QdrantProvenance;
use super::shard_keys::{check_target, is_custom, ShardKey};
use super::types::{CollectionParams, SnapshotPriority, SnapshotScope};
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::{StreamKind, StreamRecord};
use crate::id::BackupId;
use crate::repo::Repository;
use crate::restore::{RestoreOptions, RestorePlan, RestoreSummary, StreamRef};

#[derive(Clone, Debug, Default)]
pub struct QdrantRestoreOptions {
    /// Restore into this collection instead of the one the backup came from.
    pub collection: Option<String>,
    /// Qdrant's recovery priority; `None` leaves Qdrant's default (`snapshot`).
    pub priority: Option<SnapshotPriority>,
    /// Restore into this shard (shard streams; defaults to the shard backed up).
    pub shard: Option<u32>,
    /// Skip the version and collection-config checks.
    pub force: bool,
    /// Drop an existing collection first, so the result is exactly the backup (config,
    /// indexes, points); without it, restoring over a non-empty collection is refused.
    pub replace: bool,
    /// Recreate the aliases the backup recorded (never moving one that points elsewhere).
    pub aliases: bool,
    pub restore: RestoreOptions,
}

/// What will be restored where, after the checks passed. Its JSON (a dry run's, and a
/// report's) names the scope `target` and the node's version `qdrant_version`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QdrantRestorePlan {
    #[serde(rename = "target", serialize_with = "crate::restore::as_display")]
    pub scope: SnapshotScope,
    /// The Qdrant version that made the snapshot, when recorded.
    pub backup_version: Option<String>,
    #[serde(rename = "qdrant_version")]
    pub target_version: String,
    /// Whether the target collection exists already.
    pub collection_exists: bool,
    /// Drop the existing collection before uploading (`--replace` over an existing one).
    pub drop_existing: bool,
    /// Aliases to create once the collection is back: the backup's (`--aliases`) and those
    /// that pointed at a collection `--replace` drops.
    pub aliases: Vec<String>,
    /// Aliases the backup recorded that this restore leaves out (no `--aliases`).
    pub aliases_left_out: Vec<String>,
    /// Points the backup recorded (of the collection or the shard).
    pub expected_points: Option<u64>,
    /// Whether `expected_points` is Qdrant's exact count, taken just before the snapshot
    /// was made; otherwise it is collection info's (or cluster info's) estimate.
    pub expected_points_exact: bool,
    /// The exact counts taken before and after the snapshot (smallest, largest), when the
    /// backup recorded both: any count in it is what a snapshot taken while clients wrote
    /// may hold.
    pub expected_points_range: Option<(u64, u64)>,
    /// Warnings the checks raised but `force` overrode.
    pub forced: Vec<String>,
}

/// What a restore into Qdrant did; `--json` prints it as is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QdrantRestoreReport {
    #[serde(flatten)]
    pub source: StreamRef,
    #[serde(flatten)]
    pub plan: QdrantRestorePlan,
    pub bytes: u64,
    /// Points Qdrant counts after recovery (see [`PointsCheck`]).
    pub points_count: Option<u64>,
    /// From the first byte sent to the confirmed point count: the recovery time to plan for.
    #[serde(rename = "seconds", serialize_with = "crate::restore::as_seconds")]
    pub duration: Duration,
    /// The file Qdrant kept in its snapshots dir, and whether qvault deleted it.
    pub uploaded_file: String,
    pub uploaded_file_deleted: bool,
    pub warnings: Vec<String>,
}

/// The Qdrant facts restore needs from a stream's provenance.
struct Provenance {
    collection: Option<String>,
    shard_id: Option<u32>,
    version: Option<String>,
    params: Option<CollectionParams>,
    points: Option<u64>,
    points_exact: bool,
    points_range: Option<(u64, u64)>,
    aliases: Vec<String>,
    custom_sharding: bool,
    shard_keys: Option<Vec<ShardKey>>,
}

fn provenance(stream: &StreamRecord) -> Provenance {
    let Some(src) = QdrantProvenance::from_source(stream.source.as_ref()) else {
        return Provenance {
            collection: None,
            shard_id: None,
            version: None,
            params: None,
            points: None,
            points_exact: false,
            points_range: None,
            aliases: Vec::new(),
            custom_sharding: false,
            shard_keys: None,
        };
    };
    // Backups before qvault counted exactly, and of existing snapshots, have only the
    // estimate from collection info.
    let (points, points_exact) = src.expected_points();
    Provenance {
        points_range: src.exact_points_range(),
        aliases: src.aliases.clone().unwrap_or_default(),
        custom_sharding: is_custom(src.config.as_ref()),
        shard_keys: src.shard_keys.clone(),
        params: src.params(),
        collection: src.collection,
        shard_id: src.shard_id,
        version: Some(src.qdrant.version),
        points,
        points_exact,
    }
}

/// `(major, minor)` of a version like `1.18.3` or `v1.18.3-rc1`.
fn major_minor(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((major, minor))
}

/// Qdrant restores snapshots of its own minor version or the previous one.
pub fn versions_compatible(backup: &str, target: &str) -> bool {
    match (major_minor(backup), major_minor(target)) {
        (Some((bm, bn)), Some((tm, tn))) => bm == tm && (tn == bn || tn == bn + 1),
        _ => false,
    }
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

/// Where `stream` goes: the collection (or shard) the options name, else the one backed up.
pub fn target_scope(
    backup: BackupId,
    stream: &StreamRecord,
    options: &QdrantRestoreOptions,
) -> Result<SnapshotScope> {
    let prov = provenance(stream);
    let scope = match stream.kind {
        StreamKind::QdrantFullStorage => {
            return Err(Error::invalid_input(format!(
                "stream {:?} of backup {backup} is a full-storage snapshot, which Qdrant cannot \
                 recover over its API: restore it to a file with `--to FILE` and start Qdrant \
                 with `--storage-snapshot FILE`",
                stream.name
            )))
        }
        StreamKind::QdrantShard => {
            let collection =
                options.collection.clone().or(prov.collection.clone()).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "stream {:?} of backup {backup} does not record its collection: name the \
                         target with --collection",
                        stream.name
                    ))
                })?;
            let shard_id = options.shard.or(prov.shard_id).ok_or_else(|| {
                Error::invalid_input(format!(
                    "stream {:?} of backup {backup} does not record its shard: give --shard",
                    stream.name
                ))
            })?;
            SnapshotScope::Shard { collection, shard_id }
        }
        _ => {
            let collection =
                options.collection.clone().or(prov.collection.clone()).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "stream {:?} of backup {backup} does not record a Qdrant collection: \
                         name the target with --collection",
                        stream.name
                    ))
                })?;
            match options.shard {
                Some(id) => SnapshotScope::Shard { collection, shard_id: id },
                None => SnapshotScope::Collection(collection),
            }
        }
    };
    Ok(scope)
}

/// Checks that `stream` of `backup` can go into `client`'s node; sends nothing that changes
/// the node. Refusals are [`ErrorKind::Refused`] and show what differs.
pub async fn plan_qdrant_restore(
    client: &QdrantClient,
    backup: BackupId,
    stream: &StreamRecord,
    options: &QdrantRestoreOptions,
) -> Result<QdrantRestorePlan> {
    let prov = provenance(stream);
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

    let scope = target_scope(backup, stream, options)?;
    let collection = scope.collection_name().unwrap_or_default().to_string();

    let target_version = client.version().await?.version;
    match &prov.version {
        Some(v) if versions_compatible(v, &target_version) => {}
        Some(v) => refuse(format!(
            "backup {backup} holds a snapshot made by Qdrant {v}, and Qdrant at {} is \
             {target_version}: Qdrant recovers snapshots of its own minor version or the \
             previous one only; restore into a matching version, then upgrade",
            client.url()
        ))?,
        None => refuse(format!(
            "stream {:?} of backup {backup} does not record which Qdrant version made it, so \
             compatibility with Qdrant {target_version} at {} cannot be checked",
            stream.name,
            client.url()
        ))?,
    }

    let existing = match client.collection_info(&collection).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let is_shard = matches!(scope, SnapshotScope::Shard { .. });
    if options.replace && is_shard {
        return Err(Error::invalid_input(
            "--replace drops a whole collection: it cannot be combined with a shard restore",
        ));
    }
    let drop_existing = existing.is_some() && options.replace;
    if existing.is_some() && !options.replace && !is_shard {
        // Qdrant replaces the points but keeps the target's config and indexes: the result
        // would be neither the backup nor the collection that was there.
        let points = client.count_points(&collection, true).await?;
        if points > 0 {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "collection `{collection}` exists on Qdrant at {} and holds {points} points: \
                     recovering over it would replace its points but keep its own config and \
                     indexes. Pass --replace to drop it and restore exactly backup {backup}, or \
                     restore into a new collection with --collection NEW_NAME",
                    client.url()
                ),
            ));
        }
    }
    match (&existing, &prov.params) {
        _ if drop_existing => {}
        (Some(info), Some(backed_up)) => {
            if let Some(difference) = backed_up.incompatibility(&info.params) {
                refuse(format!(
                    "collection `{collection}` exists on Qdrant at {} and Qdrant would refuse \
                     backup {backup} into it ({difference}). Restore into a new collection \
                     with --collection NEW_NAME, or use --replace to drop `{collection}` first",
                    client.url(),
                ))?;
            }
        }
        (Some(_), None) => refuse(format!(
            "collection `{collection}` exists on Qdrant at {} and stream {:?} of backup \
             {backup} does not record its config, so they cannot be compared",
            client.url(),
            stream.name
        ))?,
        (None, _) => {
            if let SnapshotScope::Shard { .. } = scope {
                let body = prov
                    .params
                    .as_ref()
                    .map(|p| {
                        pretty(&serde_json::json!({"vectors": p.vectors, "shard_number": p.shard_number}))
                    })
                    .unwrap_or_else(|| "{…}".into());
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "collection `{collection}` does not exist on Qdrant at {}: a shard can \
                         only be recovered into an existing collection; create it first with \
                         the backed-up layout (PUT /collections/{collection} {body}), then \
                         restore each shard on the node that hosts it",
                        client.url()
                    ),
                ));
            }
        }
    }
    if prov.custom_sharding {
        let usable = existing.is_some() && !drop_existing;
        check_target(client, &collection, prov.shard_keys.as_deref(), usable).await?;
    }
    let (aliases, aliases_left_out) = match &scope {
        SnapshotScope::Collection(c) => {
            let kept = if drop_existing {
                pointing_at(&all_aliases(client).await?, c)
            } else {
                Vec::new()
            };
            let wanted: &[String] = if options.aliases { &prov.aliases } else { &[] };
            let left_out = if options.aliases { Vec::new() } else { prov.aliases.clone() };
            (plan_aliases(client, c, wanted, &kept).await?, left_out)
        }
        _ => (Vec::new(), Vec::new()),
    };
    Ok(QdrantRestorePlan {
        aliases,
        aliases_left_out,
        scope,
        backup_version: prov.version,
        target_version,
        collection_exists: existing.is_some(),
        drop_existing,
        expected_points: prov.points,
        expected_points_exact: prov.points_exact,
        expected_points_range: prov.points_range,
        forced,
    })
}

/// Executes `plan` into `client`'s node as Qdrant's upload-recover, to the target `target`
/// (from [`plan_qdrant_restore`] for the same stream: its checks passed).
///
/// Guarantees: nothing is sent before both plans exist (the caller made them, so a dry run
/// stops there); no temporary file; Qdrant recovers nothing unless every chunk and the whole
/// stream checked out (a failed check errors the upload body, and Qdrant verifies
/// `checksum=` too); success means the point count matched the backup's as far as
/// [`confirm_points`] can tell.
pub async fn restore_to_qdrant(
    repo: &Repository,
    plan: &RestorePlan,
    target: &QdrantRestorePlan,
    client: &QdrantClient,
    options: &QdrantRestoreOptions,
) -> Result<QdrantRestoreReport> {
    let (backup, stream) = (plan.backup, &plan.stream);
    // Fails now rather than after the upload started.
    repo.data_identities("restoring a backup into Qdrant")?;

    if target.drop_existing {
        let collection = target.scope.collection_name().unwrap_or_default();
        client.delete_collection(collection).await.map_err(|e| {
            e.context(format!("--replace: dropping collection `{collection}` before the restore"))
        })?;
        tracing::info!(collection, "dropped the existing collection (--replace)");
    }

    let started = Instant::now();
    let filename = format!(
        "{}-qvault-{}.snapshot",
        target.scope.collection_name().unwrap_or("restore"),
        &backup.to_hex()[..12]
    );
    let recover = RecoverOptions {
        priority: options.priority,
        checksum: Some(stream.sha256.clone()),
        wait: true,
        filename: Some(filename.clone()),
    };
    let summary =
        upload_stream(repo, plan, client, &target.scope, &recover, &options.restore).await?;

    let mut warnings = Vec::new();
    // Qdrant keeps the uploaded file in the snapshots dir; it is a full copy of the data.
    let uploaded_file_deleted = match client.delete_snapshot(&target.scope, &filename, true).await {
        Ok(()) => true,
        Err(e) => {
            warnings.push(format!(
                "could not delete the uploaded file `{filename}` from Qdrant's snapshots dir \
                 ({e}); delete it with `qvault qdrant snapshots delete`"
            ));
            false
        }
    };

    let points = confirm_points(client, target, backup).await?;
    warnings.extend(points.warning);
    if let (false, Some(collection)) = (target.aliases.is_empty(), target.scope.collection_name()) {
        client.create_aliases(collection, &target.aliases).await.map_err(|e| {
            e.context(format!(
                "{} was restored and checked, but its aliases {} were not all created",
                target.scope,
                target.aliases.join(", ")
            ))
        })?;
    }
    if !target.aliases_left_out.is_empty() {
        warnings.push(format!(
            "the backup recorded aliases {} pointing at the collection; they were not \
             recreated: restore with --aliases, or create them yourself",
            target.aliases_left_out.join(", ")
        ));
    }
    Ok(QdrantRestoreReport {
        source: plan.stream_ref(),
        plan: target.clone(),
        bytes: summary.bytes,
        points_count: points.points_count,
        duration: started.elapsed(),
        uploaded_file: filename,
        uploaded_file_deleted,
        warnings,
    })
}

/// Streams `plan`'s stream into `scope` on `client`'s node as an upload-recover: produced
/// by restore's pipeline while it is sent, never stored. After a failure the uploaded file
/// (`recover.filename`) is deleted from the node, or the error names it.
pub(super) async fn upload_stream(
    repo: &Repository,
    plan: &RestorePlan,
    client: &QdrantClient,
    scope: &SnapshotScope,
    recover: &RecoverOptions,
    options: &RestoreOptions,
) -> Result<RestoreSummary> {
    let backup = plan.backup;
    let (writer, body) = pipe();
    let upload = client.upload_recover(scope, body, Some(plan.stream.size), recover);
    let produce = async {
        let (writer, summary) = crate::restore::execute(repo, plan, writer, options).await?;
        writer.finish();
        Ok::<_, Error>(summary)
    };
    let (produced, uploaded) = tokio::join!(produce, upload);
    let failure = match (produced, uploaded) {
        (Ok(summary), Ok(_)) => Ok(summary),
        // The upload stopped first (Qdrant refused): the write error is only its echo.
        (Err(p), Err(u)) if p.kind() == ErrorKind::Io => Err(u),
        (Ok(_), Err(u)) => Err(u),
        (Err(p), _) => Err(p.context(format!(
            "restoring backup {backup} into {scope} at {}: the upload was aborted, nothing was \
             recovered",
            client.url()
        ))),
    };
    match failure {
        Ok(summary) => Ok(summary),
        // Qdrant keeps a refused upload in the snapshots dir (captured): a full copy of the
        // data that nobody would ever delete.
        Err(e) => {
            let filename = recover.filename.as_deref().unwrap_or_default();
            Err(remove_failed_upload(client, scope, filename, e).await)
        }
    }
}

/// Deletes what a failed upload may have left in `scope`'s snapshots dir and says so in
/// `error`: gone (or never stored), or the exact file still there when deleting failed.
async fn remove_failed_upload(
    client: &QdrantClient,
    scope: &SnapshotScope,
    filename: &str,
    error: Error,
) -> Error {
    match client.delete_snapshot(scope, filename, true).await {
        Ok(()) => error.context(format!(
            "the uploaded file `{filename}` was deleted from the snapshots dir of {scope}"
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => error,
        Err(e) => error.context(format!(
            "the uploaded file `{filename}` may remain in the snapshots dir of {scope} at {} \
             (deleting it failed: {e}); delete it with `qvault qdrant snapshots delete`",
            client.url()
        )),
    }
}

/// The point count of a recovered target, and what comparing it with the backup found.
#[derive(Clone, Debug, Default)]
pub struct PointsCheck {
    /// Points Qdrant counts after recovery: exact for a collection, the cluster info's
    /// figure for a shard (Qdrant has no exact count per shard).
    pub points_count: Option<u64>,
    /// Set when the counts differ but the backup's figure is only an estimate, so the
    /// difference proves nothing either way.
    pub warning: Option<String>,
}

/// Counts the points of the plan's target after recovery and compares them with the count
/// the backup recorded. A difference from an exact recorded count is an error; from an
/// estimate (older backups, existing snapshots), a warning; shards compare cluster info's
/// figures as they always did, because Qdrant cannot count one shard exactly.
pub async fn confirm_points(
    client: &QdrantClient,
    plan: &QdrantRestorePlan,
    backup: BackupId,
) -> Result<PointsCheck> {
    let url = client.url();
    let scope = &plan.scope;
    let (actual, exact) = match scope {
        SnapshotScope::Shard { collection, shard_id } => {
            let count = client
                .collection_cluster_info(collection)
                .await?
                .local_shards
                .iter()
                .find(|s| s.shard_id == *shard_id)
                .map(|s| s.points_count);
            (count, false)
        }
        other => {
            let c = other.collection_name().unwrap_or_default();
            (Some(client.count_points(c, true).await?), true)
        }
    };
    let mut check = PointsCheck { points_count: actual, warning: None };
    let (Some(expected), Some(actual)) = (plan.expected_points, actual) else {
        return Ok(check);
    };
    if expected == actual {
        return Ok(check);
    }
    if let Some((low, high)) = plan.expected_points_range.filter(|_| exact) {
        if (low..=high).contains(&actual) {
            check.warning = Some(format!(
                "{scope} on Qdrant at {url} holds {actual} points after recovering backup \
                 {backup}: clients wrote while the backup ran (it counted {low} to {high} \
                 points around the snapshot), so any count in that range is the snapshot's"
            ));
            return Ok(check);
        }
        return Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "{scope} on Qdrant at {url} was recovered from backup {backup} but holds \
                 {actual} points (exact count), outside the {low} to {high} points the backup \
                 counted just before and after Qdrant made the snapshot: the recovery is \
                 incomplete; check the Qdrant log and restore again"
            ),
        ));
    }
    if plan.expected_points_exact {
        return Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "{scope} on Qdrant at {url} was recovered from backup {backup} but holds {actual} \
                 points (exact count), while the backup counted {expected} points in the source \
                 collection just before Qdrant made the snapshot. Writes to it while the backup \
                 ran make that count a lower or upper bound: if it was being written to, compare \
                 the two collections before using this one; if not, the recovery is incomplete: \
                 check the Qdrant log and restore again"
            ),
        ));
    }
    if !exact {
        // A shard: the figures on both sides come from cluster info (existing behaviour).
        return Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "Qdrant at {url} recovered {scope} from backup {backup} but reports {actual} \
                 points; the backup recorded {expected}. Check the Qdrant log and the collection \
                 before using it"
            ),
        ));
    }
    check.warning = Some(format!(
        "{scope} on Qdrant at {url} holds {actual} points (exact count) after recovering backup \
         {backup}, which recorded only Qdrant's estimate of {expected} (collection info's \
         `points_count`, not an exact count); the difference may be the estimate's: compare the \
         collection with its source before relying on it"
    ));
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_or_next_minor_only() {
        assert!(versions_compatible("1.18.3", "1.18.0"));
        assert!(versions_compatible("1.18.3", "1.19.1"));
        assert!(versions_compatible("v1.18.3", "1.19.0-rc1"));
        assert!(!versions_compatible("1.18.3", "1.20.0"));
        assert!(!versions_compatible("1.18.3", "1.17.9"));
        assert!(!versions_compatible("1.18.3", "2.18.3"));
        assert!(!versions_compatible("garbage", "1.18.3"));
    }
}
