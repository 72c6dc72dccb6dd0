//! `qvault report`: one entry per backup in its group, freshness against --max-age, and a
//! page that needs nothing from a network (rendered in Chromium by .ci/report-check.sh).

use crate::support::{backup_bytes, TestRepo};
use qvault::report::{build, html};
use qvault::retention::GroupBy;
use qvault_synth::pseudo_random;

#[tokio::test(flavor = "multi_thread")]
async fn each_group_lists_its_backups_oldest_first_with_freshness_against_max_age() {
    let dir = TestRepo::new(None).await;
    let repo = dir.open().await;
    let a1 = backup_bytes(&repo, "a.bin", pseudo_random(100_000, 1)).await;
    let a2 = backup_bytes(&repo, "a.bin", pseudo_random(100_000, 1)).await;
    let b1 = backup_bytes(&repo, "b.bin", pseudo_random(50_000, 2)).await;
    let latest: jiff::Timestamp = b1.manifest.time.parse().unwrap();

    let now = latest + jiff::SignedDuration::from_secs(600);
    let report = build(&repo, &GroupBy::default(), Some(300), now).await.unwrap();
    assert_eq!(report.backups, 3);
    assert_eq!(report.groups.len(), 2, "one group per stream name");
    let a = report.groups.iter().find(|g| g.key.contains("a.bin")).unwrap();
    let ids: Vec<_> = a.backups.iter().map(|b| b.id).collect();
    assert_eq!(ids, [a1.id, a2.id], "oldest first");
    assert_eq!(a.backups[1].dedup_ratio, None, "the unchanged backup added nothing");
    assert!(a.backups[0].bytes_added > 100_000);
    let b = report.groups.iter().find(|g| g.key.contains("b.bin")).unwrap();
    assert_eq!(b.latest_age_seconds, Some(600));
    assert_eq!(b.fresh, Some(false), "600 s old against a 300 s max age");
    let report = build(&repo, &GroupBy::default(), Some(900), now).await.unwrap();
    assert!(report.groups.iter().all(|g| g.fresh == Some(true)));

    let page = html(&report);
    assert_eq!(page.matches("class=\"point\"").count(), 3, "one point per backup");
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
}

/// Parses Prometheus text format with a real parser; returns (metric, labels, value) samples.
pub(crate) fn parse_prometheus(
    text: &str,
) -> Vec<(String, std::collections::HashMap<String, String>, f64)> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                other => panic!("unexpected {other:?}"),
            };
            let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (s.metric, labels, value)
        })
        .collect()
}

#[test]
fn the_metrics_file_parses_and_names_the_command_and_each_group() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_qvault"))
            .args(args)
            .env("QVAULT_REPOSITORY", dir.path().join("repo"))
            .env("QVAULT_CACHE_DIR", dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("QVAULT_IDENTITY", dir.path().join("id.txt"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let identity = dir.path().join("id.txt");
    assert!(run(&["-q", "init", "--identity", identity.to_str().unwrap()]).status.success());
    let data = dir.path().join("data.bin");
    std::fs::write(&data, pseudo_random(300_000, 9)).unwrap();
    let metrics = dir.path().join("qvault.prom");
    let out = run(&[
        "--metrics-file",
        metrics.to_str().unwrap(),
        "backup",
        "--file",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let samples = parse_prometheus(&std::fs::read_to_string(&metrics).unwrap());
    let find = |name: &str| {
        samples.iter().find(|(m, _, _)| m == name).unwrap_or_else(|| panic!("{name}: {samples:?}"))
    };
    let (_, labels, code) = find("qvault_command_exit_code");
    assert_eq!((labels["command"].as_str(), *code), ("backup", 0.0));
    let (_, labels, size) = find("qvault_backup_last_size_bytes");
    assert_eq!(*size, 300_000.0);
    assert!(labels.get("group").is_some_and(|g| g.contains("data.bin")), "{labels:?}");
    assert!(find("qvault_backup_last_success_timestamp_seconds").2 > 1.7e9);
    assert_eq!(find("qvault_repository_backups").2, 1.0);
    assert!(!dir.path().join("qvault.prom.partial").exists());

    // A failed command is recorded too, and `qvault metrics` prints the same families.
    let out = run(&["--metrics-file", metrics.to_str().unwrap(), "restore", "nope", "--to", "x"]);
    assert_eq!(out.status.code(), Some(2), "not a backup id: a usage error");
    let samples = parse_prometheus(&std::fs::read_to_string(&metrics).unwrap());
    let code = samples.iter().find(|(m, _, _)| m == "qvault_command_exit_code").unwrap();
    assert_eq!((code.1["command"].as_str(), code.2), ("restore", 2.0));
    let out = run(&["metrics"]);
    assert!(out.status.success());
    let printed = parse_prometheus(&String::from_utf8(out.stdout).unwrap());
    assert!(printed.iter().any(|(m, _, v)| m == "qvault_backup_last_added_bytes" && *v > 0.0));
}

/// Appends a record to the operation log as `verify` (or `--restore-test`) would, at `time`.
async fn log_check(
    repo: &qvault::Repository,
    time: &str,
    what: &str,
    checked: &[qvault::BackupId],
    failed: &[qvault::BackupId],
    seconds: u64,
) {
    let mut record = qvault::oplog::OpRecord::started("verify", what.to_string());
    record.time = time.to_string();
    record.backups = checked.to_vec();
    record.failed_backups = failed.to_vec();
    record.duration_ms = seconds * 1000;
    if !failed.is_empty() {
        record.outcome = qvault::oplog::Outcome::Failed;
    }
    let recipient = repo.key().metadata_recipient();
    qvault::oplog::append(repo.storage(), &recipient, &record).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_group_shows_its_last_verify_and_restore_test_and_the_recovery_time_against_the_rto() {
    use qvault::report::{build_with, prometheus, ReportOptions};
    let dir = TestRepo::new(None).await;
    let repo = dir.open().await;
    let a = backup_bytes(&repo, "a.bin", pseudo_random(60_000, 1)).await;
    let b = backup_bytes(&repo, "b.bin", pseudo_random(60_000, 2)).await;
    log_check(&repo, "2026-11-01T01:00:00.000Z", "structure", &[a.id, b.id], &[], 2).await;
    log_check(&repo, "2026-11-02T01:00:00.000Z", "read-data", &[a.id, b.id], &[b.id], 9).await;
    log_check(&repo, "2026-11-03T01:00:00.000Z", "restore-test", &[a.id], &[], 90).await;
    log_check(&repo, "2026-11-04T01:00:00.000Z", "restore-test", &[b.id], &[b.id], 30).await;
    // A record from a newer qvault, with a field this one does not know, still counts.
    let newer = br#"{"time":"2026-11-05T01:00:00.000Z","host":"h","user":"u","operation":"verify","what":"restore-test --qdrant","outcome":"ok","duration_ms":45000,"backups":[],"qdrant_restore_ms":41000}"#;
    let mut plain = b"QVLG".to_vec();
    plain.extend(1u32.to_le_bytes());
    plain.extend_from_slice(newer);
    let mut record = qvault::oplog::OpRecord::decode(&plain, "a newer record").unwrap();
    assert!(record.is_restore_test());
    record.backups = vec![a.id];
    let recipient = repo.key().metadata_recipient();
    qvault::oplog::append(repo.storage(), &recipient, &record).await.unwrap();

    let now = "2026-11-06T00:00:00Z".parse().unwrap();
    let options = ReportOptions { rto_seconds: Some(60), ..Default::default() };
    let report = build_with(&repo, &options, now).await.unwrap();
    let group = |name: &str| report.groups.iter().find(|g| g.key.contains(name)).unwrap();
    let (ga, gb) = (group("a.bin"), group("b.bin"));
    assert_eq!(report.rto_seconds, Some(60));

    let verify = ga.last_verify.as_ref().unwrap();
    assert_eq!((verify.time.as_str(), verify.passed), ("2026-11-02T01:00:00.000Z", true));
    let test = ga.last_restore_test.as_ref().unwrap();
    assert_eq!(
        (test.what.as_str(), test.passed, test.duration_seconds),
        ("restore-test --qdrant", true, 45.0)
    );
    assert_eq!(ga.rto_met, Some(true), "45 s within a 60 s RTO");

    let verify = gb.last_verify.as_ref().unwrap();
    assert!(!verify.passed, "the read-data verify found b damaged");
    assert_eq!(gb.last_verify_success.as_deref(), Some("2026-11-01T01:00:00.000Z"));
    assert!(!gb.last_restore_test.as_ref().unwrap().passed);
    assert_eq!(gb.last_restore_test_success, None);
    assert_eq!(gb.rto_met, Some(false), "a failed restore test meets no RTO");

    let json = serde_json::to_value(&report).unwrap();
    let ja =
        json["groups"].as_array().unwrap().iter().find(|g| g["key"] == ga.key.as_str()).unwrap();
    assert_eq!(ja["last_restore_test"]["duration_seconds"], 45.0);
    assert_eq!(ja["rto_met"], true);
    let page = html(&report);
    assert!(page.contains("within the RTO of 60 s"), "{page}");
    assert!(page.contains("the RTO of 60 s is not met: the restore failed"), "{page}");

    let samples = parse_prometheus(&prometheus(&report));
    let value = |metric: &str, group: &str| {
        samples
            .iter()
            .find(|(m, l, _)| m == metric && l["group"].contains(group))
            .map(|(_, _, v)| *v)
    };
    let day = |d: i64| {
        "2026-11-01T01:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second() as f64
            + (d * 86_400) as f64
    };
    assert_eq!(value("qvault_verify_last_success_timestamp_seconds", "a.bin"), Some(day(1)));
    assert_eq!(value("qvault_verify_last_run_success", "a.bin"), Some(1.0));
    assert_eq!(value("qvault_verify_last_success_timestamp_seconds", "b.bin"), Some(day(0)));
    assert_eq!(value("qvault_verify_last_run_success", "b.bin"), Some(0.0));
    assert_eq!(value("qvault_restore_test_duration_seconds", "a.bin"), Some(45.0));
    assert_eq!(value("qvault_restore_test_last_success_timestamp_seconds", "a.bin"), Some(day(4)));
    assert_eq!(value("qvault_restore_test_last_run_success", "b.bin"), Some(0.0));
    assert_eq!(value("qvault_restore_test_last_success_timestamp_seconds", "b.bin"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_test_of_several_groups_charges_each_group_its_own_restore_time() {
    use qvault::oplog::RestoreTime;
    use qvault::report::{build_with, ReportOptions};
    let dir = TestRepo::new(None).await;
    let repo = dir.open().await;
    let a = backup_bytes(&repo, "a.bin", pseudo_random(60_000, 1)).await;
    let b = backup_bytes(&repo, "b.bin", pseudo_random(60_000, 2)).await;
    let mut record = qvault::oplog::OpRecord::started("verify", "restore-test".to_string());
    record.time = "2026-11-05T01:00:00.000Z".to_string();
    record.backups = vec![a.id, b.id];
    record.duration_ms = 95_000;
    let time =
        |backup, ms| RestoreTime { backup, stream: "s".into(), restore_ms: ms, passed: true };
    record.restore_times = vec![time(a.id, 20_000), time(b.id, 70_000)];
    let recipient = repo.key().metadata_recipient();
    qvault::oplog::append(repo.storage(), &recipient, &record).await.unwrap();

    let now = "2026-11-06T00:00:00Z".parse().unwrap();
    let options = ReportOptions { rto_seconds: Some(60), ..Default::default() };
    let report = build_with(&repo, &options, now).await.unwrap();
    let group = |name: &str| report.groups.iter().find(|g| g.key.contains(name)).unwrap();
    let seconds = |name: &str| group(name).last_restore_test.as_ref().unwrap().duration_seconds;
    assert_eq!((seconds("a.bin"), seconds("b.bin")), (20.0, 70.0), "not the run's 95 s each");
    assert_eq!((group("a.bin").rto_met, group("b.bin").rto_met), (Some(true), Some(false)));
}
