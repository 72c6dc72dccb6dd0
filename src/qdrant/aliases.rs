//! Aliases around a backup and a restore: which aliases point at a collection, an alias
//! given as a collection resolved to the real one, and which aliases a restore may
//! recreate.
//!
//! Guarantees: qvault never moves an alias that points at another collection (Qdrant's
//! `create_alias` would, silently): such an alias, or a collection with an alias's name,
//! refuses the restore before anything is sent. Aliases are created only after the
//! collection was recovered and counted. A node whose API has no alias listing counts as
//! having no aliases.

use super::client::QdrantClient;
use super::types::AliasDescription;
use crate::error::{Error, ErrorKind, Result};

/// Every alias on the node; none when the node cannot list them (404).
pub async fn all_aliases(client: &QdrantClient) -> Result<Vec<AliasDescription>> {
    match client.list_aliases().await {
        Ok(list) => Ok(list),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The aliases in `all` that point at `collection`, sorted.
pub fn pointing_at(all: &[AliasDescription], collection: &str) -> Vec<String> {
    let mut names: Vec<String> = all
        .iter()
        .filter(|a| a.collection_name == collection)
        .map(|a| a.alias_name.clone())
        .collect();
    names.sort();
    names
}

/// The collection `name` is an alias of, if it is one.
pub fn resolve<'a>(all: &'a [AliasDescription], name: &str) -> Option<&'a str> {
    all.iter().find(|a| a.alias_name == name).map(|a| a.collection_name.as_str())
}

/// The aliases a restore into `collection` creates once the collection is back: `wanted`
/// (recorded in the backup, with `--aliases`) and `kept` (those that pointed at a collection
/// `--replace` drops, which Qdrant drops with it), minus those already in place. Refuses
/// when one points at another collection or names an existing collection.
pub async fn plan_aliases(
    client: &QdrantClient,
    collection: &str,
    wanted: &[String],
    kept: &[String],
) -> Result<Vec<String>> {
    if wanted.is_empty() && kept.is_empty() {
        return Ok(Vec::new());
    }
    let all = all_aliases(client).await?;
    // Not collection info: that answers through an alias too.
    let collections = client.list_collections().await?;
    let mut create = Vec::new();
    for alias in wanted.iter().chain(kept) {
        match resolve(&all, alias) {
            Some(c) if c == collection && !kept.contains(alias) => continue,
            Some(c) if c != collection => {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "alias `{alias}` on Qdrant at {} points at collection `{c}`, and the \
                         backup had it point at `{collection}`: qvault never moves an alias \
                         that points elsewhere. Move it yourself once the restore is checked, \
                         or restore without --aliases",
                        client.url()
                    ),
                ))
            }
            _ => {}
        }
        if collections.contains(alias) {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the backup's alias `{alias}` is the name of a collection on Qdrant at {}: \
                     Qdrant refuses an alias named like a collection; restore without \
                     --aliases, or rename that collection",
                    client.url()
                ),
            ));
        }
        if !create.contains(alias) {
            create.push(alias.clone());
        }
    }
    Ok(create)
}
