//! Prune next to backups that run long or on other hosts: a lease refreshed while its backup
//! runs keeps a prune waiting however long that is; a lease that could not be kept fresh
//! fails its backup before the manifest; and the marks come from storage, so a backup with
//! any cache directory leaves marked packs out of its dedup.

use crate::prune::{assert_clean_and_restorable, data, run, small_chunks, PausedBackup};
use crate::support::{self, TestRepo};
use qvault::backup::BackupOptions;
use qvault::prune::{LeaseTiming, PruneOptions};
use qvault::repo::{Cache, Credentials, Repository};
use qvault::ErrorKind;
use std::time::Duration;

/// A stale limit of 2 s, on the prune side and the backup side alike.
const STALE: Duration = Duration::from_secs(2);

fn prune_options() -> PruneOptions {
    PruneOptions { stale_after: STALE, ..Default::default() }
}

fn leased(refresh_every: Duration) -> BackupOptions {
    BackupOptions { lease: LeaseTiming { stale_after: STALE, refresh_every }, ..Default::default() }
}

pub(crate) fn leases_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("lease-"))
                .collect()
        })
        .unwrap_or_default()
}

async fn backups_recorded(repo: &Repository) -> usize {
    repo.sync().await.unwrap();
    repo.backups().unwrap().len()
}

/// Packs stored now.
fn packs_in(t: &TestRepo) -> u64 {
    let Ok(dirs) = std::fs::read_dir(t.location().join("data")) else { return 0 };
    dirs.map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count() as u64).sum()
}

/// An admin repository with one forgotten backup of `old`, and how many packs it left unused:
/// its data pack and, when the (repository-seeded) chunker cut more than 16 chunks, a
/// list-block pack.
async fn forgotten(t: &TestRepo, old: &[u8]) -> (Repository, u64) {
    let admin = t.open().await;
    let gone = support::backup_bytes(&admin, "old.bin", old.to_vec()).await;
    admin.delete_manifest(gone.id).await.unwrap();
    (admin, packs_in(t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_paused_past_the_stale_limit_keeps_its_lease_fresh_and_survives_two_prunes() {
    let t = TestRepo::new(small_chunks()).await;
    let old = data(600_000, 7);
    let (admin, unused) = forgotten(&t, &old).await;
    let host = support::open_as_backup_host(&admin, &t.storage()).await;
    let more = data(100_000, 8);
    let paused = PausedBackup::start(host, &old, &more, leased(Duration::from_millis(300))).await;

    let first = run(&admin, &prune_options()).await;
    assert_eq!(first.packs_marked, unused, "{first:?}");
    // Longer than the stale limit: only the refreshes keep the lease live.
    tokio::time::sleep(STALE + Duration::from_secs(1)).await;
    let second = run(&admin, &prune_options()).await;
    assert_eq!(second.packs_deleted, 0, "{second:?}");
    assert!(second.plan.stale_leases.is_empty(), "{:?}", second.plan);
    assert_eq!(second.plan.waiting_marks.len(), 1);
    assert_eq!(second.plan.waiting_marks[0].live_leases.len(), 1);

    let summary = paused.resume().await.unwrap();
    let s = &summary.manifest.summary;
    assert!(s.new_chunks * 2 < s.chunks, "the backup deduplicated: {s:?}");
    let mut expected = old.clone();
    expected.extend(&more);
    admin.sync().await.unwrap();
    assert_clean_and_restorable(&admin, &[(&summary, &expected)]).await;
    assert!(leases_in(&t.location().join("locks")).is_empty(), "the lease is released");
    let third = run(&admin, &prune_options()).await;
    // The data pack is referenced again; only a list-block pack of the old backup goes.
    assert_eq!(third.packs_deleted, unused - 1, "{third:?}");
    assert_eq!(third.plan.unmarked_packs.len(), 1);
    assert_clean_and_restorable(&admin, &[(&summary, &expected)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_lease_went_stale_while_a_prune_deleted_its_packs_records_nothing() {
    let t = TestRepo::new(small_chunks()).await;
    let old = data(600_000, 7);
    let (admin, unused) = forgotten(&t, &old).await;
    let host = support::open_as_backup_host(&admin, &t.storage()).await;
    // Never refreshed in time: a host that was suspended, say.
    let paused =
        PausedBackup::start(host, &old, &data(100_000, 8), leased(Duration::from_secs(3600))).await;
    let first = run(&admin, &prune_options()).await;
    assert_eq!(first.packs_marked, unused, "{first:?}");
    tokio::time::sleep(STALE + Duration::from_secs(1)).await;
    let second = run(&admin, &prune_options()).await;
    assert_eq!(
        second.packs_deleted, unused,
        "the stale lease no longer holds the mark: {second:?}"
    );
    assert_eq!(second.plan.stale_leases.len(), 1);

    let err = paused.resume().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let text = err.to_string();
    assert!(text.contains(&second.plan.stale_leases[0]), "names the lease: {text}");
    assert!(text.contains("was last refreshed"), "{text}");
    assert!(text.contains("no backup was recorded"), "{text}");
    assert_eq!(backups_recorded(&admin).await, 0);
    assert_clean_and_restorable(&admin, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_refreshed_fails_its_backup_before_the_manifest() {
    let t = TestRepo::new(small_chunks()).await;
    let admin = t.open().await;
    let kept = data(200_000, 3);
    let before = support::backup_bytes(&admin, "kept.bin", kept.clone()).await;
    // Without storage retries each refresh fails at once: warnings, then the lease is lost.
    let no_retries = qvault::storage::StorageOptions { retries: Some(0), ..Default::default() };
    let storage = qvault::storage::Storage::open(t.location().to_str().unwrap(), &no_retries);
    let credentials = Credentials { identities: vec![t.identity.clone()], key: None };
    let other = Repository::open(storage.unwrap(), credentials, &t.cache()).await.unwrap();
    let paused =
        PausedBackup::start(other, &data(300_000, 4), &data(100_000, 5), leased(STALE / 8)).await;
    let locks = t.location().join("locks");
    let lease = leases_in(&locks).pop().unwrap();
    let lease_name = format!("locks/{}", lease.file_name().unwrap().to_string_lossy());
    // Nothing under locks/ can be read or written while a file stands in its place.
    let away = t.location().join("locks.away");
    std::fs::rename(&locks, &away).unwrap();
    std::fs::write(&locks, b"not a directory").unwrap();
    tokio::time::sleep(STALE).await;
    let err = paused.resume().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Storage, "{text}");
    assert!(text.contains(&format!("backup lease {lease_name} could not be refreshed")), "{text}");
    assert!(text.contains("no backup was recorded"), "{text}");
    assert!(text.contains("run the backup again"), "{text}");

    std::fs::remove_file(&locks).unwrap();
    std::fs::rename(&away, &locks).unwrap();
    assert_eq!(backups_recorded(&admin).await, 1);
    assert_clean_and_restorable(&admin, &[(&before, &kept)]).await;
    // Once the storage is writable again, backups work.
    support::backup_bytes(&admin, "next.bin", data(100_000, 6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_removed_while_its_backup_runs_is_never_written_again_and_the_backup_fails() {
    let t = TestRepo::new(small_chunks()).await;
    let repo = t.open().await;
    let other = t.open().await;
    let paused =
        PausedBackup::start(other, &data(300_000, 4), &data(100_000, 5), leased(STALE / 8)).await;
    let locks = t.location().join("locks");
    let lease = leases_in(&locks).pop().unwrap();
    std::fs::remove_file(&lease).unwrap();
    tokio::time::sleep(STALE / 2).await;
    assert!(leases_in(&locks).is_empty(), "not recreated by a refresh");
    let err = paused.resume().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{text}");
    assert!(text.contains("was removed from"), "{text}");
    assert!(text.contains("no backup was recorded"), "{text}");
    assert_eq!(backups_recorded(&repo).await, 0);
}

/// The attack a tester found: a backup that dedups against packs a prune then marks and,
/// once the backup's lease is gone (deleted by hand, or judged stale), deletes. No refresh
/// runs in between (the default 6 h cadence), so only the check before the manifest can see
/// that the lease is gone: the backup must record nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_lease_was_deleted_records_nothing_even_before_any_refresh() {
    let t = TestRepo::new(small_chunks()).await;
    let admin = t.open().await;
    let old = data(300_000, 6);
    let gone = support::backup_bytes(&admin, "old.bin", old.clone()).await;
    let paused =
        PausedBackup::start(t.open().await, &old, &data(100_000, 7), BackupOptions::default())
            .await;
    admin.delete_manifest(gone.id).await.unwrap();
    let marked = run(&admin, &PruneOptions::default()).await;
    assert!(marked.packs_marked > 0, "{marked:?}");
    let locks = t.location().join("locks");
    for lease in leases_in(&locks) {
        std::fs::remove_file(lease).unwrap();
    }
    let deleted = run(&admin, &PruneOptions::default()).await;
    assert_eq!(deleted.packs_deleted, marked.packs_marked, "{deleted:?}");

    let err = paused.resume().await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Refused, "{text}");
    assert!(text.contains("is gone from storage"), "{text}");
    assert!(text.contains("no backup was recorded"), "{text}");
    assert_eq!(backups_recorded(&admin).await, 0);
}

#[tokio::test]
async fn a_backup_with_its_own_cache_directory_never_dedups_against_a_marked_pack() {
    let t = TestRepo::new(small_chunks()).await;
    let old = data(400_000, 9);
    let open_with_cache = |name: &'static str| {
        let credentials = Credentials { identities: vec![t.identity.clone()], key: None };
        let (storage, cache) = (t.storage(), Cache::Dir(t.dir.path().join(name)));
        async move { Repository::open(storage, credentials, &cache).await }
    };
    let admin = t.open().await;
    let gone = support::backup_bytes(&admin, "old.bin", old.clone()).await;
    let unused = packs_in(&t);
    // Another machine whose cache already lists the pack, and one with an empty cache.
    let early = open_with_cache("cache-early").await.unwrap();
    admin.delete_manifest(gone.id).await.unwrap();
    assert_eq!(run(&admin, &PruneOptions::default()).await.packs_marked, unused);
    let late = open_with_cache("cache-late").await.unwrap();

    let mut kept = Vec::new();
    for host in [&late, &early] {
        let b = support::backup_bytes(host, "old.bin", old.clone()).await;
        if kept.is_empty() {
            let s = &b.manifest.summary;
            assert_eq!(s.new_chunks, s.chunks, "no dedup against the marked pack: {s:?}");
        }
        kept.push(b);
    }
    // The marked pack goes, and both backups (the second may dedup against the first's
    // new copy) restore from any host.
    let second = run(&admin, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, unused, "{second:?}");
    for host in [&admin, &early, &late] {
        host.sync().await.unwrap();
        assert_clean_and_restorable(host, &[(&kept[0], &old), (&kept[1], &old)]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backups_sharing_a_cache_directory_each_leave_the_marked_packs_out_until_they_end() {
    let t = TestRepo::new(small_chunks()).await;
    let old = data(400_000, 9);
    let (admin, unused) = forgotten(&t, &old).await;
    assert_eq!(run(&admin, &PruneOptions::default()).await.packs_marked, unused);
    // Two processes on one host, one cache directory: the first to end must not let the
    // other dedup against the marked pack.
    let (first_part, second_part) = (data(200_000, 10), data(200_000, 11));
    let a = PausedBackup::start(t.open().await, &first_part, &[], Default::default()).await;
    let b = PausedBackup::start(t.open().await, &second_part, &old, Default::default()).await;
    let a = a.resume().await.unwrap();
    let b = b.resume().await.unwrap();
    let s = &b.manifest.summary;
    assert_eq!(s.new_chunks, s.chunks, "no dedup against the marked pack: {s:?}");

    assert_eq!(run(&admin, &PruneOptions::default()).await.packs_deleted, unused);
    let mut expected = second_part.clone();
    expected.extend(&old);
    admin.sync().await.unwrap();
    assert_clean_and_restorable(&admin, &[(&a, &first_part), (&b, &expected)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_refreshed_lease_outlives_the_stale_limit_and_its_backup_restores() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("lease")) else {
        return;
    };
    let identity = age::x25519::Identity::generate();
    let options = qvault::repo::InitOptions {
        recipients: vec![identity.to_public()],
        chunker: small_chunks(),
        ..Default::default()
    };
    Repository::init(storage.clone(), options, &Cache::InMemory).await.unwrap();
    let open = || {
        let credentials = Credentials { identities: vec![identity.clone()], key: None };
        Repository::open(storage.clone(), credentials, &Cache::InMemory)
    };
    let admin = open().await.unwrap();
    let old = data(600_000, 7);
    let gone = support::backup_bytes(&admin, "old.bin", old.clone()).await;
    admin.delete_manifest(gone.id).await.unwrap();
    let more = data(100_000, 8);
    let paused =
        PausedBackup::start(open().await.unwrap(), &old, &more, leased(Duration::from_millis(400)))
            .await;
    let first = run(&admin, &prune_options()).await;
    assert!(first.packs_marked >= 1, "{first:?}");
    // S3's Last-Modified has whole seconds: still well inside the limit after a refresh.
    tokio::time::sleep(STALE + Duration::from_secs(1)).await;
    let second = run(&admin, &prune_options()).await;
    assert!(second.plan.stale_leases.is_empty(), "{:?}", second.plan);
    assert_eq!(second.plan.waiting_marks.len(), 1, "{:?}", second.plan);
    let summary = paused.resume().await.unwrap();
    let mut expected = old.clone();
    expected.extend(&more);
    admin.sync().await.unwrap();
    assert_clean_and_restorable(&admin, &[(&summary, &expected)]).await;
    let left = storage.list("locks/").await.unwrap();
    assert!(!left.iter().any(|o| o.path.starts_with("locks/lease-")), "released: {left:?}");
    let third = run(&admin, &prune_options()).await;
    assert_eq!(third.plan.unmarked_packs.len(), 1, "{:?}", third.plan);
    assert_clean_and_restorable(&admin, &[(&summary, &expected)]).await;
}

/// A backup killed with -9 leaves its lease, which would hold every mark for the stale limit
/// (24 h): `prune --unlock` removes the leases of this host's processes that no longer run,
/// and keeps a lease whose process runs (this test's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_unlock_removes_a_killed_backups_lease_and_keeps_a_running_ones() {
    let t = TestRepo::new(small_chunks()).await;
    let file = t.dir.path().join("input.bin");
    std::fs::write(&file, data(2_000_000, 3)).unwrap();
    let mut cmd = t.cli();
    cmd.args(["backup", "--file"]).arg(&file).env("QVAULT_TEST_ABORT_AFTER_PACKS", "1");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(!out.status.success(), "the backup was killed after its first pack");
    let locks = t.location().join("locks");
    let killed = leases_in(&locks);
    assert_eq!(killed.len(), 1, "the killed backup's lease stays");

    let repo = t.open().await;
    let running = qvault::prune::Lease::take(&repo).await.unwrap();
    // A dry run names what it would remove and removes nothing.
    let mut cmd = t.cli();
    cmd.args(["prune", "--unlock", "--dry-run"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "would remove locks/{}",
            killed[0].file_name().unwrap().to_string_lossy()
        )) && text.contains("would remove 1 leases of processes no longer running"),
        "{text}"
    );
    assert_eq!(leases_in(&locks).len(), 2, "nothing removed: {text}");
    let mut cmd = t.cli();
    cmd.args(["--json", "prune", "--unlock"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["dead_leases"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["other_leases"], 1, "{json}");
    let left = leases_in(&locks);
    assert_eq!(left.len(), 1);
    assert_ne!(left, killed, "the running lease stays, the killed one is gone");
    running.release(&repo).await;
}
