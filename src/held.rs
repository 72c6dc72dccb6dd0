//! What this process must undo if a signal stops it: the leases of backups, restores and
//! copies and the prune lock it holds in storage, the snapshots a backup created on a
//! Qdrant node, a `--from-command` process group, a restore's partial output
//! (`partial.rs`). A command stopped by Ctrl-C or by the SIGTERM of systemd or Kubernetes
//! undoes them before it exits ([`release_all`], called by the binary). Left behind, a
//! lease holds every prune mark made meanwhile until it goes stale (24 h), a prune lock
//! refuses every prune until `qvault prune --unlock`, and a snapshot fills the Qdrant
//! node's disk with every stopped run (a CronJob past its deadline, each night).
//!
//! Undoing them on a signal is safe: the process stops with the command, so nothing the
//! lease or lock protects is written or deleted afterwards.
//!
//! Some steps must not be cut by a signal, because dropping the command does not stop a
//! write already handed to a thread: the write of a lease or of the prune lock (it would
//! land after the undo ran, and stay), and a backup's end from its last lease check through
//! the manifest write and the lease's release (the lease must outlive the manifest write,
//! and a recorded backup must not report failure). They run under a [`Critical`] guard; the
//! binary, on a signal, keeps running the command until no guard is held
//! ([`critical_done`]), then stops it and undoes what is held; a second signal stops it at
//! once (storage that hangs in its retries must not make Ctrl-C useless).

use crate::error::Result;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

/// How many [`Critical`] guards are held in this process.
static CRITICAL: LazyLock<tokio::sync::watch::Sender<usize>> =
    LazyLock::new(|| tokio::sync::watch::Sender::new(0));

/// While held, a signal lets the command run on (see the module docs).
#[must_use = "the section ends when the guard is dropped"]
#[derive(Debug)]
pub struct Critical(());

/// Starts a critical section: a signal waits until its guard is dropped.
pub fn critical() -> Critical {
    CRITICAL.send_modify(|n| *n += 1);
    Critical(())
}

impl Drop for Critical {
    fn drop(&mut self) {
        CRITICAL.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Set by [`commit`]: the command's outcome is decided.
static COMMITTED: AtomicBool = AtomicBool::new(false);

/// Says that the command's outcome is decided — its backup recorded, its copies written, its
/// restored output in place — so that a signal from now on lets it finish and report that
/// (a backup that was recorded exited 130 when the signal came during the lease's release).
/// For the binary, which runs one command per process; it stays set for the process.
pub fn commit() {
    COMMITTED.store(true, Ordering::SeqCst);
    CRITICAL.send_modify(|_| {});
}

/// Whether a signal must wait: a [`Critical`] guard is held, or the command committed.
pub fn in_critical() -> bool {
    *CRITICAL.borrow() > 0 || COMMITTED.load(Ordering::SeqCst)
}

/// Resolves once no [`Critical`] guard is held (at once when none is); never after
/// [`commit`].
pub async fn critical_done() {
    let mut rx = CRITICAL.subscribe();
    // The sender is a static that lives as long as the process: this cannot fail.
    let _ = rx.wait_for(|n| *n == 0 && !COMMITTED.load(Ordering::SeqCst)).await;
}

/// How one held thing is undone: a delete, typically.
pub(crate) type Undo = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>;

/// One held thing, to hand back to [`let_go`] once it is released the normal way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token(u64);

/// What one process holds: [`HELD`] in real use, a local one in tests (a test must not
/// undo what tests running beside it hold).
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    held: Mutex<Vec<(Token, String, Undo)>>,
}

static HELD: Registry = Registry { next: AtomicU64::new(0), held: Mutex::new(Vec::new()) };

impl Registry {
    fn list(&self) -> MutexGuard<'_, Vec<(Token, String, Undo)>> {
        // A holder that panicked left the list as it was: still the truth.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, what: String, undo: Undo) -> Token {
        let token = Token(self.next.fetch_add(1, Ordering::Relaxed));
        self.list().push((token, what, undo));
        token
    }

    fn let_go(&self, token: Token) {
        self.list().retain(|(t, _, _)| *t != token);
    }

    async fn release_all(&self, wait: Duration) -> Vec<String> {
        let held = std::mem::take(&mut *self.list());
        let undos = held.into_iter().map(|(_, what, undo)| async move {
            match tokio::time::timeout(wait, undo()).await {
                Ok(Ok(())) => Some(what),
                Ok(Err(e)) => {
                    tracing::warn!("could not remove {what}: {e}");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        "removing {what} took longer than {}s: it is left behind",
                        wait.as_secs()
                    );
                    None
                }
            }
        });
        futures::future::join_all(undos).await.into_iter().flatten().collect()
    }
}

/// Records `what` (said in messages: "lease locks/lease-… in s3://…") and how to undo it.
pub(crate) fn hold(what: String, undo: Undo) -> Token {
    HELD.hold(what, undo)
}

/// Records that `path` in `storage` was written by this process and is deleted if stopped.
pub(crate) fn hold_object(storage: &crate::storage::Storage, path: &str) -> Token {
    let (storage, path) = (storage.clone(), path.to_string());
    let what = format!("{}/{path}", storage.location());
    hold(what, Box::new(move || Box::pin(async move { storage.delete(&path).await })))
}

/// Forgets what `token` holds: released the normal way, or left on purpose.
pub(crate) fn let_go(token: Token) {
    HELD.let_go(token);
}

/// Undoes everything this process holds, each undo given at most `wait`; returns what was
/// undone, as [`hold`] named it. What could not be undone is named in a warning (a lease
/// goes stale by itself and `qvault prune --unlock` removes it at once).
pub async fn release_all(wait: Duration) -> Vec<String> {
    HELD.release_all(wait).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use bytes::Bytes;

    #[tokio::test]
    async fn release_all_undoes_what_is_held_and_nothing_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let held = Registry::default();
        let mut tokens = Vec::new();
        for name in ["locks/held-a", "locks/held-b", "locks/released"] {
            storage.write(name, Bytes::from_static(b"x")).await.unwrap();
            let (s, path) = (storage.clone(), name.to_string());
            let undo: Undo = Box::new(move || Box::pin(async move { s.delete(&path).await }));
            tokens.push(held.hold(name.to_string(), undo));
        }
        held.let_go(tokens[2]);
        let mut undone = held.release_all(Duration::from_secs(10)).await;
        undone.sort();
        assert_eq!(undone, ["locks/held-a", "locks/held-b"]);
        let left: Vec<String> =
            storage.list("locks/").await.unwrap().into_iter().map(|o| o.path).collect();
        assert_eq!(left, ["locks/released"]);
        assert!(held.release_all(Duration::from_secs(10)).await.is_empty(), "undone once");
    }
}
