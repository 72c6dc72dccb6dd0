//! Aliases as captured in `real-qdrant/more/` (group 1): `GET /aliases`,
//! `GET /collections/{c}/aliases` (by the real name only), `POST /collections/aliases`
//! batches that are not atomic, and collection calls through an alias name reaching the
//! real collection (except create and delete, which never follow an alias).

use super::*;

/// The path with an alias in the collection position replaced by its collection, where
/// Qdrant follows aliases.
pub(super) fn follow_alias(shared: &Shared, method: &Method, segs: &mut [String]) {
    let follows =
        matches!(segs, [first, second, ..] if first == "collections" && second != "aliases");
    let own_route = segs.len() == 2 && (method == Method::PUT || method == Method::DELETE)
        || (segs.len() == 3 && segs[2] == "aliases");
    if !follows || own_route {
        return;
    }
    let inner = shared.inner.lock().unwrap();
    if !inner.collections.contains_key(&segs[1]) {
        if let Some(target) = inner.aliases.get(&segs[1]) {
            segs[1] = target.clone();
        }
    }
}

fn listed<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Value {
    let list: Vec<Value> =
        pairs.map(|(a, c)| json!({"alias_name": a, "collection_name": c})).collect();
    json!({ "aliases": list })
}

/// The alias routes, or `None` when the request is not one.
pub(super) async fn alias_route(
    shared: &Arc<Shared>,
    access: Access,
    method: &Method,
    segs: &[&str],
    req: Request,
) -> Result<Response, Request> {
    match (method.clone(), segs) {
        (Method::GET, ["aliases"]) => {
            let inner = shared.inner.lock().unwrap();
            Ok(ok(listed(inner.aliases.iter())))
        }
        (Method::GET, ["collections", c, "aliases"]) => {
            let inner = shared.inner.lock().unwrap();
            if !inner.collections.contains_key(*c) && !inner.aliases.contains_key(*c) {
                return Ok(err_json(404, &missing_collection(c)));
            }
            Ok(ok(listed(inner.aliases.iter().filter(|(_, col)| col.as_str() == *c))))
        }
        (Method::POST, ["collections", "aliases"]) => {
            if access == Access::ReadOnly {
                return Ok(ro_json_resp());
            }
            let body = match read_json(req).await {
                Ok(v) => v,
                Err(r) => return Ok(r),
            };
            let actions =
                body.get("actions").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut inner = shared.inner.lock().unwrap();
            // Not atomic: each action is applied as it comes (captured).
            for action in actions {
                if let Some(a) = action.get("create_alias") {
                    let alias = a["alias_name"].as_str().unwrap_or_default().to_string();
                    let col = a["collection_name"].as_str().unwrap_or_default().to_string();
                    if !inner.collections.contains_key(&col) && !cluster_knows(shared, &col) {
                        return Ok(err_json(404, &missing_collection(&col)));
                    }
                    if inner.collections.contains_key(&alias) {
                        return Ok(err_json(
                            409,
                            &format!("Wrong input: Collection `{alias}` already exists!"),
                        ));
                    }
                    // An existing alias is moved silently, as Qdrant does.
                    inner.aliases.insert(alias, col);
                } else if let Some(a) = action.get("delete_alias") {
                    inner.aliases.remove(a["alias_name"].as_str().unwrap_or_default());
                } else if let Some(a) = action.get("rename_alias") {
                    let old = a["old_alias_name"].as_str().unwrap_or_default();
                    let Some(col) = inner.aliases.remove(old) else {
                        return Ok(err_json(
                            404,
                            &format!("Not found: Alias {old} does not exists!"),
                        ));
                    };
                    inner
                        .aliases
                        .insert(a["new_alias_name"].as_str().unwrap_or_default().into(), col);
                }
            }
            Ok(ok(json!(true)))
        }
        _ => Err(req),
    }
}
