//! `qvault check`: per group, the latest backup is recent, its size did not jump, and its
//! last verify (from the operation log) passed; exit 9 and `--json` name the failing group.

use crate::support::TestRepo;
use jiff::Timestamp;
use qvault::check::{evaluate, CheckOptions};
use qvault::id::BackupId;
use qvault::oplog::{LogEntry, OpRecord, Outcome};
use qvault::retention::BackupInfo;
use serde_json::Value;

fn info(n: u8, time: &str, source: &str) -> BackupInfo {
    BackupInfo {
        id: BackupId([n; 32]),
        time: time.parse().unwrap(),
        host: "h".into(),
        name: None,
        tags: Default::default(),
        streams: vec!["products".into()],
        source: source.into(),
        unreadable: 0,
    }
}

fn verified(ids: &[u8], failed: &[u8], outcome: Outcome) -> LogEntry {
    let mut record = OpRecord::started("verify", "structure".into());
    record.time = "2026-11-30T01:00:00.000Z".into();
    record.outcome = outcome;
    record.backups = ids.iter().map(|n| BackupId([*n; 32])).collect();
    record.failed_backups = failed.iter().map(|n| BackupId([*n; 32])).collect();
    LogEntry { id: "00".into(), record }
}

fn options() -> CheckOptions {
    CheckOptions {
        max_age: Some("1d".parse().unwrap()),
        max_size_change: Some(20.0),
        ..Default::default()
    }
}

fn now() -> Timestamp {
    "2026-11-30T06:00:00Z".parse().unwrap()
}

#[test]
fn a_recent_verified_backup_of_similar_size_passes() {
    let backups = vec![
        (info(1, "2026-11-29T00:00:00Z", "q1"), 1000),
        (info(2, "2026-11-30T00:00:00Z", "q1"), 1100),
    ];
    let report = evaluate(&backups, &[verified(&[1, 2], &[], Outcome::Ok)], &options(), now());
    assert!(report.ok, "{report:?}");
    let g = &report.groups[0];
    assert_eq!(g.group, "source=q1 streams=products");
    assert_eq!(g.latest, BackupId([2; 32]));
    assert_eq!((g.size, g.previous_size), (1100, Some(1000)));
    assert_eq!(g.size_change_percent, Some(10.0));
    assert_eq!(g.age_seconds, 6 * 3600);
    assert!(g.last_verify.as_ref().unwrap().passed);
}

#[test]
fn a_group_whose_latest_backup_left_paths_out_fails_and_an_older_incomplete_one_does_not() {
    let incomplete = |n, time, source| BackupInfo { unreadable: 3, ..info(n, time, source) };
    let backups = vec![
        (info(1, "2026-11-29T00:00:00Z", "now-incomplete"), 1000),
        (incomplete(2, "2026-11-30T00:00:00Z", "now-incomplete"), 1000),
        (incomplete(3, "2026-11-29T00:00:00Z", "complete-again"), 1000),
        (info(4, "2026-11-30T00:00:00Z", "complete-again"), 1000),
    ];
    let log = [verified(&[1, 2, 3, 4], &[], Outcome::Ok)];
    let report = evaluate(&backups, &log, &options(), now());
    assert!(!report.ok);
    let failing: Vec<_> = report.failing().map(|g| g.group.as_str()).collect();
    assert_eq!(failing, ["source=now-incomplete streams=products"]);
    let short = BackupId([2; 32]).short();
    assert_eq!(
        report.groups[1].failures,
        [format!(
            "the latest backup {short} is incomplete: 3 paths could not be read and were left \
             out (`qvault show {short}` names them); give the backup's user read access"
        )]
    );
}

#[test]
fn each_rule_fails_its_group_with_its_reason_and_other_groups_pass() {
    let backups = vec![
        (info(1, "2026-11-27T00:00:00Z", "stale"), 1000),
        (info(2, "2026-11-30T00:00:00Z", "shrunk"), 1000),
        (info(3, "2026-11-30T01:00:00Z", "shrunk"), 100),
        (info(4, "2026-11-30T02:00:00Z", "unverified"), 1000),
        (info(5, "2026-11-30T02:00:00Z", "damaged"), 1000),
        (info(6, "2026-11-30T02:00:00Z", "fine"), 1000),
    ];
    let log = [verified(&[1, 2, 3, 5, 6], &[5], Outcome::Failed)];
    let report = evaluate(&backups, &log, &options(), now());
    assert!(!report.ok);
    let why = |source: &str| {
        report
            .groups
            .iter()
            .find(|g| g.group == format!("source={source} streams=products"))
            .unwrap()
            .failures
            .clone()
    };
    assert_eq!(why("stale"), ["the latest backup is 3d6h old, more than --max-age 1d"]);
    assert_eq!(
        why("shrunk"),
        ["its size changed by -90.0% (1000 → 100 bytes), more than --max-size-change 20%"]
    );
    assert_eq!(why("unverified").len(), 1);
    assert!(why("unverified")[0].contains("has not been verified"), "{:?}", why("unverified"));
    assert_eq!(why("damaged").len(), 1);
    assert!(why("damaged")[0].contains("found it cannot be restored whole"));
    assert!(why("fine").is_empty(), "a verify that failed for another backup passes this one");
    assert_eq!(report.failing().count(), 4);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["groups"].as_array().unwrap().len(), 5);
}

#[test]
fn a_later_verify_decides_and_the_verify_rule_can_be_skipped() {
    let backups = vec![(info(1, "2026-11-30T00:00:00Z", "q"), 10)];
    let mut later = verified(&[1], &[], Outcome::Ok);
    later.record.time = "2026-11-30T03:00:00.000Z".into();
    let log = [verified(&[1], &[1], Outcome::Failed), later];
    assert!(evaluate(&backups, &log, &options(), now()).ok);
    let skip = CheckOptions { skip_verify: true, ..options() };
    assert!(evaluate(&backups, &[], &skip, now()).ok);
    assert!(!evaluate(&backups, &[], &options(), now()).ok);
    // A verify that failed without naming any backup proves nothing.
    assert!(!evaluate(&backups, &[verified(&[1], &[], Outcome::Failed)], &options(), now()).ok);
}

#[test]
fn an_empty_repository_fails() {
    let report = evaluate(&[], &[], &options(), now());
    assert!(!report.ok);
    assert_eq!(report.problem.as_deref(), Some("the repository holds no backups"));
}

fn check(t: &TestRepo, args: &[&str]) -> (Option<i32>, Value) {
    let out = t.cli().args(["--json", "check"]).args(args).output().unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), json)
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_check_exits_9_until_verified_and_names_the_group_whose_size_jumped() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("db.bin");
    let backup = |len: usize| {
        std::fs::write(&input, qvault_synth::pseudo_random(len, len as u64)).unwrap();
        let out = t.cli().args(["backup", "--file"]).arg(&input).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let (code, json) = check(&t, &["--max-age", "1d"]);
    assert_eq!(code, Some(9));
    assert_eq!(json["problem"], "the repository holds no backups");

    backup(100_000);
    backup(105_000);
    let (code, json) = check(&t, &["--max-age", "1d", "--max-size-change", "20"]);
    assert_eq!(code, Some(9));
    assert!(json["groups"][0]["failures"][0].as_str().unwrap().contains("has not been verified"));

    assert!(t.cli().args(["verify"]).output().unwrap().status.success());
    let (code, json) = check(&t, &["--max-age", "1d", "--max-size-change", "20%"]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["ok"], true);
    assert_eq!(json["groups"][0]["backups"], 2);

    backup(20_000);
    assert!(t.cli().args(["verify"]).output().unwrap().status.success());
    let (code, json) = check(&t, &["--max-age", "1d", "--max-size-change", "20"]);
    assert_eq!(code, Some(9));
    let group = &json["groups"][0];
    assert!(group["group"].as_str().unwrap().contains("streams=db.bin"), "{group}");
    assert!(group["failures"][0].as_str().unwrap().contains("-81.0%"), "{group}");
    let out = t.cli().args(["check", "--max-size-change", "20"]).output().unwrap();
    assert_eq!(out.status.code(), Some(9));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("FAILED source="), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("check failed for 1 of 1 groups"));
    // Checks are not logged: only the three backups and two verifies are.
    let log = t.cli().args(["--json", "log"]).output().unwrap();
    let log: Value = serde_json::from_slice(&log.stdout).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 5);
}
