//! Faults a tester found using `qvault` as a new operator and as an attacker, one test per
//! kind: a restore racing a prune on another host, repair trusting a warm cache, damaged or
//! missing `keys/` and `config` objects, a damaged prune mark.

use crate::prune::{data, run, small_chunks};
use crate::support::{self, TestRepo};
use qvault::prune::PruneOptions;
use qvault::repair::{
    plan_repair_backups, plan_repair_index, repair_backups, repair_index, RepairIndexOptions,
};
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::verify::{verify, VerifyOptions};
use qvault::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn names_in(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    out.sort();
    out
}

fn leases(t: &TestRepo) -> Vec<PathBuf> {
    names_in(&t.location().join("locks"), "lease-")
}

fn marks(t: &TestRepo) -> Vec<PathBuf> {
    names_in(&t.location().join("locks"), "prune-mark-")
}

/// The repository opened with a cache nobody used before (a CronJob's `emptyDir`).
async fn cold(t: &TestRepo) -> Repository {
    let credentials = Credentials { identities: vec![t.identity.clone()], key: None };
    Repository::open(t.storage(), credentials, &Cache::InMemory).await.unwrap()
}

/// The first sample of metric family `name` in Prometheus text, as its whole line.
fn metric(metrics: &str, name: &str) -> Option<String> {
    metrics.lines().find(|l| l.starts_with(&format!("{name}{{"))).map(str::to_string)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ----- 1. readers hold a lease -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_while_a_restore_holds_its_lease_keeps_the_marked_packs_and_the_restore_is_exact() {
    let t = TestRepo::new(small_chunks()).await;
    let admin = t.open().await;
    let old = data(600_000, 31);
    let summary = support::backup_bytes(&admin, "old.bin", old.clone()).await;

    // The restore takes its lease and plans, then waits while the backup is forgotten and
    // pruned twice on "another host".
    let restorer = t.open().await;
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let (id, stream) = (summary.id, summary.manifest.streams[0].clone());
    let restore = tokio::spawn(async move {
        qvault::prune::read_leased(&restorer, "restore", async {
            let plan = qvault::restore::RestorePlan::new(&restorer, id, &stream).await?;
            wait.await.unwrap();
            qvault::restore::execute(&restorer, &plan, Vec::new(), &Default::default()).await
        })
        .await
        .map(|(bytes, _)| bytes)
    });
    while leases(&t).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.delete_manifest(summary.id).await.unwrap();
    let first = run(&admin, &PruneOptions::default()).await;
    assert!(first.packs_marked > 0, "{first:?}");
    let second = run(&admin, &PruneOptions::default()).await;
    assert_eq!(second.packs_deleted, 0, "{second:?}");
    assert_eq!(second.plan.waiting_marks.len(), 1, "{:?}", second.plan);
    assert_eq!(second.plan.waiting_marks[0].live_leases.len(), 1);

    go.send(()).unwrap();
    assert_eq!(restore.await.unwrap().unwrap(), old, "the restore is byte-exact");
    assert!(leases(&t).is_empty(), "the restore's lease is released");
    let third = run(&admin, &PruneOptions::default()).await;
    assert_eq!(third.packs_deleted, first.packs_marked, "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reader_releases_its_lease() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let held = qvault::prune::read_leased(&repo, "restore", async {
        Err::<(), _>(qvault::Error::not_found(format!("{} leases held", leases(&t).len())))
    })
    .await
    .unwrap_err();
    assert_eq!(held.to_string(), "1 leases held");
    assert!(leases(&t).is_empty(), "released on error");
}

#[test]
fn the_restore_command_leaves_no_lease_behind() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let input = data(200_000, 32);
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, &input).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let to = t.dir.path().join("out.bin");
    let out = t.cli().args(["restore", "latest", "--to"]).arg(&to).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&to).unwrap(), input);
    assert!(leases(&t).is_empty());
}

/// Disaster recovery often runs with credentials that may only read: the restore runs
/// without a lease, says so, and is still byte-exact.
#[test]
fn a_restore_from_storage_it_may_not_write_runs_without_a_lease_and_says_so() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let input = data(100_000, 41);
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, &input).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Readable by all, writable only by root; the test directory (cache, target) by all.
    support::chmod_r("a+rwX", t.dir.path());
    support::chmod_r("go-w", &t.location());
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let to = t.dir.path().join("out.bin");
    let out = cmd.args(["restore", "latest", "--to"]).arg(&to).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("restore runs without a lease in"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&to).unwrap(), input);
    // Found by a tester: `stats` wrote a clock probe and failed (exit 6) on such storage.
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let out = cmd.args(["--json", "stats"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read the storage clock"), "{}", stderr(&out));
}

/// A cron job that runs as another user than the one who filled the cache: the cache is
/// only an optimisation, so backup and restore run with the index in memory and say how to
/// fix it (they failed with "attempt to write a readonly database", exit 1).
#[test]
fn a_cache_this_user_cannot_write_is_left_alone_and_backup_and_restore_still_run() {
    let (_rt, t) = with_a_backup();
    support::chmod_r("a+rwX", t.dir.path());
    let cache = t.dir.path().join("cli-cache");
    support::chmod_r("go-w", &cache);
    let before = files_under(&cache);
    let input = data(80_000, 43);
    let file = t.dir.path().join("second.bin");
    std::fs::write(&file, &input).unwrap();

    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let out = cmd.args(["--json", "backup", "--file"]).arg(&file).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("this user cannot write the local index cache"), "{err}");
    assert!(err.contains("Give --cache-dir (QVAULT_CACHE_DIR) a directory"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let to = t.dir.path().join("out.bin");
    let out = cmd.args(["restore", id, "--to"]).arg(&to).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&to).unwrap() == input, "restored bytes differ");
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let out = cmd.args(["index", "rebuild"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("rebuilt in memory only: nothing was kept"), "{text}");
    assert_eq!(files_under(&cache), before, "the cache is left as it was");
}

// ----- 2. repair reads storage, not the warm cache -----

#[tokio::test(flavor = "multi_thread")]
async fn with_a_warm_cache_repair_index_finds_a_damaged_index_file_as_a_cold_one_does() {
    let t = TestRepo::new(None).await;
    let warm = t.open().await;
    let input = data(300_000, 33);
    let summary = support::backup_bytes(&warm, "a", input.clone()).await;
    let index = t.storage().list("index/").await.unwrap();
    let path = index[0].path.clone();
    let bytes = t.storage().read(&path).await.unwrap();
    t.storage().write(&path, bytes.slice(..bytes.len() - 10)).await.unwrap();

    let cold_plan = plan_repair_index(&cold(&t).await, &RepairIndexOptions::default()).await;
    let cold_plan = cold_plan.unwrap();
    let warm = t.open().await;
    assert!(warm.damaged_objects().is_empty(), "the warm cache hides the damage at open");
    let plan = plan_repair_index(&warm, &RepairIndexOptions::default()).await.unwrap();
    let paths = |p: &qvault::repair::RepairIndexPlan| {
        p.damaged_index_files.iter().map(|d| d.path.clone()).collect::<Vec<_>>()
    };
    assert_eq!(paths(&plan), std::slice::from_ref(&path));
    assert_eq!(paths(&plan), paths(&cold_plan));
    assert_eq!(plan.unlisted_packs, cold_plan.unlisted_packs);
    assert!(!plan.unlisted_packs.is_empty(), "its packs are indexed again from their headers");

    let report = repair_index(&warm, &plan).await.unwrap();
    assert_eq!(report.quarantined, std::slice::from_ref(&path));
    assert!(t.storage().exists(&format!("quarantine/{path}")).await.unwrap());
    let repo = cold(&t).await;
    assert!(verify(&repo, &VerifyOptions::default()).await.unwrap().is_ok());
    assert_eq!(support::restore_bytes(&repo, &summary).await.unwrap(), input);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_warm_cache_repair_backups_finds_a_damaged_manifest_as_a_cold_one_does() {
    let t = TestRepo::new(None).await;
    let warm = t.open().await;
    let a = data(100_000, 34);
    let intact = support::backup_bytes(&warm, "a", a.clone()).await;
    let victim = support::backup_bytes(&warm, "b", data(100_000, 35)).await;
    let victim_path = qvault::repo::backup_path(&victim.id);
    t.storage().write(&victim_path, Vec::new().into()).await.unwrap();

    let cold_plan = plan_repair_backups(&cold(&t).await).await.unwrap();
    let warm = t.open().await;
    assert!(warm.damaged_objects().is_empty(), "the warm cache hides the damage at open");
    let plan = plan_repair_backups(&warm).await.unwrap();
    assert_eq!(plan.damaged_manifests.len(), 1);
    assert_eq!(plan.damaged_manifests[0].path, victim_path);
    assert_eq!(plan.damaged_manifests, cold_plan.damaged_manifests);
    let listed: Vec<_> = warm.backups().unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(listed, [intact.id], "the damaged manifest left the warm cache too");

    let moved = repair_backups(&warm, &plan).await.unwrap();
    assert_eq!(moved, std::slice::from_ref(&victim_path));
    let repo = cold(&t).await;
    assert!(repo.damaged_objects().is_empty());
    assert!(verify(&repo, &VerifyOptions::default()).await.unwrap().is_ok());
    assert_eq!(support::restore_bytes(&repo, &intact).await.unwrap(), a);
}

#[test]
fn repair_backups_on_the_command_line_with_a_warm_cache_moves_a_damaged_manifest() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, data(50_000, 36)).unwrap();
    for _ in 0..2 {
        let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // The CLI's cache now holds both manifests.
    let listing = rt.block_on(t.storage().list("backups/")).unwrap();
    let victim = &listing[0].path;
    rt.block_on(t.storage().write(victim, Vec::new().into())).unwrap();
    let out = t.cli().args(["repair", "backups"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("moved 1 damaged manifests"), "{stdout}");
    assert!(rt.block_on(t.storage().exists(&format!("quarantine/{victim}"))).unwrap());
}

// ----- 3 and 4. damaged or missing keys/ and config objects -----

/// A repository with one backup, made with the CLI.
fn with_a_backup() -> (tokio::runtime::Runtime, TestRepo) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, data(50_000, 37)).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (rt, t)
}

#[test]
fn a_damaged_key_object_is_exit_5_naming_it_and_saying_to_restore_it_from_a_copy() {
    let (_rt, t) = with_a_backup();
    let key = names_in(&t.location().join("keys"), "age1").remove(0);
    let bytes = std::fs::read(&key).unwrap();
    std::fs::write(&key, &bytes[..50]).unwrap();
    let out = t.cli().arg("backups").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let name = format!("keys/{}", key.file_name().unwrap().to_string_lossy());
    let err = stderr(&out);
    assert!(err.contains(&format!("the key object {name} in ")), "{err}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("restore it from a copy of the repository"), "{err}");
}

/// Found by a tester: with `locks` a plain file the lease write said "already exists" and
/// the restore was refused (exit 8); it is a storage error, so the restore runs without a
/// lease and says so, and a backup fails naming the real cause.
#[test]
fn a_locks_path_that_is_a_file_lets_a_restore_run_and_fails_a_backup_as_storage() {
    let (_rt, t) = with_a_backup();
    let locks = t.location().join("locks");
    let _ = std::fs::remove_dir_all(&locks);
    std::fs::write(&locks, b"not a directory").unwrap();
    let out = t.cli().args(["restore", "latest", "--to", "-"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("runs without a lease"), "{err}");
    assert!(!err.contains("already exists"), "{err}");
    let input = t.dir.path().join("more.bin");
    std::fs::write(&input, b"more").unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&input).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("exists and is not a directory"), "{}", stderr(&out));
}

/// Found by a tester: a deleted key object said "the identity given is not a recipient"
/// although the config lists it, sending the operator after another identity.
#[test]
fn a_missing_key_object_of_a_listed_recipient_is_exit_5_naming_it() {
    let (_rt, t) = with_a_backup();
    let key = names_in(&t.location().join("keys"), "age1").remove(0);
    std::fs::remove_file(&key).unwrap();
    let out = t.cli().arg("backups").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let name = format!("keys/{}", key.file_name().unwrap().to_string_lossy());
    let err = stderr(&out);
    assert!(err.contains(&format!("the key object {name} in ")), "{err}");
    assert!(
        err.contains("is missing, though the repository's config lists its recipient"),
        "{err}"
    );
    assert!(err.contains("restore it from a copy of the repository"), "{err}");
    assert!(!err.contains("not a recipient"), "{err}");
}

#[test]
fn a_config_that_is_not_json_in_a_repository_is_exit_5_saying_to_restore_it() {
    let (_rt, t) = with_a_backup();
    std::fs::write(t.location().join("config"), b"garbage\n").unwrap();
    let out = t.cli().arg("backups").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the repository's `config` object at "), "{err}");
    assert!(err.contains("restore `config` from a copy of the repository"), "{err}");
    assert!(err.contains("do not run `qvault init` here"), "{err}");
}

#[test]
fn a_foreign_config_where_nothing_else_is_stored_is_not_a_repository() {
    let (_rt, t) = with_a_backup();
    std::fs::remove_dir_all(t.location()).unwrap();
    std::fs::create_dir(t.location()).unwrap();
    std::fs::write(t.location().join("config"), b"{\"a\": 1}").unwrap();
    let out = t.cli().arg("backups").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is not a qvault repository: check --repo"), "{err}");
}

#[test]
fn a_missing_config_where_backups_are_stored_says_restore_it_and_init_is_refused() {
    let (rt, t) = with_a_backup();
    std::fs::remove_file(t.location().join("config")).unwrap();
    let out = t.cli().arg("backups").output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("its `config` object is missing"), "{err}");
    assert!(err.contains("restore `config` from a copy of the repository"), "{err}");
    assert!(err.contains("do not run `qvault init` here"), "{err}");
    assert!(!err.contains("create one with"), "{err}");

    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let out = t.cli().args(["init", "--recipient", &recipient]).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("refusing to init"), "{}", stderr(&out));
    assert!(!t.location().join("config").exists(), "nothing was created");

    // The library refuses too, on any backend (here without the CLI's directory check).
    let options = InitOptions {
        recipients: vec![age::x25519::Identity::generate().to_public()],
        ..Default::default()
    };
    let e = rt.block_on(Repository::init(t.storage(), options, &Cache::InMemory)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("restore `config` from a copy"), "{e}");
}

// ----- 5. a damaged prune mark -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_prune_mark_is_removed_by_prune_and_its_packs_wait_out_both_phases_again() {
    let t = TestRepo::new(small_chunks()).await;
    let admin = t.open().await;
    let gone = support::backup_bytes(&admin, "old.bin", data(300_000, 38)).await;
    let kept_input = data(200_000, 39);
    let kept = support::backup_bytes(&admin, "kept.bin", kept_input.clone()).await;
    admin.delete_manifest(gone.id).await.unwrap();
    let first = run(&admin, &PruneOptions::default()).await;
    assert!(first.packs_marked > 0, "{first:?}");
    let mark = marks(&t).remove(0);
    std::fs::write(&mark, b"not a mark").unwrap();

    // A backup warns and goes on: the damaged mark keeps nothing out of its dedup.
    support::backup_bytes(&admin, "more.bin", data(50_000, 40)).await;
    // The next prune removes it and marks its packs again: none is deleted on this run.
    let second = run(&admin, &PruneOptions::default()).await;
    assert_eq!(second.plan.damaged_marks.len(), 1, "{:?}", second.plan);
    let name = mark.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(second.plan.damaged_marks[0].path, format!("locks/{name}"));
    assert_eq!(second.packs_deleted, 0, "{second:?}");
    assert_eq!(second.packs_marked, first.packs_marked, "{second:?}");
    assert!(!mark.exists(), "the damaged mark is gone");
    let third = run(&admin, &PruneOptions::default()).await;
    assert!(third.plan.damaged_marks.is_empty());
    assert_eq!(third.packs_deleted, first.packs_marked, "{third:?}");
    crate::prune::assert_clean_and_restorable(&admin, &[(&kept, &kept_input)]).await;
}

// ----- 6. unreadable paths under `backup --dir` -----

/// As a user permission checks apply to (the tests run as root, which reads everything:
/// dropped with `setpriv`, skipped loudly without it), a file and a directory without read
/// permission are left out: the backup is recorded with the rest, each path is named, and
/// the exit code is 10. The vanished-file case is a unit test of `dirtar` (any user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_dir_leaves_out_what_it_cannot_read_names_it_and_exits_10() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestRepo::new(None).await;
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let src = t.dir.path().join("tree");
    std::fs::create_dir_all(src.join("closed")).unwrap();
    std::fs::write(src.join("a.txt"), b"readable").unwrap();
    std::fs::write(src.join("closed/inner.txt"), b"behind a closed directory").unwrap();
    std::fs::write(src.join("secret.txt"), b"no permission").unwrap();
    support::chmod_r("a+rwX", t.dir.path());
    std::fs::set_permissions(src.join("secret.txt"), std::fs::Permissions::from_mode(0o000))
        .unwrap();
    std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();

    let out = cmd.args(["--json", "backup", "--dir"]).arg(&src).output().unwrap();
    std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let err = stderr(&out);
    for path in [src.join("closed"), src.join("secret.txt")] {
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    assert!(err.contains("was recorded, but 2 paths could not be read"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unreadable: Vec<&str> =
        v["unreadable"].as_array().unwrap().iter().map(|u| u["path"].as_str().unwrap()).collect();
    let expected = [src.join("closed"), src.join("secret.txt")];
    assert_eq!(unreadable, expected.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>());

    // The backup holds the rest and restores it.
    let id = v["id"].as_str().unwrap().to_string();
    let dest = t.dir.path().join("back");
    let out = t.cli().arg("restore").arg(&id).arg("--to-dir").arg(&dest).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"readable");
    assert!(dest.join("closed").is_dir(), "a directory it could not read is stored empty");
    assert!(!dest.join("closed/inner.txt").exists());
    assert!(!dest.join("secret.txt").exists());

    // The manifest records what was left out, so the backup does not pass for complete:
    // `show` names the paths, `check` fails the group, and the metrics neither count it as
    // the last success nor hide the count (it was the group's latest success until now).
    let out = t.cli().args(["--json", "show", &id]).output().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let record = &shown["streams"][0]["unreadable"];
    assert_eq!(record["count"], 2, "{shown}");
    let paths: Vec<&str> =
        record["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, expected.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>());
    let out = t.cli().args(["show", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("INCOMPLETE: 2 paths could not be read and were left out"), "{text}");
    let out = t.cli().args(["check", "--skip-verify"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{text}");
    let short = &id[..8];
    assert!(text.contains(&format!("the latest backup {short} is incomplete: 2 paths")), "{text}");
    let out = t.cli().arg("metrics").output().unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        metric(&metrics, "qvault_backup_last_unreadable_paths").unwrap().ends_with(" 2"),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "qvault_backup_last_success_timestamp_seconds"), None, "{metrics}");

    // Once readable again, the next backup is complete and the group passes.
    support::chmod_r("a+rX", &src);
    let Some(mut cmd) = support::as_nobody(&t.cli()) else { return };
    let out = cmd.args(["backup", "--dir"]).arg(&src).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = t.cli().args(["check", "--skip-verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = t.cli().arg("metrics").output().unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        metric(&metrics, "qvault_backup_last_unreadable_paths").unwrap().ends_with(" 0"),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "qvault_backup_last_success_timestamp_seconds").is_some(),
        "{metrics}"
    );
}

#[test]
fn prune_on_the_command_line_names_a_damaged_mark_and_removes_it() {
    let (_rt, t) = with_a_backup();
    let out = t.cli().args(["forget", "latest"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = t.cli().arg("prune").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mark = marks(&t).remove(0);
    std::fs::write(&mark, b"damaged").unwrap();
    let name = format!("locks/{}", mark.file_name().unwrap().to_string_lossy());
    let out = t.cli().args(["prune", "--dry-run"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains(&format!("would remove damaged prune mark {name}")), "{stdout}");
    assert!(mark.exists());
    let out = t.cli().arg("prune").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains(&format!("removed damaged prune mark {name}")), "{stdout}");
    assert!(!mark.exists());
    let out = t.cli().arg("prune").output().unwrap();
    assert!(!stderr(&out).contains("damaged"), "warned once: {}", stderr(&out));
}

// ----- a full or read-only repository filesystem -----

/// A directory moved onto a tmpfs of `size` mounted at its own path (unmounted on drop),
/// or `None` when this machine cannot mount (not root, no CAP_SYS_ADMIN): then it says so on
/// stderr and the caller skips loudly.
pub(crate) struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    /// `t`'s repository, with what it holds.
    pub(crate) fn tmpfs(t: &TestRepo, size: &str) -> Option<Mounted> {
        Mounted::tmpfs_at(&t.location(), size)
    }

    /// `dir` (made if missing), with what it holds.
    pub(crate) fn tmpfs_at(dir: &Path, size: &str) -> Option<Mounted> {
        let mut kept = dir.as_os_str().to_owned();
        kept.push("-before-mount");
        let kept = PathBuf::from(kept);
        let existed = dir.exists();
        if existed {
            std::fs::rename(dir, &kept).unwrap();
        }
        std::fs::create_dir(dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        if !mounted.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {mounted:?}"
            );
            std::fs::remove_dir(dir).unwrap();
            if existed {
                std::fs::rename(&kept, dir).unwrap();
            }
            return None;
        }
        if existed {
            let copied =
                std::process::Command::new("cp").arg("-a").arg(kept.join(".")).arg(dir).status();
            assert!(copied.unwrap().success());
        }
        Some(Mounted { dir: dir.to_path_buf() })
    }

    pub(crate) fn remount(&self, options: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

/// Asserts `out` is a command that failed at once on a repository filesystem that is full:
/// exit 6, the cause and what to do, and no retries with backoff. Returns its stderr.
pub(crate) fn failed_on_a_full_repository(out: &std::process::Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("the repository's filesystem is full; free space there"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    err
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_full_filesystem_fails_the_backup_at_once_leaves_nothing_behind_and_a_rerun_succeeds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let Some(mounted) = Mounted::tmpfs(&t, "2m") else { return };
    let input = data(5_000_000, 41);
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, &input).unwrap();

    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    let err = failed_on_a_full_repository(&out);
    assert!(err.contains("no backup recorded"), "{err}");
    // No temp file or lease keeps the disk full. A pack is in `data/` whole or not at all:
    // a small one (the list blocks') may have been written before the disk filled, and the
    // next backup reuses it (verified below).
    let location = t.location();
    assert_eq!(files_under(&location.join(".qvault-tmp")), Vec::<PathBuf>::new());
    assert_eq!(leases(&t), Vec::<PathBuf>::new());

    // With room, the same backup runs and restores byte for byte.
    mounted.remount("size=64m");
    let out = t.cli().args(["backup", "--json", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let back = t.dir.path().join("back.bin");
    let id = v["id"].as_str().unwrap();
    let out = t.cli().args(["restore", id, "--to"]).arg(&back).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&back).unwrap() == input, "restored bytes differ");
    let out = t.cli().args(["verify", "--read-data"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_read_only_repository_filesystem_refuses_a_backup_at_once_and_still_restores() {
    let (_rt, t) = with_a_backup();
    let Some(mounted) = Mounted::tmpfs(&t, "16m") else { return };
    mounted.remount("ro");
    let file = t.dir.path().join("in.bin");

    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("mounted read-only; remount it read-write"), "{err}");
    assert!(!err.contains("retrying"), "{err}");

    // A restore needs no write: it warns that it holds no lease and restores exactly.
    let back = t.dir.path().join("back.bin");
    let out = t.cli().args(["restore", "latest", "--to"]).arg(&back).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&file).unwrap());
    mounted.remount("rw");
}
