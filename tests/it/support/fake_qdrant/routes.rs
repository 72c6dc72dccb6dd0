//! Request handling: auth, faults, and the routes of the collection-level API.

use super::*;

// ----------------------------------------------------------------------------------------
// request handling

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Full,
    ReadOnly,
}

pub(super) fn auth_seen(headers: &HeaderMap) -> (&'static str, Option<String>) {
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

pub(super) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
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
pub(super) fn take_fault(
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

pub(super) fn decode(seg: &str) -> String {
    percent_decode(seg)
}

pub(super) fn percent_decode(s: &str) -> String {
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

pub(super) fn query_map(req: &Request) -> HashMap<String, String> {
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

pub(super) async fn route(shared: &Arc<Shared>, req: Request, key: Option<String>) -> Response {
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
    let mut segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
    follow_alias(shared, &method, &mut segs);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = query_map(&req);
    let req = match alias_route(shared, access, &method, &segs, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let req = match cluster_route(shared, access, &method, &uri, &segs, &q, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
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
            if inner.aliases.contains_key(*c) {
                return err_json(400, &format!("Wrong input: Can't create collection with name {c}. Alias with the same name already exists"));
            }
            inner.collections.insert(c.to_string(), new_collection(config_from_create_body(&body)));
            ok(json!(true))
        }
        (Method::DELETE, ["collections", c]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let mut inner = shared.inner.lock().unwrap();
            let removed = inner.collections.remove(*c).is_some();
            if removed {
                // Deleting a collection drops its aliases (captured).
                inner.aliases.retain(|_, col| col != c);
            }
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
        (_, ["collections", c, "points", rest @ ..]) => {
            // Point changes default to `wait=false` (captured), unlike snapshot calls.
            let wait = q.get("wait").is_some_and(|w| w == "true");
            points::route(shared, access, method, c, rest, req, wait).await
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
            let proxy =
                take_fault(shared, &method, &uri, |k| matches!(k, FaultKind::ProxyTimeout { .. }));
            let mut inner = shared.inner.lock().unwrap();
            let Some(col) = inner.collections.get(*c) else {
                return err_json(404, &missing_collection(c));
            };
            let bytes = inner
                .sources
                .get(*c)
                .cloned()
                .unwrap_or_else(|| generated_snapshot(&col.config, c));
            let bytes = points::with_points(bytes, &col.points);
            // Clients writing while Qdrant snapshots: the file holds half their points.
            let writes = inner.writes_during_snapshot.get(*c).copied().unwrap_or(0);
            if col.points_count + writes > 0 {
                let n = col.points_count + writes / 2;
                inner.points_by_sha.insert(sha256_hex(&bytes), n);
            }
            let wrong = wrong_checksum_locked(&inner, c);
            let col = inner.collections.get_mut(*c).unwrap();
            col.points_count += writes;
            let prefix = format!("{c}-{}", shared.opts.peer_id);
            let (name, ct) = unique_name(&prefix, |n| col.snapshots.contains_key(n));
            let stored = Stored {
                checksum: shared.opts.checksums.then(|| sha256_hex(&bytes)),
                bytes,
                creation_time: ct,
            };
            let delay = shared.opts.snapshot_delay;
            let answer = described(&name, &stored, wrong);
            if delay.is_zero() || (wait && proxy.is_none()) {
                col.snapshots.insert(name.clone(), stored);
            } else {
                // Qdrant is still writing: the file appears in the list only when complete.
                let (shared, c) = (Arc::clone(shared), c.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(col) = shared.inner.lock().unwrap().collections.get_mut(&c) {
                        col.snapshots.insert(name, stored);
                    }
                });
            }
            match proxy {
                Some(FaultKind::ProxyTimeout { cut: false }) => {
                    err_text(504, "504 Gateway Time-out")
                }
                Some(_) => cut_response(),
                None => finished(wait, answer),
            }
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
        (Method::PUT, ["collections", c, "shards"]) => {
            if access == Access::ReadOnly {
                return ro_json_resp();
            }
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let mut inner = shared.inner.lock().unwrap();
            let Some(col) = inner.collections.get_mut(*c) else {
                return err_json(404, &missing_collection(c));
            };
            let n = body.get("shard_number").and_then(Value::as_u64).unwrap_or(1) as u32;
            match add_shard_key(col, body["shard_key"].clone(), n) {
                Ok(()) => ok(json!(true)),
                Err(e) => err_json(400, &e),
            }
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

pub(super) async fn read_json(req: Request) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| err_json(400, &format!("Json deserialize error: {e}")))?;
    if bytes.is_empty() {
        return Err(err_text(400, "Json payload error: Json payload is empty"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| err_text(400, &format!("Json deserialize error: {e}")))
}
