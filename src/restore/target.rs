//! Restore targets that need more than a `Write`: a file that appears only when complete.

use super::{execute, RestoreOptions, RestorePlan, RestoreSummary};
use crate::error::{Error, ErrorKind, Result};
use crate::id::BackupId;
use crate::repo::Repository;
use std::path::{Path, PathBuf};

/// A restored stream as `--json` reports it: which stream, the hash it was checked against,
/// and the [`RestoreSummary`] fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    pub id: BackupId,
    pub stream: String,
    pub sha256: String,
    #[serde(flatten)]
    pub summary: RestoreSummary,
}

impl RestoreReport {
    pub fn new(plan: &RestorePlan, summary: RestoreSummary) -> RestoreReport {
        RestoreReport {
            id: plan.backup,
            stream: plan.stream.name.clone(),
            sha256: plan.stream.sha256.clone(),
            summary,
        }
    }
}

/// Restores `plan` into the file `path`.
///
/// Guarantees: `path` appears only once every check passed, complete and synced (the data is
/// written to a temporary sibling, fsynced, then renamed over `path`); on any failure the
/// temporary file is removed and `path` is untouched. An existing `path` is refused with
/// [`ErrorKind::AlreadyExists`] unless `overwrite`.
pub async fn restore_to_file(
    repo: &Repository,
    plan: &RestorePlan,
    path: &Path,
    overwrite: bool,
    options: &RestoreOptions,
) -> Result<RestoreSummary> {
    if path.exists() && !overwrite {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} exists: choose another --to, or pass --overwrite", path.display()),
        ));
    }
    let partial = partial_path(path);
    let file = std::fs::File::create(&partial)
        .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
    let out = std::io::BufWriter::with_capacity(1 << 20, file);
    let finished = async {
        let (out, summary) = execute(repo, plan, out, options).await?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", partial.display()), e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(format!("syncing {}", partial.display()), e))?;
        std::fs::rename(&partial, path).map_err(|e| {
            Error::io(format!("renaming {} to {}", partial.display(), path.display()), e)
        })?;
        Ok(summary)
    }
    .await;
    if finished.is_err() {
        // Nothing that looks complete is left behind.
        let _ = std::fs::remove_file(&partial);
    }
    finished
}

/// A temporary sibling of `target`: same directory, so the final rename is atomic.
fn partial_path(target: &Path) -> PathBuf {
    let name =
        target.file_name().map_or_else(|| "restore".into(), |n| n.to_string_lossy().to_string());
    let nonce: u32 = rand::random();
    target.with_file_name(format!(".{name}.qvault-partial-{nonce:08x}"))
}
