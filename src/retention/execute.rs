//! The I/O half of forget: reading what retention needs, and removing manifests.

use super::{BackupInfo, ForgetPlan};
use crate::error::Result;
use crate::id::BackupId;
use crate::repo::Repository;
use futures::{StreamExt, TryStreamExt};

/// Manifest reads (and deletes) in flight: they are small, latency-bound requests.
const CONCURRENCY: usize = 16;

/// What forget did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub plan: ForgetPlan,
    /// Forgotten backups (none in a dry run).
    pub removed: Vec<BackupId>,
    /// Backups that could not be forgotten; the others were.
    pub failed: Vec<RemovalFailure>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RemovalFailure {
    pub id: BackupId,
    pub error: String,
}

/// Every backup of the repository as retention sees it. Host and stream names are not in
/// the local index, so each manifest is read.
pub async fn load_backups(repo: &Repository) -> Result<Vec<BackupInfo>> {
    let ids: Vec<BackupId> = repo.backups()?.into_iter().map(|b| b.id).collect();
    futures::stream::iter(ids)
        .map(|id| async move {
            let manifest = repo.read_manifest(id).await?;
            BackupInfo::from_manifest(id, &manifest)
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

/// Carries out `plan`: deletes the manifest of every backup it removes (nothing when
/// `dry_run`). A failed delete is reported and does not stop the others.
pub async fn execute(repo: &Repository, plan: ForgetPlan, dry_run: bool) -> ForgetReport {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    if !dry_run {
        let results: Vec<(BackupId, Result<()>)> = futures::stream::iter(plan.removals())
            .map(|id| async move { (id, repo.delete_manifest(id).await) })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (id, result) in results {
            match result {
                Ok(()) => removed.push(id),
                Err(e) => failed.push(RemovalFailure { id, error: e.to_string() }),
            }
        }
    }
    ForgetReport { dry_run, plan, removed, failed }
}
