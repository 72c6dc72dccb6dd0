//! `verify --restore-test --qdrant URL`: a Qdrant stream restored into a scratch collection
//! on a real node and compared with what the backup recorded.
//!
//! ```text
//! plan (RestorePlan + plan_qdrant_restore into qvault-restore-test-<hex>)
//!   ─► restore_to_qdrant (upload-recover, exact count checked)      ◄── timed: the RTO
//!   ─► vectors config ─► sampled point hashes ─► probe queries
//!   ─► delete the scratch collection (always, also after a failure)
//! ```
//!
//! Guarantees: every comparison runs even after an earlier one failed (a count that is off
//! still names the missing sampled points); the scratch collection is deleted whatever
//! happened, and the report says whether that worked; a backup that recorded no sample is
//! compared on count and config, with a note saying so. Collection streams only: a shard
//! needs an existing collection laid out for it, and full storage has no REST restore.

use std::time::Instant;

use super::client::QdrantClient;
use super::provenance::QdrantProvenance;
use super::restore::{plan_qdrant_restore, restore_to_qdrant, QdrantRestoreOptions};
use super::sample::check_sample;
use crate::format::manifest::{StreamKind, StreamRecord};
use crate::id::BackupId;
use crate::repo::Repository;
use crate::restore::RestorePlan;
use crate::restore_test::{QdrantDriller, QdrantStreamTest, StreamTest};

/// Restores Qdrant streams into scratch collections on one node.
pub struct QdrantDrill {
    pub client: QdrantClient,
}

impl QdrantDrill {
    /// A drill on `client`'s node, once it answered: an unreachable node or a bad key fails
    /// here, as a Qdrant error, rather than as every stream's failed restore.
    pub async fn connect(client: QdrantClient) -> crate::Result<Self> {
        client.version().await?;
        Ok(QdrantDrill { client })
    }
}

impl QdrantDriller for QdrantDrill {
    async fn drill(
        &self,
        repo: &Repository,
        id: BackupId,
        stream: &StreamRecord,
    ) -> std::result::Result<StreamTest, String> {
        match stream.kind {
            StreamKind::QdrantCollection => Ok(self.drill_collection(repo, id, stream).await),
            StreamKind::QdrantShard => Err("a shard stream: the restore test restores whole \
                                            collections only; restore shards with `qvault \
                                            restore --qdrant --shard`"
                .into()),
            _ => Err("a full-storage snapshot, which Qdrant cannot recover over its API".into()),
        }
    }
}

impl QdrantDrill {
    async fn drill_collection(
        &self,
        repo: &Repository,
        id: BackupId,
        stream: &StreamRecord,
    ) -> StreamTest {
        let client = &self.client;
        let scratch = format!("qvault-restore-test-{:016x}", rand::random::<u64>());
        let prov = QdrantProvenance::from_source(stream.source.as_ref());
        let mut q = QdrantStreamTest {
            node: client.url().to_string(),
            scratch_collection: scratch.clone(),
            points_expected: prov.as_ref().and_then(|p| p.exact_points_count),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let started = Instant::now();
        let restored = restore(repo, client, id, stream, &scratch).await;
        let restore_ms = started.elapsed().as_millis() as u64;
        let uploaded = match restored {
            Ok((points, warnings)) => {
                q.points_restored = points;
                q.notes.extend(warnings);
                true
            }
            Err((e, uploaded)) => {
                problems.push(format!("the restore into `{scratch}` failed: {e}"));
                uploaded
            }
        };
        let started = Instant::now();
        if uploaded {
            let prov = prov.as_ref();
            compare(client, id, prov, &scratch, &mut q, &mut problems).await;
        }
        match client.delete_collection(&scratch).await {
            Ok(_) => q.scratch_deleted = true,
            Err(e) => problems.push(format!(
                "could not delete the scratch collection `{scratch}` from Qdrant at {} ({e}): \
                 delete it by hand",
                client.url()
            )),
        }
        StreamTest {
            backup: id,
            stream: stream.name.clone(),
            kind: stream.kind,
            size: stream.size,
            restore_ms,
            compare_ms: started.elapsed().as_millis() as u64,
            passed: problems.is_empty(),
            error: (!problems.is_empty()).then(|| problems.join("; ")),
            qdrant: Some(q),
        }
    }
}

/// Plans and runs the restore into `scratch`; the exact point count and the restore's
/// warnings on success. On failure, the error and whether anything was sent (so the
/// collection may exist to compare).
async fn restore(
    repo: &Repository,
    client: &QdrantClient,
    id: BackupId,
    stream: &StreamRecord,
    scratch: &str,
) -> std::result::Result<(Option<u64>, Vec<String>), (crate::Error, bool)> {
    let options =
        QdrantRestoreOptions { collection: Some(scratch.to_string()), ..Default::default() };
    let plan = RestorePlan::new(repo, id, stream).await.map_err(|e| (e, false))?;
    let target = plan_qdrant_restore(client, id, stream, &options).await.map_err(|e| (e, false))?;
    let report =
        restore_to_qdrant(repo, &plan, &target, client, &options).await.map_err(|e| (e, true))?;
    Ok((report.points_count, report.warnings))
}

/// Count, config and sample of the restored `scratch`; what differs goes to `problems`.
async fn compare(
    client: &QdrantClient,
    id: BackupId,
    prov: Option<&QdrantProvenance>,
    scratch: &str,
    q: &mut QdrantStreamTest,
    problems: &mut Vec<String>,
) {
    let info = match client.collection_info(scratch).await {
        Ok(info) => info,
        Err(e) => {
            problems.push(format!("reading the restored collection `{scratch}` failed: {e}"));
            return;
        }
    };
    // The count itself was checked by the restore (exact, or within the range counted
    // around the snapshot); after a failed restore its error says what was wrong.
    if q.points_restored.is_none() {
        q.points_restored = client.count_points(scratch, true).await.ok();
    }
    match prov.and_then(QdrantProvenance::params) {
        Some(backed_up) => {
            let differs = backed_up.incompatibility(&info.params);
            q.config_matches = Some(differs.is_none());
            if let Some(d) = differs {
                problems.push(format!(
                    "the restored vectors config is not backup {id}'s: {}",
                    d.replace("existing", "restored")
                ));
            }
        }
        None => q.notes.push(format!("backup {id} recorded no collection config to compare")),
    }
    if q.points_expected.is_none() {
        q.notes.push(format!("backup {id} recorded no exact point count to compare"));
    }
    let Some(sample) = prov.and_then(|p| p.sample.as_ref()) else {
        q.notes.push(format!(
            "backup {id} recorded no point sample (made with --no-sample, or by a qvault \
             before samples): compared the point count and vectors config only"
        ));
        return;
    };
    let check = match check_sample(client, scratch, sample).await {
        Ok(check) => check,
        Err(e) => {
            problems.push(format!("reading the sampled points back failed: {e}"));
            return;
        }
    };
    q.sampled_points = check.points_checked;
    q.probes = check.probes_replayed;
    q.notes.extend(check.notes);
    // Clients writing while the backup ran may have changed sampled points between the
    // sample and the snapshot: then a difference is a note, not a failure.
    let writes_seen = prov.is_some_and(|p| p.exact_points_count_after.is_some());
    let mut found = Vec::new();
    for point in &check.missing {
        found.push(format!("sampled point {point} of backup {id} is missing"));
    }
    for point in &check.differing {
        found.push(format!(
            "sampled point {point} of backup {id} differs (its vectors or payload hash to \
             another value)"
        ));
    }
    for (point, why) in &check.probe_failures {
        found
            .push(format!("the probe query with point {point}'s vector of backup {id} gave {why}"));
    }
    if writes_seen {
        q.notes.extend(found.into_iter().map(|f| {
            format!("{f}; not counted as a failure: clients wrote while backup {id} ran")
        }));
    } else {
        problems.extend(found);
    }
}
