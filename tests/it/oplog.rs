//! The operation log: every logged command appends one encrypted record (failures too),
//! `qvault log` shows them, and a log that cannot be written never fails the command.

use crate::support::{backup_bytes, TestRepo};
use qvault::oplog::{self, OpRecord, Outcome};
use serde_json::Value;

fn run(cmd: &mut std::process::Command) -> std::process::Output {
    cmd.output().unwrap()
}

fn log_json(t: &TestRepo) -> Vec<Value> {
    let out = run(t.cli().args(["--json", "log"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_logged_command_appends_a_record_failures_included() {
    let t = TestRepo::new(None).await;
    let input = t.dir.path().join("in.bin");
    std::fs::write(&input, qvault_synth::pseudo_random(200_000, 3)).unwrap();
    let out = run(t.cli().args(["--json", "backup", "--name", "db", "--file"]).arg(&input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_string();
    assert!(run(t.cli().args(["verify"])).status.success());
    let restored = t.dir.path().join("out.bin");
    assert!(run(t.cli().args(["restore", "latest", "--to"]).arg(&restored)).status.success());
    // A failure is recorded with its error.
    let out = run(t.cli().args(["restore", "ffffffff", "--to"]).arg(t.dir.path().join("x")));
    assert_eq!(out.status.code(), Some(3));
    // Not logged: listing, and dry runs.
    assert!(run(t.cli().args(["backups"])).status.success());
    assert!(run(t.cli().args(["forget", "--dry-run", "latest"])).status.success());
    assert!(run(t.cli().args(["forget", "latest"])).status.success());

    let log = log_json(&t);
    let ops: Vec<&str> = log.iter().map(|r| r["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["backup", "verify", "restore", "restore", "forget"]);
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        // Without either variable (cron, containers): the uid's name, never "unknown".
        let name = qvault::oplog::user_name();
        assert_ne!(name, "unknown");
        name
    });
    for r in &log {
        assert_eq!(r["user"], user.as_str());
        assert!(!r["host"].as_str().unwrap().is_empty());
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r["id"].as_str().unwrap().len(), 64);
    }
    assert_eq!(log[0]["outcome"], "ok");
    assert_eq!(log[0]["what"], "db");
    assert_eq!(log[0]["backups"][0], id.as_str());
    assert!(log[0]["bytes"].as_u64().unwrap() > 200_000, "bytes added");
    assert_eq!(log[1]["backups"][0], id.as_str());
    assert_eq!(log[1]["what"], "structure");
    assert_eq!(log[2]["bytes"], 200_000);
    assert_eq!(log[3]["outcome"], "failed");
    assert!(log[3]["error"].as_str().unwrap().contains("no backup ffffffff"), "{}", log[3]);
    assert_eq!(log[4]["backups"][0], id.as_str());

    // The records are objects of their own, sealed: no plaintext in storage.
    let objects = std::fs::read_dir(t.location().join("log")).unwrap().count();
    assert_eq!(objects, 5);
    for entry in std::fs::read_dir(t.location().join("log")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("restore"));
    }
    let text = run(t.cli().args(["log", "--last", "2"]));
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains("FAILED: no backup ffffffff"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verify_that_finds_damage_records_the_backups_it_failed() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let a = backup_bytes(&repo, "a", qvault_synth::pseudo_random(100_000, 1)).await;
    let chunk = crate::support::data_chunks(&repo, &a.manifest).await[0];
    let pack = repo.index().locate(&chunk).unwrap().unwrap().pack;
    std::fs::remove_file(t.location().join(qvault::repo::pack_path(&pack))).unwrap();
    let out = run(t.cli().args(["verify", "--read-data-subset", "100%"]));
    assert_eq!(out.status.code(), Some(5));
    let log = log_json(&t);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["outcome"], "failed");
    assert_eq!(log[0]["what"], "read-data-subset 100%");
    assert_eq!(log[0]["failed_backups"][0], a.id.to_hex());
    assert!(log[0]["error"].as_str().unwrap().contains("verify found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_that_cannot_be_written_warns_and_the_command_succeeds() {
    let t = TestRepo::new(None).await;
    // A file where the log directory would go: every append fails.
    std::fs::write(t.location().join("log"), b"in the way").unwrap();
    let input = t.dir.path().join("in.bin");
    std::fs::write(&input, b"some bytes worth keeping").unwrap();
    let out = run(t.cli().args(["backup", "--file"]).arg(&input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: could not append to the operation log"), "{stderr}");
    assert_eq!(t.open().await.backups().unwrap().len(), 1);
}

#[tokio::test]
async fn records_round_trip_and_damaged_ones_are_skipped() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let mut record = OpRecord::started("backup", "nightly".into());
    record.bytes = 42;
    let bytes = record.encode().unwrap();
    assert_eq!(&bytes[..8], b"QVLG\x01\x00\x00\x00");
    assert_eq!(OpRecord::decode(&bytes, "r").unwrap(), record);
    let mut future = bytes.clone();
    future[4] = 2;
    let err = OpRecord::decode(&future, "log record x").unwrap_err();
    assert_eq!(err.kind(), qvault::ErrorKind::UnsupportedVersion);

    // Appending needs only the public metadata recipient.
    let id =
        oplog::append(repo.storage(), &repo.key().metadata_recipient(), &record).await.unwrap();
    let second =
        OpRecord { outcome: Outcome::Failed, ..OpRecord::started("verify", String::new()) };
    let id2 =
        oplog::append(repo.storage(), &repo.key().metadata_recipient(), &second).await.unwrap();
    let path = t.location().join("log").join(&id2);
    let mut sealed = std::fs::read(&path).unwrap();
    sealed[0] ^= 1;
    std::fs::write(&path, sealed).unwrap();
    let entries = oplog::read(&repo).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].record, record);
    // Readers that do not know `log/` are not disturbed by it.
    let report = qvault::verify::verify(&repo, &Default::default()).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
