//! Point endpoints, read-only: scroll, retrieve by id and query. All are retried (they only
//! read) and allowed with a read-only key. Shapes as captured from a real node
//! (`real-qdrant/more/`, group 4).

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::http::{Call, Retry};
use super::QdrantClient;
use crate::error::Result;

/// A point id: an unsigned integer or a UUID. Integers sort before UUIDs, as scroll lists
/// them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointId {
    Num(u64),
    Uuid(String),
}

impl std::fmt::Display for PointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => f.write_str(u),
        }
    }
}

/// A point as scroll and retrieve answer it: its vectors (an array for the unnamed vector,
/// else an object of named ones) and payload, each present when asked for.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PointRecord {
    pub id: PointId,
    #[serde(default)]
    pub vector: Option<Value>,
    #[serde(default)]
    pub payload: Option<Value>,
}

/// One page of a scroll.
#[derive(Clone, Debug, Deserialize)]
pub struct ScrollPage {
    pub points: Vec<PointRecord>,
    /// Where the next page starts; `None` after the last page.
    #[serde(default)]
    pub next_page_offset: Option<PointId>,
}

/// A hit of a query: the point and its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f64,
}

impl QdrantClient {
    /// `POST /collections/{c}/points/scroll`: up to `limit` points from `offset` (id order),
    /// with vectors and payload when asked.
    pub async fn scroll_points(
        &self,
        collection: &str,
        offset: Option<&PointId>,
        limit: usize,
        with_data: bool,
    ) -> Result<ScrollPage> {
        let what = format!("scrolling the points of collection `{collection}`");
        let url = self.url_for(&["collections", collection, "points", "scroll"]);
        let mut body = json!({"limit": limit, "with_vector": with_data, "with_payload": with_data});
        if let Some(offset) = offset {
            body["offset"] = json!(offset);
        }
        let call = Call::new(Method::POST, url, what).json(body).retry(Retry::Idempotent);
        self.result(call).await
    }

    /// `POST /collections/{c}/points` with `ids`: those that exist, with vectors and payload.
    pub async fn retrieve_points(
        &self,
        collection: &str,
        ids: &[PointId],
    ) -> Result<Vec<PointRecord>> {
        let what = format!("reading {} points of collection `{collection}`", ids.len());
        let url = self.url_for(&["collections", collection, "points"]);
        let body = json!({"ids": ids, "with_vector": true, "with_payload": true});
        let call = Call::new(Method::POST, url, what).json(body).retry(Retry::Idempotent);
        self.result(call).await
    }

    /// `POST /collections/{c}/points/query`: the `limit` nearest points to `query` (a dense
    /// vector, or a sparse `{indices, values}`) in vector `using` (`None`: the unnamed one),
    /// by exact search, so the answer depends on the points and not on the state of the
    /// HNSW index.
    pub async fn query_points(
        &self,
        collection: &str,
        query: &Value,
        using: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScoredPoint>> {
        #[derive(Deserialize)]
        struct Answer {
            points: Vec<ScoredPoint>,
        }
        let what = format!("querying collection `{collection}`");
        let url = self.url_for(&["collections", collection, "points", "query"]);
        let mut body = json!({
            "query": query,
            "limit": limit,
            "params": {"exact": true},
            "with_payload": false,
            "with_vector": false,
        });
        if let Some(using) = using {
            body["using"] = json!(using);
        }
        let call = Call::new(Method::POST, url, what).json(body).retry(Retry::Idempotent);
        let answer: Answer = self.result(call).await?;
        Ok(answer.points)
    }
}
