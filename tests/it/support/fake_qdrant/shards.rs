//! The shard-level API: shard snapshots, streamed shard snapshots, shard recovery.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn shard_route(
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
