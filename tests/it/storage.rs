//! Storage conformance: the same suite against memory, the filesystem and a real S3 server
//! (s3s-fs from `.ci/s3-server.sh`), plus fault cases that must give clear errors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use qvault::storage::{ObjectInfo, Storage, StorageOptions};
use qvault::ErrorKind;

/// Everything `Storage` promises, on any backend. `storage` must start empty.
async fn conformance(storage: &Storage) {
    let loc = storage.location().to_string();

    // Empty repository.
    assert_eq!(storage.list("").await.unwrap(), vec![], "{loc}");
    assert_eq!(storage.list("data/").await.unwrap(), vec![], "{loc}");
    assert!(!storage.exists("config").await.unwrap());

    // Round trip, including an empty object and nested directories.
    let config = Bytes::from_static(b"{\"version\":1}");
    storage.write("config", config.clone()).await.unwrap();
    assert_eq!(storage.read("config").await.unwrap(), config);
    let pack: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    storage.write("data/ab/abcdef", pack.clone()).await.unwrap();
    storage.write("data/01/0123", Bytes::from_static(b"x")).await.unwrap();
    storage.write("index/deep/er/still/i1", Bytes::new()).await.unwrap();
    assert_eq!(storage.read("data/ab/abcdef").await.unwrap(), pack);
    assert_eq!(storage.read("index/deep/er/still/i1").await.unwrap(), Bytes::new());

    // Overwrite replaces.
    storage.write("config", Bytes::from_static(b"v2")).await.unwrap();
    assert_eq!(storage.read("config").await.unwrap(), Bytes::from_static(b"v2"));

    // Ranges.
    assert_eq!(storage.read_range("data/ab/abcdef", 0..10).await.unwrap(), pack.slice(0..10));
    assert_eq!(
        storage.read_range("data/ab/abcdef", 65_536..99_999).await.unwrap(),
        pack.slice(65_536..99_999)
    );
    assert_eq!(storage.read_range("data/ab/abcdef", 5..5).await.unwrap(), Bytes::new());
    let short = storage.read_range("data/ab/abcdef", 99_990..100_010).await.unwrap_err();
    assert_eq!(short.kind(), ErrorKind::Corrupt, "{short:?}");

    // exists / size.
    assert!(storage.exists("data/ab/abcdef").await.unwrap());
    assert!(!storage.exists("data/ab/nope").await.unwrap());
    assert_eq!(storage.size("data/ab/abcdef").await.unwrap(), 100_000);
    assert_eq!(storage.size("index/deep/er/still/i1").await.unwrap(), 0);

    // Listing: recursive, files only, relative to the root, sorted.
    let all = storage.list("").await.unwrap();
    let expect = |items: &[(&str, u64)]| -> Vec<ObjectInfo> {
        items.iter().map(|(p, s)| ObjectInfo { path: p.to_string(), size: *s }).collect()
    };
    assert_eq!(
        all,
        expect(&[
            ("config", 2),
            ("data/01/0123", 1),
            ("data/ab/abcdef", 100_000),
            ("index/deep/er/still/i1", 0),
        ]),
        "{loc}"
    );
    assert_eq!(
        storage.list("data/").await.unwrap(),
        expect(&[("data/01/0123", 1), ("data/ab/abcdef", 100_000)])
    );
    // A directory name without the trailing slash means the same.
    assert_eq!(storage.list("data").await.unwrap().len(), 2);
    assert_eq!(storage.list("backups/").await.unwrap(), vec![]);

    // write_new refuses an existing object and leaves it alone.
    storage.write_new("backups/b1", Bytes::from_static(b"first")).await.unwrap();
    let e = storage.write_new("backups/b1", Bytes::from_static(b"second")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{loc}: {e:?}");
    assert!(e.message().contains("backups/b1"), "{}", e.message());
    assert_eq!(storage.read("backups/b1").await.unwrap(), Bytes::from_static(b"first"));

    // NotFound, naming the object and the location.
    for e in [
        storage.read("data/ff/missing").await.unwrap_err(),
        storage.read_range("data/ff/missing", 0..4).await.unwrap_err(),
        storage.size("data/ff/missing").await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{loc}: {e:?}");
        assert!(e.message().contains("data/ff/missing"), "{}", e.message());
        assert!(e.message().contains(&loc), "{}", e.message());
    }

    // Delete, and delete of a missing object.
    storage.delete("data/01/0123").await.unwrap();
    assert!(!storage.exists("data/01/0123").await.unwrap());
    storage.delete("data/01/0123").await.unwrap();
    storage.delete("never/was/here").await.unwrap();
    assert_eq!(storage.list("data/").await.unwrap(), expect(&[("data/ab/abcdef", 100_000)]));

    // Bad paths are refused, not written outside the repository.
    let e = storage.write("../escape", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    storage.check_reachable().await.unwrap();

    // Clones share the store.
    let clone = storage.clone();
    assert_eq!(clone.read("backups/b1").await.unwrap(), Bytes::from_static(b"first"));
}

#[tokio::test]
async fn conformance_memory() {
    conformance(&Storage::memory()).await;
}

#[tokio::test]
async fn conformance_fs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let storage = Storage::open(root.to_str().unwrap(), &StorageOptions::default()).unwrap();
    // open creates nothing; the first write creates the directory.
    assert!(!root.exists());
    storage.create_root().await.unwrap();
    assert!(root.is_dir());
    conformance(&storage).await;
    // No temp files left behind, and they never show in listings.
    let tmp = root.join(".qvault-tmp");
    if tmp.exists() {
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    // file:// form opens the same repository.
    let url = format!("file://{}", root.display());
    let again = Storage::open(&url, &StorageOptions::default()).unwrap();
    assert_eq!(again.read("backups/b1").await.unwrap(), Bytes::from_static(b"first"));
}

#[tokio::test]
async fn conformance_s3() {
    let Some(storage) = support::s3_storage(&support::unique_prefix("conformance")) else {
        return;
    };
    storage.check_reachable().await.unwrap();
    conformance(&storage).await;
}

#[tokio::test]
async fn fs_missing_location_is_not_found_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("no/such/repo");
    let storage = Storage::open(root.to_str().unwrap(), &StorageOptions::default()).unwrap();
    let e = storage.read("config").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
    assert!(e.message().contains("config") && e.message().contains("no/such/repo"), "{e}");
    assert_eq!(storage.check_reachable().await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!storage.exists("config").await.unwrap());
    assert_eq!(storage.list("").await.unwrap(), vec![]);
    storage.delete("config").await.unwrap();
    assert!(!root.exists(), "reads must not create the repository directory");
    // Writing creates it.
    storage.write("config", Bytes::from_static(b"c")).await.unwrap();
    assert_eq!(storage.read("config").await.unwrap(), Bytes::from_static(b"c"));
}

#[tokio::test]
async fn fs_location_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let storage = Storage::open(file.to_str().unwrap(), &StorageOptions::default()).unwrap();
    let e = storage.read("config").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage);
    assert!(e.message().contains("not a directory"), "{e}");
}

/// S3 options for a local test server: dummy credentials, no retries.
fn options_for(endpoint: &str) -> StorageOptions {
    StorageOptions {
        s3_endpoint: Some(endpoint.to_string()),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI-not-a-real-secret".into()),
        retries: Some(0),
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    }
}

/// The errors of one check, one read and one write, in that order.
async fn check_read_write_errors(storage: &Storage) -> [qvault::Error; 3] {
    [
        storage.check_reachable().await.unwrap_err(),
        storage.read("config").await.unwrap_err(),
        storage.write("config", Bytes::from_static(b"x")).await.unwrap_err(),
    ]
}

#[tokio::test]
async fn s3_unreachable_endpoint_names_it() {
    // A port that nothing listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let storage = Storage::open("s3://bucket/prefix", &options_for(&endpoint)).unwrap();
    for e in
        [storage.read("config").await.unwrap_err(), storage.check_reachable().await.unwrap_err()]
    {
        assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
        let m = e.message();
        assert!(m.contains(&endpoint), "{m}");
        assert!(m.contains("s3://bucket/prefix"), "{m}");
        assert!(m.contains("is the server running"), "{m}");
        assert!(!format!("{e:?}").contains("not-a-real-secret"), "{e:?}");
    }
    let e = storage.read("config").await.unwrap_err();
    assert!(e.message().contains("config"), "{}", e.message());
    // Connection refused is "cannot reach", with the hint, for writes too.
    let e = storage.write("config", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
    assert_eq!(
        e.message(),
        format!("cannot reach {endpoint} for writing config in s3://bucket/prefix: is the server running?")
    );
}

#[tokio::test]
async fn s3_wrong_credentials_say_so() {
    let Some((bucket, mut options)) = support::s3_options() else {
        return;
    };
    options.secret_access_key = Some("definitely-the-wrong-secret".into());
    options.retries = Some(0);
    let location = format!("s3://{bucket}/{}", support::unique_prefix("badcreds"));
    let storage = Storage::open(&location, &options).unwrap();
    for e in check_read_write_errors(&storage).await {
        assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
        let m = e.message();
        assert!(m.contains("credentials"), "{m}");
        assert!(m.contains(&location), "{m}");
        assert!(!format!("{e:?}").contains("definitely-the-wrong-secret"), "{e:?}");
    }
}

#[tokio::test]
async fn s3_missing_bucket_is_reported() {
    let Some((_, options)) = support::s3_options() else {
        return;
    };
    let storage = Storage::open("s3://no-such-bucket-qvault/x", &options).unwrap();
    let e = storage.check_reachable().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
    assert!(e.message().contains("s3://no-such-bucket-qvault/x"), "{e}");
}

#[test]
fn unknown_scheme_lists_supported_forms() {
    let e = Storage::open("ftp://host/x", &StorageOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("s3://bucket/prefix"), "{e}");
    assert!(e.message().contains("file:///"), "{e}");
}

#[test]
fn location_and_debug_never_show_secrets() {
    let options = StorageOptions {
        access_key_id: Some("AKIDSECRETISH".into()),
        secret_access_key: Some("topsecretvalue".into()),
        ..Default::default()
    };
    let storage = Storage::open("s3://bucket/p", &options).unwrap();
    assert_eq!(storage.location(), "s3://bucket/p");
    let d = format!("{storage:?} {options:?}");
    assert!(!d.contains("topsecretvalue") && !d.contains("AKIDSECRETISH"), "{d}");
}

/// An HTTP server on loopback that answers every request with `status` and an S3-style
/// error body; returns its endpoint URL.
async fn refusing_server(status: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let code = if status == 401 { "InvalidAccessKeyId" } else { "AccessDenied" };
    let body = format!("<Error><Code>{code}</Code><Message>no</Message></Error>");
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { (axum::http::StatusCode::from_u16(status).unwrap(), body) }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    endpoint
}

#[tokio::test]
async fn s3_401_and_403_are_refused_credentials_with_the_hint() {
    for status in [401u16, 403] {
        let endpoint = refusing_server(status).await;
        let storage = Storage::open("s3://bucket/prefix", &options_for(&endpoint)).unwrap();
        for e in check_read_write_errors(&storage).await {
            assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
            let m = e.message();
            assert!(
                m.contains(&format!(
                    "S3 refused the credentials for s3://bucket/prefix ({status})"
                )),
                "{m}"
            );
            assert!(m.contains("check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"), "{m}");
            assert!(!m.contains("timed out"), "{m}");
            // The kept cause is short: kind and status, never the response headers.
            let cause = std::error::Error::source(&e).unwrap().to_string();
            assert!(cause.contains(&format!("HTTP {status}")), "{cause}");
            assert!(!cause.contains("content-length") && !cause.contains("headers"), "{cause}");
        }
    }
}

/// The bug: with `RUST_BACKTRACE=1`, OpenDAL's Debug text carries a backtrace whose frames
/// mention timeouts, and a wrong password was reported as "the server timed out". Run in a
/// child process so the variable is seen before anything captures a backtrace.
#[test]
fn a_refused_password_with_rust_backtrace_set_is_never_reported_as_a_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for status in [401u16, 403] {
        let endpoint = rt.block_on(refusing_server(status));
        let mut cases = vec![(
            "s3://bucket/prefix".to_string(),
            "S3 refused the credentials for s3://bucket/prefix",
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        )];
        // WebDAV only for 401: OpenDAL retries a WebDAV 403 (owncloud answers it for a
        // locked file), which would make this test sit out the whole backoff.
        if cfg!(feature = "webdav") && status == 401 {
            let host = endpoint.trim_start_matches("http://");
            cases.push((
                format!("webdav://bob:wrong-password@{host}/repo"),
                "the WebDAV server refused the credentials for webdav://bob:***@",
                "check the user and password in the location",
            ));
        }
        for (location, refused, hint) in cases {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_qvault"))
                .args(["backups", "--repo", &location, "--s3-endpoint", &endpoint])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", "/nonexistent")
                .env("RUST_BACKTRACE", "1")
                .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
                .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-not-a-real-secret")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(6), "{stderr}");
            assert!(stderr.contains(refused), "{stderr}");
            assert!(stderr.contains(hint), "{stderr}");
            assert!(!stderr.contains("timed out") && !stderr.contains("timeout"), "{stderr}");
            assert!(!stderr.to_ascii_lowercase().contains("content-type"), "{stderr}");
            assert!(!stderr.contains("wrong-password"), "{stderr}");
        }
    }
}

#[tokio::test]
async fn s3_server_that_never_answers_times_out() {
    // Accepts connections and holds them open without a byte of reply.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut options = options_for(&endpoint);
    options.timeout = Some(Duration::from_millis(500));
    options.io_timeout = Some(Duration::from_millis(500));
    let storage = Storage::open("s3://bucket/prefix", &options).unwrap();
    let started = std::time::Instant::now();
    let e = storage.read("config").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(e.kind(), ErrorKind::Storage, "{e:?}");
    assert_eq!(
        e.message(),
        "S3 timed out while reading config in s3://bucket/prefix; retry, or raise the timeout"
    );
}
