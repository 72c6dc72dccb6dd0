//! What a real Qdrant deployment has and a naive restore gets wrong, against the fake
//! Qdrant: Qdrant's own compatibility rule checked before upload, uploads cleaned up after
//! any failure, `--replace`, counts taken while clients write, snapshot creates cut by a
//! proxy, restoring every stream of a backup, aliases and custom sharding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::qdrant_e2e::{
    client, plan_and_restore, qvault_async, run_backup, run_restore, small_config, snapshot_tar,
    text,
};
use crate::support::fake_qdrant::{FakeOptions, FakeQdrant, Fault};
use crate::support::TestRepo;

use std::sync::Arc;
use std::time::Duration;

use qvault::backup::{BackupOptions, Progress};
use qvault::format::manifest::StreamRecord;
use qvault::qdrant::backup::{backup_qdrant, CreateOptions, QdrantBackupOptions};
use qvault::qdrant::restore::QdrantRestoreOptions;
use qvault::qdrant::SnapshotScope;
use qvault::{BackupId, ErrorKind};
use qvault_synth::pseudo_random;
use serde_json::{json, Value};

/// A fake with collection `c` (4-dim Cosine, `points` points) backed up into a new repo.
async fn backed_up_c(fake: &FakeQdrant, points: u64) -> (TestRepo, BackupId, StreamRecord) {
    fake.set_snapshot_source("c", snapshot_tar(&small_config(4), &pseudo_random(200_000, 3)));
    fake.set_points_count("c", points);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report =
        run_backup(&repo, &client(fake, None), vec![SnapshotScope::collection("c")]).await.unwrap();
    let stream = report.summary.manifest.streams[0].clone();
    (repo_dir, report.summary.id, stream)
}

fn uploads(fake: &FakeQdrant) -> usize {
    fake.requests().iter().filter(|r| r.uri.contains("/upload")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_difference_qdrant_refuses_is_refused_before_upload() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up_c(&fake, 10).await;
    let repo = repo_dir.open().await;
    let base = json!({"size": 4, "distance": "Cosine"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let targets = [
        ("t_ondisk", with("on_disk", json!(true))),
        ("t_f16", with("datatype", json!("float16"))),
        ("t_multi", with("multivector_config", json!({"comparator": "max_sim"}))),
        ("t_vhnsw", with("hnsw_config", json!({"m": 32}))),
        ("t_map", json!({"": base.clone()})),
    ];
    for (name, vectors) in targets {
        fake.create_collection(name, json!({ "vectors": vectors }));
        let e = run_restore(&repo, id, &stream, &client(&fake, None), name).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{name}: {e}");
        assert!(e.to_string().contains("Qdrant would refuse"), "{name}: {e}");
        assert_eq!(uploads(&fake), 0, "{name}: nothing may be uploaded");
    }
    // Qdrant accepts extra sparse vectors and `null` for an unset field: so does qvault.
    fake.create_collection(
        "t_sparse",
        json!({"vectors": with("on_disk", Value::Null), "sparse_vectors": {"sp": {}}}),
    );
    run_restore(&repo, id, &stream, &client(&fake, None), "t_sparse").await.unwrap();
    assert_eq!(uploads(&fake), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_deleted_from_the_node() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up_c(&fake, 10).await;
    let repo = repo_dir.open().await;
    fake.create_collection(
        "t",
        json!({"vectors": {"size": 4, "distance": "Cosine", "datatype": "float16"}}),
    );
    // --force skips qvault's check, so Qdrant itself refuses the uploaded file.
    let options =
        QdrantRestoreOptions { collection: Some("t".into()), force: true, ..Default::default() };
    let e = plan_and_restore(&repo, id, &stream, &client(&fake, None), &options).await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Qdrant, "{e}");
    assert!(e.to_string().contains("not compatible"), "{e}");
    assert!(e.to_string().contains("was deleted from the snapshots dir"), "{e}");
    assert_eq!(uploads(&fake), 1);
    assert!(fake.snapshot_names("t").is_empty(), "the refused upload must not stay on the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_empty_collection_is_only_replaced_with_replace() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, stream) = backed_up_c(&fake, 10).await;
    let repo = repo_dir.open().await;
    // Another layout and points of its own: the backup must win entirely.
    fake.create_collection("t", json!({"vectors": {"size": 8, "distance": "Dot"}}));
    fake.set_points_count("t", 3);
    let e = run_restore(&repo, id, &stream, &client(&fake, None), "t").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("holds 3 points") && e.to_string().contains("--replace"), "{e}");
    assert_eq!(uploads(&fake), 0);

    let options =
        QdrantRestoreOptions { collection: Some("t".into()), replace: true, ..Default::default() };
    let report =
        plan_and_restore(&repo, id, &stream, &client(&fake, None), &options).await.unwrap();
    assert!(report.plan.drop_existing);
    assert_eq!(report.points_count, Some(10));
    assert_eq!(fake.collection_config("t"), fake.collection_config("c"), "the backup's config");
    assert!(fake.requests().iter().any(|r| r.method == "DELETE" && r.uri == "/collections/t"));

    // An existing but empty collection of the same layout needs no --replace.
    fake.create_collection("empty", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    run_restore(&repo, id, &stream, &client(&fake, None), "empty").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_replace_flag_and_exit_code_8_without_it() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    let (repo_dir, id, _) = backed_up_c(&fake, 10).await;
    let repo = Arc::new(repo_dir);
    let (url, id) = (fake.url(), id.to_string());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let out = qvault_async(&repo, s(&["restore", &id, "--qdrant", &url]), vec![]).await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(text(&out).contains("--replace"), "{}", text(&out));
    let out =
        qvault_async(&repo, s(&["restore", &id, "--qdrant", &url, "--replace"]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("10 points"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_clients_write_restores_within_its_count_range() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.set_writes_during_snapshot("c", 20);
    let (repo_dir, id, stream) = backed_up_c(&fake, 100).await;
    let source = stream.source.as_ref().unwrap();
    assert_eq!(
        (source["exact_points_count"].as_u64(), source["exact_points_count_after"].as_u64()),
        (Some(100), Some(120))
    );
    let repo = repo_dir.open().await;
    let report = run_restore(&repo, id, &stream, &client(&fake, None), "copy").await.unwrap();
    assert_eq!(report.points_count, Some(110));
    assert_eq!(report.plan.expected_points_range, Some((100, 120)));
    let [note] = report.warnings.as_slice() else { panic!("{:?}", report.warnings) };
    assert!(note.contains("holds 110 points") && note.contains("100 to 120"), "{note}");

    // Outside the range: the recovery is incomplete.
    fake.set_points_count("c", 99);
    let e = run_restore(&repo, id, &stream, &client(&fake, None), "copy2").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Qdrant, "{e}");
    assert!(e.to_string().contains("outside the 100 to 120 points"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_restores_every_stream_of_an_all_collections_backup_with_renames() {
    let source = FakeQdrant::start(FakeOptions::default()).await;
    let a = snapshot_tar(&small_config(4), &pseudo_random(50_000, 1));
    let b = snapshot_tar(&small_config(8), &pseudo_random(50_000, 2));
    source.set_snapshot_source("a", a.clone());
    source.set_snapshot_source("b", b.clone());
    source.set_points_count("a", 5);
    source.set_points_count("b", 7);
    let repo = Arc::new(TestRepo::new(None).await);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let url = source.url();
    let out = qvault_async(
        &repo,
        s(&["--json", "backup", "--qdrant", &url, "--all-collections"]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let id =
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_string();

    // Over the source itself: both collections hold points, so nothing is sent at all.
    let out = qvault_async(&repo, s(&["restore", &id, "--qdrant", &url]), vec![]).await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert_eq!(uploads(&source), 0);

    // A rename that matches no collection is refused before anything happens.
    let target = FakeQdrant::start(FakeOptions::default()).await;
    let third = FakeQdrant::start(FakeOptions::default()).await;
    for fake in [&target, &third] {
        fake.set_points_for_snapshot(&a, 5);
        fake.set_points_for_snapshot(&b, 7);
    }
    let turl = target.url();
    let out = qvault_async(
        &repo,
        s(&["restore", &id, "--qdrant", &turl, "--collection", "zzz=a2"]),
        vec![],
    )
    .await;
    assert!(!out.status.success() && text(&out).contains("zzz"), "{}", text(&out));
    assert_eq!(uploads(&target), 0);

    let out = qvault_async(
        &repo,
        s(&["--json", "restore", &id, "--qdrant", &turl, "--collection", "a=a2"]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let restored: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored.len(), 2);
    assert_eq!(target.collection_names(), ["a2", "b"]);
    assert_eq!(target.recovered("a2").unwrap(), a);
    assert_eq!(target.recovered("b").unwrap(), b);
    assert_eq!(target.collection_config("b"), source.collection_config("b"));

    // One stream by its name with the suffix a user may add.
    let out = qvault_async(
        &repo,
        s(&["restore", &id, "--qdrant", &third.url(), "--stream", "b.snapshot"]),
        vec![],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(third.collection_names(), ["b"]);
}

async fn backup_with(
    repo: &qvault::repo::Repository,
    fake: &FakeQdrant,
    create: CreateOptions,
) -> qvault::Result<qvault::qdrant::backup::QdrantBackupReport> {
    let options = QdrantBackupOptions {
        scopes: vec![SnapshotScope::collection("c")],
        create,
        ..Default::default()
    };
    backup_qdrant(
        repo,
        &client(fake, None),
        &options,
        &BackupOptions::default(),
        Arc::new(Progress::default()),
    )
    .await
}

fn quick(poll: bool, timeout_ms: u64) -> CreateOptions {
    CreateOptions { poll, timeout: Duration::from_millis(timeout_ms) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_by_a_proxy_deletes_the_snapshot_it_caused_and_no_other() {
    for cut in [false, true] {
        let fake = FakeQdrant::start(FakeOptions {
            snapshot_delay: Duration::from_millis(300),
            ..Default::default()
        })
        .await;
        fake.set_snapshot_source("c", snapshot_tar(&small_config(4), &pseudo_random(20_000, 5)));
        // Someone else's snapshot, made before the backup: never touched.
        client(&fake, None).create_snapshot(&SnapshotScope::collection("c"), true).await.unwrap();
        let theirs = fake.snapshot_names("c");
        assert_eq!(theirs.len(), 1);
        fake.inject(Fault::proxy_timeout("c", cut));
        let repo_dir = TestRepo::new(None).await;
        let repo = repo_dir.open().await;
        let e = backup_with(&repo, &fake, quick(false, 5_000)).await.unwrap_err();
        println!("{e}");
        assert_eq!(e.kind(), ErrorKind::Qdrant, "{e}");
        assert!(e.to_string().contains("it caused on the node was deleted"), "{e}");
        assert_eq!(fake.snapshot_names("c"), theirs, "only this run's snapshot is deleted");
        assert!(repo.backups().unwrap().is_empty(), "no backup recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_still_being_written_when_the_wait_runs_out_is_named() {
    let fake = FakeQdrant::start(FakeOptions {
        snapshot_delay: Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
    fake.set_snapshot_source("c", snapshot_tar(&small_config(4), &pseudo_random(20_000, 5)));
    fake.inject(Fault::proxy_timeout("c", false));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let e = backup_with(&repo, &fake, quick(false, 200)).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("504") && msg.contains("no new snapshot"), "{msg}");
    assert!(msg.contains("qvault qdrant snapshots delete"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_a_wait_false_create_backs_up_and_deletes_the_snapshot() {
    let fake = FakeQdrant::start(FakeOptions {
        snapshot_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(20_000, 5));
    fake.set_snapshot_source("c", bytes.clone());
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = backup_with(&repo, &fake, quick(true, 5_000)).await.unwrap();
    assert_eq!(report.summary.manifest.streams[0].sha256, crate::support::sha256_hex(&bytes));
    assert_eq!(report.snapshots[0].outcome, "deleted");
    assert!(fake.snapshot_names("c").is_empty());
    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.uri.starts_with("/collections/c/snapshots"))
        .unwrap();
    assert!(create.uri.contains("wait=false"), "{}", create.uri);
    assert_eq!(create.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_are_recorded_resolved_and_recreated_but_never_moved() {
    let source = FakeQdrant::start(FakeOptions::default()).await;
    let bytes = snapshot_tar(&small_config(4), &pseudo_random(20_000, 9));
    source.set_snapshot_source("docs_v2", bytes.clone());
    source.set_points_count("docs_v2", 51);
    source.set_alias("docs", "docs_v2");
    source.set_alias("d2", "docs_v2");
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    // Backed up through the alias: the real collection is recorded, and the alias asked.
    let report = run_backup(&repo, &client(&source, None), vec![SnapshotScope::collection("docs")])
        .await
        .unwrap();
    let (id, stream) = (report.summary.id, report.summary.manifest.streams[0].clone());
    assert_eq!(stream.name, "docs_v2");
    let src = stream.source.as_ref().unwrap();
    assert_eq!(src["collection"], "docs_v2");
    assert_eq!(src["requested_as"], "docs");
    assert_eq!(src["aliases"], json!(["d2", "docs"]));

    // Without --aliases: restored, and told what was left out.
    let target = FakeQdrant::start(FakeOptions::default()).await;
    target.set_points_for_snapshot(&bytes, 51);
    let plain = QdrantRestoreOptions::default();
    let report =
        plan_and_restore(&repo, id, &stream, &client(&target, None), &plain).await.unwrap();
    assert!(target.aliases().is_empty());
    assert!(report.warnings.iter().any(|w| w.contains("d2, docs") && w.contains("--aliases")));

    // With --aliases into a fresh node: both come back, pointing at the restored collection.
    let fresh = FakeQdrant::start(FakeOptions::default()).await;
    fresh.set_points_for_snapshot(&bytes, 51);
    let with = QdrantRestoreOptions { aliases: true, ..Default::default() };
    plan_and_restore(&repo, id, &stream, &client(&fresh, None), &with).await.unwrap();
    let expected: std::collections::BTreeMap<String, String> =
        [("d2".into(), "docs_v2".into()), ("docs".into(), "docs_v2".into())].into();
    assert_eq!(fresh.aliases(), expected);

    // An alias that points elsewhere on the target is never moved: refused before upload.
    let busy = FakeQdrant::start(FakeOptions::default()).await;
    busy.create_collection("other", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    busy.set_alias("docs", "other");
    let e = plan_and_restore(&repo, id, &stream, &client(&busy, None), &with).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("alias `docs`") && e.to_string().contains("`other`"), "{e}");
    assert_eq!(uploads(&busy), 0);
    assert_eq!(busy.aliases().get("docs").map(String::as_str), Some("other"));

    // --replace drops the collection and Qdrant its aliases: those come back too.
    source.set_alias("extra", "docs_v2");
    let replace = QdrantRestoreOptions { replace: true, ..Default::default() };
    plan_and_restore(&repo, id, &stream, &client(&source, None), &replace).await.unwrap();
    assert_eq!(source.aliases().len(), 3, "{:?}", source.aliases());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_sharding_restores_only_into_the_same_shard_keys() {
    let custom = json!({"vectors": {"size": 4, "distance": "Cosine"}, "sharding_method": "custom"});
    let source = FakeQdrant::start(FakeOptions::default()).await;
    source.create_collection("mt", custom.clone());
    source.create_shard_key("mt", json!("tenant_a"), 1);
    source.create_shard_key("mt", json!("tenant_b"), 2);
    let config = source.collection_config("mt").unwrap();
    let bytes = snapshot_tar(&config, &pseudo_random(20_000, 11));
    source.set_snapshot_source("mt", bytes.clone());
    source.set_points_count("mt", 501);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = run_backup(&repo, &client(&source, None), vec![SnapshotScope::collection("mt")])
        .await
        .unwrap();
    let (id, stream) = (report.summary.id, report.summary.manifest.streams[0].clone());
    assert_eq!(
        stream.source.as_ref().unwrap()["shard_keys"],
        json!([{"key": "tenant_a", "shard_ids": [1]}, {"key": "tenant_b", "shard_ids": [2, 3]}])
    );

    // A new collection would get no keys and 0 points: refused, saying what to create.
    let target = FakeQdrant::start(FakeOptions::default()).await;
    target.set_points_for_snapshot(&bytes, 501);
    let e = run_restore(&repo, id, &stream, &client(&target, None), "mt").await.unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(r#"PUT /collections/mt/shards {"shard_key": "tenant_a", "shard_number": 1}; PUT /collections/mt/shards {"shard_key": "tenant_b", "shard_number": 2}"#),
        "{msg}"
    );
    // Keys made in the other order would put tenant_a's points under tenant_b: refused.
    target.create_collection("mt", custom.clone());
    target.create_shard_key("mt", json!("tenant_b"), 2);
    target.create_shard_key("mt", json!("tenant_a"), 1);
    let e = run_restore(&repo, id, &stream, &client(&target, None), "mt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert_eq!(uploads(&target), 0);

    // Created as told: restored with every point.
    target.create_collection("mt2", custom);
    target.create_shard_key("mt2", json!("tenant_a"), 1);
    target.create_shard_key("mt2", json!("tenant_b"), 2);
    let report = run_restore(&repo, id, &stream, &client(&target, None), "mt2").await.unwrap();
    assert_eq!(report.points_count, Some(501));
}
