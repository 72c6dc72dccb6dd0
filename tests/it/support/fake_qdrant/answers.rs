//! Qdrant's answers: envelopes, error bodies, and the collection, snapshot and cluster
//! documents the fake serves.

use super::*;

// ----------------------------------------------------------------------------------------
// responses

pub(super) fn now_parts() -> (String, String) {
    let t = time::OffsetDateTime::now_utc();
    name_and_creation(t)
}

pub(super) fn name_and_creation(t: time::OffsetDateTime) -> (String, String) {
    let fmt_name =
        time::macros::format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");
    let fmt_ct = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    (t.format(&fmt_name).unwrap(), t.format(&fmt_ct).unwrap())
}

pub(super) fn elapsed() -> f64 {
    0.000_123
}

pub(super) fn envelope(result: Value) -> Value {
    json!({"result": result, "status": "ok", "time": elapsed()})
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    let text = body.to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, text.len())
        .body(Body::from(text))
        .unwrap()
}

pub(super) fn ok(result: Value) -> Response {
    json_response(StatusCode::OK, envelope(result))
}

/// The answer to a change: its result with `wait=true`, else 202 "accepted".
pub(super) fn finished(wait: bool, result: Value) -> Response {
    if wait {
        ok(result)
    } else {
        accepted()
    }
}

pub(super) fn accepted() -> Response {
    json_response(StatusCode::ACCEPTED, json!({"status": "accepted", "time": elapsed()}))
}

pub(super) fn err_json(status: u16, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap(),
        json!({"status": {"error": message}, "time": elapsed()}),
    )
}

/// Plain-text error as Qdrant's actix layers send it (`text/plain; charset=utf-8`).
pub(super) fn err_text(status: u16, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(message.to_string()))
        .unwrap()
}

/// The auth layer's 401 carries no content type at all in the captures.
pub(super) fn err_401(message: &str) -> Response {
    Response::builder().status(401).body(Body::from(message.to_string())).unwrap()
}

/// Unrouted paths (e.g. `POST …/snapshots/recover`): 404 with an empty body.
pub(super) fn no_route() -> Response {
    Response::builder().status(404).header(header::CONTENT_LENGTH, 0).body(Body::empty()).unwrap()
}

pub(super) fn missing_collection(c: &str) -> String {
    format!("Not found: Collection `{c}` doesn't exist!")
}

pub(super) fn missing_snapshot(name: &str) -> String {
    format!("Not found: Snapshot {name} not found")
}

pub(super) const FORBIDDEN_MANAGE: &str = "Forbidden: Global manage access is required";

// ----------------------------------------------------------------------------------------
// collections and snapshot contents

pub(super) fn new_collection(config: Value) -> Collection {
    Collection {
        config,
        points_count: 0,
        estimated_points_count: None,
        snapshots: BTreeMap::new(),
        shard_snapshots: BTreeMap::new(),
        shard_keys: Vec::new(),
        points: BTreeMap::new(),
    }
}

/// Whether a collection config says `sharding_method: custom`.
pub(super) fn is_custom(config: &Value) -> bool {
    config.pointer("/params/sharding_method").and_then(Value::as_str) == Some("custom")
}

/// Adds a shard key with `shard_number` new shards, ids continuing from the last (from 1,
/// as captured); the error text of a repeated key is the captured one.
pub(super) fn add_shard_key(
    col: &mut Collection,
    key: Value,
    shard_number: u32,
) -> Result<(), String> {
    if col.shard_keys.iter().any(|(k, _)| *k == key) {
        return Err(format!("Wrong input: Sharding key {key} already exists for collection"));
    }
    let next = col.shard_keys.iter().flat_map(|(_, ids)| ids).max().copied().unwrap_or(0) + 1;
    col.shard_keys.push((key, (next..next + shard_number).collect()));
    Ok(())
}

/// `config` of collection info for a collection made by `PUT /collections/{c}`. A body
/// without `vectors` (the common `{"vector_size": …}` mistake) gives `"vectors": {}`, as the
/// real server does.
pub(super) fn config_from_create_body(body: &Value) -> Value {
    let vectors = body.get("vectors").cloned().unwrap_or_else(|| json!({}));
    let shard_number = body.get("shard_number").and_then(Value::as_u64).unwrap_or(1);
    let replication = body.get("replication_factor").and_then(Value::as_u64).unwrap_or(1);
    let sharding = body.get("sharding_method").cloned();
    let mut config = json!({
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
    });
    if let Some(m) = sharding {
        config["params"]["sharding_method"] = m;
    }
    if let Some(sparse) = body.get("sparse_vectors") {
        config["params"]["sparse_vectors"] = sparse.clone();
    }
    config
}

/// The collection config inside a snapshot tar (`config.json`), as collection info shows it.
pub(super) fn snapshot_config(bytes: &[u8]) -> Option<Value> {
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
pub(super) fn generated_snapshot(config: &Value, seed: &str) -> Bytes {
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

pub(super) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub(super) fn description(name: &str, s: &Stored) -> Value {
    let mut d = json!({"name": name, "creation_time": s.creation_time, "size": s.bytes.len()});
    if let Some(c) = &s.checksum {
        d["checksum"] = json!(c);
    }
    d
}

/// A name `{prefix}-{ts}.snapshot` not yet in `taken` (see the module docs on same-second
/// names).
pub(super) fn unique_name(prefix: &str, taken: impl Fn(&str) -> bool) -> (String, String) {
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

pub(super) fn wrong_checksum_locked(inner: &Inner, collection: &str) -> bool {
    inner
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::WrongChecksum) && f.path_contains == collection)
}

pub(super) fn described(name: &str, s: &Stored, wrong: bool) -> Value {
    let mut d = description(name, s);
    if wrong && s.checksum.is_some() {
        // A checksum of other bytes, so a client checking the download sees a mismatch.
        d["checksum"] = json!(sha256_hex(format!("not {name}").as_bytes()));
    }
    d
}

pub(super) fn generated_full_snapshot(inner: &Inner, peer_id: u64) -> Bytes {
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

pub(super) fn collection_info(col: &Collection) -> Value {
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

pub(super) fn cluster_info(col: &Collection, peer_id: u64) -> Value {
    if is_custom(&col.config) {
        // Custom sharding: only the keys' shards exist (none before a key is created).
        let local: Vec<Value> = col
            .shard_keys
            .iter()
            .flat_map(|(k, ids)| ids.iter().map(move |id| (k, id)))
            .map(|(k, id)| json!({"shard_id": id, "shard_key": k, "points_count": 0, "state": "Active"}))
            .collect();
        return json!({"peer_id": peer_id, "shard_count": local.len(), "local_shards": local, "remote_shards": [], "shard_transfers": []});
    }
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

/// A read-only key asking to change something.
pub(super) fn ro_json_resp() -> Response {
    err_json(403, FORBIDDEN_MANAGE)
}

/// Headers of a 200, then the connection drops before the body: what a client sees when a
/// proxy or the network cuts an answer.
pub(super) fn cut_response() -> Response {
    let body = futures::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("fake qdrant: connection cut"))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 100)
        .body(Body::from_stream(body))
        .unwrap()
}
