//! The point sample a Qdrant backup records, and its replay by the restore test.
//!
//! At backup, just before the snapshot is made: up to N point ids spread evenly over the
//! collection's id order, each with a hash of its vectors and payload as Qdrant returned
//! them, and a few probe queries (a sampled point's own vector as the query, with the top-10
//! ids and scores Qdrant answered). After a restore, [`check_sample`] reads the same points
//! from the restored collection and replays the probes.
//!
//! Guarantees:
//! - The hash is BLAKE3 over canonical JSON `{"payload": …, "vector": …}` (object keys
//!   sorted, no whitespace, numbers as Qdrant printed them), cut to 16 bytes: equal exactly
//!   when Qdrant returns the same vectors and payload. Named, sparse and multi vectors are
//!   hashed as the one `vector` object Qdrant returns.
//! - Probes use exact search (`params.exact`), so the answer depends on the points, not on
//!   the HNSW graph. Equal scores: Qdrant's order among them is unspecified, so ids are
//!   compared as a set within each run of equal scores, and the run the 10th place cuts may
//!   hold other ids of that score.
//! - Sampling never fails a backup: a failed scroll or query is a warning, and the backup
//!   records less (no sample, or no probes).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{PointId, PointRecord, QdrantClient, ScoredPoint};
use super::provenance::QdrantProvenance;
use super::types::SnapshotScope;
use crate::error::Result;

/// The hash of [`SampledPoint::hash`], recorded with the sample so a later format is told apart.
pub const SAMPLE_HASH: &str = "blake3-128/canonical-json";
/// Ids read per scroll page while choosing the sample.
const SCAN_PAGE: usize = 10_000;
/// The sample is spread over at most this many ids (the first ones in id order): choosing it
/// stays a few scroll calls on a collection of millions.
const SCAN_LIMIT: usize = 200_000;
/// Points read per retrieve call.
const RETRIEVE_BATCH: usize = 64;
/// Hits a probe records.
pub const PROBE_LIMIT: usize = 10;
/// Scores closer than this (relative) count as equal.
const SCORE_TOLERANCE: f64 = 1e-6;

/// How much to sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleOptions {
    pub points: usize,
    pub probes: usize,
}

impl Default for SampleOptions {
    /// 256 points, 5 probes.
    fn default() -> Self {
        SampleOptions { points: 256, probes: 5 }
    }
}

/// What a backup recorded to check a restore with (the provenance's `sample`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointSample {
    /// How `points[].hash` was computed: [`SAMPLE_HASH`].
    pub hash: String,
    pub points: Vec<SampledPoint>,
    #[serde(default)]
    pub probes: Vec<Probe>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampledPoint {
    pub id: PointId,
    pub hash: String,
}

/// A query replayed after a restore: point `point`'s vector `using` (absent: the unnamed
/// one) as the query, and the hits Qdrant answered, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub point: PointId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    pub top: Vec<ScoredPoint>,
}

/// Records the sample of a collection scope into `source`, when asked and when every shard
/// is local (the exact count was taken: the snapshot then holds every point the scroll
/// sees). Failures are warnings.
pub async fn record_sample(
    client: &QdrantClient,
    scope: &SnapshotScope,
    options: Option<&SampleOptions>,
    source: &mut QdrantProvenance,
) {
    let SnapshotScope::Collection(collection) = scope else { return };
    let Some(options) = options.filter(|o| o.points > 0) else { return };
    if source.exact_points_count.is_none() {
        return;
    }
    match take_sample(client, collection, options).await {
        Ok(sample) => source.sample = Some(sample),
        Err(e) => tracing::warn!(
            "recording no point sample of collection `{collection}` (a restore test will \
             compare the count and config only): {e}"
        ),
    }
}

/// Samples `collection` on `client`'s node.
pub async fn take_sample(
    client: &QdrantClient,
    collection: &str,
    options: &SampleOptions,
) -> Result<PointSample> {
    let mut ids = Vec::new();
    let mut offset = None;
    while ids.len() < SCAN_LIMIT {
        let page = client.scroll_points(collection, offset.as_ref(), SCAN_PAGE, false).await?;
        ids.extend(page.points.into_iter().map(|p| p.id));
        match page.next_page_offset {
            Some(next) => offset = Some(next),
            None => break,
        }
    }
    let chosen = spread(&ids, options.points);
    let mut records = Vec::with_capacity(chosen.len());
    for batch in chosen.chunks(RETRIEVE_BATCH) {
        records.extend(client.retrieve_points(collection, batch).await?);
    }
    // Retrieve answers in any order; the sample lists points in id order.
    records.sort_by(|a, b| a.id.cmp(&b.id));
    let points =
        records.iter().map(|r| SampledPoint { id: r.id.clone(), hash: point_hash(r) }).collect();
    let mut probes = Vec::new();
    for record in spread(&records, options.probes) {
        let Some((using, query)) = probe_vector(&record) else { continue };
        match client.query_points(collection, &query, using.as_deref(), PROBE_LIMIT).await {
            Ok(top) => probes.push(Probe { point: record.id.clone(), using, top }),
            Err(e) => {
                tracing::warn!("recording no probe queries of collection `{collection}`: {e}");
                break;
            }
        }
    }
    Ok(PointSample { hash: SAMPLE_HASH.to_string(), points, probes })
}

/// Up to `n` items spread evenly over `items`, first one included.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// The hash of a point's vectors and payload (see the module docs).
pub fn point_hash(record: &PointRecord) -> String {
    let doc = serde_json::json!({
        "payload": record.payload.clone().unwrap_or(Value::Null),
        "vector": record.vector.clone().unwrap_or(Value::Null),
    });
    let mut text = String::new();
    canonical(&doc, &mut text);
    hex::encode(&blake3::hash(text.as_bytes()).as_bytes()[..16])
}

/// JSON with object keys sorted and no whitespace, whatever map order serde_json keeps.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The vector a probe queries with: the unnamed dense vector, else the first named dense
/// one, else the first sparse one; `None` for a point without vectors.
fn probe_vector(record: &PointRecord) -> Option<(Option<String>, Value)> {
    match record.vector.as_ref()? {
        v @ Value::Array(_) => Some((None, v.clone())),
        Value::Object(named) => {
            let mut names: Vec<&String> = named.keys().collect();
            names.sort();
            let dense = names.iter().find(|n| is_dense(&named[n.as_str()]));
            let sparse = names.iter().find(|n| named[n.as_str()].get("indices").is_some());
            let name = dense.or(sparse)?;
            Some((Some(name.to_string()), named[name.as_str()].clone()))
        }
        _ => None,
    }
}

/// A plain dense vector (multi vectors, arrays of arrays, are not used as queries).
fn is_dense(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_number))
}

/// What replaying a sample against a restored collection found.
#[derive(Clone, Debug, Default)]
pub struct SampleCheck {
    pub points_checked: usize,
    pub missing: Vec<PointId>,
    pub differing: Vec<PointId>,
    pub probes_replayed: usize,
    /// A probe whose answer differs, and how.
    pub probe_failures: Vec<(PointId, String)>,
    /// Probes not replayed, and why.
    pub notes: Vec<String>,
}

/// Reads the sampled points from `collection` and replays the probes.
pub async fn check_sample(
    client: &QdrantClient,
    collection: &str,
    sample: &PointSample,
) -> Result<SampleCheck> {
    let mut check = SampleCheck::default();
    if sample.hash != SAMPLE_HASH {
        check.notes.push(format!(
            "the sample's hash `{}` is not one this qvault knows ({SAMPLE_HASH}): points not \
             compared",
            sample.hash
        ));
        return Ok(check);
    }
    let ids: Vec<PointId> = sample.points.iter().map(|p| p.id.clone()).collect();
    let mut found = std::collections::BTreeMap::new();
    for batch in ids.chunks(RETRIEVE_BATCH) {
        for record in client.retrieve_points(collection, batch).await? {
            found.insert(record.id.clone(), record);
        }
    }
    for point in &sample.points {
        check.points_checked += 1;
        match found.get(&point.id) {
            None => check.missing.push(point.id.clone()),
            Some(r) if point_hash(r) != point.hash => check.differing.push(point.id.clone()),
            Some(_) => {}
        }
    }
    for probe in &sample.probes {
        let record = found.get(&probe.point);
        let same = record.is_some_and(|r| {
            sample.points.iter().any(|p| p.id == probe.point && p.hash == point_hash(r))
        });
        let query = record
            .filter(|_| same)
            .and_then(probe_vector)
            .filter(|(using, _)| *using == probe.using);
        let Some((using, query)) = query else {
            check.notes.push(format!(
                "probe of point {} not replayed: the point is not restored as backed up",
                probe.point
            ));
            continue;
        };
        let top = client.query_points(collection, &query, using.as_deref(), PROBE_LIMIT).await?;
        check.probes_replayed += 1;
        if let Some(why) = compare_hits(&probe.top, &top, PROBE_LIMIT) {
            check.probe_failures.push((probe.point.clone(), why));
        }
    }
    Ok(check)
}

fn same_score(a: f64, b: f64) -> bool {
    (a - b).abs() <= SCORE_TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// `None` when `replayed` is the answer `recorded` was, ties allowed (module docs); else
/// what differs.
pub fn compare_hits(
    recorded: &[ScoredPoint],
    replayed: &[ScoredPoint],
    limit: usize,
) -> Option<String> {
    let ids = |hits: &[ScoredPoint]| -> String {
        hits.iter().map(|h| h.id.to_string()).collect::<Vec<_>>().join(", ")
    };
    if recorded.len() != replayed.len() {
        return Some(format!(
            "{} hits [{}], the backup recorded {} [{}]",
            replayed.len(),
            ids(replayed),
            recorded.len(),
            ids(recorded)
        ));
    }
    for (rank, (a, b)) in recorded.iter().zip(replayed).enumerate() {
        if !same_score(a.score, b.score) {
            return Some(format!(
                "hit {} scores {} (point {}), the backup recorded {} (point {})",
                rank + 1,
                b.score,
                b.id,
                a.score,
                a.id
            ));
        }
    }
    // Runs of equal scores: the same ids in each, except in a run the limit cuts.
    let mut start = 0;
    while start < recorded.len() {
        let mut end = start + 1;
        while end < recorded.len() && same_score(recorded[start].score, recorded[end].score) {
            end += 1;
        }
        let cut = end == recorded.len() && recorded.len() == limit;
        if !cut {
            let mut a: Vec<&PointId> = recorded[start..end].iter().map(|h| &h.id).collect();
            let mut b: Vec<&PointId> = replayed[start..end].iter().map(|h| &h.id).collect();
            a.sort();
            b.sort();
            if a != b {
                return Some(format!(
                    "hits [{}], the backup recorded [{}]",
                    ids(replayed),
                    ids(recorded)
                ));
            }
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u64, score: f64) -> ScoredPoint {
        ScoredPoint { id: PointId::Num(id), score }
    }

    #[test]
    fn the_hash_ignores_key_order_and_sees_every_value() {
        let a: PointRecord = serde_json::from_str(
            r#"{"id": 1, "vector": {"b": [0.5], "a": {"indices": [3], "values": [0.25]}}, "payload": {"y": 1, "x": [true, null]}}"#,
        )
        .unwrap();
        let b: PointRecord = serde_json::from_str(
            r#"{"id": 1, "payload": {"x": [true, null], "y": 1}, "vector": {"a": {"values": [0.25], "indices": [3]}, "b": [0.5]}}"#,
        )
        .unwrap();
        assert_eq!(point_hash(&a), point_hash(&b));
        assert_eq!(point_hash(&a).len(), 32);
        let mut c = b.clone();
        c.payload = Some(serde_json::json!({"x": [true, null], "y": 2}));
        assert_ne!(point_hash(&a), point_hash(&c));
    }

    #[test]
    fn ties_may_reorder_and_the_cut_run_may_hold_other_ids() {
        let recorded = [hit(1, 0.9), hit(2, 0.5), hit(3, 0.5), hit(4, 0.1)];
        let swapped = [hit(1, 0.9), hit(3, 0.5), hit(2, 0.5), hit(4, 0.1)];
        assert_eq!(compare_hits(&recorded, &swapped, 4), None);
        let other_cut = [hit(1, 0.9), hit(3, 0.5), hit(2, 0.5), hit(9, 0.1)];
        assert_eq!(compare_hits(&recorded, &other_cut, 4), None, "the last run is cut at 4");
        assert!(compare_hits(&recorded, &other_cut, 10).unwrap().contains("9"));
        let other = [hit(1, 0.9), hit(2, 0.5), hit(5, 0.5), hit(4, 0.1)];
        assert!(compare_hits(&recorded, &other, 4).is_some());
        let rescored = [hit(1, 0.9), hit(2, 0.5), hit(3, 0.4), hit(4, 0.1)];
        assert!(compare_hits(&recorded, &rescored, 4).unwrap().starts_with("hit 3 scores 0.4"));
    }

    #[test]
    fn spread_keeps_first_and_stays_in_bounds() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&items, 3), vec![0, 3, 6]);
        assert_eq!(spread(&items, 20), items);
        assert!(spread(&items, 0).is_empty());
    }
}
