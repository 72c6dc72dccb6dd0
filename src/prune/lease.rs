//! A running backup's lease: the object in `locks/` that tells a prune "this backup may
//! reference any pack it saw", kept fresh for as long as the backup runs.
//!
//! Guarantees (see docs/design.md, "Prune and concurrent backups"):
//! - The lease is written before the backup looks at the index; the marks are then read
//!   from storage, and the packs they hold are left out of this backup's dedup. The set is
//!   held in memory for this backup only: it comes from storage, so a backup on any host,
//!   with any cache directory, sees the same marks, and it never lands in the local index
//!   that other commands on this host share.
//! - A background task rewrites the lease every [`LeaseTiming::refresh_every`], so a prune
//!   (judging ages by the storage's clock) never finds it stale while the backup runs, however
//!   long that is. The task stops when the lease is released or dropped.
//! - A refresh that fails is a warning and is retried. If no refresh has succeeded for
//!   [`LeaseTiming::give_up_after`] (¾ of the stale limit), or the lease object is gone (a
//!   prune took it for stale, or someone deleted it), the lease is lost: [`Lease::check`]
//!   fails, and a backup calls it right before writing its manifest, so it records nothing
//!   that may reference a pack a prune has deleted.
//!
//! The age is measured from the *start* of the last write that succeeded, on this host's
//! monotonic clock and on its wall clock, taking the larger (the monotonic clock stops while
//! the machine is suspended; the wall clock may jump, which can only fail a backup, never
//! keep a dead lease alive). The storage stamps the object no earlier, so by the storage's
//! clock the lease is never older than that. A lease past the limit is never refreshed again
//! (a suspended process that wakes must not revive a lease a prune may have judged dead). The
//! remaining ¼ of the stale limit covers the manifest write and differences in clock rates;
//! no two hosts' clocks are ever compared.

use super::locks::{random_name, read_marks, seal, Holder, DEFAULT_STALE_AFTER, LEASE_PREFIX};
use crate::error::{Error, ErrorKind, Result};
use crate::id::PackId;
use crate::repo::Repository;
use crate::storage::Storage;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long releasing a lease waits for a refresh under way.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// How often a lease is rewritten, against the age at which a prune takes it for dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The prune side's stale limit ([`super::PruneOptions::stale_after`]).
    pub stale_after: Duration,
    /// Time between refreshes while they succeed.
    pub refresh_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming::for_stale_after(DEFAULT_STALE_AFTER)
    }
}

impl LeaseTiming {
    /// Refreshes four times per stale limit: three may fail before the lease is lost.
    pub fn for_stale_after(stale_after: Duration) -> LeaseTiming {
        LeaseTiming { stale_after, refresh_every: stale_after / 4 }
    }

    /// With no successful refresh for this long the lease is lost: a quarter of the stale
    /// limit before any prune could take it for dead.
    pub fn give_up_after(&self) -> Duration {
        self.stale_after / 4 * 3
    }

    /// Time between attempts after a failed refresh.
    fn retry_every(&self) -> Duration {
        (self.refresh_every / 4).max(Duration::from_millis(10))
    }
}

/// A moment on this host, on both of its clocks.
#[derive(Clone, Copy, Debug)]
struct Stamp {
    monotonic: Instant,
    wall: SystemTime,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp { monotonic: Instant::now(), wall: SystemTime::now() }
    }

    /// Time since this stamp: the larger of what the two clocks say.
    fn age(&self) -> Duration {
        let wall = SystemTime::now().duration_since(self.wall).unwrap_or_default();
        self.monotonic.elapsed().max(wall)
    }
}

#[derive(Debug)]
struct Health {
    /// When the last successful write of the lease started.
    last_ok: Stamp,
    /// The last refresh's error (kind and text) while refreshes fail.
    last_error: Option<(ErrorKind, String)>,
    /// Set once the lease is lost (the error's kind and text); refreshing has stopped.
    lost: Option<(ErrorKind, String)>,
}

fn lock(health: &Mutex<Health>) -> MutexGuard<'_, Health> {
    // The state stays meaningful even if a holder panicked: take it as it is.
    health.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The packs every prune mark in storage holds: what a backup or copy leaves out of its
/// dedup (a dry run reads them without taking a lease).
pub async fn marked_packs(repo: &Repository) -> Result<HashSet<PackId>> {
    let marks = read_marks(repo).await?;
    for d in &marks.damaged {
        tracing::warn!(
            "prune mark {} is damaged ({}): it deletes nothing and keeps nothing out of dedup; \
             the next `qvault prune` removes it",
            d.path,
            d.reason
        );
    }
    Ok(marks.readable.into_iter().flat_map(|m| m.mark.packs).collect())
}

/// Runs `work`, a command that reads packs (restore, `verify --read-data`,
/// `verify --restore-test`, copy's source), under a lease of its own: a prune that marks
/// packs while it runs names the lease in its mark and deletes nothing it marked until the
/// lease is released (at the end, on success or error) or goes stale. The lease is refreshed
/// like a backup's.
///
/// A reader whose lease cannot be written (read-only credentials, the usual set-up for a
/// disaster-recovery restore) still runs, with a warning: a reader never records anything, and
/// every chunk it reads is checked, so the worst a prune can do to it is make it fail with the
/// pack it deleted, never make it return wrong bytes. Packs marked *before* the lease was
/// written are not protected: a mark holds only packs no backup in storage referenced then.
pub async fn read_leased<T, E: From<Error>>(
    repo: &Repository,
    what: &str,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, E> {
    let lease = match Lease::take(repo).await {
        Ok(lease) => Some(lease),
        Err(e) if e.kind() == ErrorKind::Storage => {
            tracing::warn!(
                "{what} runs without a lease in {}: {e}; a prune on another host may delete a \
                 pack it is about to read (it would then fail, never return wrong bytes)",
                repo.storage().location()
            );
            None
        }
        Err(e) => return Err(e.into()),
    };
    let result = work.await;
    if let Some(lease) = lease {
        lease.release(repo).await;
    }
    result
}

/// A running backup's lease. Dropping it without [`Lease::release`] stops the refreshing and
/// leaves the object until it goes stale (as a crash would).
#[derive(Debug)]
pub struct Lease {
    path: String,
    /// Packs some prune mark holds: this backup never deduplicates against them.
    marked: Arc<HashSet<PackId>>,
    timing: LeaseTiming,
    health: Arc<Mutex<Health>>,
    /// Dropping it stops the refresher between two writes, never during one.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    /// Deleted by [`crate::held::release_all`] if a signal stops the process first; a lease
    /// dropped without `release` stays held (deleting it then is right too).
    held: crate::held::Token,
}

impl Lease {
    /// [`Lease::take_with`] the default timing (a 24 h stale limit, refreshed every 6 h).
    pub async fn take(repo: &Repository) -> Result<Lease> {
        Lease::take_with(repo, LeaseTiming::default()).await
    }

    /// Writes the lease, reads the marks every backup must leave out of its dedup, and starts
    /// refreshing the lease every `timing.refresh_every`.
    pub async fn take_with(repo: &Repository, timing: LeaseTiming) -> Result<Lease> {
        let path = random_name(LEASE_PREFIX);
        let sealed = seal(repo, &path, &Holder::me())?;
        let started = Stamp::now();
        let held = {
            let _written_whole = crate::held::critical();
            repo.storage().write_new(&path, sealed.clone()).await?;
            crate::held::hold_object(repo.storage(), &path)
        };
        let marked = match marked_packs(repo).await {
            Ok(marked) => marked,
            Err(e) => {
                crate::held::let_go(held);
                // Not left to go stale: it would hold every mark made meanwhile for a day.
                if let Err(d) = repo.storage().delete(&path).await {
                    tracing::warn!("could not delete lease {path}: {d}; it goes stale by itself");
                }
                return Err(e);
            }
        };
        let health =
            Arc::new(Mutex::new(Health { last_ok: started, last_error: None, lost: None }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let refresher = Refresher {
            storage: repo.storage().clone(),
            path: path.clone(),
            sealed,
            timing,
            health: Arc::clone(&health),
        };
        let refresher = tokio::spawn(refresher.run(stopped));
        Ok(Lease {
            path,
            marked: Arc::new(marked),
            timing,
            health,
            stop: Some(stop),
            refresher: Some(refresher),
            held,
        })
    }

    /// The lease's object name under `locks/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The packs prune marks held when the lease was taken.
    pub fn marked_packs(&self) -> Arc<HashSet<PackId>> {
        Arc::clone(&self.marked)
    }

    /// `Ok` while no prune can have taken the lease for dead: what a backup (or copy)
    /// checks right before it writes its manifest. Besides this process's own record of its
    /// refreshes, the lease object must still be in storage: a prune that judged it stale
    /// (or an operator) deleted it, and the packs it protected may be gone — between this
    /// check and the manifest write, a prune would first have to see the lease stale, which
    /// its age rules out (module docs).
    pub async fn check(&self, repo: &Repository) -> Result<()> {
        {
            let health = lock(&self.health);
            if let Some((kind, text)) = &health.lost {
                return Err(Error::new(*kind, text.clone()));
            }
            too_old(&self.path, &health, self.timing)?;
        }
        if repo.storage().exists(&self.path).await? {
            return Ok(());
        }
        let e = lost_lease(
            &self.path,
            ErrorKind::Refused,
            "is gone from storage (a prune took it for a dead backup's, or it was deleted)"
                .to_string(),
            self.timing,
        );
        lock(&self.health).lost = Some((e.kind(), e.to_string()));
        Err(e)
    }

    /// Stops refreshing, then deletes the lease; a failure to delete is logged, not returned
    /// (the lease then goes stale).
    pub async fn release(mut self, repo: &Repository) {
        self.stop.take();
        if let Some(mut refresher) = self.refresher.take() {
            // A refresh under way finishes first, so it cannot recreate the lease after the
            // delete; one stuck in storage retries is cut off (the lease then goes stale).
            match tokio::time::timeout(RELEASE_WAIT, &mut refresher).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!("the refresher of backup lease {} failed: {e}", self.path);
                }
                Err(_) => refresher.abort(),
            }
        }
        if let Err(e) = repo.storage().delete(&self.path).await {
            tracing::warn!(
                "could not delete backup lease {}: {e}; it goes stale by itself",
                self.path
            );
        }
        crate::held::let_go(self.held);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Without `release` (an error path, a test's crash): the refresher sees the closed
        // channel at its next wait and ends, leaving the object to go stale.
        self.stop.take();
    }
}

/// `Err` once the lease's last refresh is older than [`LeaseTiming::give_up_after`].
fn too_old(path: &str, health: &Health, timing: LeaseTiming) -> Result<()> {
    let age = health.last_ok.age();
    if age < timing.give_up_after() {
        return Ok(());
    }
    Err(match &health.last_error {
        Some((kind, e)) => lost_lease(
            path,
            *kind,
            format!("could not be refreshed for {} (last error: {e})", secs(age)),
            timing,
        ),
        None => lost_lease(
            path,
            ErrorKind::Refused,
            format!("was last refreshed {} ago (none succeeded since)", secs(age)),
            timing,
        ),
    })
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The error of a lost lease, naming it and what to do.
fn lost_lease(path: &str, kind: ErrorKind, what: String, timing: LeaseTiming) -> Error {
    Error::new(
        kind,
        format!(
            "backup lease {path} {what}; a prune may take a lease older than {} for a dead \
             backup's and delete packs this backup references, so no backup was recorded: \
             check that the repository's storage is writable and run the backup again",
            secs(timing.stale_after)
        ),
    )
}

/// The background task that rewrites one lease.
struct Refresher {
    storage: Storage,
    path: String,
    sealed: Bytes,
    timing: LeaseTiming,
    health: Arc<Mutex<Health>>,
}

impl Refresher {
    async fn run(self, mut stopped: tokio::sync::oneshot::Receiver<()>) {
        let mut wait = self.timing.refresh_every;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(wait) => {}
            }
            // Never revive a lease a prune may already have judged dead.
            {
                let mut health = lock(&self.health);
                if let Err(e) = too_old(&self.path, &health, self.timing) {
                    tracing::error!("{e}");
                    health.lost = Some((e.kind(), e.to_string()));
                    return;
                }
            }
            let attempt = Stamp::now();
            let result = self.refresh_once().await;
            let mut health = lock(&self.health);
            match result {
                Ok(()) => {
                    health.last_ok = attempt;
                    health.last_error = None;
                    wait = self.timing.refresh_every;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::error!("{e}");
                    health.lost = Some((e.kind(), e.to_string()));
                    return;
                }
                // The lease is lost at the next turn if this goes on too long.
                Err(e) => {
                    tracing::warn!(
                        "could not refresh backup lease {}: {e}; retrying (the backup fails if \
                         no refresh succeeds within {} of the last one)",
                        self.path,
                        secs(self.timing.give_up_after())
                    );
                    health.last_error = Some((e.kind(), e.to_string()));
                    wait = self.timing.retry_every();
                }
            }
        }
    }

    /// Rewrites the lease if it is still there. A lease that is gone is never written again:
    /// a prune may have taken it for dead, and only this backup's failure is safe then.
    async fn refresh_once(&self) -> Result<()> {
        if !self.storage.exists(&self.path).await? {
            return Err(lost_lease(
                &self.path,
                ErrorKind::NotFound,
                format!("was removed from {} while the backup ran", self.storage.location()),
                self.timing,
            ));
        }
        self.storage.write(&self.path, self.sealed.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_lost_a_quarter_of_the_stale_limit_before_a_prune_could_take_it_for_dead() {
        let timing = LeaseTiming::default();
        assert_eq!(timing.stale_after, Duration::from_secs(24 * 3600));
        assert_eq!(timing.refresh_every, Duration::from_secs(6 * 3600));
        assert_eq!(timing.give_up_after(), Duration::from_secs(18 * 3600));
        assert_eq!(timing.retry_every(), Duration::from_secs(90 * 60));
        let fast = LeaseTiming::for_stale_after(Duration::from_secs(2));
        assert_eq!(fast.refresh_every, Duration::from_millis(500));
        assert_eq!(fast.give_up_after(), Duration::from_millis(1500));
    }
}
