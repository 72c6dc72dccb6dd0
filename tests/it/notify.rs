//! `--notify URL`: the webhook gets one JSON summary per failed command (and per success with
//! `--notify-always`), and a webhook that is down never changes the command's result.

use std::process::Command;
use std::sync::{Arc, Mutex};

/// A local HTTP receiver that records every body POSTed to it.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    _runtime: tokio::runtime::Runtime,
}

fn receiver() -> Receiver {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/hook?token=webhook-secret", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                "ok"
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, bodies, _runtime: runtime }
}

fn qvault(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qvault"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("QVAULT_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap()
}

#[test]
fn a_failed_command_posts_its_summary_and_keeps_its_exit_code() {
    let hook = receiver();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-repository");
    let out = qvault(
        &["--notify", &hook.url, "--repo", missing.to_str().unwrap(), "backups"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let note = &bodies[0];
    assert_eq!(note["command"], "backups");
    assert_eq!(note["ok"], false);
    assert_eq!(note["exit_code"], 3);
    assert_eq!(note["error_kind"], "NotARepository");
    assert!(note["message"].as_str().unwrap().contains("no-repository"), "{note}");
    assert!(note["duration_seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn success_notifies_only_with_notify_always() {
    let hook = receiver();
    let dir = tempfile::tempdir().unwrap();
    let out = qvault(&["--notify", &hook.url, "completions", "bash"], dir.path());
    assert!(out.status.success());
    assert!(hook.bodies.lock().unwrap().is_empty(), "no news is good news");
    let out =
        qvault(&["--notify", &hook.url, "--notify-always", "completions", "bash"], dir.path());
    assert!(out.status.success());
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["ok"], true);
    assert_eq!(bodies[0]["command"], "completions");
}

#[test]
fn a_webhook_that_is_down_warns_once_with_the_url_redacted_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://user:hook-password@127.0.0.1:{port}/hook");
    let missing = dir.path().join("no-repository");
    let out =
        qvault(&["--notify", &url, "--repo", missing.to_str().unwrap(), "backups"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not notify"), "{stderr}");
    assert!(!stderr.contains("hook-password"), "{stderr}");
}
