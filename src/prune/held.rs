//! What this process holds in storage right now — the leases of backups, restores and
//! copies, the prune lock — so that a command stopped by a signal (Ctrl-C, the SIGTERM of
//! systemd or Kubernetes) removes them before it exits. Left behind, a lease holds every
//! prune mark made meanwhile until it goes stale (24 h), and a prune lock refuses every
//! prune until `qvault prune --unlock`.
//!
//! Removing them on a signal is safe: the process stops with the command, so nothing the
//! lease or lock protects is written or deleted afterwards. A backup whose manifest was
//! already written needs no lease any more; one whose manifest was not is not recorded.

use crate::storage::Storage;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The objects one process holds: [`HELD`] in real use, a local one in tests (a test must
/// not release the leases of tests running beside it).
#[derive(Default)]
struct Held(Mutex<Vec<(Storage, String)>>);

static HELD: Held = Held(Mutex::new(Vec::new()));

impl Held {
    fn list(&self) -> MutexGuard<'_, Vec<(Storage, String)>> {
        // A holder that panicked left the list as it was: still the truth.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, storage: &Storage, path: &str) {
        self.list().push((storage.clone(), path.to_string()));
    }

    fn let_go(&self, storage: &Storage, path: &str) {
        self.list().retain(|(s, p)| !(p == path && s.location() == storage.location()));
    }

    async fn release_all(&self, wait: Duration) -> Vec<String> {
        let objects = std::mem::take(&mut *self.list());
        let deletes = objects.iter().map(|(storage, path)| async move {
            match tokio::time::timeout(wait, storage.delete(path)).await {
                Ok(Ok(())) => Some(format!("{}/{path}", storage.location())),
                Ok(Err(e)) => {
                    tracing::warn!(
                        "could not remove {path}: {e}; `qvault prune --unlock` removes it"
                    );
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        "removing {path} in {} took longer than {}s; `qvault prune --unlock` \
                         removes it",
                        storage.location(),
                        wait.as_secs()
                    );
                    None
                }
            }
        });
        futures::future::join_all(deletes).await.into_iter().flatten().collect()
    }
}

/// Records that this process wrote `path` in `storage` and must remove it if stopped.
pub(crate) fn hold(storage: &Storage, path: &str) {
    HELD.hold(storage, path);
}

/// Forgets `path` in `storage`: released, or left to go stale on purpose.
pub(crate) fn let_go(storage: &Storage, path: &str) {
    HELD.let_go(storage, path);
}

/// Deletes everything this process holds, each delete given at most `wait`; returns the
/// objects it deleted as `location/path`. What could not be deleted is named in a warning
/// and goes stale by itself (`qvault prune --unlock` removes it at once).
pub async fn release_all(wait: Duration) -> Vec<String> {
    HELD.release_all(wait).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn release_all_deletes_what_is_held_and_nothing_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let held = Held::default();
        for name in ["locks/held-a", "locks/held-b", "locks/released"] {
            storage.write(name, Bytes::from_static(b"x")).await.unwrap();
            held.hold(&storage, name);
        }
        held.let_go(&storage, "locks/released");
        let mut deleted = held.release_all(Duration::from_secs(10)).await;
        deleted.sort();
        let location = storage.location();
        assert_eq!(
            deleted,
            [format!("{location}/locks/held-a"), format!("{location}/locks/held-b")]
        );
        let left: Vec<String> =
            storage.list("locks/").await.unwrap().into_iter().map(|o| o.path).collect();
        assert_eq!(left, ["locks/released"]);
        assert!(held.release_all(Duration::from_secs(10)).await.is_empty(), "released once");
    }
}
