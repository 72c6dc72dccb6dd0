//! Which streams of a backup a restore into Qdrant takes, and which collection each goes to.
//!
//! Guarantees: everything is decided from the manifest before anything is read or sent; a
//! stream is found by its exact name or by its name without the `.snapshot` suffix a user
//! may add (or leave out); with no `--stream`, every Qdrant stream is restored; a rename
//! (`OLD=NEW`) that matches no stream, two streams going into one collection, or a plain
//! target name for several streams are refused, never guessed.

use std::collections::BTreeMap;

use super::provenance::QdrantProvenance;
use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, StreamKind, StreamRecord};

/// A stream to restore and the collection the user asked for (`None`: the one backed up).
#[derive(Clone, Debug)]
pub struct StreamTarget<'a> {
    pub stream: &'a StreamRecord,
    pub collection: Option<String>,
}

/// `name` without a trailing `.snapshot`.
fn bare(name: &str) -> &str {
    name.strip_suffix(".snapshot").unwrap_or(name)
}

/// The stream `wanted` names: exact, else the one whose name matches without the
/// `.snapshot` suffix on either side.
pub fn find_stream<'a>(manifest: &'a Manifest, wanted: &str) -> Result<&'a StreamRecord> {
    if let Some(s) = manifest.streams.iter().find(|s| s.name == wanted) {
        return Ok(s);
    }
    let matches: Vec<&StreamRecord> =
        manifest.streams.iter().filter(|s| bare(&s.name) == bare(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        // Zero or ambiguous: the manifest's own lookup words the error.
        _ => manifest.stream(Some(wanted)),
    }
}

/// The collection a stream was backed up from, as recorded.
fn backed_up_collection(stream: &StreamRecord) -> Option<String> {
    QdrantProvenance::from_source(stream.source.as_ref()).and_then(|p| p.collection)
}

/// The streams to restore into Qdrant and their target collections, from `--stream` and
/// the `--collection` values (`NAME`, or `OLD=NEW` renames, repeatable).
pub fn restore_targets<'a>(
    manifest: &'a Manifest,
    wanted: Option<&str>,
    collections: &[String],
) -> Result<Vec<StreamTarget<'a>>> {
    let streams: Vec<&StreamRecord> = match wanted {
        Some(w) => vec![find_stream(manifest, w)?],
        None => manifest
            .streams
            .iter()
            .filter(|s| s.kind != StreamKind::QdrantFullStorage || manifest.streams.len() == 1)
            .collect(),
    };
    let mut renames = BTreeMap::new();
    let mut plain = Vec::new();
    for value in collections {
        match value.split_once('=') {
            Some((old, new)) if !old.is_empty() && !new.is_empty() => {
                if renames.insert(old.to_string(), new.to_string()).is_some() {
                    return Err(Error::invalid_input(format!(
                        "--collection renames `{old}` twice: give one OLD=NEW per collection"
                    )));
                }
            }
            Some(_) => {
                return Err(Error::invalid_input(format!(
                    "--collection `{value}`: write a rename as OLD=NEW"
                )))
            }
            None => plain.push(value.clone()),
        }
    }
    if plain.len() > 1 || (!plain.is_empty() && (streams.len() > 1 || !renames.is_empty())) {
        return Err(Error::invalid_input(format!(
            "--collection NAME names the target of a single stream, and {} streams would be \
             restored: rename each with --collection OLD=NEW, or pick one with --stream",
            streams.len()
        )));
    }
    let mut used = std::collections::BTreeSet::new();
    let mut targets = Vec::new();
    let mut seen = BTreeMap::new();
    for stream in streams {
        let recorded = backed_up_collection(stream);
        let collection = match (plain.first(), &recorded) {
            (Some(name), _) => Some(name.clone()),
            (None, Some(old)) => renames
                .get(old)
                .inspect(|_| {
                    used.insert(old.clone());
                })
                .cloned(),
            (None, None) => None,
        };
        // Shard streams go into an existing collection by design; two collection streams
        // into one collection would overwrite each other.
        let into = collection.clone().or(recorded);
        if let (Some(name), false) = (&into, stream.kind == StreamKind::QdrantShard) {
            if let Some(other) = seen.insert(name.clone(), stream.name.clone()) {
                return Err(Error::invalid_input(format!(
                    "streams {other:?} and {:?} would both be restored into collection \
                     `{name}`: rename one with --collection OLD=NEW",
                    stream.name
                )));
            }
        }
        targets.push(StreamTarget { stream, collection });
    }
    if let Some(unused) = renames.keys().find(|k| !used.contains(*k)) {
        return Err(Error::invalid_input(format!(
            "--collection {unused}=…: no stream of this backup was backed up from a collection \
             `{unused}`"
        )));
    }
    Ok(targets)
}
