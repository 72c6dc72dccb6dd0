//! Helpers shared by integration tests.
#![allow(dead_code)]

pub mod fake_qdrant;

use age::secrecy::ExposeSecret;
use age::x25519;
use qvault::backup::{BackupSummary, StreamSource};
use qvault::format::config::ChunkerConfig;
use qvault::repo::{Cache, Credentials, InitOptions, Repository};
use qvault::storage::{Storage, StorageOptions};
use sha2::Digest;

/// Lowercase hex SHA-256, as manifests and Qdrant's checksums write it.
/// `cmd` (a `TestRepo::cli()`) run as user nobody, or `None` when the tests cannot drop
/// privileges (not root, no setpriv): then it says so on stderr, so the caller skips loudly.
pub fn as_nobody(cli: &std::process::Command) -> Option<std::process::Command> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !root || !setpriv.exists() {
        eprintln!("SKIPPED: needs root and /usr/bin/setpriv to drop privileges");
        return None;
    }
    let mut cmd = std::process::Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(cli.get_program());
    cmd.args(cli.get_args());
    for (k, v) in cli.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Some(cmd)
}

/// `chmod -R mode path`, for tests that run commands as another user ([`as_nobody`]).
pub fn chmod_r(mode: &str, path: &std::path::Path) {
    let status = std::process::Command::new("chmod").args(["-R", mode]).arg(path).status();
    assert!(status.unwrap().success(), "chmod -R {mode} {}", path.display());
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// The S3 test server's settings from `.ci/s3-server.sh start`, or `None` (with a loud
/// message) when it is not running. With `QVAULT_REQUIRE_S3=1` (set by `.ci/run`) a missing
/// server fails the test instead of skipping it.
pub fn s3_options() -> Option<(String, StorageOptions)> {
    let Some(endpoint) = std::env::var("QVAULT_TEST_S3_ENDPOINT").ok().filter(|v| !v.is_empty())
    else {
        if std::env::var("QVAULT_REQUIRE_S3").as_deref() == Ok("1") {
            panic!(
                "QVAULT_REQUIRE_S3=1 but QVAULT_TEST_S3_ENDPOINT is unset (start .ci/s3-server.sh)"
            );
        }
        eprintln!("SKIPPED: S3 tests need QVAULT_TEST_S3_ENDPOINT (start .ci/s3-server.sh)");
        return None;
    };
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set with QVAULT_TEST_S3_ENDPOINT"))
    };
    let bucket = var("QVAULT_TEST_S3_BUCKET");
    let options = StorageOptions {
        s3_endpoint: Some(endpoint),
        s3_region: Some("us-east-1".to_string()),
        access_key_id: Some(var("QVAULT_TEST_S3_ACCESS_KEY")),
        secret_access_key: Some(var("QVAULT_TEST_S3_SECRET_KEY")),
        // Tests against a local server should fail fast rather than back off for minutes.
        retries: Some(1),
        ..Default::default()
    };
    Some((bucket, options))
}

/// A `Storage` on the S3 test server under `prefix` (use a unique prefix per test), or
/// `None` when the server is not configured (see [`s3_options`]).
pub fn s3_storage(prefix: &str) -> Option<Storage> {
    let (bucket, options) = s3_options()?;
    let location = format!("s3://{bucket}/{prefix}");
    Some(Storage::open(&location, &options).unwrap_or_else(|e| panic!("open {location}: {e}")))
}

/// A prefix no other test run uses, so runs against a long-lived server don't collide.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A filesystem repository in a temporary directory (`repo/`, cache in `cache/`), with its
/// one data identity also written to `identity.txt` for tests that drive the CLI.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub identity: x25519::Identity,
}

impl TestRepo {
    pub async fn new(chunker: Option<ChunkerConfig>) -> TestRepo {
        let dir = tempfile::tempdir().unwrap();
        let identity = x25519::Identity::generate();
        let options =
            InitOptions { recipients: vec![identity.to_public()], chunker, ..Default::default() };
        let repo = TestRepo { dir, identity };
        Repository::init(repo.storage(), options, &repo.cache()).await.unwrap();
        std::fs::write(repo.identity_path(), repo.identity.to_string().expose_secret()).unwrap();
        repo
    }

    /// The repository's directory, as the CLI's `--repo` takes it.
    pub fn location(&self) -> std::path::PathBuf {
        self.dir.path().join("repo")
    }

    pub fn storage(&self) -> Storage {
        Storage::open(self.location().to_str().unwrap(), &Default::default()).unwrap()
    }

    pub fn cache(&self) -> Cache {
        Cache::Dir(self.dir.path().join("cache"))
    }

    pub fn identity_path(&self) -> std::path::PathBuf {
        self.dir.path().join("identity.txt")
    }

    /// The `qvault` binary on this repository with its identity, its own CLI cache and
    /// config directory (so nothing is remembered outside the test), and no repository or
    /// Qdrant key from the environment.
    pub fn cli(&self) -> std::process::Command {
        self.cli_on(&self.location())
    }

    /// [`TestRepo::cli`] on another repository location (one to init, a copy target).
    pub fn cli_on(&self, repo: &std::path::Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qvault"));
        cmd.arg("--repo")
            .arg(repo)
            .arg("--identity")
            .arg(self.identity_path())
            .env("QVAULT_CACHE_DIR", self.dir.path().join("cli-cache"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("QDRANT_API_KEY")
            .env_remove("QVAULT_REPOSITORY")
            .env_remove("QVAULT_EXPECT_KEY");
        cmd
    }

    pub async fn open(&self) -> Repository {
        let credentials = Credentials { identities: vec![self.identity.clone()], key: None };
        Repository::open(self.storage(), credentials, &self.cache()).await.unwrap()
    }
}

/// Backs up `data` as one file stream named `name`.
pub async fn backup_bytes(repo: &Repository, name: &str, data: Vec<u8>) -> BackupSummary {
    let source = StreamSource {
        name: name.to_string(),
        kind: qvault::format::manifest::StreamKind::File,
        reader: Box::new(std::io::Cursor::new(data)),
        source: None,
        expected_sha256: None,
        left_out: None,
    };
    qvault::backup::backup(repo, vec![source], &Default::default(), std::sync::Arc::default())
        .await
        .unwrap()
}

/// Restores the first stream of a backup into memory.
pub async fn restore_bytes(repo: &Repository, summary: &BackupSummary) -> qvault::Result<Vec<u8>> {
    let stream = &summary.manifest.streams[0];
    qvault::restore::restore_stream(repo, summary.id, stream, Vec::new(), &Default::default())
        .await
        .map(|(v, _)| v)
}

/// Opens `storage` as a write-only backup host would: with only the repository key, exported
/// by `admin`, and a throwaway cache.
pub async fn open_as_backup_host(admin: &Repository, storage: &Storage) -> Repository {
    let key = qvault::format::keyfile::decode(admin.export_key().unwrap().expose(), "key").unwrap();
    let credentials = Credentials { identities: vec![], key: Some(key) };
    Repository::open(storage.clone(), credentials, &Cache::InMemory).await.unwrap()
}

/// The data chunk ids of `manifest`'s streams in stream order, whatever its format version
/// (version 2 reads them from list blocks through `qvault::refs`).
pub async fn data_chunks(
    repo: &Repository,
    manifest: &qvault::format::manifest::Manifest,
) -> Vec<qvault::id::ChunkId> {
    let mut ids = Vec::new();
    qvault::refs::for_each_reference(repo, manifest, |id, kind| {
        if kind == qvault::refs::RefKind::Data {
            ids.push(*id);
        }
    })
    .await
    .unwrap();
    ids
}
