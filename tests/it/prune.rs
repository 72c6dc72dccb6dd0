//! `qvault prune` and `qvault stats`: space comes back in two runs, every kept backup
//! restores after every step (and after a stop at any step), and a backup running on another
//! host while prune runs is never harmed.

use crate::support::{self, TestRepo};
use qvault::backup::{BackupOptions, BackupSummary, StreamSource};
use qvault::format::config::ChunkerConfig;
use qvault::prune::{prune, PruneOptions, PruneReport};
use qvault::repo::Repository;
use qvault::verify::{verify, VerifyOptions};
use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

pub(crate) fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed) * 0x9E37_79B9 + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn small_chunks() -> Option<ChunkerConfig> {
    Some(ChunkerConfig {
        min_size: 16 * 1024,
        avg_size: 32 * 1024,
        max_size: 64 * 1024,
        ..Default::default()
    })
}

fn stored(t: &TestRepo, dir: &str) -> usize {
    walk(&t.location().join(dir))
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn marks(t: &TestRepo) -> usize {
    std::fs::read_dir(t.location().join("locks"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref().unwrap().file_name().to_string_lossy().starts_with("prune-mark-")
            })
            .count()
        })
        .unwrap_or(0)
}

pub(crate) async fn run(repo: &Repository, options: &PruneOptions) -> PruneReport {
    prune(repo, options).await.unwrap()
}

fn repack_all() -> PruneOptions {
    PruneOptions { max_unused_percent: 0.0, ..Default::default() }
}

pub(crate) async fn assert_clean_and_restorable(
    repo: &Repository,
    kept: &[(&BackupSummary, &[u8])],
) {
    let report = verify(repo, &VerifyOptions::default()).await.unwrap();
    assert!(report.is_ok(), "verify: {:?}", report.problems);
    for (summary, input) in kept {
        assert_eq!(support::restore_bytes(repo, summary).await.unwrap(), *input);
    }
}

#[tokio::test]
async fn the_first_prune_marks_unused_packs_and_the_next_deletes_them() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let inputs: Vec<Vec<u8>> = (1..=3).map(|s| data(300_000, s)).collect();
    let mut backups = Vec::new();
    for input in &inputs {
        backups.push(support::backup_bytes(&repo, "data.bin", input.clone()).await);
    }
    assert_eq!(stored(&t, "data"), 3);
    repo.delete_manifest(backups[0].id).await.unwrap();
    repo.delete_manifest(backups[1].id).await.unwrap();

    let dry = run(&repo, &PruneOptions { dry_run: true, ..Default::default() }).await;
    assert!(dry.dry_run);
    assert_eq!(dry.plan.mark_unused.len(), 2);
    assert_eq!(marks(&t), 0, "a dry run writes nothing");

    let first = run(&repo, &PruneOptions::default()).await;
    assert_eq!((first.packs_marked, first.packs_deleted), (2, 0));
    assert_eq!(stored(&t, "data"), 3, "the first run deletes nothing");
    assert_eq!(marks(&t), 1);

    let second = run(&repo, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, 2);
    assert_eq!(second.marks_deleted, 1);
    assert_eq!(second.index_files_deleted, 2);
    assert_eq!(stored(&t, "data"), 1);
    assert_eq!(stored(&t, "index"), 1);
    assert_eq!(marks(&t), 0);
    assert!(!t.location().join("locks/prune").exists(), "the lock is released");
    assert_clean_and_restorable(&repo, &[(&backups[2], &inputs[2])]).await;

    let third = run(&repo, &PruneOptions::default()).await;
    assert!(third.plan.is_empty(), "{:?}", third.plan);
}

/// b1 = A‖B in one pack, b2 = A (dedups against b1's pack), b3 = C.
async fn shared_pack(t: &TestRepo) -> (Repository, Vec<BackupSummary>, Vec<Vec<u8>>) {
    let repo = t.open().await;
    let a = data(400_000, 1);
    let mut ab = a.clone();
    ab.extend(data(400_000, 2));
    let c = data(200_000, 3);
    let inputs = vec![ab, a, c];
    let mut backups = Vec::new();
    for input in &inputs {
        backups.push(support::backup_bytes(&repo, "data.bin", input.clone()).await);
    }
    (repo, backups, inputs)
}

#[tokio::test]
async fn repack_copies_the_live_blobs_of_a_partly_used_pack_and_a_later_run_frees_the_rest() {
    let t = TestRepo::new(small_chunks()).await;
    let (repo, backups, inputs) = shared_pack(&t).await;
    assert!(backups[1].manifest.summary.new_chunks < backups[1].manifest.summary.chunks / 2);
    repo.delete_manifest(backups[0].id).await.unwrap();

    // Default threshold: B is far more than 5% of the repository.
    let first = run(&repo, &PruneOptions::default()).await;
    assert_eq!(first.plan.repack.len(), 1);
    assert!(first.plan.can_repack);
    assert_eq!(first.packs_written, 1);
    // The repacked pack, and the packs no live backup uses at all (in a version-2
    // repository also the forgotten backup's own list-block pack).
    assert_eq!(first.packs_marked as usize, 1 + first.plan.mark_unused.len());
    assert_clean_and_restorable(&repo, &[(&backups[1], &inputs[1]), (&backups[2], &inputs[2])])
        .await;
    let second = run(&repo, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, first.packs_marked, "what the first run marked");
    assert!(second.bytes_deleted > 400_000, "{second:?}");
    assert_clean_and_restorable(&repo, &[(&backups[1], &inputs[1]), (&backups[2], &inputs[2])])
        .await;
    let after = qvault::stats::stats(&repo).await.unwrap();
    assert_eq!(after.marked_bytes, 0);
    assert!(after.prune.repack.is_empty(), "{:?}", after.prune);
}

#[tokio::test]
async fn with_only_the_repository_key_prune_deletes_unused_packs_and_reports_what_a_repack_would_free(
) {
    let t = TestRepo::new(small_chunks()).await;
    let (admin, backups, inputs) = shared_pack(&t).await;
    admin.delete_manifest(backups[0].id).await.unwrap();
    admin.delete_manifest(backups[2].id).await.unwrap();
    let host = support::open_as_backup_host(&admin, &t.storage()).await;
    let first = run(&host, &PruneOptions::default()).await;
    assert!(!first.plan.can_repack);
    assert_eq!(first.plan.repack.len(), 1);
    assert!(first.plan.repack_frees_bytes > 300_000, "{:?}", first.plan);
    assert_eq!(first.packs_written, 0);
    // Only wholly unused packs (the forgotten backups' data and list-block packs): nothing
    // is repacked without a data identity.
    assert_eq!(
        first.packs_marked as usize,
        first.plan.mark_unused.len(),
        "only wholly unused packs"
    );
    assert!(!first.plan.mark_unused.is_empty());
    let second = run(&host, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, first.packs_marked, "what the first run marked");
    admin.sync().await.unwrap();
    assert_clean_and_restorable(&admin, &[(&backups[1], &inputs[1])]).await;
}

#[tokio::test]
async fn a_prune_stopped_after_any_step_leaves_a_clean_repository_and_the_next_prune_finishes() {
    for step in 1..=6 {
        let t = TestRepo::new(small_chunks()).await;
        let (repo, backups, inputs) = shared_pack(&t).await;
        let d = data(250_000, 4);
        let b4 = support::backup_bytes(&repo, "d.bin", d.clone()).await;
        // A ready mark (C's pack), a partly used pack (A‖B) and, after the repack, a pack to
        // mark: every step has work.
        repo.delete_manifest(backups[2].id).await.unwrap();
        run(&repo, &repack_all()).await;
        repo.delete_manifest(backups[0].id).await.unwrap();
        let failing = PruneOptions { fail_after_step: Some(step), ..repack_all() };
        let err = prune(&repo, &failing).await.unwrap_err();
        assert!(err.to_string().contains(&format!("after step {step}")), "{err}");
        assert!(!t.location().join("locks/prune").exists());
        let kept = [(&backups[1], inputs[1].as_slice()), (&b4, d.as_slice())];
        assert_clean_and_restorable(&repo, &kept).await;
        // A fresh host sees the same: nothing relies on this host's local index.
        let other = t.open().await;
        other.rebuild_index().await.unwrap();
        assert_clean_and_restorable(&other, &kept).await;

        run(&repo, &repack_all()).await;
        run(&repo, &repack_all()).await;
        let last = run(&repo, &repack_all()).await;
        assert!(last.plan.is_empty(), "step {step}: {:?}", last.plan);
        assert_eq!(marks(&t), 0, "step {step}");
        assert_eq!(last.plan.unused_bytes, 0, "step {step}: {:?}", last.plan);
        assert_eq!(stored(&t, "data"), last.plan.packs, "step {step}: only used packs are left");
        assert_clean_and_restorable(&repo, &kept).await;
    }
}

/// A stream that hands out `first`, tells the test, waits for its go, then hands out `rest`.
pub(crate) struct Paused {
    pub(crate) first: std::io::Cursor<Vec<u8>>,
    pub(crate) rest: std::io::Cursor<Vec<u8>>,
    pub(crate) reached: Option<mpsc::Sender<()>>,
    pub(crate) go: mpsc::Receiver<()>,
}

impl Read for Paused {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.first.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(reached) = self.reached.take() {
            reached.send(()).unwrap();
            self.go.recv().unwrap();
        }
        self.rest.read(buf)
    }
}

/// A backup of `first ‖ rest` that has handed out `first` and waits before `rest`.
pub(crate) struct PausedBackup {
    handle: tokio::task::JoinHandle<qvault::Result<BackupSummary>>,
    go: mpsc::Sender<()>,
}

impl PausedBackup {
    pub(crate) async fn start(
        repo: Repository,
        first: &[u8],
        rest: &[u8],
        options: BackupOptions,
    ) -> Self {
        let (reached_tx, reached_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let reader = Paused {
            first: std::io::Cursor::new(first.to_vec()),
            rest: std::io::Cursor::new(rest.to_vec()),
            reached: Some(reached_tx),
            go: go_rx,
        };
        let handle = tokio::spawn(async move {
            let source = StreamSource {
                name: "data.bin".into(),
                kind: qvault::format::manifest::StreamKind::File,
                reader: Box::new(reader),
                source: None,
                expected_sha256: None,
                left_out: None,
            };
            qvault::backup::backup(&repo, vec![source], &options, Default::default()).await
        });
        tokio::task::spawn_blocking(move || reached_rx.recv().unwrap()).await.unwrap();
        // The chunks of `first` (all but the one at the pause) reach the dedup workers.
        tokio::time::sleep(Duration::from_millis(300)).await;
        PausedBackup { handle, go }
    }

    pub(crate) async fn resume(self) -> qvault::Result<BackupSummary> {
        self.go.send(()).unwrap();
        self.handle.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_on_another_host_paused_after_its_dedup_lookup_survives_two_prunes() {
    let t = TestRepo::new(small_chunks()).await;
    let admin = t.open().await;
    // At least 19 chunks of at most 64 KiB: more than the 16 ids a stream record holds, so
    // the old backup always has a data pack and a list-block pack (a 600 KB input had 16 or
    // 17 chunks by the repository's chunker seed, and so one or two packs).
    let old = data(1_200_000, 7);
    let gone = support::backup_bytes(&admin, "old.bin", old.clone()).await;
    admin.delete_manifest(gone.id).await.unwrap();

    // Another host backs up the old data again (it dedups fully against the unused data
    // pack), then more; it pauses after the old part while prune runs twice.
    let host = support::open_as_backup_host(&admin, &t.storage()).await;
    let more = data(100_000, 8);
    let backup = PausedBackup::start(host, &old, &more, Default::default()).await;

    let first = run(&admin, &PruneOptions::default()).await;
    assert_eq!(first.packs_marked, 2, "the data pack and the list-block pack: {first:?}");
    let second = run(&admin, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, 0, "{second:?}");
    assert_eq!(second.plan.waiting_marks.len(), 1);
    assert_eq!(second.plan.waiting_marks[0].live_leases.len(), 1);

    let summary = backup.resume().await.unwrap();
    let s = &summary.manifest.summary;
    assert!(s.new_chunks * 2 < s.chunks, "the backup deduplicated: {s:?}");
    let mut expected = old.clone();
    expected.extend(&more);
    admin.sync().await.unwrap();
    assert_clean_and_restorable(&admin, &[(&summary, &expected)]).await;

    // Its lease is gone: the mark is done, the data pack it references stays, and the old
    // list block (one block of the old ids, which the new list does not repeat) goes.
    let third = run(&admin, &PruneOptions::default()).await;
    assert_eq!(third.packs_deleted, 1, "{third:?}");
    assert_eq!(third.plan.unmarked_packs.len(), 1);
    assert_clean_and_restorable(&admin, &[(&summary, &expected)]).await;
}

#[tokio::test]
async fn a_backup_that_starts_after_a_mark_stores_the_marked_chunks_again() {
    let t = TestRepo::new(small_chunks()).await;
    let repo = t.open().await;
    let input = data(300_000, 9);
    let gone = support::backup_bytes(&repo, "a.bin", input.clone()).await;
    repo.delete_manifest(gone.id).await.unwrap();
    assert_eq!(run(&repo, &PruneOptions::default()).await.packs_marked, 1);
    let again = support::backup_bytes(&repo, "a.bin", input.clone()).await;
    let s = &again.manifest.summary;
    assert_eq!(s.new_chunks, s.chunks, "no dedup against a marked pack");
    let second = run(&repo, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, 1);
    assert_clean_and_restorable(&repo, &[(&again, &input)]).await;
    // Later backups dedup again.
    let third = support::backup_bytes(&repo, "a.bin", input).await;
    assert_eq!(third.manifest.summary.new_chunks, 0);
}

#[tokio::test]
async fn a_second_prune_is_refused_while_one_holds_the_lock() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let lock = qvault::prune::locks::PruneLock::acquire(&repo, qvault::prune::DEFAULT_STALE_AFTER)
        .await
        .unwrap();
    let err = prune(&repo, &PruneOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), qvault::ErrorKind::Refused);
    assert!(err.to_string().contains("qvault prune --unlock"), "{err}");
    lock.release(&repo).await.unwrap();
    run(&repo, &PruneOptions::default()).await;
}

#[test]
fn forget_prune_and_stats_on_the_command_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    rt.block_on(async {
        let repo = t.open().await;
        for seed in 1..=3 {
            support::backup_bytes(&repo, "data.bin", data(200_000, seed)).await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let run_cli = |args: &[&str]| {
        let out = t.cli().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run_cli(&["forget", "--keep-last", "1", "--prune"]);
    assert!(text.contains("marked 2 unused packs"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&run_cli(&["--json", "prune", "--dry-run"])).unwrap();
    assert_eq!(json["plan"]["delete_packs"].as_array().unwrap().len(), 2);
    let stats: serde_json::Value = serde_json::from_str(&run_cli(&["--json", "stats"])).unwrap();
    assert_eq!(stats["backups"], 1);
    assert!(stats["marked_bytes"].as_u64().unwrap() > 400_000, "{stats}");
    let text = run_cli(&["prune"]);
    assert!(text.contains("deleted 2 marked packs"), "{text}");
    let stats: serde_json::Value = serde_json::from_str(&run_cli(&["--json", "stats"])).unwrap();
    assert_eq!(stats["unused_bytes"], 0, "{stats}");
    assert_eq!(stats["packs"], 1);
    assert!(run_cli(&["stats"]).contains("dedup ratio"));
}

#[test]
fn a_prune_process_killed_after_any_step_leaves_a_clean_repository_and_unlock_then_prune_finish() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for step in 1..=6 {
        let t = rt.block_on(TestRepo::new(small_chunks()));
        let (backups, inputs, d, b4) = rt.block_on(async {
            let (repo, backups, inputs) = shared_pack(&t).await;
            let d = data(250_000, 4);
            let b4 = support::backup_bytes(&repo, "d.bin", d.clone()).await;
            repo.delete_manifest(backups[2].id).await.unwrap();
            run(&repo, &repack_all()).await;
            repo.delete_manifest(backups[0].id).await.unwrap();
            (backups, inputs, d, b4)
        });
        let killed = t
            .cli()
            .args(["prune", "--max-unused", "0%"])
            .env("QVAULT_TEST_PRUNE_ABORT_AFTER_STEP", step.to_string())
            .output()
            .unwrap();
        assert!(!killed.status.success(), "step {step}");
        assert!(t.location().join("locks/prune").exists(), "a killed prune leaves its lock");
        let refused = t.cli().arg("prune").output().unwrap();
        assert_eq!(refused.status.code(), Some(8), "step {step}");
        rt.block_on(async {
            let repo = t.open().await;
            let kept = [(&backups[1], inputs[1].as_slice()), (&b4, d.as_slice())];
            assert_clean_and_restorable(&repo, &kept).await;
        });
        for args in [&["prune", "--unlock"][..], &["prune", "--max-unused", "0%"], &["prune"]] {
            let out = t.cli().args(args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        rt.block_on(async {
            let repo = t.open().await;
            let last = run(&repo, &repack_all()).await;
            assert!(last.plan.is_empty(), "step {step}: {:?}", last.plan);
            assert_eq!(last.plan.unused_bytes, 0);
            let kept = [(&backups[1], inputs[1].as_slice()), (&b4, d.as_slice())];
            assert_clean_and_restorable(&repo, &kept).await;
        });
    }
}

#[tokio::test]
async fn a_lease_left_by_a_crashed_backup_holds_a_mark_until_the_storage_clock_makes_it_stale() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let gone = support::backup_bytes(&repo, "a.bin", data(200_000, 5)).await;
    repo.delete_manifest(gone.id).await.unwrap();
    // A backup that died without releasing its lease.
    std::mem::drop(qvault::prune::Lease::take(&repo).await.unwrap());
    assert_eq!(run(&repo, &PruneOptions::default()).await.packs_marked, 1);
    let waiting = run(&repo, &PruneOptions::default()).await;
    assert_eq!(waiting.packs_deleted, 0);
    assert_eq!(waiting.plan.waiting_marks.len(), 1);
    // Two days old by the storage's clock (the file's modification time).
    for lease in std::fs::read_dir(t.location().join("locks")).unwrap() {
        let path = lease.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("lease-") {
            let touched =
                std::process::Command::new("touch").arg("-d").arg("2 days ago").arg(&path).status();
            assert!(touched.unwrap().success());
        }
    }
    let done = run(&repo, &PruneOptions::default()).await;
    assert_eq!(done.packs_deleted, 1, "{done:?}");
    assert_eq!(done.plan.stale_leases.len(), 1);
    assert_eq!(stored(&t, "data"), 0);
    assert_eq!(stored(&t, "locks"), 0, "the dead backup's lease is cleaned up");
}

#[tokio::test]
async fn on_s3_prune_marks_then_deletes_and_the_kept_backup_restores() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("prune")) else {
        return;
    };
    let identity = age::x25519::Identity::generate();
    let cache = qvault::repo::Cache::InMemory;
    let options =
        qvault::repo::InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    qvault::repo::Repository::init(storage.clone(), options, &cache).await.unwrap();
    let credentials = qvault::repo::Credentials { identities: vec![identity], key: None };
    let repo = qvault::repo::Repository::open(storage.clone(), credentials, &cache).await.unwrap();
    let (a, b) = (data(200_000, 1), data(200_000, 2));
    let gone = support::backup_bytes(&repo, "a.bin", a).await;
    let kept = support::backup_bytes(&repo, "b.bin", b.clone()).await;
    repo.delete_manifest(gone.id).await.unwrap();
    assert!(qvault::prune::locks::storage_now(&repo).await.unwrap().is_some());
    assert_eq!(run(&repo, &PruneOptions::default()).await.packs_marked, 1);
    assert_eq!(run(&repo, &PruneOptions::default()).await.packs_deleted, 1);
    let left: Vec<_> = storage.list("locks/").await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_clean_and_restorable(&repo, &[(&kept, &b)]).await;
}

#[tokio::test]
async fn with_only_the_repository_key_prune_repacks_a_partly_used_list_block_pack() {
    let t = TestRepo::new(small_chunks()).await;
    let admin = t.open().await;
    // b1's list-block pack holds the blocks of x and of z; b2 backs up x alone, so its list
    // block is b1's block of x (the same ids, the same chunk).
    // 1,000,000 bytes in chunks of 16–64 KiB: 16 < chunks ≤ 61 whatever the repository's
    // chunker seed (800,000 bytes made 16 or fewer in a few runs in a hundred), so each
    // stream has exactly one list block.
    let (x, z) = (data(1_000_000, 21), data(1_000_000, 22));
    let stream = |name: &str, bytes: &[u8]| StreamSource {
        name: name.to_string(),
        kind: qvault::format::manifest::StreamKind::File,
        reader: Box::new(std::io::Cursor::new(bytes.to_vec())),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    let both = vec![stream("x.bin", &x), stream("z.bin", &z)];
    let b1 = qvault::backup::backup(&admin, both, &Default::default(), Default::default())
        .await
        .unwrap();
    assert!(b1.manifest.streams.iter().all(|s| s.chunk_count() > 16), "each has a list block");
    let b2 = support::backup_bytes(&admin, "x.bin", x.clone()).await;
    admin.delete_manifest(b1.id).await.unwrap();

    let host = support::open_as_backup_host(&admin, &t.storage()).await;
    let first = run(&host, &repack_all()).await;
    assert!(!first.plan.can_repack);
    let lists: Vec<_> = first.plan.repack.iter().filter(|r| r.list).collect();
    assert_eq!(lists.len(), 1, "{:?}", first.plan);
    assert_eq!(first.plan.repack.len(), 2, "and the data pack, which needs a data identity");
    assert_eq!(first.packs_written, 1, "one metadata pack with x's list block");
    assert_eq!(first.packs_marked as usize, first.plan.mark_unused.len() + 1);
    let second = run(&host, &repack_all()).await;
    assert!(second.plan.delete_packs.contains(&lists[0].pack), "{:?}", second.plan);
    // The copy is sealed to the metadata key: the backup host still walks every list block.
    let report = verify(&host, &VerifyOptions::default()).await.unwrap();
    assert!(report.is_ok(), "verify: {:?}", report.problems);
    admin.sync().await.unwrap();
    assert_clean_and_restorable(&admin, &[(&b2, &x)]).await;
}
