//! The Qdrant client end to end against the fake Qdrant over loopback, and the fake against
//! the captures of a real Qdrant 1.18.3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::fake_qdrant;

use std::time::Duration;

use bytes::Bytes;
use fake_qdrant::{real_qdrant_dir, real_snapshot, FakeOptions, FakeQdrant, Fault, KEY, RO_KEY};
use futures::StreamExt;
use qvault::qdrant::{
    http_status, QdrantClient, QdrantOptions, RecoverOptions, RecoverOutcome, SnapshotPriority,
    SnapshotScope, VectorsConfig,
};
use qvault::ErrorKind;
use qvault_synth::pseudo_random;
use serde_json::{json, Value};
use support::sha256_hex;

fn options(fake: &FakeQdrant, key: Option<&str>) -> QdrantOptions {
    let mut o = QdrantOptions::new(fake.url());
    o.api_key = key.map(str::to_owned);
    o.retries = 3;
    o.retry_base_delay = Duration::from_millis(10);
    o.retry_max_delay = Duration::from_millis(50);
    o.timeout = Duration::from_secs(20);
    o
}

fn client(fake: &FakeQdrant, key: Option<&str>) -> QdrantClient {
    QdrantClient::new(options(fake, key)).unwrap()
}

async fn collect(d: qvault::qdrant::SnapshotDownload) -> qvault::Result<Vec<u8>> {
    let mut s = d.into_stream();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn chunks_of(
    data: Vec<u8>,
    size: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks)
}

fn assert_no_key(msg: &str) {
    assert!(!msg.contains(KEY), "message leaks the API key: {msg}");
    assert!(!msg.contains(RO_KEY), "message leaks the read-only key: {msg}");
}

#[tokio::test]
async fn version_list_info_cluster() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection(
        "docs",
        json!({"vectors": {"size": 768, "distance": "Cosine"}, "shard_number": 2}),
    );
    fake.create_collection("bad", json!({"vector_size": 768, "distance": "Cosine"}));
    fake.set_points_count("docs", 101);
    let c = client(&fake, Some(KEY));

    assert_eq!(c.version().await.unwrap().version, "1.18.3");
    assert_eq!(c.list_collections().await.unwrap(), vec!["bad".to_string(), "docs".to_string()]);

    let info = c.collection_info("docs").await.unwrap();
    assert_eq!(info.points_count, Some(101));
    assert_eq!(info.params.shard_number, 2);
    match &info.params.vectors {
        VectorsConfig::Single(p) => assert_eq!((p.size, p.distance.as_str()), (768, "Cosine")),
        other => panic!("unexpected vectors {other:?}"),
    }
    assert_eq!(info.config["params"]["vectors"]["size"], 768);
    assert_eq!(info.raw["points_count"], 101);

    // The wrong create body makes a collection without dense vectors.
    assert!(c.collection_info("bad").await.unwrap().params.vectors.is_empty());

    let cluster = c.collection_cluster_info("docs").await.unwrap();
    assert_eq!(cluster.shard_count, 2);
    assert_eq!(cluster.local_shards.iter().map(|s| s.points_count).sum::<u64>(), 101);
    assert!(cluster.remote_shards.is_empty());

    // Collection info's `points_count` is an estimate; the count API counts exactly (and a
    // read-only key may ask).
    fake.set_estimated_points_count("docs", Some(104));
    assert_eq!(c.collection_info("docs").await.unwrap().points_count, Some(104));
    assert_eq!(c.count_points("docs", true).await.unwrap(), 101);
    assert_eq!(client(&fake, Some(RO_KEY)).count_points("docs", true).await.unwrap(), 101);
    let count = fake.requests().into_iter().rev().find(|r| r.uri.ends_with("/count")).unwrap();
    assert_eq!(
        (count.method.as_str(), count.uri.as_str()),
        ("POST", "/collections/docs/points/count")
    );
    assert_eq!(count.content_type.as_deref(), Some("application/json"));
    let err = c.count_points("nope", true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("counting the points of collection `nope`"), "{err}");
    fake.set_estimated_points_count("docs", None);

    assert!(c.collection_exists("docs").await.unwrap());
    assert!(!c.collection_exists("nope").await.unwrap());

    // Bearer auth is accepted like the api-key header.
    let mut o = options(&fake, Some(KEY));
    o.bearer = true;
    QdrantClient::new(o).unwrap().list_collections().await.unwrap();
    assert!(fake.requests().iter().any(|r| r.auth == "bearer"));

    c.create_collection("made", &json!({"vectors": {"size": 8, "distance": "Dot"}})).await.unwrap();
    assert!(c.delete_collection("made").await.unwrap());
    assert!(!fake.collection_names().contains(&"made".to_string()));
}

#[tokio::test]
async fn create_list_download_delete_collection_snapshot() {
    let fake = FakeQdrant::with_keys().await;
    let bytes = real_snapshot("fixture-v0.snapshot").unwrap_or_else(|| pseudo_random(3 << 20, 7));
    fake.set_snapshot_source("fixture", bytes.clone());
    let c = client(&fake, Some(KEY));
    let scope = SnapshotScope::collection("fixture");

    let desc =
        c.create_snapshot(&scope, true).await.unwrap().expect("wait=true returns the description");
    assert!(
        desc.name.starts_with("fixture-7071378641532464-") && desc.name.ends_with(".snapshot"),
        "{}",
        desc.name
    );
    assert_eq!(desc.size, bytes.len() as u64);
    let listed = c.list_snapshots(&scope).await.unwrap();
    assert_eq!(listed, vec![desc.clone()]);

    let dl = c.download_snapshot(&scope, &desc.name).await.unwrap();
    assert_eq!(dl.content_length(), Some(bytes.len() as u64));
    let got = collect(dl).await.unwrap();
    assert_eq!(Some(sha256_hex(&got)), desc.checksum);
    assert_eq!(got, bytes);

    // A resumed (ranged) download yields the tail.
    let tail =
        collect(c.download_snapshot_from(&scope, &desc.name, 1000).await.unwrap()).await.unwrap();
    assert_eq!(tail, bytes[1000..]);

    // AsyncRead view of a download.
    let mut r = c.download_snapshot(&scope, &desc.name).await.unwrap().into_async_read();
    let mut via_read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut via_read).await.unwrap();
    assert_eq!(via_read, bytes);

    // Two snapshots in the same second still get distinct names.
    let second = c.create_snapshot(&scope, true).await.unwrap().unwrap();
    assert_ne!(second.name, desc.name);

    // wait=false: 202, no description.
    assert!(c.create_snapshot(&scope, false).await.unwrap().is_none());
    assert_eq!(c.list_snapshots(&scope).await.unwrap().len(), 3);

    c.delete_snapshot(&scope, &desc.name, true).await.unwrap();
    assert!(!fake.snapshot_names("fixture").contains(&desc.name));
    let err = c.delete_snapshot(&scope, &desc.name, true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn shard_and_full_storage_snapshots() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection(
        "sharded",
        json!({"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 2}),
    );
    let shard_bytes = pseudo_random(200_000, 3);
    fake.set_shard_snapshot_source("sharded", 1, shard_bytes.clone());
    let c = client(&fake, Some(KEY));

    let scope = SnapshotScope::shard("sharded", 1);
    let d = c.create_snapshot(&scope, true).await.unwrap().unwrap();
    assert!(d.name.starts_with("sharded-shard-1-"), "{}", d.name);
    assert_eq!(c.list_snapshots(&scope).await.unwrap().len(), 1);
    assert_eq!(
        collect(c.download_snapshot(&scope, &d.name).await.unwrap()).await.unwrap(),
        shard_bytes
    );
    c.delete_snapshot(&scope, &d.name, true).await.unwrap();

    let streamed = c.stream_shard_snapshot("sharded", 1).await.unwrap();
    assert_eq!(streamed.content_length(), None);
    assert_eq!(collect(streamed).await.unwrap(), shard_bytes);

    let err = c.create_snapshot(&SnapshotScope::shard("sharded", 5), true).await.unwrap_err();
    assert!(err.to_string().contains("Shard 5 is not a local or queue proxy shard"), "{err}");

    let full = SnapshotScope::FullStorage;
    let fd = c.create_snapshot(&full, true).await.unwrap().unwrap();
    assert!(fd.name.starts_with("full-snapshot-"), "{}", fd.name);
    let got = collect(c.download_snapshot(&full, &fd.name).await.unwrap()).await.unwrap();
    assert_eq!(Some(sha256_hex(&got)), fd.checksum);
    c.delete_snapshot(&full, &fd.name, true).await.unwrap();
    assert!(fake.full_snapshot_names().is_empty());

    let err = c
        .upload_recover(&full, chunks_of(vec![1, 2, 3], 2), Some(3), &RecoverOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn upload_recover_streams_and_checks_checksum() {
    let fake = FakeQdrant::with_keys().await;
    let c = client(&fake, Some(KEY));
    // A generated snapshot of a 2-shard collection unless the real one is there.
    let bytes = match real_snapshot("fixture-v0.snapshot") {
        Some(b) => b,
        None => {
            fake.create_collection(
                "fixture",
                json!({"vectors": {"size": 64, "distance": "Cosine"}, "shard_number": 2}),
            );
            let d = c
                .create_snapshot(&SnapshotScope::collection("fixture"), true)
                .await
                .unwrap()
                .unwrap();
            collect(
                c.download_snapshot(&SnapshotScope::collection("fixture"), &d.name).await.unwrap(),
            )
            .await
            .unwrap()
        }
    };
    fake.set_snapshot_source("fixture", bytes.clone());
    fake.set_points_count("fixture", 3000);
    let checksum = sha256_hex(&bytes);

    // Wrong checksum: refused, nothing recovered, Qdrant's text quoted.
    let wrong = RecoverOptions { checksum: Some("0".repeat(64)), ..RecoverOptions::default() };
    let err = c
        .upload_recover(
            &SnapshotScope::collection("restored"),
            chunks_of(bytes.clone(), 100_000),
            None,
            &wrong,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Qdrant);
    assert_eq!(http_status(&err), Some(400));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("Checksum mismatch: expected {checksum}, actual {}", "0".repeat(64))),
        "{msg}"
    );
    assert!(
        msg.contains("POST http://127.0.0.1:")
            && msg.contains("/collections/restored/snapshots/upload"),
        "{msg}"
    );
    assert_no_key(&msg);
    assert!(fake.recovered("restored").is_none());

    // Right checksum, streamed in small pieces with a known length.
    let opts = RecoverOptions {
        checksum: Some(checksum.clone()),
        priority: Some(SnapshotPriority::Snapshot),
        filename: Some("restore-v0".into()),
        ..RecoverOptions::default()
    };
    let out = c
        .upload_recover(
            &SnapshotScope::collection("restored"),
            chunks_of(bytes.clone(), 65_536),
            Some(bytes.len() as u64),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(out, RecoverOutcome::Recovered);
    assert_eq!(fake.recovered("restored").as_deref(), Some(&bytes[..]));
    let info = c.collection_info("restored").await.unwrap();
    assert_eq!(info.points_count, Some(3000));
    assert_eq!(info.config["params"], fake.collection_config("fixture").unwrap()["params"]);
    let req = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.uri.contains("/restored/snapshots/upload"))
        .unwrap();
    assert!(
        req.uri.contains("priority=snapshot") && req.uri.contains(&format!("checksum={checksum}")),
        "{}",
        req.uri
    );
    assert!(req.content_type.unwrap().starts_with("multipart/form-data"));
    // Qdrant keeps the uploaded file, under the given name, without a checksum.
    let listed = c.list_snapshots(&SnapshotScope::collection("restored")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "restore-v0.snapshot");
    assert_eq!(listed[0].checksum, None);

    // From an AsyncRead, without a length, wait=false.
    let reader = std::io::Cursor::new(bytes.clone());
    let opts = RecoverOptions { wait: false, ..RecoverOptions::default() };
    let out = c
        .upload_recover_reader(&SnapshotScope::collection("restored2"), reader, None, &opts)
        .await
        .unwrap();
    assert_eq!(out, RecoverOutcome::Accepted);
    assert_eq!(fake.recovered("restored2").as_deref(), Some(&bytes[..]));

    // Another vector size in an existing collection: refused with Qdrant's text.
    fake.create_collection("mismatch", json!({"vectors": {"size": 8, "distance": "Dot"}}));
    let err = c
        .upload_recover(
            &SnapshotScope::collection("mismatch"),
            chunks_of(bytes.clone(), 1 << 20),
            None,
            &RecoverOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Wrong input: Snapshot is not compatible with existing collection: "),
        "{err}"
    );
    assert!(fake.recovered("mismatch").is_none());

    // A body stream that fails mid-way: an error, nothing recovered.
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from(bytes[..1000].to_vec())),
        Err(std::io::Error::other("restore aborted: chunk hash mismatch")),
    ]);
    let err = c
        .upload_recover(
            &SnapshotScope::collection("broken"),
            failing,
            None,
            &RecoverOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Qdrant, "{err}");
    assert!(fake.recovered("broken").is_none());
}

#[tokio::test]
async fn recover_from_url_pulls_with_api_key() {
    // The source node serves its snapshot only with its own key; the target gets that key
    // in the recover body and must send it as `api-key`.
    let source = FakeQdrant::start(FakeOptions {
        api_key: Some("source-key-777".into()),
        ..FakeOptions::default()
    })
    .await;
    source.create_collection("src", json!({"vectors": {"size": 16, "distance": "Euclid"}}));
    source.set_points_count("src", 5);
    let sc = client(&source, Some("source-key-777"));
    let d = sc.create_snapshot(&SnapshotScope::collection("src"), true).await.unwrap().unwrap();
    let src_bytes =
        collect(sc.download_snapshot(&SnapshotScope::collection("src"), &d.name).await.unwrap())
            .await
            .unwrap();

    let target = FakeQdrant::with_keys().await;
    let c = client(&target, Some(KEY));
    let opts = RecoverOptions {
        checksum: d.checksum.clone(),
        priority: Some(SnapshotPriority::Replica),
        ..RecoverOptions::default()
    };
    let location = source.snapshot_url("src", &d.name);
    let out = c
        .recover_from_url(
            &SnapshotScope::collection("pulled"),
            &location,
            Some("source-key-777"),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(out, RecoverOutcome::Recovered);
    assert_eq!(target.recovered("pulled"), Some(src_bytes));
    assert_eq!(
        target.collection_config("pulled").unwrap()["params"]["vectors"]["distance"],
        "Euclid"
    );
    let pulled = source
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.uri.ends_with(&d.name) && r.method == "GET")
        .unwrap();
    assert_eq!((pulled.auth, pulled.status), ("api-key", 200));
    let put = target.requests().into_iter().rev().find(|r| r.uri.contains("/recover")).unwrap();
    assert_eq!(put.method, "PUT");

    // Without the source key the target's download fails: 500 quoting Qdrant's text, and
    // the location's key never shows.
    let err = c
        .recover_from_url(
            &SnapshotScope::collection("pulled2"),
            &location,
            Some("wrong-source-key"),
            &opts,
        )
        .await
        .unwrap_err();
    assert_eq!(http_status(&err), Some(500));
    assert!(err.to_string().contains("Service internal error: Http request error"), "{err}");
    assert!(!err.to_string().contains("wrong-source-key"), "{err}");
    assert!(target.recovered("pulled2").is_none());

    // An unreachable location with a token in its query: Qdrant quotes the URL, the
    // client's message must not carry the token.
    let err = c
        .recover_from_url(
            &SnapshotScope::collection("pulled4"),
            "http://127.0.0.1:9/x.snapshot?token=abc123tok",
            None,
            &RecoverOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("error sending request for url"), "{err}");
    assert!(!err.to_string().contains("abc123tok"), "{err}");
    assert_eq!(http_status(&err), Some(500));

    // A file outside the snapshots dir: 403.
    let err = c
        .recover_from_url(
            &SnapshotScope::collection("pulled3"),
            "file:///etc/hostname",
            None,
            &RecoverOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(http_status(&err), Some(403));
    assert!(
        err.to_string().contains("Snapshot file path must be inside the snapshots directory"),
        "{err}"
    );
}

#[tokio::test]
async fn auth_errors_quote_qdrant_and_hide_keys() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection("c", json!({"vectors": {"size": 4, "distance": "Cosine"}}));

    let err = client(&fake, None).list_collections().await.unwrap_err();
    assert_eq!((err.kind(), http_status(&err)), (ErrorKind::Qdrant, Some(401)));
    let msg = err.to_string();
    assert!(msg.contains("Must provide an API key or an Authorization bearer token"), "{msg}");
    assert!(msg.contains("GET http://127.0.0.1:") && msg.contains("/collections"), "{msg}");

    let err = client(&fake, Some("not-the-key-31337")).list_collections().await.unwrap_err();
    assert!(err.to_string().contains("Invalid API key or JWT"), "{err}");
    assert!(
        !err.to_string().contains("not-the-key-31337")
            && !format!("{err:?}").contains("not-the-key-31337")
    );

    // The read-only key lists but may not create a snapshot.
    let ro = client(&fake, Some(RO_KEY));
    ro.list_snapshots(&SnapshotScope::collection("c")).await.unwrap();
    let err = ro.create_snapshot(&SnapshotScope::collection("c"), true).await.unwrap_err();
    assert_eq!(http_status(&err), Some(403));
    let msg = err.to_string();
    assert!(msg.contains("Forbidden: Global manage access is required"), "{msg}");
    assert!(msg.contains("read-only"), "the hint should name the likely cause: {msg}");
    assert_no_key(&msg);
    assert_no_key(&format!("{err:?}"));
    // Read-only upload: Qdrant answers in plain text.
    let err = ro
        .upload_recover(
            &SnapshotScope::collection("x"),
            chunks_of(pseudo_random(10_000, 1), 4096),
            None,
            &RecoverOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Forbidden: Global manage access is required"), "{err}");

    // A CA file that is not PEM is refused up front.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut o = options(&fake, Some(KEY));
    o.ca_cert = Some(bad);
    let err = QdrantClient::new(o).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");

    // Neither Debug of the client nor of its options shows the key.
    let c = client(&fake, Some(KEY));
    assert_no_key(&format!("{c:?}"));
    assert_no_key(&format!("{:?}", options(&fake, Some(KEY))));
}

#[tokio::test]
async fn not_found_is_its_own_kind() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection("c", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    let c = client(&fake, Some(KEY));

    let err = c.collection_info("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("Not found: Collection `nope` doesn't exist!"), "{err}");
    assert!(err.to_string().contains("collection `nope`"), "{err}");

    let err = c.create_snapshot(&SnapshotScope::collection("nope"), true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Download 404s come as plain text.
    let err =
        c.download_snapshot(&SnapshotScope::collection("c"), "none.snapshot").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("Not found: Snapshot none.snapshot not found"), "{err}");
}

#[tokio::test]
async fn a_password_in_the_qdrant_url_is_masked_in_the_shown_url_and_in_errors() {
    let fake = FakeQdrant::with_keys().await;
    let with_password = fake.url().replacen("http://", "http://admin:hunter2@", 1);
    let mut o = options(&fake, None);
    o.url = with_password;
    let c = QdrantClient::new(o.clone()).unwrap();
    // The shown URL is the parsed one (a trailing `/` added), password masked.
    assert_eq!(c.url(), format!("{}/", fake.url().replacen("http://", "http://admin:***@", 1)));
    assert!(!format!("{c:?}").contains("hunter2"));
    // No key: the fake answers 401, and the message shows the URL it called.
    let err = c.list_collections().await.unwrap_err();
    assert!(err.to_string().contains("admin:***@"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    o.url = "not a url with secret:hunter2@".into();
    let err = QdrantClient::new(o).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn retries_only_idempotent_calls() {
    let fake = FakeQdrant::with_keys().await;
    fake.create_collection("c", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
    let c = client(&fake, Some(KEY));
    let count = |f: &FakeQdrant, method: &str, path: &str| {
        f.requests()
            .iter()
            .filter(|r| r.method == method && r.uri.split('?').next() == Some(path))
            .count()
    };

    // 500 on create: not retried, the error quotes Qdrant.
    fake.inject(Fault::status(Some(axum::http::Method::POST), "/collections/c/snapshots", 500, 1));
    let err = c.create_snapshot(&SnapshotScope::collection("c"), true).await.unwrap_err();
    assert_eq!(http_status(&err), Some(500));
    assert!(err.to_string().contains("Service internal error"), "{err}");
    assert_eq!(count(&fake, "POST", "/collections/c/snapshots"), 1);
    assert!(fake.snapshot_names("c").is_empty());

    // 500 twice on list: retried, then it succeeds.
    fake.inject(Fault::status(Some(axum::http::Method::GET), "/collections/c/snapshots", 500, 2));
    assert!(c.list_snapshots(&SnapshotScope::collection("c")).await.unwrap().is_empty());
    assert_eq!(count(&fake, "GET", "/collections/c/snapshots"), 3);

    // More failures than retries: the last error is reported.
    fake.inject(Fault::status(Some(axum::http::Method::GET), "/collections/c/cluster", 503, 10));
    let err = c.collection_cluster_info("c").await.unwrap_err();
    assert_eq!(http_status(&err), Some(503));
    assert_eq!(count(&fake, "GET", "/collections/c/cluster"), 4);
    fake.clear_faults();

    // 429 with Retry-After: waited for, then retried.
    fake.inject(Fault::rate_limit(Some(axum::http::Method::GET), "/collections", 1, 1));
    let started = std::time::Instant::now();
    c.list_collections().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "Retry-After was not honoured");

    // Upload is not retried either.
    fake.inject(Fault::status(Some(axum::http::Method::POST), "/snapshots/upload", 500, 1));
    let err = c
        .upload_recover(
            &SnapshotScope::collection("u"),
            chunks_of(pseudo_random(1000, 2), 100),
            None,
            &RecoverOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(http_status(&err), Some(500));
    assert_eq!(count(&fake, "POST", "/collections/u/snapshots/upload"), 1);

    // Connection refused on an idempotent call: retried, then a clear error.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut o = QdrantOptions::new(format!("http://{dead}"));
    o.retries = 1;
    o.retry_base_delay = Duration::from_millis(5);
    let err = QdrantClient::new(o).unwrap().list_collections().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Qdrant);
    assert!(err.to_string().contains("could not connect"), "{err}");
}

#[tokio::test]
async fn cut_or_stalled_download_is_an_error() {
    let fake = FakeQdrant::with_keys().await;
    let bytes = pseudo_random(1 << 20, 9);
    fake.set_snapshot_source("c", bytes.clone());
    let c = client(&fake, Some(KEY));
    let scope = SnapshotScope::collection("c");
    let d = c.create_snapshot(&scope, true).await.unwrap().unwrap();

    fake.inject(Fault::cut_download(&d.name, 300_000));
    let dl = c.download_snapshot(&scope, &d.name).await.unwrap();
    assert_eq!(dl.content_length(), Some(bytes.len() as u64));
    let mut s = dl.into_stream();
    let mut got = 0usize;
    let err = loop {
        match s.next().await {
            Some(Ok(b)) => got += b.len(),
            Some(Err(e)) => break e,
            None => panic!("a cut download ended cleanly after {got} bytes"),
        }
    };
    assert!(got <= 300_000, "{got}");
    let msg = err.to_string();
    assert!(msg.contains(&d.name) && msg.contains("incomplete"), "{msg}");
    assert!(msg.contains(&format!("of {}", bytes.len())), "{msg}");

    // The AsyncRead view fails too.
    fake.inject(Fault::cut_download(&d.name, 10_000));
    let mut r = c.download_snapshot(&scope, &d.name).await.unwrap().into_async_read();
    let mut buf = Vec::new();
    assert!(tokio::io::AsyncReadExt::read_to_end(&mut r, &mut buf).await.is_err());

    // A stalled body trips the read-idle timeout.
    let mut o = options(&fake, Some(KEY));
    o.read_idle_timeout = Duration::from_millis(200);
    let slow_client = QdrantClient::new(o).unwrap();
    fake.inject(Fault::slow_body(&d.name, 64 * 1024, Duration::from_secs(2), 1));
    let err =
        collect(slow_client.download_snapshot(&scope, &d.name).await.unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");

    // A slow but steady body completes.
    fake.inject(Fault::slow_body(&d.name, 256 * 1024, Duration::from_millis(20), 1));
    assert_eq!(
        collect(slow_client.download_snapshot(&scope, &d.name).await.unwrap()).await.unwrap(),
        bytes
    );

    // A wrong checksum in the description is visible to the caller.
    fake.inject(Fault::wrong_checksum("c"));
    let listed = c.list_snapshots(&scope).await.unwrap();
    assert_ne!(listed[0].checksum, Some(sha256_hex(&bytes)));
}

// ----------------------------------------------------------------------------------------
// The fake against the captures of a real Qdrant 1.18.3.

fn transcript() -> Option<Vec<Value>> {
    let dir = real_qdrant_dir()?;
    let text = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
    Some(text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

fn record<'a>(t: &'a [Value], label: &str) -> &'a Value {
    t.iter().find(|r| r["label"] == label).unwrap_or_else(|| panic!("no record {label}"))
}

/// Whether two JSON values have the same shape: the same object keys (ignoring `time`) and
/// value types, recursively; arrays compare by their first items when both have one.
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<_> = x.keys().filter(|k| *k != "time").collect();
            let ky: Vec<_> = y.keys().filter(|k| *k != "time").collect();
            kx == ky && kx.iter().all(|k| same_shape(&x[k.as_str()], &y[k.as_str()]))
        }
        (Value::Array(x), Value::Array(y)) => match (x.first(), y.first()) {
            (Some(p), Some(q)) => same_shape(p, q),
            _ => true,
        },
        (Value::Null, Value::Null) | (Value::Bool(_), Value::Bool(_)) => true,
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)) => true,
        _ => false,
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap().to_vec();
    Answer { status, headers, body }
}

/// Same status and, for JSON, the same shape (and the same error text); for plain text,
/// the same text.
fn assert_like(rec: &Value, got: &Answer) {
    let label = rec["label"].as_str().unwrap();
    assert_eq!(got.status as u64, rec["status"].as_u64().unwrap(), "{label}: status");
    if let Some(want) = rec.get("response_json").filter(|v| !v.is_null()) {
        let have = got.json();
        assert!(
            same_shape(&have, want),
            "{label}: body shape differs:\n fake: {have}\n real: {want}"
        );
        if let Some(e) = want.pointer("/status/error") {
            assert_eq!(have.pointer("/status/error"), Some(e), "{label}: error text");
        }
        assert_eq!(
            got.headers.get("content-type").map(|v| v.to_str().unwrap().to_string()),
            Some("application/json".into()),
            "{label}"
        );
    } else if let Some(want) = rec.get("response_text").and_then(Value::as_str) {
        assert_eq!(got.text(), want, "{label}: text body");
        let ct = rec.pointer("/response_headers/content-type").and_then(Value::as_str);
        assert_eq!(
            got.headers.get("content-type").map(|v| v.to_str().unwrap()),
            ct,
            "{label}: content type"
        );
    } else if rec["status"] == 404 {
        assert!(got.body.is_empty(), "{label}: empty body");
    }
}

#[tokio::test]
async fn fake_matches_the_captures() {
    let (Some(t), Some(v0)) = (transcript(), real_snapshot("fixture-v0.snapshot")) else {
        return;
    };
    let fake = FakeQdrant::with_keys().await;
    fake.set_snapshot_source("fixture", v0.clone());
    fake.set_points_count("fixture", 3000);
    let base = fake.url();
    let http = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut rb = http.get(format!("{base}{path}"));
        if let Some(k) = key {
            rb = rb.header("api-key", k);
        }
        rb
    };
    let key = Some(KEY);

    assert_like(record(&t, "missing collection info"), &send(get("/collections/nope", key)).await);
    assert_like(
        record(&t, "snapshots of missing collection"),
        &send(get("/collections/nope/snapshots", key)).await,
    );
    assert_like(
        record(&t, "create snapshot of missing collection"),
        &send(
            http.post(format!("{base}/collections/nope/snapshots?wait=true"))
                .header("api-key", KEY),
        )
        .await,
    );
    assert_like(record(&t, "no key"), &send(get("/collections", None)).await);
    assert_like(record(&t, "wrong key"), &send(get("/collections", Some("wrong"))).await);
    assert_like(
        record(&t, "bearer auth"),
        &send(http.get(format!("{base}/collections")).bearer_auth(KEY)).await,
    );

    // The seed's create body is accepted and makes a collection without dense vectors.
    let seed = record(&t, "create collection with the seed's body (vector_size)");
    let a = send(
        http.put(format!("{base}/collections/seedbody"))
            .header("api-key", KEY)
            .json(&seed["request_json"]),
    )
    .await;
    assert_like(seed, &a);
    let info_rec = record(&t, "info of that collection");
    let a = send(get("/collections/seedbody", key)).await;
    assert_like(info_rec, &a);
    assert_eq!(
        a.json()["result"]["config"]["params"],
        info_rec["response_json"]["result"]["config"]["params"]
    );

    assert_like(record(&t, "collection info"), &send(get("/collections/fixture", key)).await);
    let cl = record(&t, "collection cluster info");
    let a = send(get("/collections/fixture/cluster", key)).await;
    assert_like(cl, &a);
    assert_eq!(a.json()["result"]["peer_id"], cl["response_json"]["result"]["peer_id"]);

    // Create (any body is ignored), list, async create, range download, missing snapshot.
    let create = record(&t, "create snapshot with the seed's body (ignored)");
    let a = send(
        http.post(format!("{base}/collections/fixture/snapshots?wait=true"))
            .header("api-key", KEY)
            .json(&create["request_json"]),
    )
    .await;
    assert_like(create, &a);
    let name = a.json()["result"]["name"].as_str().unwrap().to_string();
    let re_ok = name.len() == "fixture-7071378641532464-2026-11-24-19-19-47.snapshot".len()
        && name.starts_with("fixture-7071378641532464-20");
    assert!(re_ok, "{name}");
    assert_eq!(a.json()["result"]["checksum"], json!(sha256_hex(&v0)));
    assert_like(
        record(&t, "list snapshots"),
        &send(get("/collections/fixture/snapshots", key)).await,
    );
    assert_like(
        record(&t, "create snapshot wait=false"),
        &send(
            http.post(format!("{base}/collections/fixture/snapshots?wait=false"))
                .header("api-key", KEY),
        )
        .await,
    );
    let range = record(&t, "range download first 1024 bytes");
    let a = send(
        get(&format!("/collections/fixture/snapshots/{name}"), key).header("Range", "bytes=0-1023"),
    )
    .await;
    assert_eq!(a.status, 206);
    assert_eq!(a.body.len(), 1024);
    assert_eq!(
        hex::encode(&a.body[..16]),
        range["response_body"]["first_bytes_hex"].as_str().unwrap()
    );
    for h in ["accept-ranges", "content-type"] {
        assert_eq!(
            a.headers[h].to_str().unwrap(),
            range["response_headers"][h].as_str().unwrap(),
            "{h}"
        );
    }
    assert_eq!(
        a.headers["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"{name}\"")
    );
    let full = send(get(&format!("/collections/fixture/snapshots/{name}"), key)).await;
    assert_eq!(
        sha256_hex(&full.body),
        record(&t, "download snapshot v0")["response_body"]["sha256"].as_str().unwrap()
    );
    assert_like(
        record(&t, "download missing snapshot"),
        &send(get("/collections/fixture/snapshots/none.snapshot", key)).await,
    );
    assert_like(
        record(&t, "delete missing snapshot"),
        &send(
            http.delete(format!("{base}/collections/fixture/snapshots/none.snapshot?wait=true"))
                .header("api-key", KEY),
        )
        .await,
    );
    assert_like(
        record(&t, "delete snapshot"),
        &send(
            http.delete(format!("{base}/collections/fixture/snapshots/{name}?wait=true"))
                .header("api-key", KEY),
        )
        .await,
    );
    assert_like(
        record(&t, "read-only key creates snapshot"),
        &send(
            http.post(format!("{base}/collections/fixture/snapshots?wait=true"))
                .header("api-key", RO_KEY),
        )
        .await,
    );
    assert_like(
        record(&t, "read-only key lists snapshots"),
        &send(get("/collections/fixture/snapshots", Some(RO_KEY))).await,
    );
    assert_like(
        record(&t, "create shard snapshot"),
        &send(
            http.post(format!("{base}/collections/fixture/shards/0/snapshots?wait=true"))
                .header("api-key", KEY),
        )
        .await,
    );
    assert_like(
        record(&t, "create full snapshot"),
        &send(http.post(format!("{base}/snapshots?wait=true")).header("api-key", KEY)).await,
    );
    assert_like(record(&t, "list full snapshots"), &send(get("/snapshots", key)).await);

    // Uploads.
    let form = |field: &str, file: &str| {
        reqwest::multipart::Form::new().part(
            field.to_string(),
            reqwest::multipart::Part::bytes(v0.clone()).file_name(file.to_string()),
        )
    };
    let up = |path: &str, k: &str, f: reqwest::multipart::Form| {
        http.post(format!("{base}{path}")).header("api-key", k).multipart(f)
    };
    let rec = record(&t, "upload-recover into new collection with checksum");
    let path = rec["path"].as_str().unwrap();
    assert_like(rec, &send(up(path, KEY, form("snapshot", "restore-v0.snapshot"))).await);
    let info = record(&t, "restored collection info");
    let a = send(get("/collections/restored", key)).await;
    assert_like(info, &a);
    assert_eq!(a.json()["result"]["points_count"], 3000);
    assert_eq!(
        a.json()["result"]["config"]["params"],
        info["response_json"]["result"]["config"]["params"]
    );
    let after = record(&t, "snapshots dir after upload");
    let a = send(get("/collections/restored/snapshots", key)).await;
    assert_like(after, &a);
    assert_eq!(a.json()["result"][0]["name"], "restore-v0.snapshot");
    assert_eq!(fake.recovered("restored"), Some(v0.clone()));

    let rec = record(&t, "upload-recover with wrong checksum");
    assert_like(
        rec,
        &send(up(rec["path"].as_str().unwrap(), KEY, form("snapshot", "x.snapshot"))).await,
    );
    let rec = record(&t, "upload-recover with wrong field name");
    assert_like(
        rec,
        &send(up(rec["path"].as_str().unwrap(), KEY, form("file", "x.snapshot"))).await,
    );
    let mk = record(&t, "create collection dim 8 for mismatch");
    send(
        http.put(format!("{base}/collections/mismatch"))
            .header("api-key", KEY)
            .json(&mk["request_json"]),
    )
    .await;
    let rec = record(&t, "upload-recover into collection with other vector size");
    let a = send(up(rec["path"].as_str().unwrap(), KEY, form("snapshot", "x.snapshot"))).await;
    assert_eq!(a.status, 400);
    let prefix = "Wrong input: Snapshot is not compatible with existing collection: ";
    assert!(rec["response_json"]["status"]["error"].as_str().unwrap().starts_with(prefix));
    assert!(a.json()["status"]["error"].as_str().unwrap().starts_with(prefix), "{}", a.text());
    let rec = record(&t, "read-only key upload-recover");
    assert_like(
        rec,
        &send(up(rec["path"].as_str().unwrap(), RO_KEY, form("snapshot", "x.snapshot"))).await,
    );

    // Recover: POST is no route; file outside the snapshots dir; unreachable URL.
    for label in [
        "recover with POST (the seed's verb)",
        "recover from file outside snapshots dir",
        "recover from unreachable URL",
    ] {
        let rec = record(&t, label);
        let method =
            reqwest::Method::from_bytes(rec["method"].as_str().unwrap().as_bytes()).unwrap();
        let rb = http
            .request(method, format!("{base}{}", rec["path"].as_str().unwrap()))
            .header("api-key", KEY)
            .json(&rec["request_json"]);
        assert_like(rec, &send(rb).await);
    }
}
