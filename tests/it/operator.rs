//! What a new operator hit (the try report): one job's forget thinning another's backups,
//! `latest` hiding a stream, `check` failing after every backup made since the nightly
//! verify, stored bytes undercounted after forget, "0 chunks" in `show`, `30m` read as
//! months, and the restore drill failing a directory owned by another user.

use crate::support::TestRepo;
use jiff::Timestamp;
use qvault::check::{evaluate, CheckOptions};
use qvault::id::BackupId;
use qvault::oplog::{LogEntry, OpRecord, Outcome};
use qvault::retention::BackupInfo;
use qvault_synth::pseudo_random;
use serde_json::Value;
use std::process::Output;

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&ok(out).stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The group keys `forget --dry-run --keep-last 1` plans.
fn forget_groups(t: &TestRepo) -> Vec<String> {
    let plan = json(
        &t.cli().args(["--json", "forget", "--dry-run", "--keep-last", "1"]).output().unwrap(),
    );
    let mut keys: Vec<String> = plan["plan"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn named_jobs_commands_and_same_named_files_are_separate_groups() {
    let t = TestRepo::new(None).await;
    let (f1, f2) = (t.dir.path().join("f1.bin"), t.dir.path().join("v1.bin"));
    std::fs::write(&f1, pseudo_random(20_000, 1)).unwrap();
    std::fs::write(&f2, pseudo_random(20_000, 2)).unwrap();
    // The tester's repro: two named jobs, both `cat`, were one group.
    for (name, file) in [("docs", &f1), ("products", &f2)] {
        let mut cmd = t.cli();
        cmd.args(["backup", "--name", name, "--from-command", "--", "cat"]).arg(file);
        ok(&cmd.output().unwrap());
    }
    let keys = forget_groups(&t);
    assert_eq!(keys.len(), 2, "{keys:?}");
    for name in ["docs", "products"] {
        let suffix = format!(" name={name} streams=cat");
        assert!(keys.iter().any(|k| k.ends_with(&suffix)), "{keys:?}");
    }

    // Unnamed: two commands running the same program, and x.snap from two directories.
    let t = TestRepo::new(None).await;
    for file in [&f1, &f2] {
        ok(&t.cli().args(["backup", "--from-command", "--", "cat"]).arg(file).output().unwrap());
    }
    for dir in ["a", "b"] {
        let file = t.dir.path().join(dir).join("x.snap");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, pseudo_random(20_000, 3)).unwrap();
        ok(&t.cli().args(["backup", "--file"]).arg(&file).output().unwrap());
    }
    let keys = forget_groups(&t);
    assert_eq!(keys.len(), 4, "{keys:?}");
    let host = keys[0].split(':').next().unwrap().to_string();
    let a = t.dir.path().join("a/x.snap");
    assert!(keys.contains(&format!("{host}:{} streams=x.snap", a.display())), "{keys:?}");
    let commands = keys.iter().filter(|k| k.contains(":command#") && k.ends_with(" streams=cat"));
    assert_eq!(commands.count(), 2, "{keys:?}");
    // The command line is not in the key (it may carry a token): a digest is.
    assert!(keys.iter().all(|k| !k.contains("f1.bin") && !k.contains("v1.bin")), "{keys:?}");
    // Stdin has nothing but the name to tell jobs apart: a backup without one warns.
    for (name, warns) in [(None, true), (Some("docs"), false)] {
        let mut cmd = t.cli();
        cmd.args(["backup", "-"]).args(name.map(|n| ["--name", n]).iter().flatten());
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&pseudo_random(5_000, 4)).unwrap();
        let out = child.wait_with_output().unwrap();
        ok(&out);
        assert_eq!(stderr(&out).contains("reading stdin without --name"), warns, "{name:?}");
    }
    // Nothing is removed: every group holds one backup.
    let out = t.cli().args(["--json", "forget", "--keep-last", "1"]).output().unwrap();
    assert_eq!(json(&out)["removed"].as_array().map(Vec::len), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_latest_with_a_stream_takes_the_newest_backup_holding_it() {
    let t = TestRepo::new(None).await;
    let (a, b) = (t.dir.path().join("coll.snapshot"), t.dir.path().join("emptydir.bin"));
    let (old, new) = (pseudo_random(30_000, 1), pseudo_random(30_000, 2));
    std::fs::write(&a, &old).unwrap();
    ok(&t.cli().args(["backup", "--file"]).arg(&a).output().unwrap());
    std::fs::write(&a, &new).unwrap();
    ok(&t.cli().args(["backup", "--file"]).arg(&a).output().unwrap());
    std::fs::write(&b, pseudo_random(10_000, 3)).unwrap();
    ok(&t.cli().args(["backup", "--file"]).arg(&b).output().unwrap());
    let to = t.dir.path().join("restored");
    let out = t
        .cli()
        .args(["restore", "latest", "--stream", "coll.snapshot", "--to"])
        .arg(&to)
        .output()
        .unwrap();
    ok(&out);
    assert!(std::fs::read(&to).unwrap() == new, "the newest coll.snapshot, not the first");
    let out =
        t.cli().args(["restore", "latest", "--stream", "nope", "--to", "-"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("holds a stream \"nope\""), "{}", stderr(&out));
    let help = t.cli().args(["restore", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("the newest backup that holds that"));
}

fn info(n: u8, time: &str) -> BackupInfo {
    BackupInfo {
        id: BackupId([n; 32]),
        time: time.parse().unwrap(),
        host: "h".into(),
        name: None,
        tags: Default::default(),
        streams: vec!["products".into()],
        source: "q".into(),
        unreadable: 0,
    }
}

fn verify_at(time: &str, ids: &[u8], failed: &[u8]) -> LogEntry {
    let mut record = OpRecord::started("verify", "read-data-subset 1/7".into());
    record.time = time.into();
    record.outcome = if failed.is_empty() { Outcome::Ok } else { Outcome::Failed };
    record.backups = ids.iter().map(|n| BackupId([*n; 32])).collect();
    record.failed_backups = failed.iter().map(|n| BackupId([*n; 32])).collect();
    LogEntry { id: "00".into(), record }
}

#[test]
fn check_judges_the_groups_last_verify_not_whether_the_newest_backup_was_verified() {
    let now: Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
    // Hourly backups; the nightly verify at 04:15 saw the ones before it.
    let backups: Vec<(BackupInfo, u64)> =
        (0..12).map(|h| (info(h + 1, &format!("2026-11-30T{h:02}:00:00Z")), 1000)).collect();
    let options =
        CheckOptions { max_verify_age: Some("2d".parse().unwrap()), ..Default::default() };
    let nightly = verify_at("2026-11-30T04:15:00.000Z", &[1, 2, 3, 4, 5], &[]);
    let report = evaluate(&backups, std::slice::from_ref(&nightly), &options, now);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.groups[0].last_verify.as_ref().unwrap().time, nightly.record.time);

    // The same verify a week ago: the verify job has stopped.
    let stale = verify_at("2026-11-23T04:15:00.000Z", &[1, 2], &[]);
    let report = evaluate(&backups, &[stale], &options, now);
    assert_eq!(
        report.groups[0].failures,
        ["the group's last passing verify (2026-11-23T04:15:00.000Z, read-data-subset 1/7) was \
          7d7h ago, more than --max-verify-age 2d: is the verify job still running?"]
    );
    // The newest verify found an older backup damaged: the group fails, naming it.
    let damaged = verify_at("2026-11-30T04:15:00.000Z", &[1, 2, 3], &[2]);
    let report = evaluate(&backups, &[nightly.clone(), damaged], &options, now);
    let failures = &report.groups[0].failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("found it cannot be restored whole (backup 02020202)"));
    // Never verified.
    let report = evaluate(&backups, &[], &options, now);
    assert!(report.groups[0].failures[0].starts_with("the group has not been verified"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_check_passes_a_backup_made_after_the_verify() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("snap.bin");
    std::fs::write(&input, pseudo_random(40_000, 1)).unwrap();
    ok(&t.cli().args(["backup", "--file"]).arg(&input).output().unwrap());
    ok(&t.cli().arg("verify").output().unwrap());
    std::fs::write(&input, pseudo_random(40_000, 2)).unwrap();
    ok(&t.cli().args(["backup", "--file"]).arg(&input).output().unwrap());
    let out = t.cli().args(["--json", "check", "--max-age", "90min"]).output().unwrap();
    assert_eq!(json(&out)["ok"], true);
    // A verify older than max_verify_age (here from the config file) fails the group.
    let config = t.dir.path().join("config.toml");
    std::fs::write(&config, "max_verify_age = \"1s\"\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = t.cli().arg("--config").arg(&config).args(["--json", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = report["groups"][0]["failures"][0].as_str().unwrap();
    assert!(why.contains("more than --max-verify-age 1s"), "{why}");
    let out = t.cli().args(["check", "--max-age", "90m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("write 90min for minutes or 90mo for months"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn report_and_metrics_count_the_stored_packs_after_forget_as_stats_does() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("db.bin");
    for seed in 1..=3 {
        std::fs::write(&input, pseudo_random(200_000, seed)).unwrap();
        ok(&t.cli().args(["backup", "--file"]).arg(&input).output().unwrap());
    }
    ok(&t.cli().args(["forget", "--keep-last", "1"]).output().unwrap());
    let stats = json(&t.cli().args(["--json", "stats"]).output().unwrap());
    let packs = stats["pack_bytes"].as_u64().unwrap();
    let added = stats["per_backup"][0]["added_bytes"].as_u64().unwrap();
    assert!(packs > 2 * added, "three backups' packs stay until prune: {packs} vs {added}");
    let report = json(&t.cli().args(["--json", "report"]).output().unwrap());
    assert_eq!(report["stored_bytes"].as_u64(), Some(packs));
    let metrics = ok(&t.cli().arg("metrics").output().unwrap()).stdout.clone();
    let metrics = String::from_utf8(metrics).unwrap();
    let line = metrics.lines().find(|l| l.starts_with("qvault_repository_stored_bytes")).unwrap();
    assert!(line.ends_with(&format!(" {packs}")), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn show_counts_the_chunks_of_a_version_2_stream() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("db.bin");
    std::fs::write(&input, pseudo_random(3_000_000, 7)).unwrap();
    let summary = json(&t.cli().args(["--json", "backup", "--file"]).arg(&input).output().unwrap());
    let id = summary["id"].as_str().unwrap().to_string();
    let shown = json(&t.cli().args(["--json", "show", &id]).output().unwrap());
    let chunks = shown["summary"]["chunks"].as_u64().unwrap();
    assert!(chunks > 1, "{shown}");
    assert_eq!(shown["streams"][0]["chunks"].as_u64(), Some(chunks));
    let text = ok(&t.cli().args(["show", &id]).output().unwrap()).stdout.clone();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(&format!("bytes), {chunks} chunks\n")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rto_in_minutes_is_minutes_and_a_bare_m_is_refused() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("db.bin");
    std::fs::write(&input, pseudo_random(10_000, 1)).unwrap();
    ok(&t.cli().args(["backup", "--file"]).arg(&input).output().unwrap());
    let report = json(&t.cli().args(["--json", "report", "--rto", "30min"]).output().unwrap());
    assert_eq!(report["rto_seconds"], 1800);
    let out = t.cli().args(["report", "--rto", "30m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is ambiguous: write 30min for minutes"), "{}", stderr(&out));
    // The README's config line.
    let config = t.dir.path().join("config.toml");
    std::fs::write(&config, "rto = \"30m\"\n").unwrap();
    let out = t.cli().arg("config").arg("check").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rto duration \"30m\" is ambiguous"), "{text}");
    std::fs::write(&config, "rto = \"30min\"\n").unwrap();
    let out = t.cli().arg("--config").arg(&config).args(["--json", "report"]).output().unwrap();
    assert_eq!(json(&out)["rto_seconds"], 1800);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_restore_drill_passes_a_directory_owned_by_another_user() {
    let t = TestRepo::new(None).await;
    let own = t.dir.path().join("own");
    std::fs::create_dir_all(own.join("collections/c")).unwrap();
    std::fs::write(own.join("collections/c/vectors.dat"), pseudo_random(100_000, 1)).unwrap();
    std::fs::write(own.join("raft_state.json"), b"{}").unwrap();
    // Owned by uid 1000, as a Qdrant storage directory; the drill runs as someone else.
    let running_as = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    if running_as.ok() != Some(0) {
        eprintln!("SKIPPED: changing ownership to uid 1000 needs root");
        return;
    }
    for entry in ["", "collections", "collections/c", "collections/c/vectors.dat"] {
        std::os::unix::fs::lchown(own.join(entry), Some(1000), Some(1000)).unwrap();
    }
    std::os::unix::fs::lchown(own.join("raft_state.json"), Some(1000), Some(1000)).unwrap();
    ok(&t.cli().args(["backup", "--dir"]).arg(&own).output().unwrap());
    let out = t
        .cli()
        .args(["--json", "verify", "--restore-test", "--scratch"])
        .arg(t.dir.path().join("drill"))
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(report["streams"][0]["passed"], true, "{report}");
    assert_eq!(report["streams"][0]["kind"], "directory", "{report}");
}
