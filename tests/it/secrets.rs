//! No secret reaches stdout or stderr, at any verbosity: every command that handles one is
//! run with `-vv` and `RUST_LOG=trace` and canary values, and no canary may appear.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const AWS_SECRET: &str = "canary-aws-secret-3f9c1e";
const AWS_TOKEN: &str = "canary-aws-session-token-7d2b";
const QDRANT_KEY: &str = "canary-qdrant-api-key-51ea";
const PASSPHRASE: &str = "canary-passphrase-90c4";
const WEBDAV_PASSWORD: &str = "canary-webdav-password-6a1f";
const WEBDAV_FILE_PASSWORD: &str = "canary-webdav-file-password-2b7e";
const CONFIG_AZURE_KEY: &str = "canary-config-azure-key-c3d8";
const CONFIG_QDRANT_KEY: &str = "canary-config-qdrant-key-e5f0";
const CONFIG_WEBDAV_PASSWORD: &str = "canary-config-webdav-password-17aa";

/// Runs qvault at full verbosity with every secret in the environment.
fn run(home: &Path, args: &[&str], extra: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qvault"));
    cmd.arg("-vv")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.join("home"))
        .env("QVAULT_CACHE_DIR", home.join("cache"))
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .env("AWS_ACCESS_KEY_ID", "AKIDCANARYID")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_SESSION_TOKEN", AWS_TOKEN)
        .env("QDRANT_API_KEY", QDRANT_KEY)
        .env("QVAULT_PASSPHRASE", PASSPHRASE)
        .envs(extra.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        use std::io::Write;
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A port on loopback that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn no_secret_appears_in_any_output_at_any_verbosity() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let repo = home.join("repo");
    let repo = repo.to_str().unwrap();

    // A plaintext identity file whose secret we know, and the repository made for it.
    let identity = age::x25519::Identity::generate();
    let identity_path = home.join("id.txt");
    let identity_text = qvault::crypto::identity_file_text(&identity, "now");
    std::fs::write(&identity_path, &identity_text).unwrap();
    let identity_secret = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    };
    let id = identity_path.to_str().unwrap();
    let recipient = identity.to_public().to_string();

    // An S3 repository whose server is not there: the storage layer signs, retries for
    // about 45 s, fails. Run alongside the rest.
    let s3 = {
        let home = home.to_path_buf();
        std::thread::spawn(move || {
            let endpoint = format!("http://127.0.0.1:{}", closed_port());
            let s3 =
                [("QVAULT_REPOSITORY", "s3://bucket/prefix"), ("QVAULT_S3_ENDPOINT", &endpoint)];
            run(&home, &["backups"], &s3, None)
        })
    };

    let mut outputs: Vec<(String, Output)> = Vec::new();
    let mut step = |name: &str, args: &[&str], extra: &[(&str, &str)], stdin: Option<&[u8]>| {
        let out = run(home, args, extra, stdin);
        outputs.push((name.to_string(), out));
        outputs.last().map(|(_, o)| o.status.code()).unwrap()
    };
    let with_repo = [("QVAULT_REPOSITORY", repo)];
    assert_eq!(step("init", &["init", "--recipient", &recipient], &with_repo, None), Some(0));

    // Key files: one plain (to learn its secrets), one under the canary passphrase.
    let plain_key = home.join("key.json");
    let protected_key = home.join("key.age");
    let as_admin = [("QVAULT_REPOSITORY", repo), ("QVAULT_IDENTITY", id)];
    for (path, extra) in [(&plain_key, None), (&protected_key, Some("--passphrase"))] {
        let mut args = vec!["key", "export", "--out", path.to_str().unwrap()];
        args.extend(extra);
        assert_eq!(step("key export", &args, &as_admin, None), Some(0));
    }
    let key_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plain_key).unwrap()).unwrap();
    let master = key_json["master"].as_str().unwrap().to_string();
    let metadata_identity = key_json["metadata_identity"].as_str().unwrap().to_string();

    let input: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let as_host = [("QVAULT_REPOSITORY", repo), ("QVAULT_KEY", protected_key.to_str().unwrap())];
    assert_eq!(step("backup (key)", &["backup", "-"], &as_host, Some(&input)), Some(0));
    assert_eq!(step("backup (identity)", &["backup", "-"], &as_admin, Some(&input)), Some(0));
    assert_eq!(step("backups", &["backups"], &as_admin, None), Some(0));
    assert_eq!(step("restore", &["restore", "latest", "--to", "-"], &as_admin, None), Some(0));
    assert_eq!(step("verify", &["verify", "--read-data"], &as_admin, None), Some(0));

    let qdrant = format!("http://127.0.0.1:{}", closed_port());
    let list = ["qdrant", "snapshots", "list", "--qdrant", &qdrant, "--collection", "c"];
    assert_ne!(step("qdrant snapshots list", &list, &[], None), Some(0));

    // WebDAV passwords from the environment and from a password file, Azure and Qdrant keys
    // and a WebDAV password from a config file: to servers that are not there.
    let closed = format!("127.0.0.1:{}", closed_port());
    let dav = format!("webdav://bob@{closed}/repo");
    let dav_env = [("QVAULT_WEBDAV_PASSWORD", WEBDAV_PASSWORD)];
    assert_ne!(step("webdav (env)", &["backups", "--repo", &dav], &dav_env, None), Some(0));
    let password_file = home.join("webdav-password");
    std::fs::write(&password_file, format!("{WEBDAV_FILE_PASSWORD}\n")).unwrap();
    let file_env = [("QVAULT_WEBDAV_PASSWORD_FILE", password_file.to_str().unwrap())];
    let args = ["backups", "--repo", &dav];
    assert_ne!(step("webdav (file)", &args, &file_env, None), Some(0));
    let config = home.join("qvault.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"azblob://container/prefix\"\n[azure]\nendpoint = \"http://{closed}\"\n\
             account = \"devstoreaccount1\"\nkey = {CONFIG_AZURE_KEY:?}\n\
             [qdrant]\napi_key = {CONFIG_QDRANT_KEY:?}\n[webdav]\npassword = {CONFIG_WEBDAV_PASSWORD:?}\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let no_key = [("QDRANT_API_KEY", ""), ("AZURE_STORAGE_KEY", "")];
    assert_ne!(step("azure (config)", &["--config", config, "backups"], &no_key, None), Some(0));
    let show = ["--config", config, "config", "show"];
    assert_eq!(step("config show", &show, &no_key, None), Some(0));
    let list = ["--config", config, "qdrant", "snapshots", "list", "--qdrant", &qdrant];
    assert_ne!(step("qdrant (config key)", &list, &no_key, None), Some(0));
    let dav_config = ["--config", config, "--repo", &dav, "backups"];
    assert_ne!(step("webdav (config)", &dav_config, &no_key, None), Some(0));

    let s3 = s3.join().unwrap();
    assert_ne!(s3.status.code(), Some(0));
    outputs.push(("s3 backups".to_string(), s3));

    let canaries = [
        AWS_SECRET,
        AWS_TOKEN,
        QDRANT_KEY,
        PASSPHRASE,
        &identity_secret,
        &master,
        &metadata_identity,
        WEBDAV_PASSWORD,
        WEBDAV_FILE_PASSWORD,
        CONFIG_AZURE_KEY,
        CONFIG_QDRANT_KEY,
        CONFIG_WEBDAV_PASSWORD,
    ];
    let mut logged = 0;
    for (name, out) in &outputs {
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        logged += text.lines().count();
        for canary in canaries {
            assert!(!text.contains(canary), "{name} printed a secret:\n{text}");
        }
    }
    // The runs really were verbose: a quiet run proves nothing.
    assert!(logged > 200, "only {logged} lines of output");
}
