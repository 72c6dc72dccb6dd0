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
fn parse_prometheus(text: &str) -> Vec<(String, std::collections::HashMap<String, String>, f64)> {
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
