//! A fake Qdrant server for tests: a real HTTP server on 127.0.0.1:0 that behaves like
//! Qdrant 1.18 for the calls qvault makes (see `../shared/qdrant-api.md` and the captures in
//! `../shared/real-qdrant/transcript.jsonl`). It is not a mock of qvault's calls: it keeps
//! collections and snapshot files, answers with Qdrant's envelopes, status codes, plain-text
//! error bodies, snapshot names and SHA-256 checksums, and can inject faults.
//!
//! Where the fake knowingly differs from a real node:
//! - Two snapshots of one collection created within the same second would get the same name
//!   on a real node (the second file replaces the first). The fake advances the timestamp in
//!   the name by one second until the name is free, so every created snapshot stays
//!   distinct and tests can check that the right one was deleted.
//! - `wait=false` answers 202 but the work is done before answering, so the snapshot is in
//!   the list at once.
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
}

#[derive(Default)]
struct Inner {
    collections: BTreeMap<String, Collection>,
    full_snapshots: BTreeMap<String, Stored>,
    sources: HashMap<String, Bytes>,
    shard_sources: HashMap<(String, u32), Bytes>,
    full_source: Option<Bytes>,
    points_by_sha: HashMap<String, u64>,
    recovered: HashMap<String, Vec<u8>>,
    recovered_shards: HashMap<(String, u32), Vec<u8>>,
    faults: Vec<Fault>,
    log: Vec<RequestRecord>,
}

struct Shared {
    opts: FakeOptions,
    addr: SocketAddr,
    inner: Mutex<Inner>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { opts, addr, inner: Mutex::new(Inner::default()) });
        let app = Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeQdrant { shared, task }
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

// ----------------------------------------------------------------------------------------
// responses

fn now_parts() -> (String, String) {
    let t = time::OffsetDateTime::now_utc();
    name_and_creation(t)
}

fn name_and_creation(t: time::OffsetDateTime) -> (String, String) {
    let fmt_name =
        time::macros::format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");
    let fmt_ct = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    (t.format(&fmt_name).unwrap(), t.format(&fmt_ct).unwrap())
}

fn elapsed() -> f64 {
    0.000_123
}

fn envelope(result: Value) -> Value {
    json!({"result": result, "status": "ok", "time": elapsed()})
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let text = body.to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, text.len())
        .body(Body::from(text))
        .unwrap()
}

fn ok(result: Value) -> Response {
    json_response(StatusCode::OK, envelope(result))
}

/// The answer to a change: its result with `wait=true`, else 202 "accepted".
fn finished(wait: bool, result: Value) -> Response {
    if wait {
        ok(result)
    } else {
        accepted()
    }
}

fn accepted() -> Response {
    json_response(StatusCode::ACCEPTED, json!({"status": "accepted", "time": elapsed()}))
}

fn err_json(status: u16, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap(),
        json!({"status": {"error": message}, "time": elapsed()}),
    )
}

/// Plain-text error as Qdrant's actix layers send it (`text/plain; charset=utf-8`).
fn err_text(status: u16, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(message.to_string()))
        .unwrap()
}

/// The auth layer's 401 carries no content type at all in the captures.
fn err_401(message: &str) -> Response {
    Response::builder().status(401).body(Body::from(message.to_string())).unwrap()
}

/// Unrouted paths (e.g. `POST …/snapshots/recover`): 404 with an empty body.
fn no_route() -> Response {
    Response::builder().status(404).header(header::CONTENT_LENGTH, 0).body(Body::empty()).unwrap()
}

fn missing_collection(c: &str) -> String {
    format!("Not found: Collection `{c}` doesn't exist!")
}

fn missing_snapshot(name: &str) -> String {
    format!("Not found: Snapshot {name} not found")
}

const FORBIDDEN_MANAGE: &str = "Forbidden: Global manage access is required";

// ----------------------------------------------------------------------------------------
// collections and snapshot contents

fn new_collection(config: Value) -> Collection {
    Collection {
        config,
        points_count: 0,
        estimated_points_count: None,
        snapshots: BTreeMap::new(),
        shard_snapshots: BTreeMap::new(),
    }
}

/// `config` of collection info for a collection made by `PUT /collections/{c}`. A body
/// without `vectors` (the common `{"vector_size": …}` mistake) gives `"vectors": {}`, as the
/// real server does.
fn config_from_create_body(body: &Value) -> Value {
    let vectors = body.get("vectors").cloned().unwrap_or_else(|| json!({}));
    let shard_number = body.get("shard_number").and_then(Value::as_u64).unwrap_or(1);
    let replication = body.get("replication_factor").and_then(Value::as_u64).unwrap_or(1);
    json!({
        "params": {
            "vectors": vectors,
            "shard_number": shard_number,
            "replication_factor": replication,
            "write_consistency_factor": 1,
            "on_disk_payload": true
        },
        "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0, "on_disk": false},
        "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "default_segment_number": 0,
            "max_segment_size": null, "memmap_threshold": null, "indexing_threshold": 10000, "flush_interval_sec": 5,
            "max_optimization_threads": null, "prevent_unoptimized": null},
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1},
        "quantization_config": null
    })
}

/// The collection config inside a snapshot tar (`config.json`), as collection info shows it.
fn snapshot_config(bytes: &[u8]) -> Option<Value> {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if path == "config.json" || path == "./config.json" {
            let mut s = String::new();
            entry.read_to_string(&mut s).ok()?;
            let mut v: Value = serde_json::from_str(&s).ok()?;
            if let Some(o) = v.as_object_mut() {
                o.remove("uuid");
            }
            return v.get("params").is_some().then_some(v);
        }
    }
    None
}

/// Appends a regular file with a fixed header (mode 0644, mtime 0), as snapshot fixtures do.
pub fn append_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    builder.append_data(&mut h, path, data).unwrap();
}

/// A small but well-formed collection snapshot: `config.json`, `version.info` and one
/// deterministic pseudo-segment per shard, used when no source bytes were configured.
fn generated_snapshot(config: &Value, seed: &str) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let shards = config.pointer("/params/shard_number").and_then(Value::as_u64).unwrap_or(1);
    let mut add = |path: &str, data: &[u8]| append_file(&mut builder, path, data);
    for shard in 0..shards {
        let mut data = Vec::with_capacity(64 * 1024);
        let mut x = u64::from_le_bytes(
            Sha256::digest(format!("{seed}/{shard}")).as_slice()[..8].try_into().unwrap(),
        );
        while data.len() < 64 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        add(&format!("{shard}/segments/segment-{seed}.bin"), &data);
        add(&format!("{shard}/shard_config.json"), br#"{"type":"Local"}"#);
    }
    add("version.info", b"0.4.2");
    add("config.json", config.to_string().as_bytes());
    Bytes::from(builder.into_inner().unwrap())
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn description(name: &str, s: &Stored) -> Value {
    let mut d = json!({"name": name, "creation_time": s.creation_time, "size": s.bytes.len()});
    if let Some(c) = &s.checksum {
        d["checksum"] = json!(c);
    }
    d
}

/// A name `{prefix}-{ts}.snapshot` not yet in `taken` (see the module docs on same-second
/// names).
fn unique_name(prefix: &str, taken: impl Fn(&str) -> bool) -> (String, String) {
    let mut t = time::OffsetDateTime::now_utc();
    loop {
        let (ts, ct) = name_and_creation(t);
        let name = format!("{prefix}-{ts}.snapshot");
        if !taken(&name) {
            return (name, ct);
        }
        t += time::Duration::seconds(1);
    }
}

// ----------------------------------------------------------------------------------------
// request handling

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Full,
    ReadOnly,
}

fn auth_seen(headers: &HeaderMap) -> (&'static str, Option<String>) {
    if let Some(k) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
        return ("api-key", Some(k.to_string()));
    }
    if let Some(b) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = b.strip_prefix("Bearer ") {
            return ("bearer", Some(t.to_string()));
        }
    }
    ("none", None)
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let (auth_kind, key) = auth_seen(req.headers());
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = route(&shared, req, key).await;
    shared.inner.lock().unwrap().log.push(RequestRecord {
        method: method.to_string(),
        uri,
        status: response.status().as_u16(),
        auth: auth_kind,
        content_type,
    });
    response
}

/// Takes the first matching fault of the wanted family, decrementing its count.
fn take_fault(
    shared: &Shared,
    method: &Method,
    uri: &str,
    want: fn(&FaultKind) -> bool,
) -> Option<FaultKind> {
    let mut inner = shared.inner.lock().unwrap();
    let idx = inner.faults.iter().position(|f| {
        want(&f.kind)
            && f.count > 0
            && f.method.as_ref().is_none_or(|m| m == method)
            && uri.contains(&f.path_contains)
    })?;
    let f = &mut inner.faults[idx];
    if f.count != u32::MAX {
        f.count -= 1;
    }
    let kind = f.kind.clone();
    if f.count == 0 {
        inner.faults.remove(idx);
    }
    Some(kind)
}

fn decode(seg: &str) -> String {
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_map(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(&v.replace('+', " ")))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn route(shared: &Arc<Shared>, req: Request, key: Option<String>) -> Response {
    let method = req.method().clone();
    let uri = req.uri().to_string();

    // Auth first, like Qdrant's middleware.
    let access = match (&shared.opts.api_key, key) {
        (None, _) => Access::Full,
        (Some(_), None) => {
            return err_401("Must provide an API key or an Authorization bearer token")
        }
        (Some(full), Some(k)) if &k == full => Access::Full,
        (Some(_), Some(k)) if shared.opts.read_only_key.as_deref() == Some(k.as_str()) => {
            Access::ReadOnly
        }
        (Some(_), Some(_)) => return err_401("Invalid API key or JWT"),
    };

    if let Some(FaultKind::Status { status, retry_after }) =
        take_fault(shared, &method, &uri, |k| matches!(k, FaultKind::Status { .. }))
    {
        let msg = match status {
            429 => "Too many requests: rate limit exceeded (injected)".to_string(),
            503 => "Service unavailable: shard is not available (injected)".to_string(),
            s => format!("Service internal error: injected fault {s}"),
        };
        let mut resp = err_json(status, &msg);
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }

    let path = req.uri().path().to_string();
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = query_map(&req);
    let wait = q.get("wait").map(|w| w != "false").unwrap_or(true);

    match (method.clone(), segs.as_slice()) {
        (Method::GET, []) => json_response(
            StatusCode::OK,
            json!({"title": "qdrant - vector search engine", "version": shared.opts.version, "commit": "db8fa43fcb6aedec1e739487e17a99731b74590a"}),
        ),
        (Method::GET, ["collections"]) => {
            let names: Vec<Value> = shared
                .inner
                .lock()
                .unwrap()
                .collections
                .keys()
                .map(|n| json!({"name": n}))
                .collect();
            ok(json!({"collections": names}))
        }
        (Method::GET, ["collections", c]) => {
            let inner = shared.inner.lock().unwrap();
            match inner.collections.get(*c) {
                None => err_json(404, &missing_collection(c)),
                Some(col) => ok(collection_info(col)),
            }
        }
        (Method::PUT, ["collections", c]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let mut inner = shared.inner.lock().unwrap();
            if inner.collections.contains_key(*c) {
                return err_json(400, &format!("Wrong input: Collection `{c}` already exists!"));
            }
            inner.collections.insert(c.to_string(), new_collection(config_from_create_body(&body)));
            ok(json!(true))
        }
        (Method::DELETE, ["collections", c]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let removed = shared.inner.lock().unwrap().collections.remove(*c).is_some();
            ok(json!(removed))
        }
        (Method::POST, ["collections", c, "points", "count"]) => {
            // A read: allowed with a read-only key. The body is required (an empty one is a
            // Json payload error); `exact` defaults to true as in Qdrant's CountRequest.
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            if body.get("exact").is_some_and(|e| !e.is_boolean()) {
                return err_text(
                    400,
                    "Json deserialize error: invalid type: expected a boolean for `exact`",
                );
            }
            let exact = body.get("exact").and_then(Value::as_bool).unwrap_or(true);
            let inner = shared.inner.lock().unwrap();
            match inner.collections.get(*c) {
                None => err_json(404, &missing_collection(c)),
                Some(col) if exact => ok(json!({"count": col.points_count})),
                Some(col) => {
                    ok(json!({"count": col.estimated_points_count.unwrap_or(col.points_count)}))
                }
            }
        }
        (Method::GET, ["collections", c, "cluster"]) => {
            let inner = shared.inner.lock().unwrap();
            match inner.collections.get(*c) {
                None => err_json(404, &missing_collection(c)),
                Some(col) => ok(cluster_info(col, shared.opts.peer_id)),
            }
        }
        // --- collection snapshots
        (Method::GET, ["collections", c, "snapshots"]) => {
            let inner = shared.inner.lock().unwrap();
            match inner.collections.get(*c) {
                None => err_json(404, &missing_collection(c)),
                Some(col) => {
                    let wrong = wrong_checksum_locked(&inner, c);
                    ok(Value::Array(
                        col.snapshots.iter().map(|(n, s)| described(n, s, wrong)).collect(),
                    ))
                }
            }
        }
        (Method::POST, ["collections", c, "snapshots"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let mut inner = shared.inner.lock().unwrap();
            let Some(col) = inner.collections.get(*c) else {
                return err_json(404, &missing_collection(c));
            };
            let bytes = inner
                .sources
                .get(*c)
                .cloned()
                .unwrap_or_else(|| generated_snapshot(&col.config, c));
            if col.points_count > 0 {
                let n = col.points_count;
                inner.points_by_sha.insert(sha256_hex(&bytes), n);
            }
            let col = inner.collections.get_mut(*c).unwrap();
            let prefix = format!("{c}-{}", shared.opts.peer_id);
            let (name, ct) = unique_name(&prefix, |n| col.snapshots.contains_key(n));
            let stored = Stored {
                checksum: shared.opts.checksums.then(|| sha256_hex(&bytes)),
                bytes,
                creation_time: ct,
            };
            col.snapshots.insert(name.clone(), stored.clone());
            let wrong = wrong_checksum_locked(&inner, c);
            finished(wait, described(&name, &stored, wrong))
        }
        (Method::PUT, ["collections", c, "snapshots", "recover"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            recover_from_location(shared, c, None, body, wait).await
        }
        (Method::POST, ["collections", c, "snapshots", "upload"]) => {
            if access == Access::ReadOnly {
                return err_text(403, FORBIDDEN_MANAGE);
            }
            upload(shared, c, None, req, q, wait).await
        }
        (Method::GET, ["collections", c, "snapshots", name]) => {
            let stored = {
                let inner = shared.inner.lock().unwrap();
                match inner.collections.get(*c) {
                    None => return err_text(404, &missing_collection(c)),
                    Some(col) => col.snapshots.get(*name).cloned(),
                }
            };
            match stored {
                None => err_text(404, &missing_snapshot(name)),
                Some(s) => download(shared, &method, &uri, name, s.bytes, req.headers(), true),
            }
        }
        (Method::DELETE, ["collections", c, "snapshots", name]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let mut inner = shared.inner.lock().unwrap();
            let Some(col) = inner.collections.get_mut(*c) else {
                return err_json(404, &missing_collection(c));
            };
            if col.snapshots.remove(*name).is_none() {
                return err_json(404, &missing_snapshot(name));
            }
            finished(wait, json!(true))
        }
        // --- shard snapshots
        (_, ["collections", c, "shards", id, rest @ ..]) => {
            let Ok(shard) = id.parse::<u32>() else {
                return err_json(400, &format!("Wrong input: invalid shard id `{id}`"));
            };
            shard_route(shared, access, method, &uri, c, shard, rest, req, q, wait).await
        }
        // --- full storage snapshots
        (Method::GET, ["snapshots"]) => {
            let inner = shared.inner.lock().unwrap();
            ok(Value::Array(inner.full_snapshots.iter().map(|(n, s)| description(n, s)).collect()))
        }
        (Method::POST, ["snapshots"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let mut inner = shared.inner.lock().unwrap();
            let bytes = match inner.full_source.clone() {
                Some(b) => b,
                None => generated_full_snapshot(&inner, shared.opts.peer_id),
            };
            let (name, ct) = unique_name("full-snapshot", |n| inner.full_snapshots.contains_key(n));
            let stored = Stored {
                checksum: shared.opts.checksums.then(|| sha256_hex(&bytes)),
                bytes,
                creation_time: ct,
            };
            inner.full_snapshots.insert(name.clone(), stored.clone());
            finished(wait, description(&name, &stored))
        }
        (Method::GET, ["snapshots", name]) => {
            let stored = shared.inner.lock().unwrap().full_snapshots.get(*name).cloned();
            match stored {
                None => err_text(404, &missing_snapshot(name)),
                Some(s) => download(shared, &method, &uri, name, s.bytes, req.headers(), true),
            }
        }
        (Method::DELETE, ["snapshots", name]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            if shared.inner.lock().unwrap().full_snapshots.remove(*name).is_none() {
                return err_json(404, &missing_snapshot(name));
            }
            finished(wait, json!(true))
        }
        _ => no_route(),
    }
}

fn wrong_checksum_locked(inner: &Inner, collection: &str) -> bool {
    inner
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::WrongChecksum) && f.path_contains == collection)
}

fn described(name: &str, s: &Stored, wrong: bool) -> Value {
    let mut d = description(name, s);
    if wrong && s.checksum.is_some() {
        // A checksum of other bytes, so a client checking the download sees a mismatch.
        d["checksum"] = json!(sha256_hex(format!("not {name}").as_bytes()));
    }
    d
}

fn generated_full_snapshot(inner: &Inner, peer_id: u64) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut mapping = serde_json::Map::new();
    for (name, col) in &inner.collections {
        let bytes = inner
            .sources
            .get(name)
            .cloned()
            .unwrap_or_else(|| generated_snapshot(&col.config, name));
        let file = format!("{name}-{peer_id}-full.snapshot");
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, &file, &bytes[..]).unwrap();
        mapping.insert(name.clone(), json!(file));
    }
    let cfg = json!({"collections_mapping": mapping, "collections_aliases": {}}).to_string();
    let mut h = tar::Header::new_gnu();
    h.set_size(cfg.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append_data(&mut h, "config.json", cfg.as_bytes()).unwrap();
    Bytes::from(builder.into_inner().unwrap())
}

fn collection_info(col: &Collection) -> Value {
    json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": 0,
        "points_count": col.estimated_points_count.unwrap_or(col.points_count),
        "segments_count": 2,
        "config": col.config,
        "payload_schema": {},
        "update_queue": {"length": 0}
    })
}

fn cluster_info(col: &Collection, peer_id: u64) -> Value {
    let shards =
        col.config.pointer("/params/shard_number").and_then(Value::as_u64).unwrap_or(1).max(1);
    let local: Vec<Value> = (0..shards)
        .map(|id| {
            // Spread the points over the shards, the remainder on shard 0.
            let mut n = col.points_count / shards;
            if id == 0 {
                n += col.points_count % shards;
            }
            json!({"shard_id": id, "points_count": n, "state": "Active"})
        })
        .collect();
    json!({"peer_id": peer_id, "shard_count": shards, "local_shards": local, "remote_shards": [], "shard_transfers": []})
}

async fn read_json(req: Request) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| err_json(400, &format!("Json deserialize error: {e}")))?;
    if bytes.is_empty() {
        return Err(err_text(400, "Json payload error: Json payload is empty"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| err_text(400, &format!("Json deserialize error: {e}")))
}

/// Serves snapshot bytes like Qdrant's file download: full or a Range (206), with faults.
fn download(
    shared: &Shared,
    method: &Method,
    uri: &str,
    name: &str,
    bytes: Bytes,
    headers: &HeaderMap,
    content_length: bool,
) -> Response {
    let total = bytes.len() as u64;
    let (status, body_bytes, range) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok())
    {
        Some(r) => match parse_range(r, total) {
            Some((start, end)) => (
                StatusCode::PARTIAL_CONTENT,
                bytes.slice(start as usize..=end as usize),
                Some((start, end)),
            ),
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                    .body(Body::empty())
                    .unwrap()
            }
        },
        None => (StatusCode::OK, bytes, None),
    };
    let cut = match take_fault(shared, method, uri, |k| matches!(k, FaultKind::CutDownload { .. }))
    {
        Some(FaultKind::CutDownload { after_bytes }) => Some(after_bytes),
        _ => None,
    };
    let slow = match take_fault(shared, method, uri, |k| matches!(k, FaultKind::SlowBody { .. })) {
        Some(FaultKind::SlowBody { chunk, delay }) => Some((chunk.max(1), delay)),
        _ => None,
    };
    let len = body_bytes.len() as u64;
    let chunk = slow.map(|s| s.0).unwrap_or(64 * 1024);
    let delay = slow.map(|s| s.1);
    let limit = cut.unwrap_or(u64::MAX).min(len);
    let stream = futures::stream::unfold(0u64, move |pos| {
        let body_bytes = body_bytes.clone();
        async move {
            if pos >= limit {
                if cut.is_some() && limit < len {
                    // Let hyper flush what was sent (headers included) first, so the cut
                    // happens mid-body rather than before the answer starts. Ending the
                    // body with an error makes hyper drop the connection before the
                    // announced length: the client sees a cut, not a clean end.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Some((
                        Err(std::io::Error::other("fake qdrant: connection cut")),
                        u64::MAX,
                    ));
                }
                return None;
            }
            if pos == u64::MAX {
                return None;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let end = (pos + chunk as u64).min(limit);
            Some((Ok(body_bytes.slice(pos as usize..end as usize)), end))
        }
    });
    let mut b = Response::builder()
        .status(status)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\""))
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if content_length {
        b = b.header(header::CONTENT_LENGTH, len);
    }
    if let Some((s, e)) = range {
        b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{total}"));
    }
    b.body(Body::from_stream(stream)).unwrap()
}

fn parse_range(r: &str, total: u64) -> Option<(u64, u64)> {
    let spec = r.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if total == 0 {
        return None;
    }
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (total.saturating_sub(n), total - 1)
    } else {
        let s: u64 = a.parse().ok()?;
        let e: u64 = if b.is_empty() { total - 1 } else { b.parse::<u64>().ok()?.min(total - 1) };
        (s, e)
    };
    (start <= end && start < total).then_some((start, end))
}

#[allow(clippy::too_many_arguments)]
async fn shard_route(
    shared: &Arc<Shared>,
    access: Access,
    method: Method,
    uri: &str,
    c: &str,
    shard: u32,
    rest: &[&str],
    req: Request,
    q: HashMap<String, String>,
    wait: bool,
) -> Response {
    let shard_count = {
        let inner = shared.inner.lock().unwrap();
        match inner.collections.get(c) {
            None => {
                return if method == Method::GET && rest.len() == 2 {
                    err_text(404, &missing_collection(c))
                } else {
                    err_json(404, &missing_collection(c))
                }
            }
            Some(col) => {
                col.config.pointer("/params/shard_number").and_then(Value::as_u64).unwrap_or(1)
            }
        }
    };
    if u64::from(shard) >= shard_count {
        return err_json(
            400,
            &format!("Wrong input: Shard {shard} is not a local or queue proxy shard"),
        );
    }
    let source = |inner: &Inner| -> Bytes {
        inner.shard_sources.get(&(c.to_string(), shard)).cloned().unwrap_or_else(|| {
            let cfg = inner.collections.get(c).map(|col| col.config.clone()).unwrap_or(Value::Null);
            generated_snapshot(&cfg, &format!("{c}-shard-{shard}"))
        })
    };
    match (method.clone(), rest) {
        (Method::GET, ["snapshot"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let bytes = source(&shared.inner.lock().unwrap());
            let (ts, _) = now_parts();
            let name = format!("{c}-shard-{shard}-{ts}.snapshot");
            // Built on the fly: no Content-Length, no stored file.
            download(shared, &method, uri, &name, bytes, &HeaderMap::new(), false)
        }
        (Method::GET, ["snapshots"]) => {
            let inner = shared.inner.lock().unwrap();
            let col = &inner.collections[c];
            let list: Vec<Value> = col
                .shard_snapshots
                .iter()
                .filter(|((id, _), _)| *id == shard)
                .map(|((_, n), s)| description(n, s))
                .collect();
            ok(Value::Array(list))
        }
        (Method::POST, ["snapshots"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let mut inner = shared.inner.lock().unwrap();
            let bytes = source(&inner);
            let col = inner.collections.get_mut(c).unwrap();
            let (name, ct) = unique_name(&format!("{c}-shard-{shard}"), |n| {
                col.shard_snapshots.contains_key(&(shard, n.to_string()))
            });
            let stored = Stored {
                checksum: shared.opts.checksums.then(|| sha256_hex(&bytes)),
                bytes,
                creation_time: ct,
            };
            col.shard_snapshots.insert((shard, name.clone()), stored.clone());
            finished(wait, description(&name, &stored))
        }
        (Method::PUT, ["snapshots", "recover"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            recover_from_location(shared, c, Some(shard), body, wait).await
        }
        (Method::POST, ["snapshots", "upload"]) => {
            if access == Access::ReadOnly {
                return err_text(403, FORBIDDEN_MANAGE);
            }
            upload(shared, c, Some(shard), req, q, wait).await
        }
        (Method::GET, ["snapshots", name]) => {
            let stored = shared.inner.lock().unwrap().collections[c]
                .shard_snapshots
                .get(&(shard, name.to_string()))
                .cloned();
            match stored {
                None => err_text(404, &missing_snapshot(name)),
                Some(s) => download(shared, &method, uri, name, s.bytes, req.headers(), true),
            }
        }
        (Method::DELETE, ["snapshots", name]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let mut inner = shared.inner.lock().unwrap();
            let col = inner.collections.get_mut(c).unwrap();
            if col.shard_snapshots.remove(&(shard, name.to_string())).is_none() {
                return err_json(404, &missing_snapshot(name));
            }
            finished(wait, json!(true))
        }
        _ => no_route(),
    }
}

/// A read-only key asking to change something.
fn ro_json_resp() -> Response {
    err_json(403, FORBIDDEN_MANAGE)
}

async fn upload(
    shared: &Arc<Shared>,
    c: &str,
    shard: Option<u32>,
    req: Request,
    q: HashMap<String, String>,
    wait: bool,
) -> Response {
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return err_text(400, &format!("Multipart error: {e}")),
    };
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return err_text(400, &format!("Multipart error: {e}")),
        };
        let is_snapshot = field.name() == Some("snapshot");
        let filename = field.file_name().unwrap_or("upload.snapshot").to_string();
        let mut data = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if is_snapshot {
                        data.extend_from_slice(&chunk)
                    }
                }
                Ok(None) => break,
                Err(e) => return err_text(400, &format!("Multipart error: {e}")),
            }
        }
        if is_snapshot {
            file = Some((filename, data));
        }
    }
    let Some((filename, data)) = file else {
        return err_text(400, "Required field is missing: snapshot");
    };
    let resp = recover_bytes(shared, c, shard, data, q.get("checksum").cloned(), Some(filename));
    if resp.status() == StatusCode::OK && !wait {
        return accepted();
    }
    resp
}

async fn recover_from_location(
    shared: &Arc<Shared>,
    c: &str,
    shard: Option<u32>,
    body: Value,
    wait: bool,
) -> Response {
    let Some(location) = body.get("location").and_then(Value::as_str).map(str::to_owned) else {
        return err_text(400, "Json deserialize error: missing field `location`");
    };
    let checksum = body.get("checksum").and_then(Value::as_str).map(str::to_owned);
    let bytes = if let Some(path) = location.strip_prefix("file://") {
        let Some(rest) = path.strip_prefix("/qdrant/snapshots/") else {
            return err_json(
                403,
                "Forbidden: Snapshot file path must be inside the snapshots directory \"/qdrant/snapshots\"",
            );
        };
        // `file:///qdrant/snapshots/{collection}/{name}`: a file in a snapshots dir.
        let found = rest.split_once('/').and_then(|(col, name)| {
            shared
                .inner
                .lock()
                .unwrap()
                .collections
                .get(col)
                .and_then(|c| c.snapshots.get(name))
                .map(|s| s.bytes.to_vec())
        });
        match found {
            Some(b) => b,
            None => {
                return err_json(404, &format!("Not found: Snapshot file {path} does not exist"))
            }
        }
    } else {
        let client = reqwest::Client::new();
        let mut rq = client.get(&location);
        if let Some(k) = body.get("api_key").and_then(Value::as_str) {
            rq = rq.header("api-key", k);
        }
        let fail = || {
            format!("Service internal error: Http request error: error sending request for url ({location})")
        };
        match rq.send().await {
            Err(_) => return err_json(500, &fail()),
            Ok(r) if !r.status().is_success() => {
                return err_json(
                    500,
                    &format!(
                        "Service internal error: Http request error: HTTP status {} for url ({location})",
                        r.status().as_u16()
                    ),
                )
            }
            Ok(r) => match r.bytes().await {
                Ok(b) => b.to_vec(),
                Err(_) => return err_json(500, &fail()),
            },
        }
    };
    let resp = recover_bytes(shared, c, shard, bytes, checksum, None);
    if resp.status() == StatusCode::OK && !wait {
        return accepted();
    }
    resp
}

/// Recovery proper: checksum, compatibility with an existing collection, then the
/// collection (or shard) takes the snapshot's config and data.
fn recover_bytes(
    shared: &Shared,
    c: &str,
    shard: Option<u32>,
    data: Vec<u8>,
    checksum: Option<String>,
    uploaded_name: Option<String>,
) -> Response {
    let actual = sha256_hex(&data);
    if let Some(given) = checksum {
        if !given.eq_ignore_ascii_case(&actual) {
            // The captured message really names the file's hash "expected" and the given
            // one "actual".
            return err_json(400, &format!("Checksum mismatch: expected {actual}, actual {given}"));
        }
    }
    let mut inner = shared.inner.lock().unwrap();
    let config =
        match (snapshot_config(&data), shard) {
            (Some(cfg), _) => Some(cfg),
            (None, Some(_)) => None,
            (None, None) if shared.opts.lenient_recover => None,
            (None, None) => return err_json(
                400,
                "Wrong input: Snapshot is not a valid collection snapshot: config.json not found",
            ),
        };
    if let (Some(existing), Some(cfg)) = (inner.collections.get(c), &config) {
        let ev = existing.config.pointer("/params/vectors").cloned().unwrap_or(Value::Null);
        let sv = cfg.pointer("/params/vectors").cloned().unwrap_or(Value::Null);
        let es = existing.config.pointer("/params/shard_number").cloned().unwrap_or(json!(1));
        let ss = cfg.pointer("/params/shard_number").cloned().unwrap_or(json!(1));
        if ev != sv {
            return err_json(
                400,
                &format!(
                    "Wrong input: Snapshot is not compatible with existing collection: Collection vectors: {ev} Snapshot Vectors: {sv}"
                ),
            );
        }
        if es != ss && shard.is_none() {
            return err_json(
                400,
                &format!(
                    "Wrong input: Snapshot is not compatible with existing collection: Collection shard number: {es} Snapshot shard number: {ss}"
                ),
            );
        }
    }
    let points = inner.points_by_sha.get(&actual).copied().unwrap_or(0);
    let config =
        config.or_else(|| inner.collections.get(c).map(|x| x.config.clone())).unwrap_or_else(
            || config_from_create_body(&json!({"vectors": {"size": 4, "distance": "Cosine"}})),
        );
    let col =
        inner.collections.entry(c.to_string()).or_insert_with(|| new_collection(config.clone()));
    if shard.is_none() {
        col.config = config;
        col.points_count = points;
        col.estimated_points_count = None;
    }
    if let Some(name) = uploaded_name {
        // The uploaded file stays in the snapshots dir, listed without a checksum.
        let (_, ct) = now_parts();
        let stored = Stored { bytes: Bytes::from(data.clone()), creation_time: ct, checksum: None };
        match shard {
            None => {
                col.snapshots.insert(name, stored);
            }
            Some(id) => {
                col.shard_snapshots.insert((id, name), stored);
            }
        }
    }
    match shard {
        None => {
            inner.recovered.insert(c.to_string(), data);
        }
        Some(id) => {
            inner.recovered_shards.insert((c.to_string(), id), data);
        }
    }
    ok(json!(true))
}
