//! `verify --restore-test --qdrant`: Qdrant streams restored into a scratch collection on the
//! fake Qdrant (which keeps points and carries them in its snapshots), compared on exact
//! count, vectors config, the sampled point hashes and the probe queries, then deleted.

use crate::qdrant_e2e::{client, qvault_async, text};
use crate::support::fake_qdrant::{FakeQdrant, Tamper, KEY};
use crate::support::{self, TestRepo};

use std::sync::Arc;

use qvault::backup::{BackupOptions, Progress};
use qvault::qdrant::backup::{backup_qdrant, QdrantBackupOptions};
use qvault::qdrant::drill::QdrantDrill;
use qvault::qdrant::sample::SampleOptions;
use qvault::qdrant::{PointId, QdrantClient, QdrantProvenance, SnapshotScope};
use qvault::repo::Repository;
use qvault::restore_test::{restore_test_with, RestoreTestOptions, RestoreTestReport};
use qvault::BackupId;
use serde_json::{json, Value};

/// A deterministic pseudo-random vector of `dim` values in [-1, 1) for point `n`.
pub fn vector(n: u64, dim: usize) -> Vec<f64> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f64 / 1000.0 - 1.0
        })
        .collect()
}

/// `n` points with the unnamed vector, a payload, and two UUID ids at the end.
pub fn upsert_plain(fake: &FakeQdrant, collection: &str, n: u64, dim: usize) {
    let mut points: Vec<Value> = (0..n)
        .map(|i| {
            let tag = ["a", "b", "c"][i as usize % 3];
            json!({"id": i, "vector": vector(i, dim), "payload": {"n": i, "tag": tag}})
        })
        .collect();
    points.push(json!({"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": vector(n, dim), "payload": {"n": -1}}));
    points
        .push(json!({"id": "00000000-0000-0000-0000-000000000001", "vector": vector(n + 1, dim)}));
    fake.upsert_points(collection, json!({"points": points}));
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scratch_collections(fake: &FakeQdrant) -> Vec<String> {
    fake.collection_names().into_iter().filter(|c| c.starts_with("qvault-restore-test-")).collect()
}

async fn backup(
    repo: &Repository,
    client: &QdrantClient,
    collection: &str,
    sample: Option<SampleOptions>,
) -> BackupId {
    let options = QdrantBackupOptions {
        scopes: vec![SnapshotScope::collection(collection)],
        sample,
        ..Default::default()
    };
    let report = backup_qdrant(
        repo,
        client,
        &options,
        &BackupOptions::default(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    report.summary.id
}

async fn provenance(repo: &Repository, id: BackupId) -> QdrantProvenance {
    let manifest = repo.read_manifest(id).await.unwrap();
    QdrantProvenance::from_source(manifest.streams[0].source.as_ref()).unwrap()
}

async fn drill(repo: &Repository, client: &QdrantClient, id: BackupId) -> RestoreTestReport {
    let options = RestoreTestOptions { backups: vec![id.to_hex()], ..Default::default() };
    restore_test_with(repo, &options, &QdrantDrill { client: client.clone() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_with_points_restores_into_a_scratch_collection_and_matches_count_sample_and_probes(
) {
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("docs", json!({"vectors": {"size": 8, "distance": "Cosine"}}));
    upsert_plain(&fake, "docs", 300, 8);
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let c = client(&fake, None);
    let sample = SampleOptions { points: 64, probes: 5 };
    let id = backup(&repo, &c, "docs", Some(sample)).await;

    let prov = provenance(&repo, id).await;
    let recorded = prov.sample.as_ref().unwrap();
    assert_eq!(recorded.hash, "blake3-128/canonical-json");
    assert_eq!(recorded.points.len(), 64);
    assert_eq!(recorded.points[0].id, PointId::Num(0), "the first point is always sampled");
    assert_eq!(recorded.probes.len(), 5);
    assert!(recorded.probes.iter().all(|p| p.top.len() == 10 && p.using.is_none()));
    // The probe's own point is its nearest neighbour (Cosine, score 1).
    assert!(recorded.probes.iter().all(|p| p.top[0].id == p.point), "{:?}", recorded.probes);

    let report = drill(&repo, &c, id).await;
    assert!(report.is_ok(), "{report:?}");
    assert!(report.skipped.is_empty());
    let s = &report.streams[0];
    let q = s.qdrant.as_ref().unwrap();
    assert_eq!((q.points_expected, q.points_restored), (Some(302), Some(302)));
    assert_eq!(q.config_matches, Some(true));
    assert_eq!((q.sampled_points, q.probes), (64, 5));
    assert!(q.notes.is_empty(), "{:?}", q.notes);
    assert!(q.scratch_collection.starts_with("qvault-restore-test-"));
    assert!(q.scratch_deleted);
    assert!(scratch_collections(&fake).is_empty(), "the scratch collection is deleted");
    // The restore really went through the fake's snapshot: the points came back from it.
    let uploads: Vec<_> =
        fake.requests().into_iter().filter(|r| r.uri.contains("/snapshots/upload")).collect();
    assert_eq!(uploads.len(), 1);
    assert!(uploads[0].uri.contains(&q.scratch_collection) && uploads[0].status == 200);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["streams"][0]["restore_ms"].is_u64());
    assert_eq!(json["streams"][0]["qdrant"]["sampled_points"], 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_altered_point_fails_the_test_naming_the_point_and_the_backup_and_the_scratch_is_gone() {
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("docs", json!({"vectors": {"size": 4, "distance": "Dot"}}));
    upsert_plain(&fake, "docs", 50, 4);
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let c = client(&fake, None);
    let id = backup(&repo, &c, "docs", Some(SampleOptions::default())).await;

    fake.tamper_next_recover(Tamper::Alter(fake_qdrant_point(7)));
    let report = drill(&repo, &c, id).await;
    assert!(!report.is_ok());
    let s = &report.streams[0];
    let error = s.error.as_deref().unwrap();
    assert_eq!(
        error,
        format!(
            "sampled point 7 of backup {id} differs (its vectors or payload hash to another \
             value)"
        )
    );
    let q = s.qdrant.as_ref().unwrap();
    assert_eq!(q.points_restored, Some(52), "the count alone would not have noticed");
    assert!(q.scratch_deleted);
    assert!(scratch_collections(&fake).is_empty());
}

fn fake_qdrant_point(n: u64) -> crate::support::fake_qdrant::PointId {
    crate::support::fake_qdrant::PointId::Num(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_point_fails_the_restore_and_names_the_missing_point_and_the_scratch_is_gone() {
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("docs", json!({"vectors": {"size": 4, "distance": "Euclid"}}));
    upsert_plain(&fake, "docs", 20, 4);
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let c = client(&fake, None);
    let id = backup(&repo, &c, "docs", Some(SampleOptions::default())).await;
    // A point in the second probe's top 10 that is no probe's own query point: dropping it
    // changes that probe's answer while every probe can still be replayed.
    let sample = provenance(&repo, id).await.sample.unwrap();
    let queries: Vec<&PointId> = sample.probes.iter().map(|p| &p.point).collect();
    let victim = sample.probes[1].top.iter().find(|h| !queries.contains(&&h.id)).unwrap();
    let PointId::Num(victim) = victim.id else { panic!("{victim:?}") };
    fake.tamper_next_recover(Tamper::Drop(fake_qdrant_point(victim)));
    let report = drill(&repo, &c, id).await;
    assert!(!report.is_ok());
    let error = report.streams[0].error.as_deref().unwrap();
    let problems: Vec<&str> = error.split("; ").collect();
    assert!(problems[0].starts_with("the restore into `qvault-restore-test-"), "{error}");
    assert!(error.contains("holds 21 points (exact count)"), "{error}");
    let missing = format!("sampled point {victim} of backup {id} is missing");
    assert!(problems.contains(&missing.as_str()), "{error}");
    let probe = format!("the probe query with point {}'s vector of backup {id} gave", queries[1]);
    assert!(problems.iter().any(|p| p.starts_with(&probe)), "{error}");
    let q = report.streams[0].qdrant.as_ref().unwrap();
    assert_eq!(q.points_restored, Some(21));
    assert!(q.scratch_deleted);
    assert!(scratch_collections(&fake).is_empty(), "deleted also after a failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_without_a_sample_is_compared_on_count_and_config_with_a_note() {
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("docs", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    upsert_plain(&fake, "docs", 10, 4);
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let c = client(&fake, None);
    let id = backup(&repo, &c, "docs", None).await;
    assert_eq!(provenance(&repo, id).await.sample, None);
    let report = drill(&repo, &c, id).await;
    assert!(report.is_ok(), "{report:?}");
    let q = report.streams[0].qdrant.as_ref().unwrap();
    assert_eq!((q.points_restored, q.config_matches, q.sampled_points), (Some(12), Some(true), 0));
    assert_eq!(q.notes.len(), 1);
    assert!(q.notes[0].starts_with(&format!("backup {id} recorded no point sample")));
    assert!(scratch_collections(&fake).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn named_and_sparse_vectors_and_an_empty_collection_are_sampled_and_checked() {
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection(
        "multi",
        json!({"vectors": {"text": {"size": 3, "distance": "Dot"}, "image": {"size": 2, "distance": "Euclid"}},
               "sparse_vectors": {"kw": {}}}),
    );
    let points: Vec<Value> = (0..30u64)
        .map(|i| {
            json!({"id": i, "vector": {
                "text": vector(i, 3), "image": vector(i + 100, 2),
                "kw": {"indices": [i % 5, 10 + i % 3], "values": [0.5, 1.0 + i as f64]}}})
        })
        .collect();
    fake.upsert_points("multi", json!({"points": points}));
    fake.create_collection("empty", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    fake.create_collection("sparse", json!({"vectors": {}, "sparse_vectors": {"kw": {}}}));
    let points: Vec<Value> = (0..12u64)
        .map(|i| json!({"id": i, "vector": {"kw": {"indices": [i % 4, 7], "values": [1.0, 0.1 * i as f64]}}}))
        .collect();
    fake.upsert_points("sparse", json!({"points": points}));
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let c = client(&fake, None);
    let multi = backup(&repo, &c, "multi", Some(SampleOptions::default())).await;
    let empty = backup(&repo, &c, "empty", Some(SampleOptions::default())).await;
    let sparse = backup(&repo, &c, "sparse", Some(SampleOptions::default())).await;
    let sample = provenance(&repo, sparse).await.sample.unwrap();
    assert_eq!((sample.points.len(), sample.probes.len()), (12, 5));
    assert!(sample.probes.iter().all(|p| p.using.as_deref() == Some("kw") && !p.top.is_empty()));

    let prov = provenance(&repo, multi).await;
    let sample = prov.sample.unwrap();
    assert_eq!(sample.points.len(), 30);
    // Named vectors: the first dense one by name is the probe's query vector.
    assert!(sample.probes.iter().all(|p| p.using.as_deref() == Some("image")), "{sample:?}");
    let prov = provenance(&repo, empty).await;
    let sample = prov.sample.unwrap();
    assert!(sample.points.is_empty() && sample.probes.is_empty());

    for id in [multi, empty, sparse] {
        let report = drill(&repo, &c, id).await;
        assert!(report.is_ok(), "{report:?}");
        let q = report.streams[0].qdrant.as_ref().unwrap();
        assert_eq!(q.config_matches, Some(true));
        assert!(q.notes.is_empty(), "{:?}", q.notes);
        assert_eq!(q.probes, if id == empty { 0 } else { 5 });
    }
    assert!(scratch_collections(&fake).is_empty());

    // The sparse vectors are part of each point's hash: a restored point whose sparse
    // vector differed would fail. Changing one in the source shows the hash sees it.
    let before = provenance(&repo, multi).await.sample.unwrap();
    fake.upsert_points(
        "multi",
        json!({"points": [{"id": 0, "vector": {"text": vector(0, 3), "image": vector(100, 2),
            "kw": {"indices": [0, 10], "values": [0.5, 2.0]}}}]}),
    );
    let again = backup(&repo, &c, "multi", Some(SampleOptions::default())).await;
    let after = provenance(&repo, again).await.sample.unwrap();
    assert_ne!(before.points[0].hash, after.points[0].hash);
    assert_eq!(before.points[1..], after.points[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_weekly_drill_samples_by_default_and_no_sample_records_none() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection("docs", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    upsert_plain(&fake, "docs", 40, 4);
    fake.create_collection("plain", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    upsert_plain(&fake, "plain", 5, 4);
    let repo = Arc::new(TestRepo::new(None).await);
    let url = fake.url();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let key = vec![("QDRANT_API_KEY", KEY.to_string())];

    let out = qvault_async(
        &repo,
        s(&["--json", "backup", "--qdrant", &url, "--collection", "docs"]),
        key.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let docs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let docs = docs["id"].as_str().unwrap().to_string();
    let out = qvault_async(
        &repo,
        s(&["backup", "--qdrant", &url, "--collection", "plain", "--no-sample"]),
        key.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));

    let out =
        qvault_async(&repo, s(&["verify", "--restore-test", "--qdrant", &url]), key.clone()).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("42 points (backup: 42), same vectors config, 42 sampled points and 5 probe queries compared"), "{stdout}");
    assert!(
        stdout.contains("7 points (backup: 7), same vectors config, 0 sampled points"),
        "{stdout}"
    );
    assert!(stdout.contains("recorded no point sample (made with --no-sample"), "{stdout}");
    assert!(stdout.matches("restored in").count() == 2, "{stdout}");
    assert!(!text(&out).contains(KEY));

    let out = qvault_async(
        &repo,
        s(&["--json", "verify", "--restore-test", "--qdrant", &url]),
        key.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert!(streams.iter().all(|s| s["passed"] == true && s["qdrant"]["scratch_deleted"] == true));

    // A failing drill: exit code 5, as verify's, and the scratch collection gone.
    fake.tamper_next_recover(Tamper::Alter(fake_qdrant_point(0)));
    let out =
        qvault_async(&repo, s(&["verify", "--restore-test", "--qdrant", &url, &docs]), key.clone())
            .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"), "{}", text(&out));
    assert!(scratch_collections(&fake).is_empty());

    // Without --qdrant the Qdrant streams are skipped, as before.
    let out = qvault_async(&repo, s(&["verify", "--restore-test"]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipped backup"), "{}", text(&out));

    // The operation log keeps each restore's time (the RTO).
    let out = qvault_async(&repo, s(&["--json", "log"]), vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    let drills: Vec<&Value> =
        log.as_array().unwrap().iter().filter(|e| e["what"] == "restore-test").collect();
    assert_eq!(drills.len(), 4);
    let times = drills[0]["restore_times"].as_array().unwrap();
    assert_eq!(times.len(), 2);
    assert!(times.iter().all(|t| t["restore_ms"].is_u64() && t["passed"] == true));
    assert_eq!(drills[2]["outcome"], "failed");
    let failed = drills[2]["restore_times"].as_array().unwrap();
    assert_eq!((failed.len(), &failed[0]["passed"]), (1, &json!(false)));
    assert!(drills[3].get("restore_times").is_none(), "nothing restored without --qdrant");
    let out = qvault_async(&repo, s(&["log"]), vec![]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(" restored "), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_test_from_a_repository_on_s3() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("qdrant-drill")) else {
        return;
    };
    let identity = age::x25519::Identity::generate();
    let options =
        qvault::repo::InitOptions { recipients: vec![identity.to_public()], ..Default::default() };
    let cache = qvault::repo::Cache::InMemory;
    Repository::init(storage.clone(), options, &cache).await.unwrap();
    let credentials = qvault::repo::Credentials { identities: vec![identity], key: None };
    let repo = Repository::open(storage, credentials, &cache).await.unwrap();

    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("docs", json!({"vectors": {"size": 8, "distance": "Cosine"}}));
    upsert_plain(&fake, "docs", 100, 8);
    let c = client(&fake, None);
    let id = backup(&repo, &c, "docs", Some(SampleOptions::default())).await;
    let report = drill(&repo, &c, id).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.streams[0].qdrant.as_ref().unwrap().sampled_points, 102);
    assert!(scratch_collections(&fake).is_empty());
}

/// Status and JSON body of a raw call to the fake.
async fn call(fake: &FakeQdrant, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", fake.url());
    let resp = reqwest::Client::new().request(method, url).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fake_keeps_points_and_answers_like_the_captured_node() {
    use reqwest::Method;
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("pts", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    let (status, v) = call(
        &fake,
        Method::PUT,
        "/collections/pts/points?wait=true",
        json!({"points": [
            {"id": 1, "vector": [3.0, 0.0, 4.0, 0.0], "payload": {"n": 1}},
            {"id": "5C56C793-69F3-4FBF-87E6-C4BF54C28C26", "vector": [0.0, 1.0, 0.0, 0.0]}]}),
    )
    .await;
    assert_eq!((status, &v["result"]["status"]), (200, &json!("completed")), "{v}");
    let (_, v) = call(
        &fake,
        Method::PUT,
        "/collections/pts/points",
        json!({"batch": {
        "ids": [0, 2], "vectors": [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]}}),
    )
    .await;
    assert_eq!(v["result"]["status"], "acknowledged");
    let (status, v) = call(
        &fake,
        Method::PUT,
        "/collections/pts/points",
        json!({"points": [
        {"id": 9, "vector": [1.0, 2.0]}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["status"]["error"], "Wrong input: Vector dimension error: expected dim: 4, got 2");
    let (status, v) = call(
        &fake,
        Method::PUT,
        "/collections/pts/points",
        json!({"points": [
        {"id": "not-a-uuid", "vector": [1.0, 2.0, 3.0, 4.0]}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["status"]["error"].as_str().unwrap().contains("is not a valid point ID"), "{v}");

    // Scroll pages: integer ids first, then UUIDs; Cosine vectors come back normalised.
    let c = client(&fake, None);
    let page = c.scroll_points("pts", None, 2, true).await.unwrap();
    let ids: Vec<String> = page.points.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, ["0", "1"]);
    assert_eq!(page.points[1].vector, Some(json!([0.6, 0.0, 0.8, 0.0])));
    assert_eq!(page.points[1].payload, Some(json!({"n": 1})));
    assert_eq!(page.next_page_offset, Some(PointId::Num(2)));
    let page = c.scroll_points("pts", page.next_page_offset.as_ref(), 2, false).await.unwrap();
    assert_eq!(page.points[1].id, PointId::Uuid("5c56c793-69f3-4fbf-87e6-c4bf54c28c26".into()));
    assert_eq!((page.points[1].vector.as_ref(), page.next_page_offset), (None, None));
    assert_eq!(c.count_points("pts", true).await.unwrap(), 4);
    let found = c.retrieve_points("pts", &[PointId::Num(2), PointId::Num(77)]).await.unwrap();
    assert_eq!(found.len(), 1, "a missing id is left out");

    // Query answers `{"points": […]}`, search a bare list, both best first.
    let hits = c.query_points("pts", &json!([1.0, 0.0, 1.0, 0.0]), None, 3).await.unwrap();
    let ids: Vec<String> = hits.iter().map(|h| h.id.to_string()).collect();
    assert_eq!(ids, ["1", "0", "2"]);
    assert!((hits[0].score - 0.98995).abs() < 1e-4, "{hits:?}");
    let (_, v) = call(
        &fake,
        Method::POST,
        "/collections/pts/points/search",
        json!({
        "vector": [1.0, 0.0, 1.0, 0.0], "limit": 1}),
    )
    .await;
    assert_eq!(v["result"][0]["id"], 1);
    assert_eq!(v["result"][0]["version"], 0);

    // A snapshot carries the points; a collection recovered from it holds them.
    let t = TestRepo::new(None).await;
    let repo = t.open().await;
    let id = backup(&repo, &c, "pts", None).await;
    let manifest = repo.read_manifest(id).await.unwrap();
    let stream = &manifest.streams[0];
    crate::qdrant_e2e::run_restore(&repo, id, stream, &c, "copy").await.unwrap();
    assert_eq!(fake.points("copy"), fake.points("pts"));
    assert_eq!(c.count_points("copy", true).await.unwrap(), 4);

    // An unreachable node fails before anything is restored, as a Qdrant error (exit 6).
    let gone = QdrantClient::new({
        let mut o = qvault::qdrant::QdrantOptions::new(format!("http://127.0.0.1:{}", free_port()));
        o.retries = 0;
        o
    })
    .unwrap();
    let e = QdrantDrill::connect(gone).await.err().unwrap();
    assert_eq!(e.kind(), qvault::ErrorKind::Qdrant, "{e}");

    // `--qdrant` belongs to the restore test.
    let out =
        qvault_async(&Arc::new(t), vec!["verify".into(), "--qdrant".into(), fake.url()], vec![])
            .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--qdrant is for --restore-test"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_is_spread_over_every_scroll_page() {
    let fake = FakeQdrant::start(Default::default()).await;
    fake.create_collection("big", json!({"vectors": {"size": 2, "distance": "Dot"}}));
    let points: Vec<Value> =
        (0..12_000u64).map(|i| json!({"id": i, "vector": vector(i, 2)})).collect();
    fake.upsert_points("big", json!({"points": points}));
    let c = client(&fake, None);
    let sample =
        qvault::qdrant::sample::take_sample(&c, "big", &SampleOptions { points: 100, probes: 2 })
            .await
            .unwrap();
    let ids: Vec<PointId> = sample.points.iter().map(|p| p.id.clone()).collect();
    let want: Vec<PointId> = (0..100u64).map(|i| PointId::Num(i * 120)).collect();
    assert_eq!(ids, want, "two scroll pages of ids, every 120th point");
    let scrolls = fake.requests().iter().filter(|r| r.uri.ends_with("/points/scroll")).count();
    assert_eq!(scrolls, 2);
    assert_eq!(sample.probes.len(), 2);
}
