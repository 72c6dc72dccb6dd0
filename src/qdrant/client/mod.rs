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

//!
//! Rooms: `http` (a [`Call`](http::Call) in, an answer or an error quoting Qdrant out:
//! retries, `Retry-After`, back-off, key scrubbing), `collections`, `points` and `snapshots`
//! (the endpoints, each describing its call), `download` (the checked download stream).

mod collections;
mod download;
mod http;
mod points;
mod snapshots;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Url;

pub use download::SnapshotDownload;
pub use http::http_status;
pub use points::{PointId, PointRecord, ScoredPoint, ScrollPage};

use super::types::SnapshotPriority;
use crate::error::{Error, ErrorKind, Result};
use crate::redact;

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
            .field("url", &redact::url(self.url.trim()))
            .field("api_key", &self.api_key.as_ref().map(|_| redact::MASK))
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
        let shown = redact::url(options.url.trim());
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
                shown_base: redact::url(base.as_str()),
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

    /// The same node with at most `retries` retries per call: to learn quickly whether a
    /// node of a cluster is up before relying on it.
    pub fn with_retries(&self, retries: u32) -> Result<QdrantClient> {
        let mut options = self.inner.options.clone();
        options.retries = options.retries.min(retries);
        QdrantClient::new(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_options_hides_key() {
        let o = QdrantOptions::new("http://localhost:6333").with_api_key("sekrit-key");
        assert!(!format!("{o:?}").contains("sekrit-key"));
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
