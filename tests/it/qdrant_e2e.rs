//! Qdrant backup and restore end to end against the fake Qdrant over loopback: through the
//! library, and through the `qvault` binary as a user would type it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::fake_qdrant;

use std::sync::Arc;
use std::time::Duration;

use fake_qdrant::{append_file, real_snapshot, FakeOptions, FakeQdrant, Fault, KEY, RO_KEY};
use qvault::backup::{BackupOptions, Progress};
use qvault::format::config::ChunkerConfig;
use qvault::format::manifest::StreamRecord;
use qvault::qdrant::backup::{backup_qdrant, QdrantBackupOptions, QdrantBackupReport};
use qvault::qdrant::restore::{
    plan_qdrant_restore, restore_to_qdrant, QdrantRestoreOptions, QdrantRestoreReport,
};
use qvault::qdrant::{QdrantClient, QdrantOptions, SnapshotScope};
use qvault::repo::Repository;
use qvault::restore::RestorePlan;
use qvault::{BackupId, ErrorKind};
use qvault_synth::pseudo_random;
use serde_json::{json, Value};
use support::{sha256_hex, TestRepo};

/// A small collection snapshot tar: config.json plus `payload` as a segment file.
pub(crate) fn snapshot_tar(config: &Value, payload: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| append_file(&mut b, path, data);
    add("config.json", config.to_string().as_bytes());
    add("version.info", b"0.4.2");
    add("0/segments/seg.bin", payload);
    b.into_inner().unwrap()
}

pub(crate) fn small_config(size: u64) -> Value {
    json!({"params": {"vectors": {"size": size, "distance": "Cosine"}, "shard_number": 1,
        "replication_factor": 1, "write_consistency_factor": 1, "on_disk_payload": true}})
}

pub(crate) fn client(fake: &FakeQdrant, key: Option<&str>) -> QdrantClient {
    let mut o = QdrantOptions::new(fake.url());
    o.api_key = key.map(str::to_owned);
    o.retries = 1;
    o.retry_base_delay = Duration::from_millis(10);
    o.retry_max_delay = Duration::from_millis(20);
    o.read_idle_timeout = Duration::from_secs(20);
    QdrantClient::new(o).unwrap()
}

pub(crate) async fn run_backup(
    repo: &Repository,
    client: &QdrantClient,
    scopes: Vec<SnapshotScope>,
) -> qvault::Result<QdrantBackupReport> {
    let options = QdrantBackupOptions { scopes, ..Default::default() };
    backup_qdrant(repo, client, &options, &BackupOptions::default(), Arc::new(Progress::default()))
        .await
}

pub(crate) async fn run_restore(
    repo: &Repository,
    id: BackupId,
    stream: &StreamRecord,
    client: &QdrantClient,
    collection: &str,
) -> qvault::Result<QdrantRestoreReport> {
    let options =
        QdrantRestoreOptions { collection: Some(collection.into()), ..Default::default() };
    plan_and_restore(repo, id, stream, client, &options).await
}

/// Both plans, then the restore: what `qvault restore --qdrant` does.
pub(crate) async fn plan_and_restore(
    repo: &Repository,
    id: BackupId,
    stream: &StreamRecord,
    client: &QdrantClient,
    options: &QdrantRestoreOptions,
) -> qvault::Result<QdrantRestoreReport> {
    let plan = RestorePlan::new(repo, id, stream).await?;
    let target = plan_qdrant_restore(client, id, stream, options).await?;
    restore_to_qdrant(repo, &plan, &target, client, options).await
}

/// The snapshot bytes of the main tests: the real fixture-v0 when present, else generated.
pub(crate) fn fixture_bytes() -> Vec<u8> {
    real_snapshot("fixture-v0.snapshot")
        .unwrap_or_else(|| snapshot_tar(&small_config(64), &pseudo_random(3 << 20, 7)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_into_new_collection_is_byte_identical() {
    let fake = FakeQdrant::with_keys().await;
    let bytes = fixture_bytes();
    fake.set_snapshot_source("fixture", bytes.clone());
    fake.set_points_count("fixture", 3000);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let qdrant = client(&fake, Some(KEY));

    let report =
        run_backup(&repo, &qdrant, vec![SnapshotScope::collection("fixture")]).await.unwrap();
    assert_eq!(report.qdrant_version, "1.18.3");
    assert_eq!(report.snapshots.len(), 1);
    assert_eq!(report.snapshots[0].outcome, "deleted");
    assert!(fake.snapshot_names("fixture").is_empty(), "the snapshot must be gone from the node");
    let stream = &report.summary.manifest.streams[0];
    assert_eq!(stream.sha256, sha256_hex(&bytes));
    let source = stream.source.as_ref().unwrap();
    assert_eq!(source["points_count"], 3000);
    assert_eq!(source["exact_points_count"], 3000);
    assert_eq!(source["qdrant"]["version"], "1.18.3");
    assert_eq!(source["config"], fake.collection_config("fixture").unwrap());
    assert!(source["snapshot"]["name"].as_str().unwrap().starts_with("fixture-"));
    assert!(!source.to_string().contains(KEY), "the key must not be recorded");
    // The create call used wait=true and created exactly one snapshot.
    let creates: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.uri.starts_with("/collections/fixture/snapshots"))
        .collect();
    assert_eq!(creates.len(), 1);
    assert!(creates[0].uri.contains("wait=true"), "{}", creates[0].uri);

    let id = report.summary.id;
    let restored = run_restore(&repo, id, stream, &qdrant, "restored").await.unwrap();
    assert_eq!(fake.recovered("restored").unwrap(), bytes, "byte-identical snapshot");
    assert_eq!(fake.collection_config("restored"), fake.collection_config("fixture"));
    assert_eq!(restored.points_count, Some(3000));
    assert!(restored.uploaded_file_deleted);
    assert!(fake.snapshot_names("restored").is_empty(), "uploaded file must be deleted");
    let upload = fake.requests().into_iter().find(|r| r.uri.contains("/upload")).unwrap();
    assert!(upload.uri.contains(&format!("checksum={}", sha256_hex(&bytes))), "{}", upload.uri);
    println!("restore took {:?}", restored.duration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_collections_and_a_shard_in_one_backup() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.create_collection("a", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    fake.create_collection(
        "b",
        json!({"vectors": {"size": 8, "distance": "Cosine"}, "shard_number": 2}),
    );
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let qdrant = client(&fake, None);
    let scopes = vec![
        SnapshotScope::collection("a"),
        SnapshotScope::collection("b"),
        SnapshotScope::shard("b", 1),
    ];
    let report = run_backup(&repo, &qdrant, scopes).await.unwrap();
    let names: Vec<_> = report.summary.manifest.streams.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["a", "b", "b/shard-1"]);
    assert!(report.snapshots.iter().all(|s| s.outcome == "deleted"), "{:?}", report.snapshots);
    assert!(fake.snapshot_names("a").is_empty() && fake.snapshot_names("b").is_empty());
}

/// Where in the fake's log the first request with `method` and a URI starting with
/// `prefix` is.
fn position(log: &[fake_qdrant::RequestRecord], method: &str, prefix: &str) -> usize {
    log.iter()
        .position(|r| r.method == method && r.uri.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {method} {prefix}… in {log:#?}"))
}

/// Two collections whose snapshots take a moment to stream.
async fn two_collections() -> FakeQdrant {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.set_snapshot_source("a", snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 31)));
    fake.set_snapshot_source("b", snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 32)));
    fake
}

/// Regression: every snapshot was created before the backup started, so with several
/// collections all of them sat on the node while the first streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_snapshot_is_created_only_after_the_previous_one_was_deleted() {
    let fake = two_collections().await;
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let scopes = vec![SnapshotScope::collection("a"), SnapshotScope::collection("b")];
    let report = run_backup(&repo, &client(&fake, None), scopes).await.unwrap();

    let outcomes: Vec<_> = report.snapshots.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!(outcomes, ["deleted", "deleted"]);
    let log = fake.requests();
    let order = [
        position(&log, "POST", "/collections/a/snapshots?"),
        position(&log, "GET", "/collections/a/snapshots/a-"),
        position(&log, "DELETE", "/collections/a/snapshots/a-"),
        position(&log, "POST", "/collections/b/points/count"),
        position(&log, "POST", "/collections/b/snapshots?"),
        position(&log, "GET", "/collections/b/snapshots/b-"),
        position(&log, "DELETE", "/collections/b/snapshots/b-"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order {order:?}: {log:#?}");
    assert_eq!(order[4], order[3] + 1, "b is counted right before its snapshot");
    // Each stream checked against the checksum of its own, late-made snapshot.
    for (stream, snap) in report.summary.manifest.streams.iter().zip(&report.snapshots) {
        let source = stream.source.as_ref().unwrap();
        assert_eq!(source["snapshot"]["name"], snap.name.as_str());
        assert_eq!(source["snapshot"]["checksum"], stream.sha256.as_str());
    }
    assert!(fake.snapshot_names("a").is_empty() && fake.snapshot_names("b").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_download_cut_records_nothing_and_leaves_no_snapshot() {
    let fake = two_collections().await;
    fake.inject(Fault::cut_download("/collections/b/snapshots/", 300_000));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let scopes = vec![SnapshotScope::collection("a"), SnapshotScope::collection("b")];
    let e = run_backup(&repo, &client(&fake, None), scopes).await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Qdrant);
    let msg = e.to_string();
    assert!(msg.contains("no backup recorded") && msg.contains("incomplete"), "{msg}");
    assert!(msg.contains("deleted from the node"), "{msg}");
    assert!(repo.backups().unwrap().is_empty());
    assert!(fake.snapshot_names("a").is_empty() && fake.snapshot_names("b").is_empty());
    let log = fake.requests();
    assert!(
        position(&log, "DELETE", "/collections/a/snapshots/")
            < position(&log, "POST", "/collections/b/snapshots?")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_remote_keeps_every_snapshot() {
    let fake = two_collections().await;
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let options = QdrantBackupOptions {
        scopes: vec![SnapshotScope::collection("a"), SnapshotScope::collection("b")],
        keep_remote: true,
        ..Default::default()
    };
    let report = backup_qdrant(
        &repo,
        &client(&fake, None),
        &options,
        &BackupOptions::default(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let outcomes: Vec<_> = report.snapshots.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!(outcomes, ["kept", "kept"]);
    assert_eq!(fake.snapshot_names("a"), [report.snapshots[0].name.clone()]);
    assert_eq!(fake.snapshot_names("b"), [report.snapshots[1].name.clone()]);
    assert!(!fake.requests().iter().any(|r| r.method == "DELETE"));
}

/// Two backups of one collection with a small change between them: the second stores only
/// (about) the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_backup_stores_only_the_change() {
    let (v0, v1, what) =
        match (real_snapshot("fixture-v0.snapshot"), real_snapshot("fixture-v1.snapshot")) {
            (Some(a), Some(b)) => (a, b, "real fixture-v0 → fixture-v1"),
            _ => {
                eprintln!("!!! real fixtures missing: measuring generated snapshots instead !!!");
                let mut payload = pseudo_random(4 << 20, 3);
                let a = snapshot_tar(&small_config(64), &payload);
                payload[2 << 20..(2 << 20) + 4096].copy_from_slice(&pseudo_random(4096, 99));
                (a, snapshot_tar(&small_config(64), &payload), "generated, 4 KiB changed")
            }
        };
    // The repository default (tuned for multi-GB snapshots) is measured for the record;
    // the assertions use chunks small enough for a few-MB snapshot to dedup at all.
    let small = ChunkerConfig {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 256 * 1024,
        ..Default::default()
    };
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let qdrant = client(&fake, None);
    let mut last = None;
    for (label, chunker) in [("default chunker", None), ("16/64/256 KiB chunker", Some(small))] {
        let repo_dir = TestRepo::new(chunker).await;
        let repo = repo_dir.open().await;
        fake.set_snapshot_source("fixture", v0.clone());
        let first =
            run_backup(&repo, &qdrant, vec![SnapshotScope::collection("fixture")]).await.unwrap();
        fake.set_snapshot_source("fixture", v1.clone());
        let second =
            run_backup(&repo, &qdrant, vec![SnapshotScope::collection("fixture")]).await.unwrap();
        let (a, b) = (&first.summary.manifest.summary, &second.summary.manifest.summary);
        println!(
            "dedup ({what}, {label}): first backup read {} added {} ({} chunks); second read {} \
             added {} ({} of {} chunks new)",
            a.bytes_read,
            a.bytes_added,
            a.chunks,
            b.bytes_read,
            b.bytes_added,
            b.new_chunks,
            b.chunks
        );
        last = Some((first, second));
    }
    let (first, second) = last.unwrap();
    let (a, b) = (&first.summary.manifest.summary, &second.summary.manifest.summary);
    assert_eq!(second.summary.manifest.streams[0].sha256, sha256_hex(&v1));
    assert!(b.bytes_added < a.bytes_added, "the second backup must add less than the first");
    assert!(b.new_chunks < b.chunks, "the second backup must reuse chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_missing_collection_errors_record_nothing() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection("c", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let scope = || vec![SnapshotScope::collection("c")];

    // 401: no key.
    let e = run_backup(&repo, &client(&fake, None), scope()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Qdrant);
    assert!(e.to_string().contains("401") && e.to_string().contains("API key"), "{e}");

    // 401: wrong key, which must not be echoed.
    let e = run_backup(&repo, &client(&fake, Some("wrong-key-xyz")), scope()).await.unwrap_err();
    assert!(e.to_string().contains("401") && !e.to_string().contains("wrong-key-xyz"), "{e}");

    // 403: a read-only key may read the collection but not create a snapshot.
    let e = run_backup(&repo, &client(&fake, Some(RO_KEY)), scope()).await.unwrap_err();
    assert!(e.to_string().contains("403") && e.to_string().contains("manage access"), "{e}");
    assert!(!e.to_string().contains(RO_KEY) && !format!("{e:?}").contains(RO_KEY));
    assert!(e.to_string().contains("no backup recorded"), "{e}");

    // 404: no such collection, found before anything is created.
    let e = run_backup(&repo, &client(&fake, Some(KEY)), vec![SnapshotScope::collection("nope")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("nope"), "{e}");

    assert!(repo.backups().unwrap().is_empty());
    assert!(fake.snapshot_names("c").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_on_create_records_nothing_and_cleans_up_earlier_snapshots() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.create_collection("a", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    fake.create_collection("b", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    fake.inject(Fault::status(Some(axum::http::Method::POST), "/collections/b/snapshots", 500, 1));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let scopes = vec![SnapshotScope::collection("a"), SnapshotScope::collection("b")];
    let e = run_backup(&repo, &client(&fake, None), scopes).await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Qdrant);
    assert!(e.to_string().contains("500") && e.to_string().contains("no backup recorded"), "{e}");
    assert!(repo.backups().unwrap().is_empty());
    assert!(fake.snapshot_names("a").is_empty(), "a's snapshot must be deleted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_cut_half_way_records_no_backup_and_deletes_the_snapshot() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(2 << 20, 5));
    fake.set_snapshot_source("c", bytes.clone());
    fake.inject(Fault::cut_download("/collections/c/snapshots/", bytes.len() as u64 / 2));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let e = run_backup(&repo, &client(&fake, None), vec![SnapshotScope::collection("c")])
        .await
        .unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Qdrant);
    let msg = e.to_string();
    assert!(msg.contains("no backup recorded") && msg.contains("incomplete"), "{msg}");
    assert!(msg.contains("deleted from the node"), "{msg}");
    assert!(repo.backups().unwrap().is_empty());
    assert!(fake.snapshot_names("c").is_empty(), "the remote snapshot must be deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_on_download_records_no_backup() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.create_collection("c", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    fake.inject(Fault::wrong_checksum("c"));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let e = run_backup(&repo, &client(&fake, None), vec![SnapshotScope::collection("c")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("no backup recorded"), "{e}");
    assert!(repo.backups().unwrap().is_empty());
    assert!(fake.snapshot_names("c").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_snapshot_is_archived_and_left_alone() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.create_collection("c", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    let qdrant = client(&fake, None);
    let made = qdrant.create_snapshot(&SnapshotScope::collection("c"), true).await.unwrap();
    let made = made.unwrap();
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let options = QdrantBackupOptions {
        scopes: vec![SnapshotScope::collection("c")],
        existing_snapshot: Some(made.name.clone()),
        ..Default::default()
    };
    let report = backup_qdrant(
        &repo,
        &qdrant,
        &options,
        &BackupOptions::default(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert_eq!(report.snapshots[0].outcome, "not ours");
    assert_eq!(fake.snapshot_names("c"), vec![made.name]);
}

/// Backs up `c` (4 dims) and returns the repository, backup id and stream.
async fn backed_up(fake: &FakeQdrant) -> (TestRepo, BackupId, StreamRecord) {
    backed_up_with_points(fake, 0).await
}

/// Like [`backed_up`], with `points` points in `c`.
async fn backed_up_with_points(
    fake: &FakeQdrant,
    points: u64,
) -> (TestRepo, BackupId, StreamRecord) {
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 11));
    fake.set_snapshot_source("c", bytes);
    fake.set_points_count("c", points);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report =
        run_backup(&repo, &client(fake, None), vec![SnapshotScope::collection("c")]).await.unwrap();
    let stream = report.summary.manifest.streams[0].clone();
    (repo_dir, report.summary.id, stream)
}

/// Regression: restore compared collection info's `points_count`, which Qdrant documents as
/// approximate, with strict equality. The backup now also records an exact count, taken just
/// before the snapshot, and restore counts exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_compares_exact_counts_not_estimates() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 11));
    fake.set_snapshot_source("c", bytes);
    fake.set_points_count("c", 3000);
    // The optimizer is at work: collection info counts some points twice.
    fake.set_estimated_points_count("c", Some(3017));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let qdrant = client(&fake, None);
    let report = run_backup(&repo, &qdrant, vec![SnapshotScope::collection("c")]).await.unwrap();
    let stream = &report.summary.manifest.streams[0];
    let source = stream.source.as_ref().unwrap();
    assert_eq!(source["points_count"], 3017, "collection info is recorded as before");
    assert_eq!(source["collection_info"]["points_count"], 3017);
    assert_eq!(source["exact_points_count"], 3000);
    // Counted just before the snapshot was made: the request right before the create.
    let log = fake.requests();
    let create = log
        .iter()
        .position(|r| r.method == "POST" && r.uri.starts_with("/collections/c/snapshots"))
        .unwrap();
    assert_eq!(
        (log[create - 1].method.as_str(), log[create - 1].uri.as_str()),
        ("POST", "/collections/c/points/count")
    );

    let restored = run_restore(&repo, report.summary.id, stream, &qdrant, "copy").await.unwrap();
    assert_eq!(restored.points_count, Some(3000));
    assert!(restored.warnings.is_empty(), "{:?}", restored.warnings);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "POST" && r.uri == "/collections/copy/points/count"),
        "the restored collection is counted exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_with_another_exact_count_fails_showing_both_counts() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up_with_points(&fake, 3000).await;
    let repo = repo_dir.open().await;
    // The recovered collection ends up one point short.
    fake.set_points_count("c", 2999);
    let e = run_restore(&repo, id, &stream, &client(&fake, None), "copy").await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Qdrant);
    let msg = e.to_string();
    assert!(msg.contains("collection `copy`") && msg.contains(&id.to_string()), "{msg}");
    assert!(msg.contains("holds 2999 points") && msg.contains("counted 3000"), "{msg}");
    assert!(msg.contains("written to") && msg.contains("check the Qdrant log"), "{msg}");
    assert!(fake.recovered("copy").is_some(), "Qdrant did recover: the error says what next");
}

/// A backup that recorded only collection info's estimate (made before qvault counted
/// exactly, or of an existing snapshot) cannot prove a difference: restore warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_against_an_estimate_warns_on_a_difference() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, mut stream) = backed_up_with_points(&fake, 3000).await;
    let repo = repo_dir.open().await;
    let source = stream.source.as_mut().unwrap().as_object_mut().unwrap();
    assert!(source.remove("exact_points_count").is_some());
    source.insert("points_count".into(), json!(3017));
    let report = run_restore(&repo, id, &stream, &client(&fake, None), "copy").await.unwrap();
    assert_eq!(report.points_count, Some(3000));
    assert!(!report.plan.expected_points_exact);
    let [warning] = report.warnings.as_slice() else {
        panic!("one warning expected: {:?}", report.warnings)
    };
    assert!(warning.contains("collection `copy`") && warning.contains("holds 3000"), "{warning}");
    assert!(warning.contains("estimate of 3017"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_that_fails_its_check_recovers_nothing() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up(&fake).await;
    let repo = repo_dir.open().await;
    // The reassembled bytes will not match the whole-stream hash: restore streams all of
    // them and only then finds out, which must still abort the upload.
    let mut tampered = stream.clone();
    tampered.sha256 = sha256_hex(b"something else");
    let e = run_restore(&repo, id, &tampered, &client(&fake, None), "target").await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("nothing was recovered"), "{e}");
    assert!(fake.recovered("target").is_none(), "Qdrant must have recovered nothing");
    assert!(!fake.collection_names().contains(&"target".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_vector_size_is_refused_before_upload() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up(&fake).await;
    let repo = repo_dir.open().await;
    fake.create_collection("target", json!({"vectors": {"size": 8, "distance": "Dot"}}));
    let e = run_restore(&repo, id, &stream, &client(&fake, None), "target").await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Refused);
    let msg = e.to_string();
    assert!(msg.contains("\"size\":8") && msg.contains("\"size\":4"), "both configs: {msg}");
    assert!(!fake.requests().iter().any(|r| r.uri.contains("/upload")), "no upload request");
    assert!(fake.recovered("target").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_two_minors_ahead_is_refused_unless_forced() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up(&fake).await;
    let repo = repo_dir.open().await;
    let newer =
        FakeQdrant::start(FakeOptions { version: "1.20.0".into(), ..Default::default() }).await;
    let e = run_restore(&repo, id, &stream, &client(&newer, None), "c").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert!(e.to_string().contains("1.18.3") && e.to_string().contains("1.20.0"), "{e}");
    assert!(!newer.requests().iter().any(|r| r.uri.contains("/upload")));

    let next =
        FakeQdrant::start(FakeOptions { version: "1.19.0".into(), ..Default::default() }).await;
    run_restore(&repo, id, &stream, &client(&next, None), "c").await.unwrap();

    let options = QdrantRestoreOptions { force: true, ..Default::default() };
    let report =
        plan_and_restore(&repo, id, &stream, &client(&newer, None), &options).await.unwrap();
    assert_eq!(report.plan.forced.len(), 1);
    assert!(newer.recovered("c").is_some());
}

// ----- through the binary -----

fn qvault(repo: &TestRepo, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = repo.cli();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub(crate) async fn qvault_async(
    repo: &Arc<TestRepo>,
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
) -> std::process::Output {
    let repo = Arc::clone(repo);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        qvault(&repo, &args, &envs)
    })
    .await
    .unwrap()
}

pub(crate) fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_backup_and_restore_into_a_new_collection() {
    let fake = FakeQdrant::with_keys().await;
    let bytes = fixture_bytes();
    fake.set_snapshot_source("fixture", bytes.clone());
    fake.set_points_count("fixture", 3000);
    let repo = Arc::new(TestRepo::new(None).await);
    let url = fake.url();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let out = qvault_async(
        &repo,
        s(&["--json", "backup", "--qdrant", &url, "--collection", "fixture"]),
        vec![("QDRANT_API_KEY", KEY.into())],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(KEY));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["snapshots"][0]["outcome"], "deleted");
    assert!(fake.snapshot_names("fixture").is_empty());

    let out = qvault_async(
        &repo,
        s(&["restore", &id, "--qdrant", &url, "--collection", "copy", "--api-key", KEY]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3000 points") && stdout.contains(" s"), "{stdout}");
    assert!(!text(&out).contains(KEY));
    assert_eq!(fake.recovered("copy").unwrap(), bytes);

    // Every restore's --json is its report type serialized: the same names for the same facts.
    let mut answers = Vec::new();
    for extra in [&["--collection", "copy2", "--dry-run"][..], &["--collection", "copy3"]] {
        let mut args = s(&["--json", "restore", &id, "--qdrant", &url, "--api-key", KEY]);
        args.extend(s(extra));
        let out = qvault_async(&repo, args, vec![]).await;
        assert!(out.status.success(), "{}", text(&out));
        answers.push(serde_json::from_slice::<Value>(&out.stdout).unwrap());
    }
    let (dry, restored) = (&answers[0], &answers[1]);
    for v in [dry, restored] {
        assert_eq!((v["id"].as_str(), v["stream"].as_str()), (Some(id.as_str()), Some("fixture")));
        assert_eq!(v["sha256"].as_str().unwrap(), sha256_hex(&bytes));
        assert_eq!(v["bytes"], bytes.len() as u64, "{v}");
        assert!(v["target"].as_str().unwrap().contains("copy"), "{v}");
        assert!(v["qdrant_version"].is_string() && v["forced"].is_array(), "{v}");
    }
    assert_eq!(
        (dry["collection_exists"].as_bool(), dry["pieces"].as_u64().is_some()),
        (Some(false), true)
    );
    assert!(dry["chunks"].as_u64().unwrap() > 0 && dry["packs"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(restored["points_count"], 3000);
    assert!(restored["seconds"].is_f64() && restored["uploaded_file_deleted"].is_boolean());
    assert!(fake.collection_config("copy2").is_none(), "a dry run creates nothing");
    assert_eq!(fake.collection_config("copy"), fake.collection_config("fixture"));
    assert!(fake.snapshot_names("copy").is_empty());

    // A read-only key cannot create a snapshot: exit code 6 (Qdrant), key not shown.
    let out = qvault_async(
        &repo,
        s(&["backup", "--qdrant", &url, "--collection", "fixture", "--api-key", RO_KEY]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("403") && !text(&out).contains(RO_KEY), "{}", text(&out));

    // An incompatible existing collection: refused, exit code 8, nothing uploaded.
    fake.create_collection("other", json!({"vectors": {"size": 3, "distance": "Dot"}}));
    let uploads_before = fake.requests().iter().filter(|r| r.uri.contains("/upload")).count();
    let out = qvault_async(
        &repo,
        s(&["restore", &id, "--qdrant", &url, "--collection", "other", "--api-key", KEY]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let uploads_after = fake.requests().iter().filter(|r| r.uri.contains("/upload")).count();
    assert_eq!(uploads_before, uploads_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_snapshots_list_create_download_delete() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(300_000, 21));
    fake.set_snapshot_source("c", bytes.clone());
    fake.set_snapshot_source("bad", bytes.clone());
    fake.inject(Fault::wrong_checksum("bad"));
    let repo = Arc::new(TestRepo::new(None).await);
    let url = fake.url();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let snap = |rest: &[&str]| {
        let mut v = s(&["qdrant", "snapshots"]);
        v.extend(s(rest));
        v.extend(s(&["--qdrant", &url]));
        v
    };

    let out = qvault_async(&repo, snap(&["create", "--collection", "c"]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = qvault_async(
        &repo,
        [s(&["--json"]), snap(&["list", "--collection", "c"])].concat(),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    let name = list[0]["name"].as_str().unwrap().to_string();
    assert_eq!(list[0]["checksum"], sha256_hex(&bytes));

    let dest = repo.dir.path().join("down.snapshot");
    let dest_s = dest.to_str().unwrap();
    let out = qvault_async(
        &repo,
        snap(&["download", "--collection", "c", &name, "--to", dest_s]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // Refuses to overwrite without --overwrite.
    let out = qvault_async(
        &repo,
        snap(&["download", "--collection", "c", &name, "--to", dest_s]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));

    // A checksum mismatch leaves no file, not even the temporary one.
    let out = qvault_async(&repo, snap(&["create", "--collection", "bad"]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    let bad_name = fake.snapshot_names("bad").pop().unwrap();
    let bad_dir = tempfile::tempdir().unwrap();
    let bad_dest = bad_dir.path().join("bad.snapshot");
    let out = qvault_async(
        &repo,
        snap(&["download", "--collection", "bad", &bad_name, "--to", bad_dest.to_str().unwrap()]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("SHA-256"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(bad_dir.path()).unwrap().count(), 0, "no file left behind");

    let out = qvault_async(&repo, snap(&["delete", "--collection", "c", &name]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(fake.snapshot_names("c").is_empty());

    // Full storage.
    let out = qvault_async(&repo, snap(&["create", "--full-storage"]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fake.full_snapshot_names().len(), 1);
}

// ----- restore --serve -----

fn serve_options() -> qvault::qdrant::serve::ServeOptions {
    qvault::qdrant::serve::ServeOptions { addr: "127.0.0.1:0".parse().unwrap(), advertise: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_recovery_pulled_by_qdrant() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 11));
    let (repo_dir, id, stream) = backed_up(&fake).await;
    let repo = repo_dir.open().await;
    let qdrant = client(&fake, None);
    let options = QdrantRestoreOptions { collection: Some("pulled".into()), ..Default::default() };
    let mut printed = None;
    let plan = RestorePlan::new(&repo, id, &stream).await.unwrap();
    let target = plan_qdrant_restore(&qdrant, id, &stream, &options).await.unwrap();
    let report = qvault::qdrant::serve::serve_restore(
        &repo,
        &plan,
        &serve_options(),
        Some((&qdrant, &target, &options)),
        |ready| printed = Some(ready.clone()),
    )
    .await
    .unwrap();
    let ready = printed.unwrap();
    println!("{}", ready.curl);
    assert!(
        ready.curl.contains("PUT") && ready.curl.contains("/collections/pulled/snapshots/recover")
    );
    assert!(ready.curl.contains(&stream.sha256) && ready.curl.contains(&ready.location));
    assert_eq!(fake.recovered("pulled").unwrap(), bytes);
    assert_eq!(report.bytes, bytes.len() as u64);
    let recover = fake.requests().into_iter().find(|r| r.uri.contains("/recover")).unwrap();
    assert_eq!(recover.method, "PUT");
    // The token works once: the server is gone or answers 410.
    match reqwest::get(&ready.location).await {
        Ok(r) => assert_eq!(r.status().as_u16(), 410),
        Err(e) => assert!(e.is_connect(), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_token_works_once_and_wrong_paths_get_nothing() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    // Large enough that the first transfer is still running when the second request comes.
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(24 << 20, 13));
    fake.set_snapshot_source("big", bytes.clone());
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = run_backup(&repo, &client(&fake, None), vec![SnapshotScope::collection("big")])
        .await
        .unwrap();
    let (id, stream) = (report.summary.id, report.summary.manifest.streams[0].clone());
    drop(repo);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let repo = repo_dir.open().await;
        let plan = RestorePlan::new(&repo, id, &stream).await.unwrap();
        qvault::qdrant::serve::serve_restore(&repo, &plan, &serve_options(), None, |r| {
            let _ = tx.send(r.location.clone());
        })
        .await
    });
    let location = rx.await.unwrap();
    let base = location.rsplit_once('/').unwrap().0.rsplit_once('/').unwrap().0.to_string();
    let wrong = reqwest::get(format!("{base}/0000/x.snapshot")).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 404);
    let first = reqwest::get(&location).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    // While the first transfer is still running the server answers 410; once it is done
    // the server is gone. Either way the token does not work twice.
    match reqwest::get(&location).await {
        Ok(second) => {
            println!("second request during the transfer: {}", second.status());
            assert_eq!(second.status().as_u16(), 410, "the token works once");
        }
        Err(e) => {
            println!("second request after the transfer: {e}");
            assert!(e.is_connect(), "{e}");
        }
    }
    assert_eq!(first.bytes().await.unwrap().to_vec(), bytes);
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.bytes, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_restore_serve_with_qdrant() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 11));
    let (repo_dir, id, _) = backed_up(&fake).await;
    let repo = Arc::new(repo_dir);
    let url = fake.url();
    let args = [
        "restore",
        &id.to_hex(),
        "--serve",
        "127.0.0.1:0",
        "--qdrant",
        &url,
        "--collection",
        "served",
    ];
    let out = qvault_async(&repo, args.iter().map(|s| s.to_string()).collect(), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fake.recovered("served").unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_with_a_read_only_key_is_forbidden_and_recovers_nothing() {
    let fake = FakeQdrant::with_keys().await;
    fake.set_snapshot_source("c", snapshot_tar(&small_config(4), &pseudo_random(2 << 20, 17)));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = run_backup(&repo, &client(&fake, Some(KEY)), vec![SnapshotScope::collection("c")])
        .await
        .unwrap();
    let stream = &report.summary.manifest.streams[0];
    let e = run_restore(&repo, report.summary.id, stream, &client(&fake, Some(RO_KEY)), "copy")
        .await
        .unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Qdrant);
    assert!(e.to_string().contains("403") && !e.to_string().contains(RO_KEY), "{e}");
    assert!(fake.recovered("copy").is_none());
}

/// `v` with every leaf replaced by its JSON type: what must not change between qvault
/// versions even when the values (URL, times, checksums) do.
fn json_shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), json_shape(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(json_shape).collect()),
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_of_collection_shard_and_full_storage_keeps_the_shape_backups_always_had() {
    let fake = FakeQdrant::with_keys().await;
    // The collection the fixtures were recorded from.
    let config =
        json!({"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1}});
    fake.set_snapshot_source("c", snapshot_tar(&config, &[7u8; 5000]));
    fake.set_points_count("c", 3000);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let qdrant = client(&fake, Some(KEY));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provenance");
    for (fixture, scope) in [
        ("collection.json", SnapshotScope::collection("c")),
        ("shard.json", SnapshotScope::Shard { collection: "c".into(), shard_id: 0 }),
        ("full-storage.json", SnapshotScope::FullStorage),
    ] {
        let report = run_backup(&repo, &qdrant, vec![scope]).await.unwrap();
        let written = report.summary.manifest.streams[0].source.clone().unwrap();
        let before: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(fixture)).unwrap()).unwrap();
        assert_eq!(json_shape(&written), json_shape(&before), "{fixture}");
        assert_eq!(written["collection_info"], before["collection_info"], "{fixture}");
        assert_eq!(written["config"], before["config"], "{fixture}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_deleted_is_reported_as_delete_failed_and_left_on_the_node() {
    let fake = FakeQdrant::with_keys().await;
    fake.set_snapshot_source("c", snapshot_tar(&small_config(4), &pseudo_random(1 << 20, 5)));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let qdrant = client(&fake, Some(KEY));
    fake.inject(Fault::status(
        Some(axum::http::Method::DELETE),
        "/collections/c/snapshots/",
        500,
        10,
    ));

    let report = run_backup(&repo, &qdrant, vec![SnapshotScope::collection("c")]).await.unwrap();
    let snap = &report.snapshots[0];
    assert_eq!(snap.outcome, "delete failed");
    assert_eq!(report.left_on_node().count(), 1);
    assert_eq!(fake.snapshot_names("c"), vec![snap.name.clone()]);
    let shown = serde_json::to_value(snap).unwrap();
    let outcome = shown["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("delete failed: deleting snapshot"), "{outcome}");
    assert_eq!(outcome, snap.outcome.to_string());
    assert!(!outcome.contains(KEY));
}

#[test]
fn a_retry_warning_is_one_short_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeQdrant::with_keys());
    rt.block_on(async { fake.set_snapshot_source("c", snapshot_tar(&small_config(4), b"x")) });
    fake.inject(Fault::status(Some(axum::http::Method::GET), "/collections/c/snapshots", 503, 1));
    let repo = rt.block_on(TestRepo::new(None));
    let url = fake.url();
    let out = qvault(
        &repo,
        &["qdrant", "snapshots", "list", "--qdrant", &url, "--collection", "c"],
        &[("QDRANT_API_KEY", KEY)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("retry 1 of")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let line = warnings[0];
    assert!(
        line.contains(
            "listing snapshots of collection `c`: Qdrant answered 503 Service Unavailable"
        ),
        "{line}"
    );
    assert!(line.len() < 200 && !line.contains(KEY), "{line}");
}
