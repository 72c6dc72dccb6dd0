//! Snapshot downloads: a stream that ends in `Err`, never in a short clean end, when the
//! connection is cut, stalls or delivers fewer bytes than announced. Retries stop once the
//! answer's headers arrived: a cut after that is the caller's to retry (with a Range request
//! from where it stopped), never papered over here.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::header::CONTENT_LENGTH;
use reqwest::StatusCode;
use tokio::io::AsyncRead;

use super::http::{error_chain, Call};
use super::QdrantClient;
use crate::error::{Error, ErrorKind, Result};

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

impl QdrantClient {
    /// Opens `call` (a GET of the download pool) and wraps its body in the checks above.
    pub(super) async fn download(&self, mut call: Call) -> Result<SnapshotDownload> {
        let resp = self.open(&mut call).await?;
        let status = resp.status();
        let (what, offset) = (call.what(), call.offset());
        if offset > 0 && status != StatusCode::PARTIAL_CONTENT {
            return Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "{what}: asked for bytes from {offset} on but Qdrant answered {status} to GET {} \
                     instead of 206 Partial Content; download the whole snapshot instead",
                    call.shown_url()
                ),
            ));
        }
        let content_length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let idle = self.inner.options.read_idle_timeout;
        let stream = checked_body(
            resp.bytes_stream(),
            content_length,
            what.to_string(),
            call.shown_url(),
            idle,
        );
        Ok(SnapshotDownload { content_length, stream })
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
