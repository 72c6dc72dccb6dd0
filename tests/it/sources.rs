//! The library's stream sources and what the pipeline refuses from them: a command that
//! fails, an empty stream, a file that changes while it is read. Nothing is recorded in
//! each refused case; the accepted ones restore byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use qvault::backup::{backup, BackupOptions, OnChange, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::repo::Repository;
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::{backup_bytes, restore_bytes, TestRepo};

async fn run(
    repo: &Repository,
    source: StreamSource,
    options: &BackupOptions,
) -> qvault::Result<qvault::backup::BackupSummary> {
    backup(repo, vec![source], options, Arc::default()).await
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_exits_non_zero_records_nothing_and_is_named() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    // Output first, failure last: the failure must still win.
    let source = StreamSource::command("sh", &args(&["-c", "printf abc; exit 3"])).unwrap();
    let err = run(&repo, source, &BackupOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let text = err.to_string();
    assert!(text.contains("no backup recorded"), "{text}");
    assert!(text.contains("command `sh -c 'printf abc; exit 3'` exited with status 3"), "{text}");
    assert!(repo.backups().unwrap().is_empty());

    let source = StreamSource::command("sh", &args(&["-c", "kill -9 $$"])).unwrap();
    let err = run(&repo, source, &BackupOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("was killed"), "{err}");
    assert!(repo.backups().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_is_named() {
    let t = TestRepo::new(None).await;
    let err = StreamSource::command("/nonexistent/qvault-no-such-tool", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("starting command `/nonexistent/qvault-no-such-tool`"));
    assert!(t.open().await.backups().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_succeeds_is_one_stdin_stream_with_its_command_line() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let source = StreamSource::command("sh", &args(&["-c", "printf abc"])).unwrap();
    let summary = run(&repo, source, &BackupOptions::default()).await.unwrap();
    let stream = &summary.manifest.streams[0];
    assert_eq!(stream.name, "sh");
    assert_eq!(stream.kind, StreamKind::Stdin);
    assert_eq!(stream.source, Some(serde_json::json!({ "command": ["sh", "-c", "printf abc"] })));
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), b"abc");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_stream_is_refused_unless_allowed() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let empty = || StreamSource {
        name: "nothing".into(),
        kind: StreamKind::Stdin,
        reader: Box::new(std::io::empty()),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    let err = run(&repo, empty(), &BackupOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("stream \"nothing\" is empty (0 bytes)"), "{err}");
    assert!(repo.backups().unwrap().is_empty());

    let allow = BackupOptions { allow_empty: true, ..Default::default() };
    let summary = run(&repo, empty(), &allow).await.unwrap();
    assert_eq!(summary.manifest.streams[0].size, 0);
    assert_eq!(summary.dedup_ratio(), None);
    assert!(restore_bytes(&repo, &summary).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_dedup_backup_has_no_ratio_and_valid_json() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let data = pseudo_random(100_000, 3);
    let first = backup_bytes(&repo, "d", data.clone()).await;
    assert!(first.dedup_ratio().unwrap() > 0.0);
    let again = backup_bytes(&repo, "d", data).await;
    assert_eq!(again.manifest.summary.bytes_added, 0);
    assert_eq!(again.dedup_ratio(), None);
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&again).unwrap()).unwrap();
    assert!(json["dedup_ratio"].is_null(), "{json}");
    assert_eq!(json["bytes_read"], 100_000);
    assert_eq!(json["new_chunks"], 0);
    assert_eq!(json["id"], again.id.to_string());
    assert_eq!(json["streams"][0]["name"], "d");
    assert_eq!(json["streams"][0]["kind"], "file");
}

/// Grows `path` after the source took its stamp and before the pipeline reads it: the read
/// ends at a length the file did not have when it was opened.
fn grow(path: &std::path::Path) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"more").unwrap();
}

static NOTIFIED: AtomicUsize = AtomicUsize::new(0);

fn count_notice(message: &str) {
    assert!(message.contains("changed while it was read"), "{message}");
    NOTIFIED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_changes_while_read_fails_or_is_reported() {
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let path = t.dir.path().join("growing.bin");
    std::fs::write(&path, pseudo_random(50_000, 4)).unwrap();

    let (source, size) = StreamSource::file(&path, OnChange::Fail).unwrap();
    assert_eq!(size, 50_000);
    grow(&path);
    let err = run(&repo, source, &BackupOptions::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let text = err.to_string();
    assert!(text.contains(&format!("{} changed while it was read", path.display())), "{text}");
    assert!(text.contains("50000 bytes when opened, 50004 read"), "{text}");
    assert!(repo.backups().unwrap().is_empty());

    // Warned, not failed: the stream holds what was read.
    let (source, _) = StreamSource::file(&path, OnChange::Notify(count_notice)).unwrap();
    grow(&path);
    let summary = run(&repo, source, &BackupOptions::default()).await.unwrap();
    assert_eq!(NOTIFIED.load(Ordering::SeqCst), 1);
    assert_eq!(restore_bytes(&repo, &summary).await.unwrap(), std::fs::read(&path).unwrap());

    // Unchanged: no notice.
    let (source, _) = StreamSource::file(&path, OnChange::Notify(count_notice)).unwrap();
    run(&repo, source, &BackupOptions::default()).await.unwrap();
    assert_eq!(NOTIFIED.load(Ordering::SeqCst), 1);
}
