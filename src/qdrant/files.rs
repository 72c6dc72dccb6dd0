//! Snapshot files on this machine: downloading a Qdrant snapshot to a local file, checked.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::client::QdrantClient;
use super::types::SnapshotScope;
use crate::error::{Error, ErrorKind, Result};

/// What a download wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DownloadReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// Whether Qdrant reported a checksum to compare with (it does not for S3 storage).
    pub checksum_checked: bool,
}

/// Downloads snapshot `name` of `scope` to `path`. The file appears under its final name
/// only when complete and matching Qdrant's checksum; until then it is a hidden temporary
/// sibling, removed on failure.
pub async fn download_to_file(
    client: &QdrantClient,
    scope: &SnapshotScope,
    name: &str,
    path: &Path,
    overwrite: bool,
) -> Result<DownloadReport> {
    if !overwrite && path.exists() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} exists: choose another path, or pass --overwrite", path.display()),
        ));
    }
    let expected = client
        .list_snapshots(scope)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Error::not_found(format!(
                "Qdrant at {} has no snapshot `{name}` of {scope}; list them with `qvault qdrant \
                 snapshots list`",
                client.url()
            ))
        })?
        .checksum;
    // Removed unless placed: nothing that looks like a complete snapshot is left behind.
    let mut partial = crate::partial::Partial::beside(path);
    let (bytes, sha256) =
        write_checked(client, scope, name, partial.path(), expected.as_deref()).await?;
    std::fs::rename(partial.path(), path).map_err(|e| {
        Error::io(format!("renaming {} to {}", partial.path().display(), path.display()), e)
    })?;
    partial.placed();
    Ok(DownloadReport {
        path: path.to_path_buf(),
        bytes,
        sha256,
        checksum_checked: expected.is_some(),
    })
}

async fn write_checked(
    client: &QdrantClient,
    scope: &SnapshotScope,
    name: &str,
    partial: &Path,
    expected: Option<&str>,
) -> Result<(u64, String)> {
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
    let mut stream = client.download_snapshot(scope, name).await?.into_stream();
    let mut sha = sha2::Sha256::new();
    let mut bytes = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        sha.update(&piece);
        bytes += piece.len() as u64;
        file.write_all(&piece)
            .await
            .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
    }
    file.sync_all().await.map_err(|e| Error::io(format!("syncing {}", partial.display()), e))?;
    let sha256 = hex::encode(sha.finalize());
    if let Some(expected) = expected {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(Error::corrupt(format!(
                "snapshot `{name}` of {scope} downloaded from {} has SHA-256 {sha256}, but Qdrant \
                 lists {expected}: the download was damaged; retry it",
                client.url()
            )));
        }
    }
    Ok((bytes, sha256))
}
