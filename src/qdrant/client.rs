//! The async Qdrant REST client.
//!
//! Design points:
//! - Two connection pools: one for JSON calls and uploads (bounded by a total timeout, or by
//!   none for long server-side work such as `wait=true` snapshot creation and recovery), and
//!   one for downloads, bounded by a read-idle timeout instead, because a multi-GB snapshot
//!   may legitimately take longer than any total timeout but should never stall silently.
//! - Retries (exponential backoff with jitter, honouring `Retry-After`) only for idempotent
//!   calls: a retried snapshot creation would leave a second multi-GB file on the node, and
//!   an upload body is a one-shot stream that cannot be replayed.
//! - Errors quote Qdrant's own text, whether it came as a JSON envelope or as plain text
//!   (Qdrant answers 401, some 403/400 and download 404s in plain text), with the method and
//!   the URL. The API key travels only in a header and is scrubbed from every message.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncRead;

use super::types::{
    CollectionClusterInfo, CollectionInfo, CollectionParams, ServerVersion, SnapshotDescription,
    SnapshotPriority, SnapshotScope,
};
use crate::error::{Error, ErrorKind, Result};

/// Longest `Retry-After` honoured; a server asking for more is treated as down for now.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Error bodies are quoted in messages; a proxy's HTML page must not flood them.
const MAX_ERROR_BODY: usize = 64 * 1024;
const MAX_QUOTED_ERROR: usize = 2000;

/// How to reach one Qdrant node.
#[derive(Clone)]
pub struct QdrantOptions {
    /// REST base URL, e.g. `http://localhost:6333` (a path prefix behind a proxy is kept).
    pub url: String,
    /// API key or JWT; never logged or shown.
    pub api_key: Option<String>,
    /// Send the key as `Authorization: Bearer …` instead of the `api-key` header.
    pub bearer: bool,
    /// PEM file with extra root certificates for a private CA (added to the system roots).
    pub ca_cert: Option<PathBuf>,
    /// TCP + TLS connection establishment.
    pub connect_timeout: Duration,
    /// Total time for a plain JSON call (list, info, delete).
    pub timeout: Duration,
    /// Total time for calls where Qdrant works before answering: snapshot creation and
    /// recovery with `wait=true`, and uploads. `None` waits as long as Qdrant works.
    pub operation_timeout: Option<Duration>,
    /// Downloads fail when no byte arrives for this long (there is no total limit).
    pub read_idle_timeout: Duration,
    /// Extra attempts for idempotent calls after a 429, 5xx or connection error.
    pub retries: u32,
    /// First backoff delay; doubles per attempt, with jitter, up to `retry_max_delay`.
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
}

impl QdrantOptions {
    /// Defaults suited to a production node: 10 s connect, 60 s per JSON call, no limit on
    /// snapshot creation or recovery, 5 min read-idle on downloads (Qdrant itself aborts a
    /// streamed snapshot after a 5 min stall), 5 retries from 500 ms up to 30 s.
    pub fn new(url: impl Into<String>) -> Self {
        QdrantOptions {
            url: url.into(),
            api_key: None,
            bearer: false,
            ca_cert: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            operation_timeout: None,
            read_idle_timeout: Duration::from_secs(300),
            retries: 5,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
        }
    }

    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

impl fmt::Debug for QdrantOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantOptions")
            .field("url", &redact_url_str(&self.url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("bearer", &self.bearer)
            .field("ca_cert", &self.ca_cert)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("read_idle_timeout", &self.read_idle_timeout)
            .field("retries", &self.retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .finish()
    }
}

/// Options of upload-recover and URL recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverOptions {
    /// `None` leaves Qdrant's default (`snapshot`).
    pub priority: Option<SnapshotPriority>,
    /// SHA-256 (hex) of the snapshot file; Qdrant refuses with 400 on mismatch.
    pub checksum: Option<String>,
    /// `true`: answer when the collection is recovered; `false`: 202 at once.
    pub wait: bool,
    /// Upload only: the multipart filename (Qdrant keeps the file under this name in the
    /// collection's snapshots dir). `.snapshot` is appended when missing.
    pub filename: Option<String>,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions { priority: None, checksum: None, wait: true, filename: None }
    }
}

/// What a recovery call answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverOutcome {
    /// `wait=true`: Qdrant finished recovering.
    Recovered,
    /// `wait=false`: Qdrant accepted the work (202) and does it in the background.
    Accepted,
}

/// An HTTP error answer from Qdrant, attached as the `source` of the [`Error`] so callers
/// can branch on the status with [`http_status`].
#[derive(Debug, Clone)]
struct HttpStatusError {
    status: u16,
}

impl fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP status {}", self.status)
    }
}

impl std::error::Error for HttpStatusError {}

/// The HTTP status Qdrant answered, when `err` comes from an error answer (not a network
/// failure).
pub fn http_status(err: &Error) -> Option<u16> {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<HttpStatusError>())
        .map(|e| e.status)
}

/// A snapshot being downloaded: a stream of byte chunks, and its length when Qdrant sent
/// one. The stream ends with an `Err` — never a short clean end — when the connection is
/// cut, stalls longer than the read-idle timeout, or delivers fewer bytes than announced.
pub struct SnapshotDownload {
    content_length: Option<u64>,
    stream: BoxStream<'static, Result<Bytes>>,
}

impl SnapshotDownload {
    /// `Content-Length` of the answer (the remaining length for a ranged download).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes>> {
        self.stream
    }

    /// The download as an `AsyncRead`; errors arrive as `io::Error` wrapping the [`Error`].
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin + 'static {
        tokio_util::io::StreamReader::new(self.stream.map_err(std::io::Error::other))
    }
}

impl Stream for SnapshotDownload {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for SnapshotDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotDownload").field("content_length", &self.content_length).finish()
    }
}

/// Why an attempt is retried.
enum Retry {
    /// A retryable status (429, 5xx), with the `Retry-After` Qdrant sent.
    Status(StatusCode, Option<Duration>),
    /// A connection error or timeout.
    Unreachable(reqwest::Error),
}

/// Which connection pool and which limit a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Bounded by `timeout`.
    Json,
    /// Bounded by `operation_timeout` (possibly unbounded): Qdrant works before answering.
    Operation,
    /// Download pool, bounded by the read-idle timeout only.
    Download,
}

/// A client for one Qdrant node. Cheap to clone (shares its connection pools).
#[derive(Clone)]
pub struct QdrantClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: Url,
    /// The base URL with any password redacted, for messages.
    shown_base: String,
    http: reqwest::Client,
    download_http: reqwest::Client,
    options: QdrantOptions,
}

impl fmt::Debug for QdrantClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantClient").field("options", &self.inner.options).finish()
    }
}

impl QdrantClient {
    /// Builds a client; no request is made until the first call.
    pub fn new(options: QdrantOptions) -> Result<Self> {
        let shown = redact_url_str(&options.url);
        let base = Url::parse(options.url.trim()).map_err(|e| {
            Error::invalid_input(format!(
                "invalid Qdrant URL `{shown}`: {e}; give the REST address, e.g. http://localhost:6333"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::invalid_input(format!(
                "invalid Qdrant URL `{shown}`: use http:// or https://, e.g. http://localhost:6333"
            )));
        }

        let mut headers = HeaderMap::new();
        if let Some(key) = &options.api_key {
            let (name, value) = if options.bearer {
                (AUTHORIZATION, format!("Bearer {key}"))
            } else {
                (reqwest::header::HeaderName::from_static("api-key"), key.clone())
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                Error::invalid_input(
                    "the Qdrant API key contains characters not allowed in an HTTP header; \
                     check for a trailing newline or quotes in the key",
                )
            })?;
            // Keeps the key out of reqwest's and hyper's own debug output.
            value.set_sensitive(true);
            headers.insert(name, value);
        }

        let mut roots = Vec::new();
        if let Some(path) = &options.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading CA certificate {}", path.display()), e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::invalid_input(format!(
                    "CA certificate {} is not a valid PEM file: {e}; give the CA's certificate in PEM format",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::invalid_input(format!(
                    "CA certificate {} holds no PEM certificate; give the CA's certificate in PEM format",
                    path.display()
                )));
            }
            roots = certs;
        }

        let builder = |read_idle: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .default_headers(headers.clone())
                .connect_timeout(options.connect_timeout)
                .user_agent(concat!("qvault/", env!("CARGO_PKG_VERSION")));
            if let Some(idle) = read_idle {
                b = b.read_timeout(idle);
            }
            for cert in &roots {
                b = b.add_root_certificate(cert.clone());
            }
            b.build().map_err(|e| {
                Error::new(
                    ErrorKind::Qdrant,
                    format!("could not set up the HTTP client for Qdrant at {shown}: {e}"),
                )
                .with_source(e)
            })
        };
        let http = builder(None)?;
        let download_http = builder(Some(options.read_idle_timeout))?;

        Ok(QdrantClient {
            inner: Arc::new(Inner {
                shown_base: redact_url(&base),
                base,
                http,
                download_http,
                options,
            }),
        })
    }

    /// The node's base URL, password (if any) redacted.
    pub fn url(&self) -> &str {
        &self.inner.shown_base
    }

    // ----- server and collections -----

    /// `GET /`: server name and version.
    pub async fn version(&self) -> Result<ServerVersion> {
        let url = self.url_for(&[]);
        let what = "reading the Qdrant version".to_string();
        // The root answer is not an envelope: `{"title", "version", "commit"}`.
        let value = self.json_call(Method::GET, url, None, CallKind::Json, true, &what).await?;
        parse(value.1, &what)
    }

    /// `GET /collections`: the collection names.
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Names {
            collections: Vec<Name>,
        }
        #[derive(serde::Deserialize)]
        struct Name {
            name: String,
        }
        let what = "listing collections".to_string();
        let url = self.url_for(&["collections"]);
        let names: Names = self.result(Method::GET, url, None, CallKind::Json, true, &what).await?;
        Ok(names.collections.into_iter().map(|n| n.name).collect())
    }

    /// `GET /collections/{c}`. A missing collection is an [`ErrorKind::NotFound`] error.
    pub async fn collection_info(&self, collection: &str) -> Result<CollectionInfo> {
        let what = format!("reading collection `{collection}`");
        let url = self.url_for(&["collections", collection]);
        let raw: Value = self.result(Method::GET, url, None, CallKind::Json, true, &what).await?;
        let config = raw.get("config").cloned().unwrap_or(Value::Null);
        let params: CollectionParams = match config.get("params") {
            Some(p) => parse(p.clone(), &what)?,
            None => {
                return Err(Error::new(
                    ErrorKind::Qdrant,
                    format!(
                        "{what}: Qdrant's answer has no `config.params`; is {} a Qdrant server?",
                        self.url()
                    ),
                ))
            }
        };
        Ok(CollectionInfo {
            status: raw.get("status").and_then(Value::as_str).map(str::to_owned),
            points_count: raw.get("points_count").and_then(Value::as_u64),
            segments_count: raw.get("segments_count").and_then(Value::as_u64),
            params,
            config,
            raw,
        })
    }

    /// Whether the collection exists (`GET /collections/{c}` answering 404 means no).
    pub async fn collection_exists(&self, collection: &str) -> Result<bool> {
        match self.collection_info(collection).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /collections/{c}/points/count`: the number of points in the whole collection
    /// (every shard, local or remote). With `exact = true` Qdrant counts the points
    /// themselves, unlike collection info's `points_count`, which is an estimate (a point
    /// being moved by the optimizer may be counted twice). Retried: it only reads.
    pub async fn count_points(&self, collection: &str, exact: bool) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let what = format!("counting the points of collection `{collection}`");
        let url = self.url_for(&["collections", collection, "points", "count"]);
        let body = serde_json::json!({ "exact": exact });
        let count: Count =
            self.result(Method::POST, url, Some(&body), CallKind::Json, true, &what).await?;
        Ok(count.count)
    }

    /// `GET /collections/{c}/cluster`: which shards this node holds and where the others are.
    pub async fn collection_cluster_info(&self, collection: &str) -> Result<CollectionClusterInfo> {
        let what = format!("reading the cluster layout of collection `{collection}`");
        let url = self.url_for(&["collections", collection, "cluster"]);
        self.result(Method::GET, url, None, CallKind::Json, true, &what).await
    }

    /// `PUT /collections/{c}` with Qdrant's create body, e.g.
    /// `{"vectors": {"size": 768, "distance": "Cosine"}, "shard_number": 2}`.
    /// Not retried: a lost answer followed by a retry would report "already exists".
    pub async fn create_collection(&self, collection: &str, body: &Value) -> Result<()> {
        let what = format!("creating collection `{collection}`");
        let url = self.url_for(&["collections", collection]);
        let _: Value =
            self.result(Method::PUT, url, Some(body), CallKind::Operation, false, &what).await?;
        Ok(())
    }

    /// `DELETE /collections/{c}`; `Ok(false)` when Qdrant reports nothing was deleted.
    pub async fn delete_collection(&self, collection: &str) -> Result<bool> {
        let what = format!("deleting collection `{collection}`");
        let url = self.url_for(&["collections", collection]);
        let deleted: Value =
            self.result(Method::DELETE, url, None, CallKind::Operation, true, &what).await?;
        Ok(deleted.as_bool().unwrap_or(true))
    }

    // ----- snapshots -----

    /// Lists the snapshots of a collection, a shard or the full storage.
    pub async fn list_snapshots(&self, scope: &SnapshotScope) -> Result<Vec<SnapshotDescription>> {
        let what = format!("listing snapshots of {scope}");
        let url = self.snapshots_url(scope, None, &[]);
        self.result(Method::GET, url, None, CallKind::Json, true, &what).await
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
        let url = self.snapshots_url(scope, None, &[("wait", bool_str(wait))]);
        let (status, envelope) =
            self.json_call(Method::POST, url, None, CallKind::Operation, false, &what).await?;
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
        let url = self.snapshots_url(scope, Some(name), &[]);
        self.download(url, offset, what).await
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
        self.download(url, 0, what).await
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
        let url = self.snapshots_url(scope, Some(name), &[("wait", bool_str(wait))]);
        let (status, _) = self
            .send_with_retries(
                Method::DELETE,
                url.clone(),
                None,
                CallKind::Operation,
                true,
                &what,
                0,
                true,
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            tracing::debug!(url = %redact_url(&url), "snapshot already gone after a retried delete");
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
        let mut query: Vec<(&str, String)> = vec![("wait", bool_str(options.wait).to_owned())];
        if let Some(p) = options.priority {
            query.push(("priority", p.as_str().to_owned()));
        }
        if let Some(c) = &options.checksum {
            query.push(("checksum", c.clone()));
        }
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut url = self.snapshots_url(scope, None, &q);
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.push("upload");
        }

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

        let mut req = self.inner.http.request(Method::POST, url.clone()).multipart(form);
        if let Some(t) = self.inner.options.operation_timeout {
            req = req.timeout(t);
        }
        tracing::debug!(method = "POST", url = %redact_url(&url), "qdrant upload-recover");
        let resp =
            req.send().await.map_err(|e| self.transport_error(&Method::POST, &url, &what, e))?;
        let (status, envelope) = self.read_json_answer(&Method::POST, &url, resp, &what).await?;
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
        let what = format!("recovering {scope} from {}", redact_url_str(location));
        let url = {
            let mut u = self.snapshots_url(scope, None, &[("wait", bool_str(options.wait))]);
            if let Ok(mut segs) = u.path_segments_mut() {
                segs.push("recover");
            }
            u
        };
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
        let body = Value::Object(body);
        let (status, envelope) = self
            .send_with_retries(
                Method::PUT,
                url,
                Some(&body),
                CallKind::Operation,
                false,
                &what,
                0,
                false,
            )
            .await
            .map_err(|e| {
                // Qdrant quotes the location in its errors; a one-time token in its query
                // must not end up in logs, nor the location's key.
                let e = scrub_error(e, location, &redact_url_str(location));
                match location_api_key {
                    Some(k) => scrub_error(e, k, "<redacted>"),
                    None => e,
                }
            })?;
        recover_outcome(status, envelope, &what)
    }

    // ----- plumbing -----

    fn url_for(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            for s in segments {
                segs.push(s);
            }
        }
        url
    }

    fn snapshots_url(
        &self,
        scope: &SnapshotScope,
        name: Option<&str>,
        query: &[(&str, &str)],
    ) -> Url {
        let shard;
        let mut segments: Vec<&str> = match scope {
            SnapshotScope::Collection(c) => vec!["collections", c, "snapshots"],
            SnapshotScope::Shard { collection, shard_id } => {
                shard = shard_id.to_string();
                vec!["collections", collection, "shards", &shard, "snapshots"]
            }
            SnapshotScope::FullStorage => vec!["snapshots"],
        };
        if let Some(n) = name {
            segments.push(n);
        }
        let mut url = self.url_for(&segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// A JSON call whose envelope's `result` is parsed as `T`.
    async fn result<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        kind: CallKind,
        idempotent: bool,
        what: &str,
    ) -> Result<T> {
        let (_, envelope) = self.json_call(method, url, body, kind, idempotent, what).await?;
        envelope_result(envelope, what)
    }

    async fn json_call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        kind: CallKind,
        idempotent: bool,
        what: &str,
    ) -> Result<(StatusCode, Value)> {
        self.send_with_retries(method, url, body, kind, idempotent, what, 0, false).await
    }

    async fn download(&self, url: Url, offset: u64, what: String) -> Result<SnapshotDownload> {
        let resp = self
            .send_raw_with_retries(
                Method::GET,
                url.clone(),
                None,
                CallKind::Download,
                true,
                &what,
                offset,
            )
            .await?;
        let status = resp.status();
        if offset > 0 && status != StatusCode::PARTIAL_CONTENT {
            return Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "{what}: asked for bytes from {offset} on but Qdrant answered {status} to GET {} \
                     instead of 206 Partial Content; download the whole snapshot instead",
                    redact_url(&url)
                ),
            ));
        }
        let content_length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let shown = redact_url(&url);
        let idle = self.inner.options.read_idle_timeout;
        let stream = checked_body(resp.bytes_stream(), content_length, what, shown, idle);
        Ok(SnapshotDownload { content_length, stream })
    }

    /// Sends with retries and reads a JSON answer. With `not_found_ok_on_retry`, a 404 after
    /// a retry is returned as a success status instead of an error.
    #[allow(clippy::too_many_arguments)]
    async fn send_with_retries(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        kind: CallKind,
        idempotent: bool,
        what: &str,
        offset: u64,
        not_found_ok_on_retry: bool,
    ) -> Result<(StatusCode, Value)> {
        let (resp, attempt) =
            self.send_retrying(&method, &url, body, kind, idempotent, what, offset).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && attempt > 1 && not_found_ok_on_retry {
            return Ok((status, Value::Null));
        }
        self.read_json_answer(&method, &url, resp, what).await
    }

    /// Like `send_with_retries` but returns the successful response unread (downloads).
    #[allow(clippy::too_many_arguments)]
    async fn send_raw_with_retries(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        kind: CallKind,
        idempotent: bool,
        what: &str,
        offset: u64,
    ) -> Result<reqwest::Response> {
        let (resp, _) =
            self.send_retrying(&method, &url, body, kind, idempotent, what, offset).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(&method, &url, resp, what).await)
    }

    /// The retry loop: sends until an answer is final (not retryable, or no attempts left)
    /// and returns it unread, whatever its status, with the attempt that got it. Only
    /// idempotent calls get more than one attempt.
    #[allow(clippy::too_many_arguments)]
    async fn send_retrying(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        kind: CallKind,
        idempotent: bool,
        what: &str,
        offset: u64,
    ) -> Result<(reqwest::Response, u32)> {
        let max_attempts = if idempotent { self.inner.options.retries + 1 } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let retry = match self.send_once(method, url, body, kind, offset).await {
                Ok(resp) if attempt < max_attempts && retryable_status(resp.status()) => {
                    // The answer is dropped here, before the wait, freeing its connection.
                    Retry::Status(resp.status(), retry_after(resp.headers()))
                }
                Ok(resp) => return Ok((resp, attempt)),
                Err(e) if attempt < max_attempts && retryable_transport(&e) => {
                    Retry::Unreachable(e)
                }
                Err(e) => return Err(self.transport_error(method, url, what, e)),
            };
            self.back_off(method, url, attempt, retry).await;
        }
    }

    /// Waits before the next attempt, and says on the log why and how long.
    async fn back_off(&self, method: &Method, url: &Url, attempt: u32, retry: Retry) {
        let delay = match retry {
            Retry::Status(status, retry_after) => {
                let delay = self.retry_delay(attempt, retry_after);
                tracing::warn!(
                    method = %method, url = %redact_url(url), status = status.as_u16(),
                    "Qdrant answered {status}; retrying in {:.1}s", delay.as_secs_f64()
                );
                delay
            }
            Retry::Unreachable(e) => {
                let delay = self.retry_delay(attempt, None);
                tracing::warn!(
                    method = %method, url = %redact_url(url),
                    "Qdrant unreachable ({}); retrying in {:.1}s", e.without_url(), delay.as_secs_f64()
                );
                delay
            }
        };
        tokio::time::sleep(delay).await;
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        kind: CallKind,
        offset: u64,
    ) -> std::result::Result<reqwest::Response, reqwest::Error> {
        let client =
            if kind == CallKind::Download { &self.inner.download_http } else { &self.inner.http };
        let mut req = client.request(method.clone(), url.clone());
        match kind {
            CallKind::Json => req = req.timeout(self.inner.options.timeout),
            CallKind::Operation => {
                if let Some(t) = self.inner.options.operation_timeout {
                    req = req.timeout(t);
                }
            }
            CallKind::Download => {}
        }
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        tracing::debug!(method = %method, url = %redact_url(url), "qdrant request");
        req.send().await
    }

    /// Reads a JSON answer: the envelope on 2xx, an [`Error`] quoting Qdrant otherwise.
    async fn read_json_answer(
        &self,
        method: &Method,
        url: &Url,
        resp: reqwest::Response,
        what: &str,
    ) -> Result<(StatusCode, Value)> {
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(method, url, resp, what).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(method, url, what, e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Qdrant,
                format!(
                    "{what}: {method} {} answered {status} with a body that is not JSON ({e}): {}; \
                     is the URL a Qdrant REST endpoint (port 6333)?",
                    redact_url(url),
                    quote_body(&bytes)
                ),
            )
        })?;
        Ok((status, value))
    }

    /// Builds the error for a non-2xx answer, quoting Qdrant's `status.error` or plain text.
    async fn status_error(
        &self,
        method: &Method,
        url: &Url,
        resp: reqwest::Response,
        what: &str,
    ) -> Error {
        let status = resp.status();
        let body = read_limited(resp, MAX_ERROR_BODY).await;
        let qdrant_text = error_text(&body);
        let kind =
            if status == StatusCode::NOT_FOUND { ErrorKind::NotFound } else { ErrorKind::Qdrant };
        let hint = match status.as_u16() {
            400 => "Qdrant rejected the request as invalid: see its message above",
            401 => "Check the API key (--api-key or QDRANT_API_KEY) and whether the server expects it as `api-key` or as a bearer token",
            403 => "The key lacks the needed access: use a key with full (manage) access, not a read-only key",
            404 => "Check the collection and snapshot names (`GET /collections` lists collections, `qvault qdrant snapshots list` lists snapshots)",
            409 => "It already exists: pick another name or delete the existing one first",
            429 => "Qdrant is rate-limiting: retry later or lower the request rate",
            503 => "The shard or node is unavailable: check the cluster's health and retry",
            s if s >= 500 => "Qdrant failed internally: check the Qdrant server log, then retry",
            _ => "See Qdrant's message above",
        };
        let message = format!(
            "{what}: Qdrant answered {} to {method} {}: {}. {hint}",
            status_text(status),
            redact_url(url),
            qdrant_text,
        );
        Error::new(kind, self.scrub(message))
            .with_source(HttpStatusError { status: status.as_u16() })
    }

    fn transport_error(&self, method: &Method, url: &Url, what: &str, e: reqwest::Error) -> Error {
        let shown = redact_url(url);
        let (timeout, connect, sending) =
            (e.is_timeout(), e.is_connect(), e.is_body() || e.is_request());
        let detail = self.scrub(error_chain(&e.without_url()));
        let message = if timeout {
            format!(
                "{what}: Qdrant did not answer {method} {shown} in time ({detail}); check that the \
                 node is healthy, or raise the timeout"
            )
        } else if connect {
            format!(
                "{what}: could not connect to Qdrant for {method} {shown} ({detail}); check the URL, \
                 that Qdrant is running, and --ca-cert for a private CA"
            )
        } else if sending {
            format!(
                "{what}: {method} {shown} failed while sending the request ({detail}); if a snapshot \
                 was being uploaded, nothing was recovered unless Qdrant says otherwise"
            )
        } else {
            format!("{what}: {method} {shown} failed ({detail})")
        };
        Error::new(ErrorKind::Qdrant, message)
    }

    /// Removes the API key from a message, whatever Qdrant or a proxy echoed back.
    fn scrub(&self, message: String) -> String {
        scrub_secret(message, self.inner.options.api_key.as_deref())
    }

    fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(MAX_RETRY_AFTER);
        }
        let base = self.inner.options.retry_base_delay;
        let max = self.inner.options.retry_max_delay;
        let exp = base.saturating_mul(1u32 << (attempt - 1).min(16)).min(max);
        // "Equal jitter": half fixed, half random, so concurrent clients spread out but
        // never hammer the node with a zero delay.
        let half = exp / 2;
        let jitter_ms =
            rand::thread_rng().gen_range(0..=half.as_millis().min(u64::MAX as u128) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn parse<T: DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::new(
            ErrorKind::Qdrant,
            format!("{what}: Qdrant's answer does not have the expected shape ({e}); is this Qdrant version supported?"),
        )
    })
}

fn envelope_result<T: DeserializeOwned>(mut envelope: Value, what: &str) -> Result<T> {
    match envelope.get_mut("result").map(Value::take) {
        Some(result) => parse(result, what),
        None => Err(Error::new(
            ErrorKind::Qdrant,
            format!(
                "{what}: Qdrant's answer has no `result`: {}",
                quote_body(envelope.to_string().as_bytes())
            ),
        )),
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

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

fn retryable_transport(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request()
}

/// `Retry-After` in seconds (the form Qdrant and proxies send); an HTTP date falls back to
/// the computed backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Qdrant's error text: `status.error` of a JSON envelope, or the plain-text body.
fn error_text(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body: Qdrant has no such route; check the method and path, e.g. recover is PUT)".into();
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(e) = v.get("status").and_then(|s| s.get("error")).and_then(Value::as_str) {
            return format!("\"{}\"", truncate(e));
        }
    }
    quote_body(body)
}

fn quote_body(body: &[u8]) -> String {
    format!("\"{}\"", truncate(String::from_utf8_lossy(body).trim()))
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_QUOTED_ERROR {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED_ERROR;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn scrub_secret(message: String, secret: Option<&str>) -> String {
    match secret {
        Some(k) if !k.is_empty() && message.contains(k) => message.replace(k, "<redacted>"),
        _ => message,
    }
}

/// Replaces `secret` with `shown` in the error's message, keeping kind and HTTP status.
fn scrub_error(e: Error, secret: &str, shown: &str) -> Error {
    if secret.is_empty() || secret == shown || !e.message().contains(secret) {
        return e;
    }
    let status = http_status(&e);
    let mut new = Error::new(e.kind(), e.message().replace(secret, shown));
    if let Some(s) = status {
        new = new.with_source(HttpStatusError { status: s });
    }
    new
}

/// Query parameter names whose values are treated as secrets in shown URLs.
fn secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "token", "secret", "password", "signature", "sig", "credential"]
        .iter()
        .any(|s| n.contains(s))
}

/// A URL for messages: password and secret-looking query values replaced.
fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) { "redacted".to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn redact_url_str(s: &str) -> String {
    match Url::parse(s.trim()) {
        Ok(u) => redact_url(&u),
        // Unparseable: show only what cannot hold a password.
        Err(_) if s.contains('@') => "<unparseable URL>".into(),
        Err(_) => s.to_owned(),
    }
}

/// Wraps a response body so that a cut, a stall or a short body ends in `Err`.
fn checked_body(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    expected: Option<u64>,
    what: String,
    shown_url: String,
    idle: Duration,
) -> BoxStream<'static, Result<Bytes>> {
    struct State<S> {
        body: Pin<Box<S>>,
        received: u64,
        done: bool,
    }
    let state = State { body: Box::pin(body), received: 0, done: false };
    futures::stream::unfold(state, move |mut st| {
        let what = what.clone();
        let shown_url = shown_url.clone();
        async move {
            if st.done {
                return None;
            }
            let of = match expected {
                Some(n) => format!(" of {n}"),
                None => String::new(),
            };
            match st.body.next().await {
                Some(Ok(chunk)) => {
                    st.received += chunk.len() as u64;
                    if let Some(n) = expected {
                        if st.received > n {
                            st.done = true;
                            let e = Error::new(
                                ErrorKind::Qdrant,
                                format!("{what}: GET {shown_url} sent more than the announced {n} bytes; the download is unreliable, retry it"),
                            );
                            return Some((Err(e), st));
                        }
                    }
                    Some((Ok(chunk), st))
                }
                Some(Err(e)) => {
                    st.done = true;
                    let reason = if e.is_timeout() {
                        format!("no data for {}s", idle.as_secs())
                    } else {
                        format!("connection broken: {}", error_chain(&e.without_url()))
                    };
                    let msg = format!(
                        "{what}: GET {shown_url} stopped after {}{of} bytes ({reason}); the snapshot \
                         is incomplete, retry the download",
                        st.received
                    );
                    Some((Err(Error::new(ErrorKind::Qdrant, msg)), st))
                }
                None => {
                    st.done = true;
                    match expected {
                        Some(n) if st.received < n => {
                            let msg = format!(
                                "{what}: GET {shown_url} ended after {}{of} bytes; the snapshot is \
                                 incomplete, retry the download",
                                st.received
                            );
                            Some((Err(Error::new(ErrorKind::Qdrant, msg)), st))
                        }
                        _ => None,
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_secret_params() {
        let u = Url::parse("https://user:hunter2@q.example:6333/x?token=abc&wait=true").unwrap();
        let s = redact_url(&u);
        assert!(!s.contains("hunter2") && !s.contains("abc"), "{s}");
        assert!(s.contains("wait=true"), "{s}");
    }

    #[test]
    fn debug_of_options_hides_key() {
        let o = QdrantOptions::new("http://localhost:6333").with_api_key("sekrit-key");
        assert!(!format!("{o:?}").contains("sekrit-key"));
    }

    #[test]
    fn error_text_reads_envelope_and_plain_text() {
        assert_eq!(
            error_text(br#"{"status":{"error":"Not found: x"},"time":0.1}"#),
            "\"Not found: x\""
        );
        assert_eq!(error_text(b"Must provide an API key"), "\"Must provide an API key\"");
    }

    #[test]
    fn vectors_config_parses_single_named_and_empty() {
        use crate::qdrant::VectorsConfig;
        let s: VectorsConfig = serde_json::from_str(r#"{"size":64,"distance":"Cosine"}"#).unwrap();
        assert!(matches!(s, VectorsConfig::Single(ref p) if p.size == 64));
        let e: VectorsConfig = serde_json::from_str("{}").unwrap();
        assert!(e.is_empty());
        let n: VectorsConfig =
            serde_json::from_str(r#"{"a":{"size":8,"distance":"Dot","on_disk":true}}"#).unwrap();
        assert!(!n.is_empty() && !n.same_shape(&s));
    }
}
