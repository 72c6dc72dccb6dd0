//! The HTTP layer under every endpoint: a [`Call`] goes in, an answer or an [`Error`] that
//! quotes Qdrant comes out.
//!
//! Guarantees: only calls marked [`Retry::Idempotent`] (or [`Retry::GoneIsDone`]) are sent
//! more than once, and never one with a multipart body (a one-shot stream); a retry waits
//! for `Retry-After` (capped) or an exponential back-off with jitter and logs one short line;
//! every error names what the call was for, the method and the URL (redacted), and quotes
//! Qdrant's own text from a JSON envelope or a plain-text body; the API key never appears in
//! a message.

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderMap, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::QdrantClient;
use crate::error::{Error, ErrorKind, Result};
use crate::redact;

/// Longest `Retry-After` honoured; a server asking for more is treated as down for now.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Error bodies are quoted in messages; a proxy's HTML page must not flood them.
const MAX_ERROR_BODY: usize = 64 * 1024;
const MAX_QUOTED_ERROR: usize = 2000;
/// A retry warning quotes the network error's root cause, cut to this length.
const MAX_RETRY_REASON: usize = 80;

/// One request as an endpoint describes it; the HTTP layer sends it.
pub(super) struct Call {
    method: Method,
    url: Url,
    body: Body,
    kind: CallKind,
    retry: Retry,
    /// What the call is for, the head of every message about it: "listing collections".
    what: String,
    /// First byte wanted (a `Range` request) when above 0.
    offset: u64,
}

enum Body {
    Empty,
    Json(Value),
    /// Sent once: the form streams its parts and cannot be replayed.
    Multipart(reqwest::multipart::Form),
}

/// Which connection pool and which limit a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    /// Bounded by `timeout`.
    Json,
    /// Bounded by `operation_timeout` (possibly unbounded): Qdrant works before answering.
    Operation,
    /// Download pool, bounded by the read-idle timeout only.
    Download,
}

/// Whether a call may be sent again after a 429, a 5xx or a connection error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// One attempt: a second one could do the work twice (create, recover, upload).
    Never,
    /// Sending it again changes nothing (reads, downloads, deleting a collection).
    Idempotent,
    /// Like `Idempotent`, and a 404 on a retry means the lost first attempt did the work
    /// (deleting a snapshot).
    GoneIsDone,
}

impl Call {
    /// A JSON call bounded by `timeout`, sent once unless [`retried`](Self::retried).
    pub(super) fn new(method: Method, url: Url, what: impl Into<String>) -> Self {
        Call {
            method,
            url,
            body: Body::Empty,
            kind: CallKind::Json,
            retry: Retry::Never,
            what: what.into(),
            offset: 0,
        }
    }

    pub(super) fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self
    }

    /// A body streamed once; the call is never retried, whatever its policy.
    pub(super) fn multipart(mut self, form: reqwest::multipart::Form) -> Self {
        self.body = Body::Multipart(form);
        self
    }

    pub(super) fn kind(mut self, kind: CallKind) -> Self {
        self.kind = kind;
        self
    }

    pub(super) fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    pub(super) fn starting_at(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    pub(super) fn what(&self) -> &str {
        &self.what
    }

    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// The URL for messages: password and secret query values masked.
    pub(super) fn shown_url(&self) -> String {
        redact::url(self.url.as_str())
    }

    fn attempts(&self, retries: u32) -> u32 {
        match (&self.body, self.retry) {
            (Body::Multipart(_), _) | (_, Retry::Never) => 1,
            _ => retries.saturating_add(1),
        }
    }
}

/// Why an attempt is retried.
enum RetryCause {
    /// A retryable status (429, 5xx), with the `Retry-After` Qdrant sent.
    Status(StatusCode, Option<Duration>),
    /// A connection error or timeout.
    Unreachable(reqwest::Error),
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

impl QdrantClient {
    /// The node's URL with `segments` appended (each percent-encoded as one segment).
    pub(super) fn url_for(&self, segments: &[&str]) -> Url {
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

    /// Sends `call` and reads its JSON answer (the whole body, envelope or not). Under
    /// [`Retry::GoneIsDone`], a 404 after a retry comes back as `(404, Null)`.
    pub(super) async fn send(&self, mut call: Call) -> Result<(StatusCode, Value)> {
        let (resp, attempt) = self.send_retrying(&mut call).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && attempt > 1 && call.retry == Retry::GoneIsDone {
            return Ok((status, Value::Null));
        }
        self.read_json_answer(&call, resp).await
    }

    /// Sends `call` and parses the `result` of Qdrant's envelope as `T`.
    pub(super) async fn result<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let what = call.what.clone();
        let (_, envelope) = self.send(call).await?;
        envelope_result(envelope, &what)
    }

    /// Sends `call` and returns a successful answer unread (downloads).
    pub(super) async fn open(&self, call: &mut Call) -> Result<reqwest::Response> {
        let (resp, _) = self.send_retrying(call).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(call, resp).await)
    }

    /// The retry loop: sends until an answer is final (not retryable, or no attempts left)
    /// and returns it unread, whatever its status, with the attempt that got it.
    async fn send_retrying(&self, call: &mut Call) -> Result<(reqwest::Response, u32)> {
        let max_attempts = call.attempts(self.inner.options.retries);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cause = match self.send_once(call).await {
                Ok(resp) if attempt < max_attempts && retryable_status(resp.status()) => {
                    // The answer is dropped here, before the wait, freeing its connection.
                    RetryCause::Status(resp.status(), retry_after(resp.headers()))
                }
                Ok(resp) => return Ok((resp, attempt)),
                Err(e) if attempt < max_attempts && retryable_transport(&e) => {
                    RetryCause::Unreachable(e)
                }
                Err(e) => return Err(self.transport_error(call, e)),
            };
            self.back_off(call, attempt, max_attempts - 1, cause).await;
        }
    }

    /// Waits before the next attempt, and says in one line why and how long.
    async fn back_off(&self, call: &Call, attempt: u32, retries: u32, cause: RetryCause) {
        let (reason, delay) = match cause {
            RetryCause::Status(status, retry_after) => (
                format!("Qdrant answered {}", status_text(status)),
                self.retry_delay(attempt, retry_after),
            ),
            RetryCause::Unreachable(e) => (
                format!("Qdrant unreachable ({})", root_cause(&e.without_url())),
                self.retry_delay(attempt, None),
            ),
        };
        tracing::warn!(
            "{}: {reason}; retry {attempt} of {retries} in {:.1}s",
            call.what,
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }

    async fn send_once(
        &self,
        call: &mut Call,
    ) -> std::result::Result<reqwest::Response, reqwest::Error> {
        let client = match call.kind {
            CallKind::Download => &self.inner.download_http,
            CallKind::Json | CallKind::Operation => &self.inner.http,
        };
        let mut req = client.request(call.method.clone(), call.url.clone());
        match call.kind {
            CallKind::Json => req = req.timeout(self.inner.options.timeout),
            CallKind::Operation => {
                if let Some(t) = self.inner.options.operation_timeout {
                    req = req.timeout(t);
                }
            }
            CallKind::Download => {}
        }
        if call.offset > 0 {
            req = req.header(RANGE, format!("bytes={}-", call.offset));
        }
        match std::mem::replace(&mut call.body, Body::Empty) {
            Body::Empty => {}
            Body::Json(b) => {
                req = req.json(&b);
                call.body = Body::Json(b);
            }
            Body::Multipart(form) => req = req.multipart(form),
        }
        tracing::debug!(method = %call.method, url = %call.shown_url(), "qdrant request");
        req.send().await
    }

    /// Reads a JSON answer: the body on 2xx, an [`Error`] quoting Qdrant otherwise.
    async fn read_json_answer(
        &self,
        call: &Call,
        resp: reqwest::Response,
    ) -> Result<(StatusCode, Value)> {
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(call, resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(call, e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Qdrant,
                format!(
                    "{}: {} {} answered {status} with a body that is not JSON ({e}): {}; \
                     is the URL a Qdrant REST endpoint (port 6333)?",
                    call.what,
                    call.method,
                    call.shown_url(),
                    quote_body(&bytes)
                ),
            )
        })?;
        Ok((status, value))
    }

    /// Builds the error for a non-2xx answer, quoting Qdrant's `status.error` or plain text.
    pub(super) async fn status_error(&self, call: &Call, resp: reqwest::Response) -> Error {
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
            "{}: Qdrant answered {} to {} {}: {}. {hint}",
            call.what,
            status_text(status),
            call.method,
            call.shown_url(),
            qdrant_text,
        );
        Error::new(kind, self.scrub(message))
            .with_source(HttpStatusError { status: status.as_u16() })
    }

    pub(super) fn transport_error(&self, call: &Call, e: reqwest::Error) -> Error {
        let (what, method, shown) = (&call.what, &call.method, call.shown_url());
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
        redact::scrub(message, self.inner.options.api_key.as_deref())
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

pub(super) fn parse<T: DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::new(
            ErrorKind::Qdrant,
            format!("{what}: Qdrant's answer does not have the expected shape ({e}); is this Qdrant version supported?"),
        )
    })
}

pub(super) fn envelope_result<T: DeserializeOwned>(mut envelope: Value, what: &str) -> Result<T> {
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

/// Replaces `secret` with `shown` in the error's message, keeping kind and HTTP status.
pub(super) fn scrub_error(e: Error, secret: &str, shown: &str) -> Error {
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
            return format!("\"{}\"", truncate(e, MAX_QUOTED_ERROR));
        }
    }
    quote_body(body)
}

fn quote_body(body: &[u8]) -> String {
    format!("\"{}\"", truncate(String::from_utf8_lossy(body).trim(), MAX_QUOTED_ERROR))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
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

/// Every distinct message of an error and its sources, `: `-joined.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

/// The innermost source's message ("Connection refused (os error 111)"), cut short: what a
/// one-line retry warning needs.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    truncate(&cur.to_string(), MAX_RETRY_REASON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_reads_envelope_and_plain_text() {
        assert_eq!(
            error_text(br#"{"status":{"error":"Not found: x"},"time":0.1}"#),
            "\"Not found: x\""
        );
        assert_eq!(error_text(b"Must provide an API key"), "\"Must provide an API key\"");
    }

    #[test]
    fn only_idempotent_calls_without_a_stream_get_retries() {
        let url = Url::parse("http://q:6333/collections").unwrap();
        let call = |retry| Call::new(Method::GET, url.clone(), "x").retry(retry);
        assert_eq!(call(Retry::Never).attempts(5), 1);
        assert_eq!(call(Retry::Idempotent).attempts(5), 6);
        assert_eq!(call(Retry::GoneIsDone).attempts(5), 6);
        let form = reqwest::multipart::Form::new();
        assert_eq!(call(Retry::Idempotent).multipart(form).attempts(5), 1);
    }
}
