//! Snapshot bytes in and out: downloads (Range, faults), uploads and recovery.

use super::*;

/// Serves snapshot bytes like Qdrant's file download: full or a Range (206), with faults.
pub(super) fn download(
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

pub(super) fn parse_range(r: &str, total: u64) -> Option<(u64, u64)> {
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

pub(super) async fn upload(
    shared: &Arc<Shared>,
    c: &str,
    shard: Option<u32>,
    req: Request,
    q: HashMap<String, String>,
    wait: bool,
) -> Response {
    let (filename, data) = match multipart_file(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let resp = recover_bytes(shared, c, shard, data, q.get("checksum").cloned(), Some(filename));
    if resp.status() == StatusCode::OK && !wait {
        return accepted();
    }
    resp
}

/// The multipart field `snapshot` of an upload: its filename and bytes.
pub(super) async fn multipart_file(req: Request) -> Result<(String, Vec<u8>), Response> {
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return Err(err_text(400, &format!("Multipart error: {e}"))),
    };
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(err_text(400, &format!("Multipart error: {e}"))),
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
                Err(e) => return Err(err_text(400, &format!("Multipart error: {e}"))),
            }
        }
        if is_snapshot {
            file = Some((filename, data));
        }
    }
    file.ok_or_else(|| err_text(400, "Required field is missing: snapshot"))
}

pub(super) async fn recover_from_location(
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
pub(super) fn recover_bytes(
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
        if let Some(refusal) = incompatibility(&existing.config, cfg, shard) {
            // A refused upload stays in the target's snapshots dir (captured in
            // `more/`, group 2), listed without a checksum.
            if let Some(name) = uploaded_name {
                let (_, ct) = now_parts();
                let stored = Stored { bytes: Bytes::from(data), creation_time: ct, checksum: None };
                let col = inner.collections.get_mut(c).unwrap();
                match shard {
                    None => col.snapshots.insert(name, stored),
                    Some(id) => col.shard_snapshots.insert((id, name), stored),
                };
            }
            return err_json(400, &refusal);
        }
    }
    let mut points = inner.points_by_sha.get(&actual).copied().unwrap_or(0);
    // A custom-sharded snapshot fills only shards whose keys exist: with none, Qdrant
    // answers 200 and holds 0 points (captured in `more/`, group 3).
    let keys_exist = inner.collections.get(c).is_some_and(|x| !x.shard_keys.is_empty());
    if config.as_ref().is_some_and(is_custom) && !keys_exist {
        points = 0;
    }
    let config =
        config.or_else(|| inner.collections.get(c).map(|x| x.config.clone())).unwrap_or_else(
            || config_from_create_body(&json!({"vectors": {"size": 4, "distance": "Cosine"}})),
        );
    let carried = points::points_in_snapshot(&data);
    let tampers = match (&carried, shard) {
        (Some(_), None) => std::mem::take(&mut inner.tampers),
        _ => Vec::new(),
    };
    let existed = inner.collections.get(c).map(|_| ());
    let col =
        inner.collections.entry(c.to_string()).or_insert_with(|| new_collection(config.clone()));
    if shard.is_none() {
        // An existing collection keeps its own config; only the segments come from the
        // snapshot (captured in `more/`, group 8). A new one takes the snapshot's.
        if existed.is_none() {
            col.config = config;
        }
        col.points_count = points;
        col.estimated_points_count = None;
        // The shards are replaced, not merged: the points are the snapshot's.
        col.points = carried.unwrap_or_default();
        points::tamper(&mut col.points, tampers);
        if !col.points.is_empty() {
            col.points_count = col.points.len() as u64;
        }
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

/// Qdrant's check before recovering into an existing collection: the dense vectors config
/// equal in every field, and (for a collection snapshot) the same shard number. Sparse
/// vectors and collection-level settings are not compared (captured in `more/`, group 2).
fn incompatibility(existing: &Value, snapshot: &Value, shard: Option<u32>) -> Option<String> {
    let prefix = "Wrong input: Snapshot is not compatible with existing collection: ";
    let ev = without_nulls(existing.pointer("/params/vectors").unwrap_or(&Value::Null));
    let sv = without_nulls(snapshot.pointer("/params/vectors").unwrap_or(&Value::Null));
    if ev != sv {
        return Some(format!("{prefix}Collection vectors: {ev} Snapshot Vectors: {sv}"));
    }
    let es = existing.pointer("/params/shard_number").cloned().unwrap_or(json!(1));
    let ss = snapshot.pointer("/params/shard_number").cloned().unwrap_or(json!(1));
    (es != ss && shard.is_none())
        .then(|| format!("{prefix}Collection shard number: {es} Snapshot shard number: {ss}"))
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}
