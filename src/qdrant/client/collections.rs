//! Server and collection endpoints: version, list, info, exact count, cluster layout,
//! create and delete. Reads are retried; creating a collection is not (a lost answer
//! followed by a retry would report "already exists").

use reqwest::Method;
use serde_json::Value;

use super::http::{parse, Call, CallKind, Retry};
use super::QdrantClient;
use crate::error::{Error, ErrorKind, Result};
use crate::qdrant::types::{
    AliasDescription, CollectionClusterInfo, CollectionInfo, CollectionParams, ServerVersion,
};

impl QdrantClient {
    /// `GET /`: server name and version.
    pub async fn version(&self) -> Result<ServerVersion> {
        let what = "reading the Qdrant version";
        let call = Call::new(Method::GET, self.url_for(&[]), what).retry(Retry::Idempotent);
        // The root answer is not an envelope: `{"title", "version", "commit"}`.
        let (_, value) = self.send(call).await?;
        parse(value, what)
    }

    /// `GET /collections`: the collection names.
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Names {
            collections: Vec<Name>,
        }
        #[derive(serde::Deserialize)]
        struct Name {
            name: String,
        }
        let url = self.url_for(&["collections"]);
        let call = Call::new(Method::GET, url, "listing collections").retry(Retry::Idempotent);
        let names: Names = self.result(call).await?;
        Ok(names.collections.into_iter().map(|n| n.name).collect())
    }

    /// `GET /collections/{c}`. A missing collection is an [`ErrorKind::NotFound`] error.
    pub async fn collection_info(&self, collection: &str) -> Result<CollectionInfo> {
        let what = format!("reading collection `{collection}`");
        let url = self.url_for(&["collections", collection]);
        let call = Call::new(Method::GET, url, what.clone()).retry(Retry::Idempotent);
        let raw: Value = self.result(call).await?;
        let config = raw.get("config").cloned().unwrap_or(Value::Null);
        let params: CollectionParams = match config.get("params") {
            Some(p) => parse(p.clone(), &what)?,
            None => {
                return Err(Error::new(
                    ErrorKind::Qdrant,
                    format!(
                        "{what}: Qdrant's answer has no `config.params`; is {} a Qdrant server?",
                        self.url()
                    ),
                ))
            }
        };
        Ok(CollectionInfo {
            status: raw.get("status").and_then(Value::as_str).map(str::to_owned),
            points_count: raw.get("points_count").and_then(Value::as_u64),
            segments_count: raw.get("segments_count").and_then(Value::as_u64),
            params,
            config,
            raw,
        })
    }

    /// Whether the collection exists (`GET /collections/{c}` answering 404 means no).
    pub async fn collection_exists(&self, collection: &str) -> Result<bool> {
        match self.collection_info(collection).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /collections/{c}/points/count`: the number of points in the whole collection
    /// (every shard, local or remote). With `exact = true` Qdrant counts the points
    /// themselves, unlike collection info's `points_count`, which is an estimate (a point
    /// being moved by the optimizer may be counted twice). Retried: it only reads.
    pub async fn count_points(&self, collection: &str, exact: bool) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct Count {
            count: u64,
        }
        let what = format!("counting the points of collection `{collection}`");
        let url = self.url_for(&["collections", collection, "points", "count"]);
        let call = Call::new(Method::POST, url, what)
            .json(serde_json::json!({ "exact": exact }))
            .retry(Retry::Idempotent);
        let count: Count = self.result(call).await?;
        Ok(count.count)
    }

    /// `GET /collections/{c}/cluster`: which shards this node holds and where the others are.
    pub async fn collection_cluster_info(&self, collection: &str) -> Result<CollectionClusterInfo> {
        let what = format!("reading the cluster layout of collection `{collection}`");
        let url = self.url_for(&["collections", collection, "cluster"]);
        self.result(Call::new(Method::GET, url, what).retry(Retry::Idempotent)).await
    }

    /// `PUT /collections/{c}` with Qdrant's create body, e.g.
    /// `{"vectors": {"size": 768, "distance": "Cosine"}, "shard_number": 2}`.
    /// Not retried: a lost answer followed by a retry would report "already exists".
    pub async fn create_collection(&self, collection: &str, body: &Value) -> Result<()> {
        let what = format!("creating collection `{collection}`");
        let url = self.url_for(&["collections", collection]);
        let call = Call::new(Method::PUT, url, what).json(body.clone()).kind(CallKind::Operation);
        let _: Value = self.result(call).await?;
        Ok(())
    }

    /// `DELETE /collections/{c}`; `Ok(false)` when Qdrant reports nothing was deleted.
    pub async fn delete_collection(&self, collection: &str) -> Result<bool> {
        let what = format!("deleting collection `{collection}`");
        let url = self.url_for(&["collections", collection]);
        let call =
            Call::new(Method::DELETE, url, what).kind(CallKind::Operation).retry(Retry::Idempotent);
        let deleted: Value = self.result(call).await?;
        Ok(deleted.as_bool().unwrap_or(true))
    }

    /// `GET /aliases`: every alias on the node and the collection it points at.
    pub async fn list_aliases(&self) -> Result<Vec<AliasDescription>> {
        #[derive(serde::Deserialize)]
        struct Aliases {
            aliases: Vec<AliasDescription>,
        }
        let url = self.url_for(&["aliases"]);
        let call = Call::new(Method::GET, url, "listing aliases").retry(Retry::Idempotent);
        let list: Aliases = self.result(call).await?;
        Ok(list.aliases)
    }

    /// `POST /collections/aliases` with one `create_alias` per alias, all to `collection`.
    /// Qdrant moves an existing alias silently and applies a batch action by action: check
    /// with [`Self::list_aliases`] first. Retried: creating the same alias again is a no-op.
    pub async fn create_aliases(&self, collection: &str, aliases: &[String]) -> Result<()> {
        let actions: Vec<Value> = aliases
            .iter()
            .map(|a| serde_json::json!({"create_alias": {"collection_name": collection, "alias_name": a}}))
            .collect();
        let what = format!("creating aliases {} of collection `{collection}`", aliases.join(", "));
        let url = self.url_for(&["collections", "aliases"]);
        let call = Call::new(Method::POST, url, what)
            .json(serde_json::json!({ "actions": actions }))
            .kind(CallKind::Operation)
            .retry(Retry::Idempotent);
        let _: Value = self.result(call).await?;
        Ok(())
    }
}
