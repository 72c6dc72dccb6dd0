//! A command stopped by SIGINT or SIGTERM undoes what it holds before it exits: leases,
//! the prune lock, the snapshots a backup created on a Qdrant node.

use crate::prune::data;
use crate::prune_safety::leases_in;
use crate::support::fake_qdrant::{FakeOptions, FakeQdrant, Fault};
use crate::support::TestRepo;
use std::process::Stdio;
use std::time::Duration;

/// Waits up to 60 s for `done`, polling.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill only sends a signal to the child this test spawned.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Ctrl-C, or the SIGTERM of systemd or Kubernetes: the command removes its lease before
/// it exits (it stayed, holding every prune mark for the stale limit of 24 h), records
/// nothing, logs the stop and exits 128 + the signal's number. The backup's stdin and the
/// restore's stdout stay open, as a stuck source or reader would: the exit does not wait
/// for them.
#[test]
fn a_backup_stopped_by_sigint_and_a_restore_stopped_by_sigterm_remove_their_leases() {
    use std::io::Write;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let locks = t.location().join("locks");

    let mut backup = t
        .cli()
        .args(["backup", "--name", "job", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = backup.stdin.take().unwrap();
    stdin.write_all(&data(300_000, 5)).unwrap();
    wait_for("the backup's lease", || leases_in(&locks).len() == 1);
    let lease = leases_in(&locks).remove(0);
    signal(&backup, libc::SIGINT);
    let out = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    let name = lease.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains("interrupted by SIGINT; removed what this run held: "), "{err}");
    assert!(err.contains(&format!("/locks/{name}")), "{err}");
    assert!(leases_in(&locks).is_empty(), "the lease is gone");
    drop(stdin);
    let out = t.cli().args(["--json", "backups"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "nothing recorded: {listed}");
    let out = t.cli().args(["log"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(log.contains("FAILED: interrupted by SIGINT"), "{log}");

    // A restore blocked on a reader that does not read.
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, data(3_000_000, 6)).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restore = t
        .cli()
        .args(["restore", "latest", "--to", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the restore's lease", || leases_in(&locks).len() == 1);
    signal(&restore, libc::SIGTERM);
    let out = restore.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM; removed what this run held: "), "{err}");
    assert!(leases_in(&locks).is_empty(), "the lease is gone");
}

/// A backup from Qdrant stopped half way through its download: the snapshot it created is
/// deleted from the node too (each stopped nightly run left one, filling the node's disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qdrant_backup_stopped_by_sigterm_deletes_the_snapshot_it_created() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.create_collection("c", serde_json::json!({"vectors": {"size": 4, "distance": "Dot"}}));
    fake.set_snapshot_source("c", data(2_000_000, 9));
    // 4 KiB every 50 ms: the download takes ~25 s, the signal comes long before.
    fake.inject(Fault::slow_body("/snapshots/", 4096, Duration::from_millis(50), 1));
    let t = TestRepo::new(None).await;
    let locks = t.location().join("locks");
    let url = fake.url();
    let backup = t
        .cli()
        .args(["backup", "--qdrant", &url, "--collection", "c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let names = || fake.snapshot_names("c");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while names().is_empty() || leases_in(&locks).is_empty() {
        assert!(std::time::Instant::now() < until, "timed out waiting for the snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshot = names().remove(0);
    signal(&backup, libc::SIGTERM);
    let out =
        tokio::task::spawn_blocking(move || backup.wait_with_output()).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains(&format!("snapshot {snapshot} of collection `c` on {url}")), "{err}");
    assert_eq!(names(), Vec::<String>::new(), "the snapshot is gone from the node");
    assert!(leases_in(&t.location().join("locks")).is_empty(), "the lease is gone");
}

/// Signals at every moment of a short backup and a short prune (found by a tester: a signal
/// while the lease or the prune lock was being written left it behind, and one during the
/// manifest write exited 130 for a backup that was recorded). After each run: nothing left
/// in `locks/`, and the exit code tells the truth — 0 exactly when the backup was recorded,
/// 130 (or killed before qvault listens for signals) when it was not.
#[test]
fn a_signal_at_any_moment_leaves_no_lock_and_the_exit_code_says_whether_a_backup_was_recorded() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let locks = t.location().join("locks");
    let file = t.dir.path().join("in.bin");
    let backups = || {
        let out = t.cli().args(["--json", "backups"]).output().unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        listed.as_array().unwrap().len()
    };
    let mut before = backups();
    for round in 0..24u8 {
        std::fs::write(&file, data(400_000, round)).unwrap();
        let mut cmd = t.cli();
        let child = cmd
            .args(["backup", "--file"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = child.unwrap();
        std::thread::sleep(Duration::from_millis(u64::from(round) * 2));
        signal(&child, libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let after = backups();
        match out.status.code() {
            Some(0) => assert_eq!(after, before + 1, "round {round}: exit 0, recorded: {err}"),
            Some(130) | None => assert_eq!(after, before, "round {round}: stopped: {err}"),
            other => panic!("round {round}: exit {other:?}: {err}"),
        }
        assert!(leases_in(&locks).is_empty(), "round {round}: a lease was left: {err}");
        before = after;

        let mut cmd = t.cli();
        let child = cmd
            .args(["prune", "--max-unused", "0%"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = child.unwrap();
        std::thread::sleep(Duration::from_millis(u64::from(round)));
        signal(&child, libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(matches!(out.status.code(), Some(0 | 130) | None), "round {round}: {err}");
        assert!(!locks.join("prune").exists(), "round {round}: the prune lock was left: {err}");
    }
}

/// `backup --from-command` stopped by SIGTERM (`timeout`, systemd): the command and what it
/// started are ended too (a shell looping over a producer kept running, reparented to init),
/// with SIGKILL when they ignore SIGTERM as this one does.
#[test]
fn a_from_command_backup_stopped_by_sigterm_ends_the_command_and_its_children() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let pids = t.dir.path().join("pids");
    let script = format!(
        "trap '' TERM; echo $$ > {p}; sleep 300 & echo $! >> {p}; while :; do head -c 1000 /dev/urandom; sleep 0.05; done",
        p = pids.display()
    );
    let mut cmd = t.cli();
    cmd.args(["backup", "--name", "producer", "--from-command", "--", "sh", "-c", &script]);
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let read_pids = || -> Vec<i32> {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    };
    wait_for("the command and its child", || read_pids().len() == 2);
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("removed what this run held: command sh (process group "), "{err}");
    // SAFETY: kill with signal 0 only asks whether the process exists.
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
    wait_for("the command and its child to end", || read_pids().into_iter().all(|p| !alive(p)));
}

/// Entries of `dir` whose names mark a partial output.
fn partials_in(dir: &std::path::Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap();
    let names = entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| n.contains(".qvault-partial-")).collect()
}

/// A restore stopped while it writes its output: the hidden partial file or directory is
/// removed (a 95 MB `.z.bin.qvault-partial-…` was left), and the target does not appear.
#[test]
fn a_restore_stopped_while_writing_leaves_no_partial_output() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let input = data(24_000_000, 3);
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, &input).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = t.dir.path().join("tree");
    for i in 0..400 {
        std::fs::create_dir_all(tree.join(format!("d{}", i % 20))).unwrap();
        std::fs::write(tree.join(format!("d{}/f{i}", i % 20)), data(20_000, i as u8)).unwrap();
    }
    let out = t.cli().args(["backup", "--dir"]).arg(&tree).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = t.cli().args(["--json", "backups"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<String> =
        listed.as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_string()).collect();

    let outdir = t.dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    // Every signal qvault handles, early and late: a restore whose output is in place exits
    // 0 (one that finished exited 130), one stopped before exits 128 + the signal's number,
    // and no partial output is ever left.
    let rounds = [
        (&ids[0], "--to", "z.bin", libc::SIGINT, 0),
        (&ids[0], "--to", "z.bin", libc::SIGHUP, 60),
        (&ids[0], "--to", "z.bin", libc::SIGQUIT, 150),
        (&ids[0], "--to", "z.bin", libc::SIGTERM, 300),
        (&ids[1], "--to-dir", "tree", libc::SIGTERM, 0),
        (&ids[1], "--to-dir", "tree", libc::SIGINT, 100),
        (&ids[1], "--to-dir", "tree", libc::SIGHUP, 250),
    ];
    for (id, flag, name, sig, delay_ms) in rounds {
        let target = outdir.join(name);
        let mut cmd = t.cli();
        let child = cmd.args(["restore", id, flag]).arg(&target).stderr(Stdio::piped()).spawn();
        let child = child.unwrap();
        wait_for("the partial output", || !partials_in(&outdir).is_empty() || target.exists());
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let round = format!("{flag} signal {sig} after {delay_ms} ms");
        assert_eq!(partials_in(&outdir), Vec::<String>::new(), "{round}: {err}");
        let code = out.status.code();
        if code == Some(0) {
            // Complete before the signal, or the signal came once it was in place.
            assert!(target.exists(), "{round}: {err}");
            if flag == "--to" {
                assert!(std::fs::read(&target).unwrap() == input, "{round}: bytes differ");
                std::fs::remove_file(&target).unwrap();
            } else {
                std::fs::remove_dir_all(&target).unwrap();
            }
        } else {
            assert_eq!(code, Some(128 + sig), "{round}: {err}");
            assert!(!target.exists(), "{round}: {err}");
        }
        eprintln!("{round}: exit {code:?}");
    }
}

/// A signal while a backup writes its manifest (its last critical section) waits for the
/// write and says so; a second signal stops it at once — storage that hangs in its retries
/// must not make Ctrl-C useless. Stopped there, nothing is recorded and the lease is gone.
#[test]
fn a_second_signal_stops_a_backup_that_waits_in_its_last_critical_section() {
    use std::io::BufRead;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt.block_on(TestRepo::new(None));
    let file = t.dir.path().join("in.bin");
    std::fs::write(&file, data(300_000, 4)).unwrap();
    let mut cmd = t.cli();
    cmd.args(["backup", "--file"]).arg(&file).env("QVAULT_TEST_STALL_BEFORE_MANIFEST_MS", "60000");
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    let mut wait_for_line = |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "no {needle:?} in {seen}");
            seen.push_str(&line);
        }
    };
    wait_for_line("test hook: stalling", &mut seen);
    signal(&child, libc::SIGINT);
    wait_for_line("finishing what is under way, then stopping (send it again", &mut seen);
    signal(&child, libc::SIGINT);
    wait_for_line("interrupted by SIGINT; removed what this run held", &mut seen);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(leases_in(&t.location().join("locks")).is_empty(), "{seen}");
    let out = t.cli().args(["--json", "backups"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "nothing recorded: {listed}");
}
