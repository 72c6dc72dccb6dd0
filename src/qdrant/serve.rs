//! Serving a restored stream over HTTP so a Qdrant node pulls it with
//! `PUT …/snapshots/recover` (useful when the node cannot take a multi-GB upload, or when
//! the operator wants to run the recover call themselves).
//!
//! The URL carries a random 256-bit token and works once: the first request with the right
//! path gets the stream, every later one 410 Gone. The stream is reassembled as it is sent
//! (no temporary file) and every check of `restore::execute` applies: a failed check cuts the
//! body short, so Qdrant never sees a complete snapshot; `checksum` in the recover call
//! makes Qdrant check the SHA-256 as well.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use super::client::{QdrantClient, RecoverOptions};
use super::pipe::pipe;
use super::restore::{
    confirm_points, target_scope, PointsCheck, QdrantRestoreOptions, QdrantRestorePlan,
};
use super::types::SnapshotScope;
use crate::error::{Error, ErrorKind, Result};
use crate::format::manifest::StreamRecord;
use crate::repo::Repository;
use crate::restore::{RestorePlan, StreamRef};

/// How long a finished transfer may take to flush before the server is stopped anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to listen, e.g. `0.0.0.0:8080` (port 0 picks one).
    pub addr: SocketAddr,
    /// The base URL the Qdrant node reaches this machine at, e.g. `http://backup-host:8080`;
    /// defaults to `http://{bound address}` (required when listening on 0.0.0.0 or ::).
    pub advertise: Option<String>,
}

/// What to tell Qdrant: printed by the CLI before anything is sent.
#[derive(Clone, Debug)]
pub struct ServeReady {
    /// The one-time URL (contains the token: treat it as a secret until used).
    pub location: String,
    pub checksum: String,
    pub scope: SnapshotScope,
    /// The exact `curl` call that makes Qdrant pull the stream (`$QDRANT_API_KEY` for the
    /// key, never the key itself).
    pub curl: String,
}

/// What `restore --serve` did; `--json` prints it as is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServeReport {
    #[serde(flatten)]
    pub source: StreamRef,
    pub bytes: u64,
    #[serde(rename = "seconds", serialize_with = "crate::restore::as_seconds")]
    pub duration: Duration,
    /// Set when qvault made the recover call itself.
    #[serde(flatten)]
    pub plan: Option<QdrantRestorePlan>,
    pub points_count: Option<u64>,
    /// What the checks after recovery could not settle (see `confirm_points`).
    pub warnings: Vec<String>,
}

/// The one-time handoff between the HTTP handler and the restore.
struct Shared {
    path: String,
    body: Mutex<Option<futures::stream::BoxStream<'static, std::io::Result<Bytes>>>>,
    started: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// With `qdrant`: the node to make the recover call to, the target it was planned for
/// ([`plan_qdrant_restore`](super::restore::plan_qdrant_restore)), and the options it was
/// planned with.
pub type ServeTarget<'a> = (&'a QdrantClient, &'a QdrantRestorePlan, &'a QdrantRestoreOptions);

/// Serves `plan`'s stream once at a one-time URL; with `qdrant`, makes the recover call to
/// the target planned beforehand. `on_ready` runs once the server listens.
pub async fn serve_restore(
    repo: &Repository,
    plan: &RestorePlan,
    options: &ServeOptions,
    qdrant: Option<ServeTarget<'_>>,
    on_ready: impl FnOnce(&ServeReady),
) -> Result<ServeReport> {
    let (backup, stream) = (plan.backup, &plan.stream);
    let restore_options = qdrant.map(|(_, _, o)| o.clone()).unwrap_or_default();
    let scope = match qdrant {
        Some((_, target, _)) => target.scope.clone(),
        None => target_scope(backup, stream, &restore_options)?,
    };
    repo.data_identities("serving a backup")?;

    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| Error::io(format!("listening on {}", options.addr), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(format!("listening on {}", options.addr), e))?;
    let base = match &options.advertise {
        Some(b) => b.trim_end_matches('/').to_string(),
        None if bound.ip().is_unspecified() => {
            return Err(Error::invalid_input(format!(
                "listening on {bound}, which is not an address Qdrant can be sent to: give the \
                 URL the Qdrant node reaches this machine at with --advertise-url \
                 http://HOST:{}",
                bound.port()
            )))
        }
        None => format!("http://{bound}"),
    };
    let token = hex::encode(rand::random::<[u8; 32]>());
    let file = format!(
        "{}-{}.snapshot",
        scope.collection_name().unwrap_or("stream"),
        &backup.to_hex()[..12]
    );
    let path = format!("/{token}/{file}");
    let location = format!("{base}{path}");

    let (writer, body) = pipe();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // Fires when the body ended cleanly: every byte was handed to the connection.
    let body = body
        .chain(
            futures::stream::once(async move {
                let _ = done_tx.send(());
            })
            .filter_map(|()| async { None }),
        )
        .boxed();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let shared = Arc::new(Shared {
        path,
        body: Mutex::new(Some(body)),
        started: Mutex::new(Some(started_tx)),
    });
    let app = axum::Router::new().fallback(handle).with_state(Arc::clone(&shared));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });

    on_ready(&ServeReady {
        location: location.clone(),
        checksum: stream.sha256.clone(),
        scope: scope.clone(),
        curl: curl_call(
            qdrant.map(|(c, _, _)| c.url()),
            &scope,
            &location,
            stream,
            &restore_options,
        ),
    });

    let started = Instant::now();
    let produce = async {
        started_rx.await.map_err(|_| Error::new(ErrorKind::Io, "the HTTP server stopped"))?;
        let (writer, summary) =
            crate::restore::execute(repo, plan, writer, &restore_options.restore).await?;
        writer.finish();
        // Qdrant has every byte only once the body ended; a cut connection drops it instead.
        done_rx.await.map_err(|_| {
            Error::new(
                ErrorKind::Qdrant,
                "the connection was closed before the whole stream was sent",
            )
        })?;
        Ok::<_, Error>(summary)
    };
    let recover = async {
        match qdrant {
            Some((client, _, o)) => {
                let recover = RecoverOptions {
                    priority: o.priority,
                    checksum: Some(stream.sha256.clone()),
                    wait: true,
                    filename: None,
                };
                client.recover_from_url(&scope, &location, None, &recover).await.map(Some)
            }
            // Nobody to wait for but the puller.
            None => std::future::pending().await,
        }
    };
    tokio::pin!(produce);
    tokio::pin!(recover);
    let result = tokio::select! {
        produced = &mut produce => match produced {
            Ok(summary) if qdrant.is_some() => recover.await.map(|_| summary),
            Ok(summary) => Ok(summary),
            Err(e) => Err(e.context(format!(
                "serving backup {backup}: the transfer was cut short, nothing was recovered"
            ))),
        },
        recovered = &mut recover => match recovered {
            // Qdrant finished: it had the whole body, so the restore side is done too.
            Ok(_) => produce.await,
            Err(e) => Err(e),
        },
    };
    let _ = stop_tx.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("the HTTP server did not stop within {SHUTDOWN_GRACE:?}");
    }
    let summary = result?;
    let points = match qdrant {
        Some((client, target, _)) => confirm_points(client, target, backup).await?,
        None => PointsCheck::default(),
    };
    Ok(ServeReport {
        source: plan.stream_ref(),
        bytes: summary.bytes,
        duration: started.elapsed(),
        plan: qdrant.map(|(_, target, _)| target.clone()),
        points_count: points.points_count,
        warnings: points.warning.into_iter().collect(),
    })
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
) -> Response {
    let plain = |status: StatusCode, text: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(text))
            .unwrap_or_default()
    };
    if req.uri().path() != shared.path {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != axum::http::Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let body = shared.body.lock().ok().and_then(|mut b| b.take());
    let Some(body) = body else {
        return plain(StatusCode::GONE, "this one-time link was already used\n");
    };
    if let Some(tx) = shared.started.lock().ok().and_then(|mut s| s.take()) {
        let _ = tx.send(());
    }
    // Deliberately no Content-Length: the whole-stream hash is checked after the last byte
    // is written, and only chunked encoding lets a failure then still cut the body short
    // (no final chunk) instead of completing a response of the announced length.
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

fn curl_call(
    qdrant_url: Option<&str>,
    scope: &SnapshotScope,
    location: &str,
    stream: &StreamRecord,
    options: &QdrantRestoreOptions,
) -> String {
    let base = qdrant_url.unwrap_or("http://QDRANT_HOST:6333").trim_end_matches('/');
    let path = match scope {
        SnapshotScope::Shard { collection, shard_id } => {
            format!("/collections/{collection}/shards/{shard_id}/snapshots/recover")
        }
        other => {
            format!("/collections/{}/snapshots/recover", other.collection_name().unwrap_or(""))
        }
    };
    let mut body = serde_json::json!({"location": location, "checksum": stream.sha256});
    if let Some(p) = options.priority {
        body["priority"] = serde_json::json!(p.as_str());
    }
    format!(
        "curl -X PUT '{base}{path}?wait=true' -H 'Content-Type: application/json' \
         -H \"api-key: $QDRANT_API_KEY\" -d '{body}'"
    )
}
