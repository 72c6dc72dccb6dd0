//! Creating a snapshot for a backup so that none is left behind unknowingly.
//!
//! Guarantees: the snapshots of the scope are listed before the create call; when that
//! call fails in a way that leaves Qdrant possibly still writing (a 5xx such as a proxy's
//! 504, a dropped connection, a timeout), the list is polled until a new snapshot appears
//! (or the wait runs out); exactly one new snapshot is this run's and is deleted, several
//! new ones are never touched (another client made one too) and the error names them, and
//! none found says which name to look for. With `wait=false` the create answers at once
//! and the same poll finds the finished snapshot: a snapshot appears in the list only when
//! complete (Qdrant writes it under a temporary name, then renames it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::client::{http_status, QdrantClient};
use super::types::{SnapshotDescription, SnapshotScope};
use crate::error::{Error, ErrorKind, Result};

/// How a backup creates its snapshots.
#[derive(Clone, Copy, Debug)]
pub struct CreateOptions {
    /// Ask with `wait=false` and poll the list, instead of holding one request open for
    /// as long as Qdrant writes (what proxies with a read timeout cut).
    pub poll: bool,
    /// How long to poll for the snapshot, after `wait=false` or a failed create.
    pub timeout: Duration,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions { poll: false, timeout: Duration::from_secs(600) }
    }
}

/// Records that snapshot `name` of `scope`, which this run created, is deleted from the node
/// if a signal stops the process before the backup deletes it ([`crate::held`]). A snapshot
/// still being created when the signal comes has no name yet and is left: `qvault qdrant
/// snapshots list` shows it.
pub(crate) fn hold_snapshot(
    client: &QdrantClient,
    scope: &SnapshotScope,
    name: &str,
) -> crate::held::Token {
    let (client, scope, name) = (client.clone(), scope.clone(), name.to_string());
    let what = format!("snapshot {name} of {scope} on {}", client.url());
    crate::held::hold(
        what,
        Box::new(move || {
            Box::pin(async move { client.delete_snapshot(&scope, &name, true).await })
        }),
    )
}

/// The names of `scope`'s snapshots now: what [`create_snapshot`] compares with. Listed
/// before anything else the backup reads right before creating (the exact count).
pub async fn snapshots_before(
    client: &QdrantClient,
    scope: &SnapshotScope,
) -> Result<BTreeSet<String>> {
    Ok(client.list_snapshots(scope).await?.into_iter().map(|s| s.name).collect())
}

/// Creates a snapshot of `scope`; `before` is [`snapshots_before`] (see the module docs for
/// what happens when the create fails).
pub async fn create_snapshot(
    client: &QdrantClient,
    scope: &SnapshotScope,
    before: &BTreeSet<String>,
    options: &CreateOptions,
) -> Result<SnapshotDescription> {
    let before = before.clone();
    let asked = time::OffsetDateTime::now_utc();
    match client.create_snapshot(scope, !options.poll).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => match appeared(client, scope, &before, options.timeout).await? {
            Appeared::One(s) => Ok(s),
            Appeared::Several(names) => Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "creating a snapshot of {scope} on Qdrant at {}: several new snapshots \
                     appeared while waiting ({}), so qvault cannot tell which one it made; \
                     none was touched. Back up again when no one else is making snapshots",
                    client.url(),
                    names.join(", ")
                ),
            )),
            Appeared::None => Err(Error::new(
                ErrorKind::Qdrant,
                format!(
                    "creating a snapshot of {scope} on Qdrant at {}: Qdrant accepted the request \
                     but no new snapshot appeared within {} s; {}",
                    client.url(),
                    options.timeout.as_secs_f64(),
                    look_for(scope, asked)
                ),
            )),
        },
        Err(e) if may_still_be_writing(&e) => {
            Err(clean_up(client, scope, &before, asked, options, e).await)
        }
        Err(e) => Err(e),
    }
}

/// An answer that does not mean "Qdrant made nothing": a gateway's 502 or 504, or no
/// answer at all (a cut connection, a timeout). Qdrant's own errors (a 500, a 503 shard
/// unavailable) come after it gave up.
fn may_still_be_writing(e: &Error) -> bool {
    match http_status(e) {
        Some(status) => status == 502 || status == 504,
        None => e.kind() != ErrorKind::InvalidInput,
    }
}

enum Appeared {
    One(SnapshotDescription),
    Several(Vec<String>),
    None,
}

/// Polls the list until snapshots not in `before` appear, or `timeout` passes.
async fn appeared(
    client: &QdrantClient,
    scope: &SnapshotScope,
    before: &BTreeSet<String>,
    timeout: Duration,
) -> Result<Appeared> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let mut new: Vec<SnapshotDescription> = client
            .list_snapshots(scope)
            .await?
            .into_iter()
            .filter(|s| !before.contains(&s.name))
            .collect();
        match new.len() {
            0 => {}
            1 => return Ok(new.pop().map_or(Appeared::None, Appeared::One)),
            _ => return Ok(Appeared::Several(new.into_iter().map(|s| s.name).collect())),
        }
        if started.elapsed() >= timeout {
            return Ok(Appeared::None);
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// After a create that failed while Qdrant may still be writing: deletes the snapshot this
/// run caused, or says exactly what may remain.
async fn clean_up(
    client: &QdrantClient,
    scope: &SnapshotScope,
    before: &BTreeSet<String>,
    asked: time::OffsetDateTime,
    options: &CreateOptions,
    error: Error,
) -> Error {
    let url = client.url();
    let note = match appeared(client, scope, before, options.timeout).await {
        Ok(Appeared::One(s)) => match client.delete_snapshot(scope, &s.name, true).await {
            Ok(()) => format!("the snapshot `{}` it caused on the node was deleted", s.name),
            Err(e) => format!(
                "the snapshot `{}` it caused is still on Qdrant at {url} (deleting it failed: \
                 {e}); delete it with `qvault qdrant snapshots delete`",
                s.name
            ),
        },
        Ok(Appeared::Several(names)) => format!(
            "several new snapshots of {scope} appeared on Qdrant at {url} ({}): one is this \
             run's, the others someone else's, so none was touched; delete this run's with \
             `qvault qdrant snapshots delete`",
            names.join(", ")
        ),
        Ok(Appeared::None) => format!(
            "no new snapshot of {scope} appeared within {} s; {}",
            options.timeout.as_secs_f64(),
            look_for(scope, asked)
        ),
        Err(e) => format!(
            "listing the snapshots of {scope} to find this run's failed ({e}); {}",
            look_for(scope, asked)
        ),
    };
    error.context(format!("creating a snapshot of {scope} failed, and {note}"))
}

/// Which name a snapshot this run caused would have, for the operator to look for.
fn look_for(scope: &SnapshotScope, asked: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");
    let when = asked.format(&fmt).unwrap_or_else(|_| "the time of the backup".into());
    format!(
        "if Qdrant is still writing it, a snapshot of {scope} named with a time from {when} \
         (UTC) on will appear: delete it with `qvault qdrant snapshots delete`"
    )
}
