//! Qdrant clusters against the fake cluster (`support/fake_qdrant/cluster.rs`, modelled on
//! `real-qdrant/cluster/`): a 3-node source with replication 2 backed up shard by shard and
//! restored into clusters of other sizes, nodes down during the backup, targets refused
//! before upload, and the stray-replica trap (an upload to a node that does not host the
//! shard adds a replica there) never triggered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use crate::qdrant_e2e::{qvault_async, text};
use crate::support::fake_qdrant::{
    append_file, real_qdrant_dir, FakeCluster, FakeOptions, FakeQdrant, Fault,
};
use crate::support::TestRepo;
use qvault::backup::{BackupOptions, Progress};
use qvault::qdrant::cluster::backup::{backup_cluster, ClusterBackupOptions, ClusterBackupReport};
use qvault::qdrant::cluster::restore::{
    plan_cluster_restore, restore_cluster, ClusterRestoreOptions, ClusterRestoreReport,
};
use qvault::qdrant::cluster::ClusterNodes;
use qvault::qdrant::provenance::ReadVia;
use qvault::qdrant::{QdrantClient, QdrantOptions, QdrantProvenance};
use qvault::{BackupId, ErrorKind, Repository};
use qvault_synth::pseudo_random;

const C: &str = "clustered";

/// Points per shard, as captured (3000 in all).
const POINTS: [u64; 3] = [923, 1104, 973];

/// A streamed shard snapshot's shape: plain directories, the shard's config.
fn shard_tar(shard: u32) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "shard_config.json", br#"{"type":"Local"}"#);
    let data = pseudo_random(150_000 + 10_000 * shard as usize, 40 + u64::from(shard));
    append_file(&mut b, "segments/seg/vector_storage/vectors.dat", &data);
    b.into_inner().unwrap()
}

/// The captured source: 3 nodes, `clustered` with 3 shards × 2 replicas placed as seen
/// (shard 0 on nodes 1 and 2, shard 1 on 0 and 1, shard 2 on 0 and 2).
async fn source_cluster() -> FakeCluster {
    let cluster = FakeCluster::start(3).await;
    let body = json!({"vectors": {"size": 32, "distance": "Cosine"}, "shard_number": 3,
        "replication_factor": 2});
    cluster.create_collection(C, body, &[(0, &[1, 2]), (1, &[0, 1]), (2, &[0, 2])]);
    for shard in 0..3 {
        cluster.set_shard(C, shard, shard_tar(shard), POINTS[shard as usize]);
    }
    cluster
}

fn client(url: &str) -> QdrantClient {
    let mut o = QdrantOptions::new(url);
    o.retries = 1;
    o.retry_base_delay = Duration::from_millis(10);
    o.retry_max_delay = Duration::from_millis(20);
    QdrantClient::new(o).unwrap()
}

fn nodes(urls: &[String]) -> ClusterNodes {
    ClusterNodes::new(urls.iter().map(|u| client(u)).collect()).unwrap()
}

async fn backup(
    repo: &Repository,
    cluster: &FakeCluster,
    allow_partial: bool,
) -> qvault::Result<ClusterBackupReport> {
    let options =
        ClusterBackupOptions { collections: vec![C.into()], allow_partial, ..Default::default() };
    let progress = Arc::new(Progress::default());
    let nodes = nodes(&cluster.urls());
    backup_cluster(repo, &nodes, &options, &BackupOptions::default(), progress).await
}

async fn restore(
    repo: &Repository,
    id: BackupId,
    target: &[String],
    options: &ClusterRestoreOptions,
) -> qvault::Result<ClusterRestoreReport> {
    let nodes = nodes(target);
    let manifest = repo.read_manifest(id).await?;
    let plan = plan_cluster_restore(repo, &nodes, id, &manifest, options).await?;
    restore_cluster(repo, &nodes, &plan, options).await
}

fn provenance(repo_manifest: &qvault::Manifest, stream: &str) -> QdrantProvenance {
    let s = repo_manifest.streams.iter().find(|s| s.name == stream).unwrap();
    QdrantProvenance::from_source(s.source.as_ref()).unwrap()
}

/// The target holds each shard byte for byte as the source, and the same points; every
/// upload went to a node hosting its shard, once per shard, with `priority=snapshot`.
fn assert_identical(source: &FakeCluster, target: &FakeCluster, report: &ClusterRestoreReport) {
    for shard in 0..3 {
        assert_eq!(target.shard_bytes(C, shard), source.shard_bytes(C, shard), "shard {shard}");
    }
    assert_eq!(target.points(C), Some(3000));
    assert_eq!(report.points_count, 3000);
    let counts: Vec<Option<u64>> = report.shards.iter().map(|s| s.points_count).collect();
    assert_eq!(counts, POINTS.map(Some).to_vec());
    let uploads = target.uploads();
    assert_eq!(uploads.len(), 3, "one upload per shard: {uploads:?}");
    assert!(uploads.iter().all(|u| u.hosted), "stray replica created: {uploads:?}");
    assert!(uploads.iter().all(|u| u.priority.as_deref() == Some("snapshot")));
    for (i, _) in target.nodes.iter().enumerate() {
        assert!(target.shard_snapshot_names(i).is_empty(), "uploaded file left on node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_restores_identically_into_two_nodes_and_into_one() {
    let source = source_cluster().await;
    source.nodes[0].set_alias("live", C);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = backup(&repo, &source, false).await.unwrap();

    let m = &report.summary.manifest;
    let names: Vec<&str> = m.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["clustered/shard-0", "clustered/shard-1", "clustered/shard-2"]);
    // One replica per shard, spread: every node read one shard.
    let mut urls: Vec<&str> = report.reads.iter().map(|r| r.url.as_str()).collect();
    urls.sort_unstable();
    urls.dedup();
    assert_eq!(urls.len(), 3, "{:?}", report.reads);
    assert!(report.reads.iter().all(|r| r.via == ReadVia::Streamed));
    assert!(report.missing.is_empty() && report.snapshots.is_empty());
    let p = provenance(m, "clustered/shard-1");
    assert_eq!((p.shard_id, p.points_count), (Some(1), Some(Some(1104))));
    assert_eq!(p.aliases, Some(vec!["live".to_string()]));
    assert_eq!(p.read_via, Some(ReadVia::Streamed));
    assert!(p.read_at.is_some() && p.missing_shards.is_none());
    let topology = p.topology.unwrap();
    assert_eq!(topology.shard_count, 3);
    let peers = source.peer_ids();
    let holders: Vec<u64> = topology.shards[&0].iter().map(|r| r.peer_id).collect();
    let mut want = vec![peers[1], peers[2]];
    want.sort_unstable();
    assert_eq!(holders, want, "shard 0 lives on nodes 1 and 2");
    assert!(topology.shards.values().flatten().all(|r| r.state == "Active"));
    // Streamed: no snapshot was ever stored on a source node.
    for node in &source.nodes {
        let created =
            node.requests().iter().any(|r| r.method == "POST" && r.uri.contains("/snapshots"));
        assert!(!created, "a snapshot was created");
    }

    // Into 2 nodes, with the backup's replication factor (2): every node hosts every shard.
    let two = FakeCluster::start(2).await;
    let report2 =
        restore(&repo, report.summary.id, &two.urls(), &Default::default()).await.unwrap();
    assert_identical(&source, &two, &report2);
    assert!(two.nodes[0].aliases().is_empty(), "aliases only with --aliases");
    assert!(report2.warnings.iter().any(|w| w.contains("aliases live")), "{:?}", report2.warnings);
    assert_eq!(two.config(C).unwrap()["params"]["shard_number"], 3);
    assert_eq!(two.config(C).unwrap()["params"]["replication_factor"], 2);

    // Into 2 nodes with replication 1 (the captured placement) under another name.
    let two_single = FakeCluster::start(2).await;
    let options = ClusterRestoreOptions {
        collection: Some(C.into()),
        replication_factor: Some(1),
        aliases: true,
        ..Default::default()
    };
    let r = restore(&repo, report.summary.id, &two_single.urls(), &options).await.unwrap();
    assert_identical(&source, &two_single, &r);
    assert_eq!(two_single.nodes[0].aliases().get("live").map(String::as_str), Some(C));
    let placement = two_single.placement(C);
    assert_eq!(placement.values().cloned().collect::<Vec<_>>(), [vec![0], vec![1], vec![0]]);
    let by_shard: Vec<(u32, usize)> =
        two_single.uploads().iter().map(|u| (u.shard_id, u.node)).collect();
    assert_eq!(by_shard, [(0, 0), (1, 1), (2, 0)], "each shard sent to its only host");

    // Into a single node.
    let one = FakeCluster::start(1).await;
    let r = restore(&repo, report.summary.id, &one.urls(), &Default::default()).await.unwrap();
    assert_identical(&source, &one, &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_backup_has_its_shards_read_from_the_other_replica() {
    let source = source_cluster().await;
    source.stop(0);
    let repo = Arc::new(TestRepo::new(None).await);
    let mut args: Vec<String> = vec!["--json".into(), "backup".into()];
    for url in source.urls() {
        args.extend(["--qdrant".into(), url]);
    }
    args.extend(["--collection".into(), C.into()]);
    let out = qvault_async(&repo, args, vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["missing_shards"], json!([]), "{json}");
    let read_from: Vec<&str> =
        json["reads"].as_array().unwrap().iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert!(!read_from.contains(&client(&source.urls()[0]).url()), "{json}");

    let r = repo.open().await;
    let listing = r.backups().unwrap();
    let m = r.read_manifest(listing[0].id).await.unwrap();
    assert_eq!(m.streams.len(), 3);
    let down = &source.urls()[0];
    for s in &m.streams {
        let p = QdrantProvenance::from_source(s.source.as_ref()).unwrap();
        assert_ne!(&p.qdrant.url, down, "{} read from the down node", s.name);
        let t = p.topology.unwrap();
        assert!(t.nodes[0].down.is_some() && t.nodes[0].peer_id.is_none(), "{:?}", t.nodes);
    }
    let restored = FakeCluster::start(2).await;
    let id = listing[0].id;
    restore(&r, id, &restored.urls(), &Default::default()).await.unwrap();
    for shard in 0..3 {
        assert_eq!(restored.shard_bytes(C, shard), source.shard_bytes(C, shard));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_mid_backup_passes_its_shard_to_another_replica() {
    let source = source_cluster().await;
    // Shard 1 (nodes 0 and 1) is read from node 0 first: it fails there after the topology
    // was read, and is read from node 1 instead.
    source.nodes[0].inject(Fault::status(Some(Method::GET), "/shards/1/snapshot", 503, 10));
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = backup(&repo, &source, false).await.unwrap();
    let read = report.reads.iter().find(|r| r.stream == "clustered/shard-1").unwrap();
    assert_eq!(read.url, client(&source.urls()[1]).url(), "{:?}", report.reads);
    let m = &report.summary.manifest;
    let shard1 = m.streams.iter().find(|s| s.name == "clustered/shard-1").unwrap();
    assert_eq!(shard1.sha256, crate::support::sha256_hex(&source.shard_bytes(C, 1).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_with_no_reachable_replica_fails_the_backup_unless_allow_partial() {
    let source = source_cluster().await;
    // Shard 0 lives on nodes 1 and 2: with both down, no replica is left.
    source.stop(1);
    source.stop(2);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let e = backup(&repo, &source, false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Qdrant, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("shard 0 of collection `clustered` has no reachable Active replica"),
        "{msg}"
    );
    assert!(msg.contains(&source.urls()[1]) && msg.contains(&source.urls()[2]), "{msg}");
    assert!(msg.contains("Nothing was backed up") && msg.contains("--allow-partial"), "{msg}");
    assert!(repo.backups().unwrap().is_empty(), "nothing may be recorded");

    let report = backup(&repo, &source, true).await.unwrap();
    assert_eq!(report.missing.iter().map(|m| m.shard_id).collect::<Vec<_>>(), [0]);
    let m = &report.summary.manifest;
    assert_eq!(m.streams.len(), 2);
    assert_eq!(provenance(m, "clustered/shard-1").missing_shards, Some(vec![0]));

    // `show` says it is partial, and what a cluster backup does not promise.
    let repo_arc = Arc::new(repo_dir);
    let out = qvault_async(&repo_arc, vec!["show".into(), "latest".into()], vec![]).await;
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("PARTIAL: collection `clustered` lacks shard(s) 0"), "{shown}");
    assert!(shown.contains("Qdrant gives no cross-shard consistency"), "{shown}");

    // Restoring it would leave shard 0 empty: refused before anything is created.
    let target = FakeCluster::start(2).await;
    let mut args = vec!["restore".to_string(), "latest".into()];
    for url in target.urls() {
        args.extend(["--qdrant".into(), url]);
    }
    let out = qvault_async(&repo_arc, args, vec![]).await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(text(&out).contains("lacks shard(s) 0"), "{}", text(&out));
    assert!(target.uploads().is_empty() && target.config(C).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_another_shard_number_is_refused_before_upload() {
    let source = source_cluster().await;
    let repo = Arc::new(TestRepo::new(None).await);
    let r = repo.open().await;
    let id = backup(&r, &source, false).await.unwrap().summary.id;
    let target = FakeCluster::start(2).await;
    let body = json!({"vectors": {"size": 32, "distance": "Cosine"}, "shard_number": 2});
    target.create_collection(C, body, &[(0, &[0]), (1, &[1])]);
    let e = restore(&r, id, &target.urls(), &Default::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("with shard_number 2, and backup"), "{e}");
    assert!(target.uploads().is_empty());

    // A dry run into a fresh node plans, and changes nothing.
    let fresh = FakeCluster::start(1).await;
    let dry = vec![
        "restore".into(),
        id.to_string(),
        "--qdrant".into(),
        fresh.urls()[0].clone(),
        "--dry-run".into(),
    ];
    let out = qvault_async(&repo, dry.clone(), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("into collection `clustered` (created), 3 shards"),
        "{}",
        text(&out)
    );
    assert!(fresh.config(C).is_none() && fresh.uploads().is_empty());
    let json = [vec!["--json".to_string()], dry].concat();
    let out = qvault_async(&repo, json, vec![]).await;
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (plan["id"].as_str(), plan["shard_number"].as_u64()),
        (Some(&*id.to_string()), Some(3))
    );
    let shards = plan["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "{plan}");
    assert!(shards.iter().all(|s| s["stream"].as_str().unwrap().starts_with("clustered/shard-")));
    assert!(fresh.config(C).is_none() && fresh.uploads().is_empty());

    let mut args = vec!["restore".to_string(), id.to_string()];
    for url in target.urls() {
        args.extend(["--qdrant".into(), url]);
    }
    let out = qvault_async(&repo, args.clone(), vec![]).await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(target.uploads().is_empty());

    // --replace drops it and restores the backup's layout, and its alias.
    target.nodes[0].set_alias("current", C);
    args.push("--replace".into());
    let out = qvault_async(&repo, args.clone(), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 shards): 3000 points"), "{}", text(&out));
    let again = [vec!["--json".to_string()], args].concat();
    let out = qvault_async(&repo, again, vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["collection"].as_str(), report["points_count"].as_u64()),
        (Some(C), Some(3000))
    );
    assert_eq!(report["shards"].as_array().unwrap().len(), 3, "{report}");
    assert!(report["seconds"].is_f64(), "{report}");
    assert_eq!(target.config(C).unwrap()["params"]["shard_number"], 3);
    assert!(target.uploads().iter().all(|u| u.hosted));
    assert_eq!(target.nodes[0].aliases().get("current").map(String::as_str), Some(C));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stray_replica_trap_is_real_in_the_fake_and_never_triggered_by_qvault() {
    // The trap, as captured: an upload to a node without the shard answers 200 and adds a
    // replica there.
    let target = FakeCluster::start(2).await;
    let body = json!({"vectors": {"size": 32, "distance": "Cosine"}, "shard_number": 3});
    target.create_collection(C, body, &[(0, &[0]), (1, &[1]), (2, &[0])]);
    let direct = client(&target.urls()[1]);
    let scope = qvault::qdrant::SnapshotScope::shard(C, 0);
    let bytes = bytes::Bytes::from(shard_tar(0));
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    direct.upload_recover(&scope, body, None, &Default::default()).await.unwrap();
    assert_eq!(target.placement(C)[&0], vec![0, 1], "the fake must reproduce the trap");
    assert!(!target.uploads()[0].hosted);

    // qvault, given only one node of a two-node target, does not send shard 1 to a node
    // that lacks it: it refuses before any upload.
    let source = source_cluster().await;
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let id = backup(&repo, &source, false).await.unwrap().summary.id;
    let fresh = FakeCluster::start(2).await;
    let options = ClusterRestoreOptions { replication_factor: Some(1), ..Default::default() };
    let e = restore(&repo, id, &fresh.urls()[..1], &options).await.unwrap_err();
    assert!(e.to_string().contains("shard 1 of collection `clustered` has no reachable"), "{e}");
    assert!(e.to_string().contains("Nothing was uploaded"), "{e}");
    assert!(fresh.uploads().is_empty(), "{:?}", fresh.uploads());
    // With every node given, all uploads land on hosts.
    let options = ClusterRestoreOptions { replace: true, ..options };
    restore(&repo, id, &fresh.urls(), &options).await.unwrap();
    let uploads = fresh.uploads();
    assert_eq!(uploads.len(), 3);
    assert!(uploads.iter().all(|u| u.hosted), "{uploads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_streamed_snapshot_falls_back_to_create_download_delete() {
    let source = source_cluster().await;
    for node in &source.nodes {
        node.inject(Fault::status(Some(Method::GET), "/shards/1/snapshot", 404, 1));
    }
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = backup(&repo, &source, false).await.unwrap();
    let via: Vec<ReadVia> = report.reads.iter().map(|r| r.via).collect();
    assert_eq!(via, [ReadVia::Streamed, ReadVia::Snapshot, ReadVia::Streamed]);
    assert_eq!(report.snapshots.len(), 1);
    assert_eq!(report.snapshots[0].outcome, "deleted");
    let p = provenance(&report.summary.manifest, "clustered/shard-1");
    assert!(p.snapshot.unwrap().name.starts_with("clustered-shard-1-"));
    for i in 0..3 {
        assert!(source.shard_snapshot_names(i).is_empty(), "snapshot left on node {i}");
    }
    let restored = repo.read_manifest(report.summary.id).await.unwrap();
    assert_eq!(restored.streams[1].sha256, qvault_sha(&source.shard_bytes(C, 1).unwrap()));
}

fn qvault_sha(bytes: &[u8]) -> String {
    crate::support::sha256_hex(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_backs_up_streamed_with_nothing_stored_on_it() {
    let fake = FakeQdrant::start(FakeOptions::default()).await;
    fake.create_collection(
        "c",
        json!({"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 2}),
    );
    fake.set_shard_snapshot_source("c", 0, shard_tar(0));
    fake.set_shard_snapshot_source("c", 1, shard_tar(1));
    let repo = Arc::new(TestRepo::new(None).await);
    let args = ["--json", "backup", "--qdrant", &fake.url(), "--collection", "c", "--streamed"];
    let out = qvault_async(&repo, args.iter().map(|s| s.to_string()).collect(), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams: Vec<&str> =
        json["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(streams, ["c/shard-0", "c/shard-1"], "{json}");
    let created =
        fake.requests().iter().any(|r| r.method == "POST" && r.uri.contains("/snapshots"));
    assert!(!created, "nothing created on the node");
    assert!(fake.requests().iter().any(|r| r.uri == "/collections/c/shards/1/snapshot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_names_the_nodes_of_a_cluster() {
    let source = source_cluster().await;
    let repo = Arc::new(TestRepo::new(None).await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let urls: Vec<String> = source.urls().iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(&config, format!("[qdrant]\nurl = [{}]\n", urls.join(", "))).unwrap();
    let args = vec!["backup".to_string(), "--collection".into(), C.into()];
    let out =
        qvault_async(&repo, args, vec![("QVAULT_CONFIG", config.display().to_string())]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("clustered/shard-2"), "{}", text(&out));
}

/// The captured cluster's calls, by label.
fn captured(label: &str) -> Option<Vec<Value>> {
    let dir = real_qdrant_dir()?;
    let text = std::fs::read_to_string(dir.join("cluster/transcript.jsonl")).ok()?;
    let lines = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap());
    Some(lines.filter(|r| r["label"] == label).collect())
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_cluster_answers_as_the_captured_one() {
    let (Some(streamed), Some(created), Some(info)) = (
        captured("streamed shard snapshot on a node without that shard"),
        captured("shard snapshot on a node without that shard"),
        captured("collection cluster info on each node"),
    ) else {
        return;
    };
    let source = source_cluster().await;
    let http = reqwest::Client::new();
    // Node 2 does not hold shard 1, as in the capture.
    let base = &source.urls()[2];
    let r = http.get(format!("{base}/collections/{C}/shards/1/snapshot")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), streamed[0]["status"]);
    let body = r.bytes().await.unwrap();
    assert_eq!(
        crate::support::sha256_hex(&body),
        streamed[0]["response_body"]["sha256"].as_str().unwrap(),
        "the captured plain-text 400, byte for byte"
    );
    let r = http.post(format!("{base}/collections/{C}/shards/1/snapshots?wait=true")).send().await;
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), created[0]["status"]);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["status"], created[0]["response_json"]["status"]);

    let r = http.get(format!("{base}/collections/{C}/cluster")).send().await.unwrap();
    let ours: Value = r.json().await.unwrap();
    let theirs = &info[0]["response_json"]["result"];
    assert_eq!(keys(&ours["result"]), keys(theirs));
    assert_eq!(keys(&ours["result"]["local_shards"][0]), keys(&theirs["local_shards"][0]));
    assert_eq!(keys(&ours["result"]["remote_shards"][0]), keys(&theirs["remote_shards"][0]));
    let local: Vec<&Value> =
        ours["result"]["local_shards"].as_array().unwrap().iter().map(|s| &s["shard_id"]).collect();
    assert_eq!(local, [&json!(0), &json!(2)], "node 2 holds shards 0 and 2, as captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_two_clusters_are_refused() {
    let source = source_cluster().await;
    let other = FakeCluster::start(1).await;
    let body = json!({"vectors": {"size": 32, "distance": "Cosine"}, "shard_number": 2});
    other.create_collection(C, body, &[(0, &[0]), (1, &[0])]);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let mut urls = source.urls();
    urls.push(other.urls()[0].clone());
    let options = ClusterBackupOptions { collections: vec![C.into()], ..Default::default() };
    let progress = Arc::new(Progress::default());
    let e = backup_cluster(&repo, &nodes(&urls), &options, &BackupOptions::default(), progress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the nodes disagree on the shard count"), "{e}");
    assert!(repo.backups().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_collection_off_the_backups_exact_count_fails_the_restore() {
    let source = FakeCluster::start(2).await;
    let body = json!({"vectors": {"size": 32, "distance": "Cosine"}, "shard_number": 2});
    source.create_collection(C, body, &[(0, &[0]), (1, &[1])]);
    // Bytes of this test only: the fake counts a shard's points by its bytes.
    let shard = |seed: u64| {
        let mut b = tar::Builder::new(Vec::new());
        append_file(&mut b, "segments/s/data.bin", &pseudo_random(50_000, 900 + seed));
        b.into_inner().unwrap()
    };
    source.set_shard(C, 0, shard(0), 10);
    source.set_shard(C, 1, shard(1), 20);
    let repo_dir = TestRepo::new(None).await;
    let repo = repo_dir.open().await;
    let report = backup(&repo, &source, false).await.unwrap();
    let p = provenance(&report.summary.manifest, "clustered/shard-1");
    assert_eq!(p.collection_exact_count, Some(30));

    // Qdrant now recovers only 5 points from shard 1's bytes.
    source.set_shard(C, 1, shard(1), 5);
    let target = FakeCluster::start(1).await;
    let e =
        restore(&repo, report.summary.id, &target.urls(), &Default::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Qdrant, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("holds 15 points (exact count), the backup counted 30"), "{msg}");
}
