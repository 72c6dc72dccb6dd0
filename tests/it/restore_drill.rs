//! `verify --restore-test`: the latest backup of each group restored to scratch, read back
//! and compared (size, SHA-256, BLAKE3), with the time each restore took.

use crate::support::{backup_bytes, TestRepo};
use qvault::backup::{backup, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::restore_test::{restore_test, RestoreTestOptions};
use qvault_synth::pseudo_random;
use serde_json::Value;

fn make_tree(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("collections/c/0/segments")).unwrap();
    std::fs::write(root.join("collections/c/0/segments/vectors.dat"), pseudo_random(300_000, 1))
        .unwrap();
    std::fs::write(root.join("collections/c/config.json"), br#"{"params":{}}"#).unwrap();
    std::fs::write(root.join("raft_state.json"), b"{}").unwrap();
}

async fn backup_dir(repo: &qvault::repo::Repository, dir: &std::path::Path) -> qvault::BackupId {
    let source = StreamSource {
        name: "storage".into(),
        kind: StreamKind::Directory,
        reader: qvault::dirtar::tar_reader(dir).unwrap(),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    backup(repo, vec![source], &Default::default(), Default::default()).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_latest_backup_of_each_group_restores_and_matches() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    backup_bytes(&repo, "db.bin", pseudo_random(100_000, 1)).await;
    let latest_file = backup_bytes(&repo, "db.bin", pseudo_random(120_000, 2)).await;
    let tree = t.dir.path().join("tree");
    make_tree(&tree);
    let dir = backup_dir(&repo, &tree).await;
    let scratch = t.dir.path().join("scratch");
    let options = RestoreTestOptions { scratch: Some(scratch.clone()), ..Default::default() };
    let report = restore_test(&repo, &options).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.skipped.is_empty());
    let mut tested: Vec<_> = report.streams.iter().map(|s| (s.backup, s.stream.clone())).collect();
    tested.sort();
    let mut want = vec![(latest_file.id, "db.bin".to_string()), (dir, "storage".to_string())];
    want.sort();
    assert_eq!(tested, want, "only the latest of each group");
    let file = report.streams.iter().find(|s| s.stream == "db.bin").unwrap();
    assert_eq!(file.size, 120_000);
    assert!(file.error.is_none());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "scratch copies are removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_backup_fails_its_stream_and_the_others_are_still_tested() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let a = backup_bytes(&repo, "a.bin", pseudo_random(100_000, 3)).await;
    let b = backup_bytes(&repo, "b.bin", pseudo_random(100_000, 4)).await;
    let pack = repo
        .index()
        .locate(&crate::support::data_chunks(&repo, &a.manifest).await[0])
        .unwrap()
        .unwrap()
        .pack;
    let path = t.location().join(qvault::repo::pack_path(&pack));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let options = RestoreTestOptions {
        backups: vec![a.id.to_hex(), b.id.to_hex()],
        scratch: Some(t.dir.path().join("scratch")),
        ..Default::default()
    };
    let report = restore_test(&repo, &options).await.unwrap();
    assert!(!report.is_ok());
    let failed = report.streams.iter().find(|s| s.backup == a.id).unwrap();
    assert!(!failed.passed);
    assert!(failed.error.as_deref().unwrap().starts_with("the restore failed:"), "{failed:?}");
    assert!(report.streams.iter().find(|s| s.backup == b.id).unwrap().passed);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_restore_test_reports_timings_logs_a_verify_and_satisfies_check() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("db.bin");
    std::fs::write(&input, pseudo_random(50_000, 9)).unwrap();
    let out = t.cli().args(["backup", "--file"]).arg(&input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = t
        .cli()
        .args(["--json", "verify", "--restore-test", "--scratch"])
        .arg(t.dir.path().join("scratch"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &json["streams"][0];
    assert_eq!(stream["passed"], true);
    assert_eq!(stream["size"], 50_000);
    assert!(stream["restore_ms"].is_u64() && stream["compare_ms"].is_u64());
    let log: Value =
        serde_json::from_slice(&t.cli().args(["--json", "log"]).output().unwrap().stdout).unwrap();
    assert_eq!(log[1]["operation"], "verify");
    assert_eq!(log[1]["what"], "restore-test");
    let out = t.cli().args(["check", "--max-age", "1d"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out = t.cli().args(["verify", "--restore-test", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
