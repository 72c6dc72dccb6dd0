//! Points, as a real node keeps and answers them (captured in `real-qdrant/more/`, group 4):
//! upsert (list and batch forms), retrieve by id, scroll (integer ids before UUIDs,
//! `next_page_offset`), exact count (the collection's `points_count`), and search/query by
//! exact distance (Cosine on normalised vectors, Dot, Euclid, Manhattan; sparse vectors by
//! dot product over shared indices).
//!
//! Snapshots carry the points: a collection snapshot made while the collection holds points
//! gets one more tar member, [`POINTS_MEMBER`], appended after the source's own members (their
//! bytes unchanged), and a recover that finds it restores exactly those points. A snapshot
//! without it recovers as before (`points_by_sha`), so collections that never saw an upsert
//! keep their old snapshot bytes.
//!
//! Where the fake knowingly differs: filters are ignored (scroll, count), every point's
//! `version` is 0, and equal scores are ordered by id (a real node's order among ties is
//! not specified). The search and query answers otherwise have the captured shapes.

use super::*;

/// The tar member holding the points of a snapshot the fake made.
pub const POINTS_MEMBER: &str = "qvault-fake-points.json";

/// A point id: integers sort before UUIDs, as scroll lists them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PointId {
    Num(u64),
    Uuid(String),
}

impl PointId {
    pub fn parse(v: &Value) -> Result<PointId, String> {
        let bad = || {
            format!(
                "Format error in JSON body: value {} is not a valid point ID, valid values are \
                 either an unsigned integer or a UUID",
                v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
            )
        };
        match v {
            Value::Number(n) => n.as_u64().map(PointId::Num).ok_or_else(bad),
            Value::String(s) if is_uuid(s) => Ok(PointId::Uuid(s.to_lowercase())),
            _ => Err(bad()),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            PointId::Num(n) => json!(n),
            PointId::Uuid(s) => json!(s),
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A stored point: `vector` as scroll shows it (an array for the unnamed vector, else an
/// object of named dense arrays and sparse `{indices, values}`), and its payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub vector: Value,
    pub payload: Value,
}

pub type Points = BTreeMap<PointId, Point>;

/// A change the fake makes to the points of the next recover (any collection), to test
/// that a restore test notices.
#[derive(Clone, Debug)]
pub enum Tamper {
    /// The point is left out.
    Drop(PointId),
    /// The point's payload gets one more key.
    Alter(PointId),
}

/// A float as a real node prints it: the shortest text that reads back as the same `f32`.
fn f32_json(x: f32) -> Value {
    json!(x.to_string().parse::<f64>().unwrap_or(0.0))
}

fn floats(v: &Value) -> Option<Vec<f32>> {
    v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|x| x / norm).collect()
    }
}

/// The params of a dense vector (`""` is the unnamed one), or `None` when there is none.
fn dense_params<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    let vectors = config.pointer("/params/vectors")?;
    if vectors.get("size").is_some() {
        return name.is_empty().then_some(vectors);
    }
    vectors.get(name)
}

fn is_sparse(config: &Value, name: &str) -> bool {
    config.pointer("/params/sparse_vectors").and_then(|s| s.get(name)).is_some()
}

/// One dense vector as stored: checked against its size, normalised for Cosine.
fn dense(config: &Value, name: &str, v: &Value) -> Result<Value, String> {
    let Some(params) = dense_params(config, name) else {
        return Err(format!("Wrong input: Not existing vector name error: {name}"));
    };
    let values = floats(v).ok_or_else(|| "Format error in JSON body: bad vector".to_string())?;
    let size = params.get("size").and_then(Value::as_u64).unwrap_or(0) as usize;
    if values.len() != size {
        return Err(format!(
            "Wrong input: Vector dimension error: expected dim: {size}, got {}",
            values.len()
        ));
    }
    let values = if params.get("distance").and_then(Value::as_str) == Some("Cosine") {
        normalised(&values)
    } else {
        values
    };
    Ok(Value::Array(values.into_iter().map(f32_json).collect()))
}

/// A point's vectors in the stored shape.
fn stored_vector(config: &Value, given: &Value) -> Result<Value, String> {
    match given {
        Value::Array(_) => dense(config, "", given),
        Value::Object(named) => {
            let mut out = serde_json::Map::new();
            for (name, v) in named {
                let stored = if is_sparse(config, name) {
                    let idx = v.get("indices").and_then(Value::as_array).cloned();
                    let val = v.get("values").and_then(floats);
                    let (Some(idx), Some(val)) = (idx, val) else {
                        return Err(format!("Format error in JSON body: bad sparse vector {name}"));
                    };
                    json!({"indices": idx, "values": val.into_iter().map(f32_json).collect::<Vec<_>>()})
                } else {
                    dense(config, name, v)?
                };
                out.insert(name.clone(), stored);
            }
            Ok(Value::Object(out))
        }
        _ => Err("Format error in JSON body: missing field `vector`".into()),
    }
}

/// The `(id, vector, payload)` triples of an upsert body, list or batch form.
fn upserted(body: &Value) -> Result<Vec<(Value, Value, Value)>, String> {
    if let Some(points) = body.get("points").and_then(Value::as_array) {
        return Ok(points
            .iter()
            .map(|p| {
                let vector = p.get("vector").or_else(|| p.get("vectors")).cloned();
                (p["id"].clone(), vector.unwrap_or(Value::Null), p["payload"].clone())
            })
            .collect());
    }
    let batch = body.get("batch").ok_or("Format error in JSON body: missing field `points`")?;
    let ids = batch.get("ids").and_then(Value::as_array).cloned().unwrap_or_default();
    let vectors = batch.get("vectors").and_then(Value::as_array).cloned().unwrap_or_default();
    let payloads = batch.get("payloads").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let v = vectors.get(i).cloned().unwrap_or(Value::Null);
            (id, v, payloads.get(i).cloned().unwrap_or(Value::Null))
        })
        .collect())
}

/// Upserts into `col`; the whole batch is refused when one point is bad.
pub fn upsert(col: &mut Collection, body: &Value) -> Result<(), String> {
    let mut parsed = Vec::new();
    for (id, vector, payload) in upserted(body)? {
        let id = PointId::parse(&id)?;
        let vector = stored_vector(&col.config, &vector)?;
        let payload = if payload.is_object() { payload } else { json!({}) };
        parsed.push((id, Point { vector, payload }));
    }
    col.points.extend(parsed);
    col.points_count = col.points.len() as u64;
    Ok(())
}

/// What `with_payload` / `with_vector` ask for: everything, nothing, or some keys.
fn selected(v: Option<&Value>, default: bool, all: &Value) -> Option<Value> {
    match v {
        None => default.then(|| all.clone()),
        Some(Value::Bool(b)) => b.then(|| all.clone()),
        Some(Value::Array(keys)) => {
            let mut out = serde_json::Map::new();
            for k in keys.iter().filter_map(Value::as_str) {
                if let Some(x) = all.get(k) {
                    out.insert(k.to_string(), x.clone());
                }
            }
            Some(Value::Object(out))
        }
        Some(_) => default.then(|| all.clone()),
    }
}

fn with_vector(body: &Value) -> Option<&Value> {
    body.get("with_vector").or_else(|| body.get("with_vectors"))
}

/// A point as scroll and retrieve answer it.
fn shown(id: &PointId, p: &Point, body: &Value, payload_default: bool) -> Value {
    let mut out = json!({"id": id.to_json()});
    if let Some(payload) = selected(body.get("with_payload"), payload_default, &p.payload) {
        out["payload"] = payload;
    }
    if let Some(vector) = selected(with_vector(body), false, &p.vector) {
        out["vector"] = vector;
    }
    out
}

pub fn scroll(col: &Collection, body: &Value) -> Result<Value, String> {
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let start = match body.get("offset") {
        None | Some(Value::Null) => None,
        Some(v) => Some(PointId::parse(v)?),
    };
    let mut page = col.points.iter().filter(|(id, _)| start.as_ref().is_none_or(|s| *id >= s));
    let points: Vec<Value> =
        page.by_ref().take(limit).map(|(id, p)| shown(id, p, body, true)).collect();
    let next = page.next().map(|(id, _)| id.to_json()).unwrap_or(Value::Null);
    Ok(json!({"points": points, "next_page_offset": next}))
}

/// `POST …/points` with `ids`: the points that exist, in the order asked.
pub fn retrieve(col: &Collection, body: &Value) -> Result<Value, String> {
    let ids = body.get("ids").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for id in &ids {
        let id = PointId::parse(id)?;
        if let Some(p) = col.points.get(&id) {
            out.push(shown(&id, p, body, true));
        }
    }
    Ok(Value::Array(out))
}

/// The query of a search or query body: (vector name, the vector).
fn query_of(col: &Collection, body: &Value, search: bool) -> Result<(String, Value), String> {
    if search {
        return match body.get("vector") {
            Some(Value::Object(named)) if named.contains_key("vector") => Ok((
                named.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                named["vector"].clone(),
            )),
            Some(v) => Ok((String::new(), v.clone())),
            None => Err("Format error in JSON body: missing field `vector`".into()),
        };
    }
    let using = body.get("using").and_then(Value::as_str).unwrap_or("").to_string();
    let query = match body.get("query") {
        // A point id: that point's vector (its own match is left out, as a real node does).
        Some(v @ (Value::Number(_) | Value::String(_))) => {
            let id = PointId::parse(v)?;
            let p = col
                .points
                .get(&id)
                .ok_or_else(|| format!("Not found: No point with id {} found", id.to_json()))?;
            let v = if using.is_empty() { &p.vector } else { &p.vector[&using] };
            v.clone()
        }
        Some(Value::Object(o)) if o.contains_key("nearest") => o["nearest"].clone(),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    Ok((using, query))
}

/// Scores every point against the query, best first (ties by id), `limit` of them.
pub fn search(col: &Collection, body: &Value, search: bool) -> Result<Value, String> {
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let (using, query) = query_of(col, body, search)?;
    let exclude = match body.get("query") {
        Some(v @ (Value::Number(_) | Value::String(_))) if !search => PointId::parse(v).ok(),
        _ => None,
    };
    let vector_of = |p: &Point| -> Option<Value> {
        if using.is_empty() && p.vector.is_array() {
            Some(p.vector.clone())
        } else {
            p.vector.get(&using).cloned()
        }
    };
    let mut scored: Vec<(f32, &PointId, &Point)> = Vec::new();
    if query.is_null() {
        scored = col.points.iter().map(|(id, p)| (1.0, id, p)).collect();
    } else if is_sparse(&col.config, &using) {
        let q: BTreeMap<u64, f32> = sparse_map(&query);
        for (id, p) in &col.points {
            let Some(v) = vector_of(p) else { continue };
            let mine = sparse_map(&v);
            let shared: Vec<f32> =
                mine.iter().filter_map(|(i, x)| q.get(i).map(|y| x * y)).collect();
            if !shared.is_empty() {
                scored.push((shared.iter().sum(), id, p));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    } else {
        let params = dense_params(&col.config, &using)
            .ok_or_else(|| format!("Wrong input: Not existing vector name error: {using}"))?;
        let distance = params.get("distance").and_then(Value::as_str).unwrap_or("Cosine");
        let size = params.get("size").and_then(Value::as_u64).unwrap_or(0) as usize;
        let q = floats(&query).ok_or("Format error in JSON body: bad query vector")?;
        if q.len() != size {
            return Err(format!(
                "Wrong input: Vector dimension error: expected dim: {size}, got {}",
                q.len()
            ));
        }
        let q = if distance == "Cosine" { normalised(&q) } else { q };
        for (id, p) in &col.points {
            let Some(v) = vector_of(p).as_ref().and_then(floats) else { continue };
            let score = match distance {
                "Euclid" => q.iter().zip(&v).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt(),
                "Manhattan" => q.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum(),
                _ => q.iter().zip(&v).map(|(a, b)| a * b).sum(),
            };
            scored.push((score, id, p));
        }
        let smaller_is_better = matches!(distance, "Euclid" | "Manhattan");
        scored.sort_by(|a, b| {
            let by_score =
                if smaller_is_better { a.0.total_cmp(&b.0) } else { b.0.total_cmp(&a.0) };
            by_score.then_with(|| a.1.cmp(b.1))
        });
    }
    let hits: Vec<Value> = scored
        .into_iter()
        .filter(|(_, id, _)| exclude.as_ref() != Some(*id))
        .take(limit)
        .map(|(score, id, p)| {
            let mut hit = json!({"id": id.to_json(), "version": 0, "score": f32_json(score)});
            if let Some(payload) = selected(body.get("with_payload"), false, &p.payload) {
                hit["payload"] = payload;
            }
            if let Some(vector) = selected(with_vector(body), false, &p.vector) {
                hit["vector"] = vector;
            }
            hit
        })
        .collect();
    Ok(if search { Value::Array(hits) } else { json!({"points": hits}) })
}

fn sparse_map(v: &Value) -> BTreeMap<u64, f32> {
    let idx = v.get("indices").and_then(Value::as_array).cloned().unwrap_or_default();
    let val = v.get("values").and_then(floats).unwrap_or_default();
    idx.iter().filter_map(Value::as_u64).zip(val).collect()
}

/// The routes under `/collections/{c}/points` (count has its own, older route).
pub(super) async fn route(
    shared: &Arc<Shared>,
    access: Access,
    method: Method,
    c: &str,
    rest: &[&str],
    req: Request,
    wait: bool,
) -> Response {
    let writes = method == Method::PUT;
    if writes && access == Access::ReadOnly {
        return ro_json_resp();
    }
    let body = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut inner = shared.inner.lock().unwrap();
    let Some(col) = inner.collections.get_mut(c) else {
        return err_json(404, &missing_collection(c));
    };
    let answer = match (method, rest) {
        (Method::PUT, []) => upsert(col, &body).map(|()| {
            let status = if wait { "completed" } else { "acknowledged" };
            json!({"operation_id": col.points.len(), "status": status})
        }),
        (Method::POST, []) => retrieve(col, &body),
        (Method::POST, ["scroll"]) => scroll(col, &body),
        (Method::POST, ["search"]) => search(col, &body, true),
        (Method::POST, ["query"]) => search(col, &body, false),
        _ => return no_route(),
    };
    match answer {
        Ok(result) => ok(result),
        Err(e) if e.starts_with("Not found") => err_json(404, &e),
        Err(e) => err_json(400, &e),
    }
}

/// `bytes` with the collection's points appended as [`POINTS_MEMBER`] (unchanged when it
/// holds none): the source's members keep their bytes, the end-of-archive marker moves.
pub fn with_points(bytes: Bytes, points: &Points) -> Bytes {
    if points.is_empty() {
        return bytes;
    }
    let mut end = 0u64;
    if let Ok(entries) = tar::Archive::new(&bytes[..]).entries() {
        for entry in entries.flatten() {
            let size = entry.header().entry_size().unwrap_or(0);
            end = end.max(entry.raw_file_position() + size.div_ceil(512) * 512);
        }
    }
    let list: Vec<Value> = points
        .iter()
        .map(|(id, p)| json!({"id": id.to_json(), "vector": p.vector, "payload": p.payload}))
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    append_file(&mut builder, POINTS_MEMBER, Value::Array(list).to_string().as_bytes());
    let mut out = bytes[..end as usize].to_vec();
    out.extend_from_slice(&builder.into_inner().unwrap());
    Bytes::from(out)
}

/// The points a snapshot carries, when the fake made it with points.
pub fn points_in_snapshot(bytes: &[u8]) -> Option<Points> {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_string_lossy() != POINTS_MEMBER {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).ok()?;
        let list: Vec<Value> = serde_json::from_str(&text).ok()?;
        return list
            .into_iter()
            .map(|p| {
                let id = PointId::parse(&p["id"]).ok()?;
                Some((id, Point { vector: p["vector"].clone(), payload: p["payload"].clone() }))
            })
            .collect();
    }
    None
}

/// Applies the tampers waiting for the next recover.
pub fn tamper(points: &mut Points, tampers: Vec<Tamper>) {
    for t in tampers {
        match t {
            Tamper::Drop(id) => {
                points.remove(&id);
            }
            Tamper::Alter(id) => {
                if let Some(p) = points.get_mut(&id) {
                    p.payload["tampered"] = json!(true);
                }
            }
        }
    }
}
