//! `qvault forget`: what a policy removes, what it refuses, and that what stays restores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use qvault::backup::BackupSummary;
use std::process::Output;
use support::TestRepo;

fn data(len: usize, seed: u8) -> Vec<u8> {
    qvault_synth::pseudo_random(len, u64::from(seed))
}

/// A repository with three backups of one stream, oldest first.
async fn three_backups() -> (TestRepo, Vec<BackupSummary>, Vec<Vec<u8>>) {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let mut summaries = Vec::new();
    let mut inputs = Vec::new();
    for seed in 1..=3 {
        let input = data(300_000, seed);
        summaries.push(support::backup_bytes(&repo, "data.bin", input.clone()).await);
        inputs.push(input);
        // Distinct milliseconds, so "latest" is the last one written.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (t, summaries, inputs)
}

fn forget(t: &TestRepo, args: &[&str]) -> Output {
    t.cli().arg("forget").args(args).output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The manifests in the repository, by full id.
fn stored_backups(t: &TestRepo) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.location().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn ids(summaries: &[BackupSummary]) -> Vec<String> {
    let mut ids: Vec<String> = summaries.iter().map(|s| s.id.to_hex()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn dry_run_lists_every_backup_with_its_rules_and_deletes_nothing() {
    let (t, summaries, _) = three_backups().await;
    let out = forget(&t, &["--keep-last", "1", "--keep-daily", "1", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(keep-last 1, keep-daily 1)"), "{text}");
    for (i, s) in summaries.iter().enumerate() {
        let line = text.lines().find(|l| l.contains(&s.id.short())).unwrap();
        if i == 2 {
            assert!(line.ends_with("keep: last, daily"), "{line}");
        } else {
            assert!(line.ends_with("remove"), "{line}");
        }
    }
    assert!(text.contains("dry run: 2 of 3 backups would be forgotten (time zone UTC)"), "{text}");
    assert_eq!(stored_backups(&t), ids(&summaries));
}

#[tokio::test]
async fn keep_last_1_leaves_exactly_the_latest_and_it_restores_byte_exact() {
    let (t, summaries, inputs) = three_backups().await;
    let packs_and_index_files = || {
        let mut files = Vec::new();
        for dir in ["data", "index"] {
            for entry in walk(&t.location().join(dir)) {
                files.push((entry.clone(), std::fs::read(&entry).unwrap()));
            }
        }
        files.sort();
        files
    };
    let before = packs_and_index_files();
    assert!(before.len() >= 2, "the backups wrote packs and index files");
    let out = forget(&t, &["--keep-last", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("forgot 2 backups, kept 1"), "{}", stdout(&out));
    assert_eq!(stored_backups(&t), [summaries[2].id.to_hex()]);
    // Forget removes manifests only: every pack and index file is still there, unchanged.
    assert_eq!(packs_and_index_files(), before);

    let listed = t.cli().args(["backups", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], summaries[2].id.to_hex());

    let target = t.dir.path().join("restored.bin");
    let out = t.cli().args(["restore", "latest", "--to"]).arg(&target).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), inputs[2]);
    // The library's view, with its own cache, agrees.
    let repo = t.open().await;
    assert_eq!(repo.backups().unwrap().len(), 1);
    assert_eq!(support::restore_bytes(&repo, &summaries[2]).await.unwrap(), inputs[2]);
}

#[tokio::test]
async fn a_policy_that_would_empty_a_group_is_refused_with_exit_8_unless_allow_empty() {
    let (t, summaries, _) = three_backups().await;
    let out = forget(&t, &["--keep-tag", "release"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("would remove every backup of source="), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    assert_eq!(stored_backups(&t), ids(&summaries));

    let out = forget(&t, &["--keep-tag", "release", "--allow-empty"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stored_backups(&t).is_empty());
}

#[tokio::test]
async fn no_policy_is_refused_with_exit_2() {
    let (t, summaries, _) = three_backups().await;
    let out = forget(&t, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("no retention policy"), "{}", stderr(&out));
    let out = forget(&t, &["latest", "--keep-last", "1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = forget(&t, &["--keep-within", "7 days"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = forget(&t, &["--keep-last", "1", "--time-zone", "Mars/Olympus"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown time zone \"Mars/Olympus\""), "{}", stderr(&out));
    assert_eq!(stored_backups(&t), ids(&summaries));
}

#[tokio::test]
async fn explicit_ids_prefixes_and_latest_forget_exactly_those() {
    let (t, summaries, _) = three_backups().await;
    let prefix = &summaries[0].id.to_hex()[..8];
    let out = forget(&t, &[prefix, "latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stored_backups(&t), [summaries[1].id.to_hex()]);
    // The last one of its group goes too when it is named.
    let out = forget(&t, &["latest"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stored_backups(&t).is_empty());
    let out = forget(&t, &[prefix]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[tokio::test]
async fn json_report_has_the_plan_and_what_was_removed_with_the_bundled_zone_data() {
    let (t, summaries, _) = three_backups().await;
    // No system zoneinfo (a distroless image): the bundled tz database still knows Berlin.
    let out = t
        .cli()
        .args(["--json", "forget", "--keep-within-hourly", "7d", "--time-zone", "Europe/Berlin"])
        .env("TZDIR", t.dir.path().join("no-zoneinfo"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["plan"]["time_zone"], "Europe/Berlin");
    assert_eq!(report["plan"]["group_by"], "source,name,streams");
    let group = &report["plan"]["groups"][0];
    assert!(group["key"].as_str().unwrap().ends_with(" streams=data.bin"), "{group}");
    assert_eq!(group["policy"], serde_json::json!({"keep-within-hourly": "7d"}));
    let backups = group["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 3);
    // All three in one hour (almost always): the newest is kept, the others removed.
    let newest = &backups[2];
    assert_eq!(newest["id"], summaries[2].id.to_hex());
    assert_eq!(newest["keep"], serde_json::json!(["within-hourly"]));
    assert_eq!(newest["remove"], false);
    assert!(newest["time"].as_str().unwrap().ends_with('Z'));
    assert!(newest["local_time"].as_str().unwrap().ends_with(":00"));
    let removed = report["removed"].as_array().unwrap();
    assert_eq!(removed.len(), backups.iter().filter(|b| b["remove"] == true).count());
    assert_eq!(report["failed"], serde_json::json!([]));
}

#[tokio::test]
async fn the_config_file_policy_applies_when_no_flags_are_given() {
    let (t, summaries, _) = three_backups().await;
    let dry = forget(&t, &["--dry-run", "--keep-last", "1"]);
    let key = stdout(&dry).lines().next().unwrap().strip_prefix("group ").unwrap().to_string();
    let key = key.split("  (").next().unwrap().to_string();
    let config = t.dir.path().join("qvault.toml");
    std::fs::write(
        &config,
        format!(
            "[forget]\nkeep-last = 1\ntime-zone = \"Europe/Berlin\"\n\
             [forget.groups.\"{key}\"]\nkeep-last = 2\n\
             [forget.groups.\"source=elsewhere streams=x\"]\nkeep-last = 5\n"
        ),
    )
    .unwrap();
    let out = forget(&t, &["--config", config.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("(keep-last 2)"), "{}", stdout(&out));
    assert!(stderr(&out).contains("group \"source=elsewhere streams=x\", which holds no backup"));
    assert_eq!(stored_backups(&t), ids(&summaries[1..]));

    std::fs::write(&config, "[forget]\nkeep-lats = 1\n").unwrap();
    let out = forget(&t, &["--config", config.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("keep-lats"), "{}", stderr(&out));
}
