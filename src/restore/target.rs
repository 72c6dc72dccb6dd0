//! Restore targets that need more than a `Write`: a file that appears only when complete.

use super::plan::StreamRef;
use super::{execute, RestoreOptions, RestorePlan, RestoreSummary};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use std::path::{Path, PathBuf};

/// A restored stream as `--json` reports it: which stream, the hash it was checked against,
/// and the [`RestoreSummary`] fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    #[serde(flatten)]
    pub source: StreamRef,
    #[serde(flatten)]
    pub summary: RestoreSummary,
    /// A directory stream extracted with `--to-dir`: where, and how many entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

impl RestoreReport {
    pub fn new(plan: &RestorePlan, summary: RestoreSummary) -> RestoreReport {
        RestoreReport { source: plan.stream_ref(), summary, dir: None, entries: None }
    }

    /// The report of a directory stream extracted into `dir` as `entries` entries.
    pub fn extracted(mut self, dir: &Path, entries: u64) -> RestoreReport {
        self.dir = Some(dir.to_path_buf());
        self.entries = Some(entries);
        self
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
    // Removed unless placed: nothing that looks complete is left behind.
    let mut partial = crate::partial::Partial::beside(path);
    let shown = partial.path().display().to_string();
    let file = std::fs::File::create(partial.path())
        .map_err(|e| Error::io(format!("creating {shown}"), e))?;
    let out = std::io::BufWriter::with_capacity(1 << 20, file);
    let (out, summary) = execute(repo, plan, out, options).await?;
    let file =
        out.into_inner().map_err(|e| Error::io(format!("writing {shown}"), e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(format!("syncing {shown}"), e))?;
    std::fs::rename(partial.path(), path)
        .map_err(|e| Error::io(format!("renaming {shown} to {}", path.display()), e))?;
    partial.placed();
    Ok(summary)
}
