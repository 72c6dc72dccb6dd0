//! `--notify URL`: POST a JSON summary of the command to a webhook on failure (and on success
//! with `--notify-always`), for alerting without a monitoring stack.
//!
//! Guarantees: a notification never changes the command's result or exit code; it is tried
//! a few times with back-off and a short timeout, then given up with one warning; the URL is
//! shown redacted and the body carries no secret (it is scrubbed like every log line).

use std::time::Duration;

/// Attempts, and the timeout of each: a webhook that is down must not hold a cron job.
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a notification says: one JSON object.
#[derive(Debug, serde::Serialize)]
pub struct Notification {
    /// The verb that ran: `backup`, `verify`, `forget`, …
    pub command: String,
    pub ok: bool,
    pub exit_code: u8,
    /// The error's kind (`Storage`, `Corrupt`, …) when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_seconds: f64,
    /// The repository, its credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub host: String,
    pub qvault_version: &'static str,
}

/// POSTs `note` to `url`; failures end in one warning, never an error.
pub async fn send(url: &str, note: &Notification) {
    let shown = qvault::redact::url(url);
    let body = super::logging::scrub(&serde_json::to_string(note).unwrap_or_default());
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qvault: warning: cannot notify {shown}: {e}");
            return;
        }
    };
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last = format!("it answered {}", r.status()),
            Err(e) => {
                last =
                    if e.is_timeout() { "it timed out".into() } else { "it is unreachable".into() }
            }
        }
    }
    eprintln!("qvault: warning: could not notify {shown} after {ATTEMPTS} attempts: {last}");
}
