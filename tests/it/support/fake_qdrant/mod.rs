//! A fake Qdrant server for tests: a real HTTP server on 127.0.0.1:0 that behaves like
//! Qdrant 1.18 for the calls qvault makes (see `../shared/qdrant-api.md` and the captures in
//! `../shared/real-qdrant/transcript.jsonl`). It is not a mock of qvault's calls: it keeps
//! collections and snapshot files, answers with Qdrant's envelopes, status codes, plain-text
//! error bodies, snapshot names and SHA-256 checksums, and can inject faults.
//!
//! Modelled from `real-qdrant/more/`: aliases (group 1: listing, non-atomic batches, calls
//! through an alias reaching the collection, create/delete never following one); Qdrant's
//! compatibility rule for recovering into an existing collection, a refused upload staying
//! in the snapshots list, and an existing collection keeping its own config (groups 2, 8);
//! custom sharding with shard ids from 1 and 0 points recovered without keys (group 3); a
//! snapshot that appears only when complete (group 6, with `snapshot_delay`); a proxy that
//! gives up on a create while the node goes on (`Fault::proxy_timeout`).
//! Points (group 4) live in `points.rs`: upsert, retrieve, scroll, query and search by exact
//! distance, carried inside the snapshots the fake makes so a restore brings them back.
//!
//! Where the fake knowingly differs from a real node:
//! - Two snapshots of one collection created within the same second would get the same name
//!   on a real node (the second file replaces the first). The fake advances the timestamp in
//!   the name by one second until the name is free, so every created snapshot stays
//!   distinct and tests can check that the right one was deleted.
//! - `wait=false` answers 202; the snapshot is in the list at once unless
//!   `FakeOptions::snapshot_delay` is set (then it appears after that delay).
//! - Custom-sharded collections report 0 points per shard in cluster info, and the
//!   collection (not per key) point count.
//! - The "not compatible" message renders vector configs as JSON, not Rust's Debug format;
//!   only the prefix `Wrong input: Snapshot is not compatible with existing collection: ` is
//!   the real one.
//! - Messages not seen in the captures (409-like "already exists", a non-tar upload, a
//!   location answering non-2xx) are modelled on Qdrant's error style but invented.
//! - `POST …/points/count` is not in the captures: its answer (`{"count": N}` in the usual
//!   envelope) follows Qdrant's API reference, and its 400 text is invented. The exact
//!   count is the stored point count; collection info may report an estimate instead
//!   (`set_estimated_points_count`).
//! - Every request needs the key when a key is configured (real Qdrant exempts a few
//!   health endpoints qvault does not use).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The full-access and read-only API keys of [`FakeQdrant::with_keys`].
pub const KEY: &str = "full-key-s3cr3t-0123";
pub const RO_KEY: &str = "read-only-key-9876";

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod aliases;
mod answers;
mod cluster;
mod points;
mod routes;
mod shards;
mod snapshots;

use aliases::*;
pub use answers::append_file;
use answers::*;
pub use cluster::FakeCluster;
use cluster::*;
pub use points::{Point, PointId, Tamper};
use routes::*;
use shards::*;
use snapshots::*;

/// The peer id of the captured node, so names look like the captures.
pub const CAPTURED_PEER_ID: u64 = 7071378641532464;

/// The directory of the real captures, or `None` (with a loud message) when it is missing.
pub fn real_qdrant_dir() -> Option<std::path::PathBuf> {
    let dir =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/real-qdrant"));
    if dir.join("transcript.jsonl").exists() {
        Some(dir)
    } else {
        eprintln!(
            "\n!!! SKIPPING: real Qdrant captures not found at {} — this test checks nothing here !!!\n",
            dir.display()
        );
        None
    }
}

/// Reads one of the captured real snapshot files, e.g. `fixture-v0.snapshot`.
pub fn real_snapshot(name: &str) -> Option<Vec<u8>> {
    let dir = real_qdrant_dir()?;
    match std::fs::read(dir.join("snapshots").join(name)) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("\n!!! SKIPPING: cannot read real snapshot {name}: {e} !!!\n");
            None
        }
    }
}

#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// Full-access key; `None` disables auth.
    pub api_key: Option<String>,
    /// A key that may read (list, info, download) but not create, delete or recover.
    pub read_only_key: Option<String>,
    pub peer_id: u64,
    pub version: String,
    /// Report checksums in snapshot descriptions (`false` mimics snapshots on S3).
    pub checksums: bool,
    /// Accept uploads that are not a tar with `config.json` (recovered with a default
    /// 4-dim Cosine config). A real node refuses them.
    pub lenient_recover: bool,
    /// How long making a collection snapshot takes: with `wait=false` (or behind a proxy
    /// that gave up) it appears in the list only after this. Zero: at once.
    pub snapshot_delay: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            api_key: None,
            read_only_key: None,
            peer_id: CAPTURED_PEER_ID,
            version: "1.18.3".into(),
            checksums: true,
            lenient_recover: false,
            snapshot_delay: Duration::ZERO,
        }
    }
}

/// A fault to inject. Faults match requests by method (when given) and by a substring of
/// the path (with query); each applies to the next `count` matching requests.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<Method>,
    pub path_contains: String,
    pub count: u32,
    pub kind: FaultKind,
}

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer this status with a Qdrant error envelope, optionally with `Retry-After`.
    Status { status: u16, retry_after: Option<u64> },
    /// A download sends `after_bytes` bytes (of a body announced in full) and then the
    /// connection is cut.
    CutDownload { after_bytes: u64 },
    /// A proxy in front of the node gives up on a snapshot create: the node still makes
    /// the snapshot (it appears after [`FakeOptions::snapshot_delay`]) while the client gets
    /// 504 (`cut: false`) or a dropped connection (`cut: true`).
    ProxyTimeout { cut: bool },
    /// A download is sent in `chunk`-byte pieces with `delay` before each.
    SlowBody { chunk: usize, delay: Duration },
    /// Snapshot descriptions of the matching collection report a wrong checksum (the
    /// fault's `path_contains` is the collection name; `count` is ignored — it stays on).
    WrongChecksum,
}

impl Fault {
    /// The next `count` requests (`method`, path containing `path`) answer `status`.
    pub fn status(method: Option<Method>, path: &str, status: u16, count: u32) -> Self {
        Fault {
            method,
            path_contains: path.into(),
            count,
            kind: FaultKind::Status { status, retry_after: None },
        }
    }
    /// The next `count` matching requests answer 429 with `Retry-After: secs`.
    pub fn rate_limit(method: Option<Method>, path: &str, count: u32, secs: u64) -> Self {
        Fault {
            method,
            path_contains: path.into(),
            count,
            kind: FaultKind::Status { status: 429, retry_after: Some(secs) },
        }
    }
    /// The next download whose path contains `path` is cut after `after_bytes` bytes.
    pub fn cut_download(path: &str, after_bytes: u64) -> Self {
        Fault {
            method: Some(Method::GET),
            path_contains: path.into(),
            count: 1,
            kind: FaultKind::CutDownload { after_bytes },
        }
    }
    /// The next `count` downloads whose path contains `path` are slow.
    pub fn slow_body(path: &str, chunk: usize, delay: Duration, count: u32) -> Self {
        Fault {
            method: Some(Method::GET),
            path_contains: path.into(),
            count,
            kind: FaultKind::SlowBody { chunk, delay },
        }
    }
    /// The next snapshot create of `collection` times out at a proxy (504, or a cut when
    /// `cut`) while the node goes on making it.
    pub fn proxy_timeout(collection: &str, cut: bool) -> Self {
        Fault {
            method: Some(Method::POST),
            path_contains: format!("/collections/{collection}/snapshots?"),
            count: 1,
            kind: FaultKind::ProxyTimeout { cut },
        }
    }
    /// Snapshot descriptions of `collection` report a wrong checksum from now on.
    pub fn wrong_checksum(collection: &str) -> Self {
        Fault {
            method: None,
            path_contains: collection.into(),
            count: u32::MAX,
            kind: FaultKind::WrongChecksum,
        }
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub status: u16,
    /// `"api-key"`, `"bearer"` or `"none"`.
    pub auth: &'static str,
    pub content_type: Option<String>,
}

#[derive(Clone)]
struct Stored {
    bytes: Bytes,
    creation_time: String,
    checksum: Option<String>,
}

#[derive(Clone)]
struct Collection {
    /// `config` as in collection info: params, hnsw_config, optimizer_config, …
    config: Value,
    /// The points the collection holds: what an exact count answers.
    points_count: u64,
    /// What collection info reports instead, when set: Qdrant's `points_count` there is an
    /// estimate (a point the optimizer is moving between segments counts twice).
    estimated_points_count: Option<u64>,
    snapshots: BTreeMap<String, Stored>,
    shard_snapshots: BTreeMap<(u32, String), Stored>,
    /// Custom sharding: each shard key and its shard ids (from 1, in creation order).
    shard_keys: Vec<(Value, Vec<u32>)>,
    /// The points upserted or recovered (see `points.rs`); empty for a collection whose
    /// count was only set.
    points: points::Points,
}

#[derive(Default)]
struct Inner {
    collections: BTreeMap<String, Collection>,
    full_snapshots: BTreeMap<String, Stored>,
    sources: HashMap<String, Bytes>,
    shard_sources: HashMap<(String, u32), Bytes>,
    full_source: Option<Bytes>,
    points_by_sha: HashMap<String, u64>,
    writes_during_snapshot: HashMap<String, u64>,
    /// alias → collection
    aliases: BTreeMap<String, String>,
    recovered: HashMap<String, Vec<u8>>,
    recovered_shards: HashMap<(String, u32), Vec<u8>>,
    /// Changes to the points of the next collection recover.
    tampers: Vec<Tamper>,
    faults: Vec<Fault>,
    log: Vec<RequestRecord>,
}

struct Shared {
    opts: FakeOptions,
    addr: SocketAddr,
    inner: Mutex<Inner>,
    /// Set for a node of a [`FakeCluster`].
    cluster: Option<Membership>,
}

/// A running fake Qdrant; stops when dropped.
pub struct FakeQdrant {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeQdrant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeQdrant {
    /// A fake that wants [`KEY`] (full access) or [`RO_KEY`] (read-only).
    pub async fn with_keys() -> FakeQdrant {
        FakeQdrant::start(FakeOptions {
            api_key: Some(KEY.into()),
            read_only_key: Some(RO_KEY.into()),
            ..FakeOptions::default()
        })
        .await
    }

    pub async fn start(opts: FakeOptions) -> FakeQdrant {
        FakeQdrant::start_member(opts, None).await
    }

    async fn start_member(opts: FakeOptions, cluster: Option<Membership>) -> FakeQdrant {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Mutex::new(Inner::default());
        let shared = Arc::new(Shared { opts, addr, inner, cluster });
        let app = Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeQdrant { shared, task }
    }

    /// Stops accepting connections: the node is down (connections a client already holds
    /// in its pool are not cut).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Where the fake serves a collection snapshot (for URL-recover tests).
    pub fn snapshot_url(&self, collection: &str, name: &str) -> String {
        format!("{}/collections/{collection}/snapshots/{name}", self.url())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Creates a collection as `PUT /collections/{c}` with this body would.
    pub fn create_collection(&self, name: &str, body: Value) {
        let config = config_from_create_body(&body);
        self.lock().collections.insert(name.into(), new_collection(config));
    }

    /// The bytes "creating a snapshot" of `collection` produces. Creates the collection if
    /// missing, with the snapshot's own `config.json` when the bytes are a Qdrant snapshot.
    pub fn set_snapshot_source(&self, collection: &str, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        let mut inner = self.lock();
        if !inner.collections.contains_key(collection) {
            let config = snapshot_config(&bytes).unwrap_or_else(|| {
                config_from_create_body(&json!({"vectors": {"size": 4, "distance": "Cosine"}}))
            });
            inner.collections.insert(collection.into(), new_collection(config));
        }
        if let Some(n) = inner.collections.get(collection).map(|c| c.points_count) {
            if n > 0 {
                inner.points_by_sha.insert(sha256_hex(&bytes), n);
            }
        }
        inner.sources.insert(collection.into(), bytes);
    }

    /// The bytes of a shard snapshot of `collection`.
    pub fn set_shard_snapshot_source(
        &self,
        collection: &str,
        shard_id: u32,
        bytes: impl Into<Bytes>,
    ) {
        self.lock().shard_sources.insert((collection.into(), shard_id), bytes.into());
    }

    /// The bytes of a full-storage snapshot.
    pub fn set_full_snapshot_source(&self, bytes: impl Into<Bytes>) {
        self.lock().full_source = Some(bytes.into());
    }

    /// The points count reported for `collection`, and for any collection later recovered
    /// from this collection's snapshot bytes.
    pub fn set_points_count(&self, collection: &str, n: u64) {
        let mut inner = self.lock();
        if let Some(c) = inner.collections.get_mut(collection) {
            c.points_count = n;
        }
        if let Some(src) = inner.sources.get(collection).cloned() {
            inner.points_by_sha.insert(sha256_hex(&src), n);
        }
    }

    /// What collection info reports as `points_count` for `collection` from now on, while
    /// an exact count still answers the points it holds (see [`Self::set_points_count`]);
    /// `None` makes both agree again. Models Qdrant's estimate being off while the
    /// optimizer works.
    pub fn set_estimated_points_count(&self, collection: &str, n: Option<u64>) {
        if let Some(c) = self.lock().collections.get_mut(collection) {
            c.estimated_points_count = n;
        }
    }

    /// The points a collection recovered from exactly these snapshot bytes holds (for a
    /// fake that did not make the snapshot itself).
    pub fn set_points_for_snapshot(&self, bytes: &[u8], n: u64) {
        self.lock().points_by_sha.insert(sha256_hex(bytes), n);
    }

    /// From now on, clients add `n` points to `collection` while each snapshot of it is
    /// made: the snapshot holds half of them, a count right after it all of them.
    pub fn set_writes_during_snapshot(&self, collection: &str, n: u64) {
        self.lock().writes_during_snapshot.insert(collection.into(), n);
    }

    /// Creates shard keys of a custom-sharded collection as `PUT …/shards` would, in order.
    pub fn create_shard_key(&self, collection: &str, key: Value, shard_number: u32) {
        let mut inner = self.lock();
        let col = inner.collections.get_mut(collection).unwrap();
        add_shard_key(col, key, shard_number).unwrap();
    }

    /// Points `alias` at `collection` (moving it if it exists), as `create_alias` does.
    pub fn set_alias(&self, alias: &str, collection: &str) {
        self.lock().aliases.insert(alias.into(), collection.into());
    }

    /// Every alias → collection.
    pub fn aliases(&self) -> BTreeMap<String, String> {
        self.lock().aliases.clone()
    }

    /// The bytes last recovered into `collection` (upload or URL recover).
    pub fn recovered(&self, collection: &str) -> Option<Vec<u8>> {
        self.lock().recovered.get(collection).cloned()
    }

    pub fn recovered_shard(&self, collection: &str, shard_id: u32) -> Option<Vec<u8>> {
        self.lock().recovered_shards.get(&(collection.to_string(), shard_id)).cloned()
    }

    /// `result.config` of the collection as collection info reports it.
    pub fn collection_config(&self, collection: &str) -> Option<Value> {
        self.lock().collections.get(collection).map(|c| c.config.clone())
    }

    pub fn collection_names(&self) -> Vec<String> {
        self.lock().collections.keys().cloned().collect()
    }

    /// Names of the files in the collection's snapshots dir.
    pub fn snapshot_names(&self, collection: &str) -> Vec<String> {
        self.lock()
            .collections
            .get(collection)
            .map(|c| c.snapshots.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn full_snapshot_names(&self) -> Vec<String> {
        self.lock().full_snapshots.keys().cloned().collect()
    }

    /// Upserts points as `PUT /collections/{c}/points` with this body would (list or batch
    /// form); panics on a body a real node refuses.
    pub fn upsert_points(&self, collection: &str, body: Value) {
        let mut inner = self.lock();
        let col = inner.collections.get_mut(collection).unwrap();
        points::upsert(col, &body).unwrap();
    }

    /// The points `collection` holds, in scroll order.
    pub fn points(&self, collection: &str) -> Vec<(PointId, Point)> {
        let inner = self.lock();
        let col = inner.collections.get(collection);
        col.map(|c| c.points.clone().into_iter().collect()).unwrap_or_default()
    }

    /// The next collection recover (upload or URL) changes its points so: a restore that
    /// does not bring the backup back whole.
    pub fn tamper_next_recover(&self, tamper: Tamper) {
        self.lock().tampers.push(tamper);
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }
}
