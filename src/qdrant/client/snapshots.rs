//! Snapshot endpoints, for a collection, a shard or the full storage: list, create,
//! download, delete, upload-recover and URL recover.
//!
//! Retry policy per call: listing, downloading and deleting are retried; creating is not (a
//! retry after a lost answer would leave a second multi-GB file on the node), nor is
//! recovering (it replaces the collection's data) or uploading (a one-shot stream).

use bytes::Bytes;
use futures::Stream;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::io::AsyncRead;

use super::http::{envelope_result, scrub_error, Call, CallKind, Retry};
use super::{QdrantClient, RecoverOptions, RecoverOutcome, SnapshotDownload};
use crate::error::{Error, ErrorKind, Result};
use crate::qdrant::types::{SnapshotDescription, SnapshotScope};
use crate::redact;

impl QdrantClient {
    /// Lists the snapshots of a collection, a shard or the full storage.
    pub async fn list_snapshots(&self, scope: &SnapshotScope) -> Result<Vec<SnapshotDescription>> {
        let what = format!("listing snapshots of {scope}");
        let url = self.snapshots_url(scope, &[], &[]);
        self.result(Call::new(Method::GET, url, what).retry(Retry::Idempotent)).await
    }

    /// Creates a snapshot; Qdrant names it. With `wait = true` this answers when the file is
    /// complete and returns its description; with `wait = false` Qdrant answers 202 at once
    /// and this returns `None` (the snapshot appears in the list once complete).
    /// Never retried: a retry after a lost answer would leave a second file on the node.
    pub async fn create_snapshot(
        &self,
        scope: &SnapshotScope,
        wait: bool,
    ) -> Result<Option<SnapshotDescription>> {
        let what = format!("creating a snapshot of {scope}");
        let url = self.snapshots_url(scope, &[], &[("wait", bool_str(wait))]);
        let call = Call::new(Method::POST, url, what.clone()).kind(CallKind::Operation);
        let (status, envelope) = self.send(call).await?;
        if status == StatusCode::ACCEPTED {
            return Ok(None);
        }
        envelope_result(envelope, &what).map(Some)
    }

    /// Starts downloading a snapshot. Retries (idempotent) until the answer's headers arrive;
    /// a cut after that is reported by the stream, never retried silently.
    pub async fn download_snapshot(
        &self,
        scope: &SnapshotScope,
        name: &str,
    ) -> Result<SnapshotDownload> {
        self.download_snapshot_from(scope, name, 0).await
    }

    /// Like [`download_snapshot`](Self::download_snapshot) from byte `offset` on (a Range
    /// request, which Qdrant's local storage serves with 206), to resume a cut download.
    pub async fn download_snapshot_from(
        &self,
        scope: &SnapshotScope,
        name: &str,
        offset: u64,
    ) -> Result<SnapshotDownload> {
        let what = format!("downloading snapshot `{name}` of {scope}");
        let url = self.snapshots_url(scope, &[name], &[]);
        self.download(download_call(url, what).starting_at(offset)).await
    }

    /// `GET /collections/{c}/shards/{id}/snapshot`: a shard snapshot built on the fly and
    /// streamed; nothing is stored on the node. Needs write access.
    pub async fn stream_shard_snapshot(
        &self,
        collection: &str,
        shard_id: u32,
    ) -> Result<SnapshotDownload> {
        let what = format!("streaming a snapshot of shard {shard_id} of collection `{collection}`");
        let id = shard_id.to_string();
        let url = self.url_for(&["collections", collection, "shards", &id, "snapshot"]);
        self.download(download_call(url, what)).await
    }

    /// Deletes a snapshot (and its `.checksum` file). A 404 on a *retry* counts as success:
    /// the first attempt deleted it but its answer was lost.
    pub async fn delete_snapshot(
        &self,
        scope: &SnapshotScope,
        name: &str,
        wait: bool,
    ) -> Result<()> {
        let what = format!("deleting snapshot `{name}` of {scope}");
        let url = self.snapshots_url(scope, &[name], &[("wait", bool_str(wait))]);
        let call =
            Call::new(Method::DELETE, url, what).kind(CallKind::Operation).retry(Retry::GoneIsDone);
        let (status, _) = self.send(call).await?;
        if status == StatusCode::NOT_FOUND {
            tracing::debug!(snapshot = name, "snapshot already gone after a retried delete");
        }
        Ok(())
    }

    /// `POST …/snapshots/upload`: streams `body` as the multipart field `snapshot` and lets
    /// Qdrant recover the collection (or shard) from it. The body is sent as it is produced,
    /// never buffered whole. `length` (when known) is sent as the part's length. Not retried:
    /// the stream cannot be replayed.
    pub async fn upload_recover<S, E>(
        &self,
        scope: &SnapshotScope,
        body: S,
        length: Option<u64>,
        options: &RecoverOptions,
    ) -> Result<RecoverOutcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        if scope == &SnapshotScope::FullStorage {
            return Err(Error::invalid_input(
                "Qdrant has no REST call to recover a full-storage snapshot; start Qdrant with \
                 `--storage-snapshot FILE` instead, or restore each collection's snapshot",
            ));
        }
        let what = format!("uploading a snapshot to recover {scope}");
        let mut query: Vec<(&str, &str)> = vec![("wait", bool_str(options.wait))];
        if let Some(p) = options.priority {
            query.push(("priority", p.as_str()));
        }
        if let Some(c) = &options.checksum {
            query.push(("checksum", c));
        }
        let url = self.snapshots_url(scope, &["upload"], &query);

        let mut filename = options.filename.clone().unwrap_or_else(|| {
            format!("{}-qvault-restore.snapshot", scope.collection_name().unwrap_or("storage"))
        });
        if !filename.ends_with(".snapshot") {
            filename.push_str(".snapshot");
        }
        let stream_body = reqwest::Body::wrap_stream(body);
        let part = match length {
            Some(len) => reqwest::multipart::Part::stream_with_length(stream_body, len),
            None => reqwest::multipart::Part::stream(stream_body),
        }
        .file_name(filename)
        .mime_str("application/octet-stream")
        .map_err(|e| Error::new(ErrorKind::Qdrant, format!("{what}: {e}")))?;
        let form = reqwest::multipart::Form::new().part("snapshot", part);

        let call =
            Call::new(Method::POST, url, what.clone()).multipart(form).kind(CallKind::Operation);
        let (status, envelope) = self.send(call).await?;
        recover_outcome(status, envelope, &what)
    }

    /// Like [`upload_recover`](Self::upload_recover) from an `AsyncRead`.
    pub async fn upload_recover_reader<R>(
        &self,
        scope: &SnapshotScope,
        reader: R,
        length: Option<u64>,
        options: &RecoverOptions,
    ) -> Result<RecoverOutcome>
    where
        R: AsyncRead + Send + 'static,
    {
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
        self.upload_recover(scope, stream, length, options).await
    }

    /// `PUT …/snapshots/recover`: Qdrant downloads the snapshot from `location` (`http(s)://`
    /// or a `file://` path inside its snapshots dir), sending `location_api_key` as its
    /// `api-key` header. Not retried (recovery replaces the collection's data).
    pub async fn recover_from_url(
        &self,
        scope: &SnapshotScope,
        location: &str,
        location_api_key: Option<&str>,
        options: &RecoverOptions,
    ) -> Result<RecoverOutcome> {
        if scope == &SnapshotScope::FullStorage {
            return Err(Error::invalid_input(
                "Qdrant has no REST call to recover a full-storage snapshot; start Qdrant with \
                 `--storage-snapshot FILE` instead",
            ));
        }
        let shown_location = redact::url(location.trim());
        let what = format!("recovering {scope} from {shown_location}");
        let url = self.snapshots_url(scope, &["recover"], &[("wait", bool_str(options.wait))]);
        let mut body = serde_json::Map::new();
        body.insert("location".into(), Value::String(location.to_owned()));
        if let Some(p) = options.priority {
            body.insert("priority".into(), Value::String(p.as_str().into()));
        }
        if let Some(c) = &options.checksum {
            body.insert("checksum".into(), Value::String(c.clone()));
        }
        if let Some(k) = location_api_key {
            body.insert("api_key".into(), Value::String(k.to_owned()));
        }
        let call = Call::new(Method::PUT, url, what.clone())
            .json(Value::Object(body))
            .kind(CallKind::Operation);
        let (status, envelope) = self.send(call).await.map_err(|e| {
            // Qdrant quotes the location in its errors; a one-time token in its query
            // must not end up in logs, nor the location's key.
            let e = scrub_error(e, location, &shown_location);
            match location_api_key {
                Some(k) => scrub_error(e, k, redact::MASK),
                None => e,
            }
        })?;
        recover_outcome(status, envelope, &what)
    }

    /// The URL of a scope's snapshots, with `more` path segments (a snapshot name, `upload`,
    /// `recover`) and `query` appended.
    fn snapshots_url(&self, scope: &SnapshotScope, more: &[&str], query: &[(&str, &str)]) -> Url {
        let shard;
        let mut segments: Vec<&str> = match scope {
            SnapshotScope::Collection(c) => vec!["collections", c, "snapshots"],
            SnapshotScope::Shard { collection, shard_id } => {
                shard = shard_id.to_string();
                vec!["collections", collection, "shards", &shard, "snapshots"]
            }
            SnapshotScope::FullStorage => vec!["snapshots"],
        };
        segments.extend_from_slice(more);
        let mut url = self.url_for(&segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// A snapshot GET: download pool, retried until the answer's headers arrive.
fn download_call(url: Url, what: String) -> Call {
    Call::new(Method::GET, url, what).kind(CallKind::Download).retry(Retry::Idempotent)
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn recover_outcome(status: StatusCode, envelope: Value, what: &str) -> Result<RecoverOutcome> {
    if status == StatusCode::ACCEPTED {
        return Ok(RecoverOutcome::Accepted);
    }
    match envelope.get("result") {
        Some(Value::Bool(false)) => Err(Error::new(
            ErrorKind::Qdrant,
            format!("{what}: Qdrant answered `result: false` (nothing recovered); check the Qdrant server log"),
        )),
        _ => Ok(RecoverOutcome::Recovered),
    }
}
