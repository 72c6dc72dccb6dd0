//! Logging on stderr that never carries a secret, at any verbosity.
//!
//! Two guards, because the first alone depends on what dependencies choose to print:
//! 1. A cap on dependencies known to print credentials: reqsign logs its credential
//!    provider with `{:?}` at debug (`StaticCredentialProvider { secret_access_key: "…" }`),
//!    so `-vv` or `RUST_LOG=debug` printed the S3 secret key twice. Whatever `-v` or
//!    `RUST_LOG` say, those targets stop at [`CAPPED`]'s level.
//! 2. Every log line and panic message is scrubbed of every secret value the process
//!    knows ([`register_secret`]: S3 secret key and session token, Azure key, WebDAV
//!    password (variable, config file or password file), Qdrant API key, passphrases,
//!    identity and key file contents, every secret setting of the config file) and of
//!    anything shaped like an age identity, before it is written.
//!
//! Colour codes only go to a terminal.

use std::io::{IsTerminal, Write};
use std::sync::RwLock;

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Dependency targets (prefixes) and the most they may log. reqsign prints credentials at
/// debug; hyper and h2 print wire-level detail (headers included) at trace.
const CAPPED: &[(&str, LevelFilter)] =
    &[("reqsign", LevelFilter::INFO), ("hyper", LevelFilter::DEBUG), ("h2", LevelFilter::DEBUG)];

/// Environment variables whose values are secrets wherever they appear.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "QDRANT_API_KEY",
    "QVAULT_PASSPHRASE",
    "QVAULT_WEBDAV_PASSWORD",
];

/// Shorter values would scrub ordinary words out of every line; a secret that short
/// protects nothing anyway.
const MIN_SECRET_LEN: usize = 4;

const AGE_IDENTITY_PREFIX: &str = "AGE-SECRET-KEY-";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Sets up logging on stderr: `-v` info, `-vv` debug, `RUST_LOG` overrides, within the caps.
pub fn init(verbose: u8) {
    for var in SECRET_VARS {
        if let Ok(value) = std::env::var(var) {
            register_secret(&value);
        }
    }
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let cap = CAPPED
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, (target, level)| {
            t.with_target(*target, *level)
        });
    let base = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(ScrubbedLine::default);
    // Without -v or RUST_LOG, a warning reads like the CLI's own (`qvault: warning: …`);
    // timestamps and module paths are for whoever asked for logs.
    let plain = verbose == 0 && std::env::var_os("RUST_LOG").is_none();
    let layer = if plain {
        base.event_format(Plain).with_filter(filter.and(cap)).boxed()
    } else {
        base.with_filter(filter.and(cap)).boxed()
    };
    tracing_subscriber::registry().with(layer).init();
    std::panic::set_hook(Box::new(|info| {
        // Reported by main as a quiet exit, not as a crash.
        if is_closed_stdout(info.payload()) {
            return;
        }
        let mut text = format!("qvault: {info}\n");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            text.push_str(&format!("{backtrace}\n"));
        }
        let _ = std::io::stderr().write_all(scrub(&text).as_bytes());
    }));
}

/// Whether a panic is `print!` finding stdout closed by its reader (`qvault backups | head`).
pub fn is_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
    text.starts_with("failed printing to stdout")
        && (text.contains(&broken.to_string())
            || text.contains(&std::io::Error::from_raw_os_error(libc::EPIPE).to_string()))
}

/// `qvault: warning: message` (error, note, debug by level), fields after the message.
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let word = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "note",
            _ => "debug",
        };
        write!(writer, "qvault: {word}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Adds a value to scrub from every later log line.
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the secrets in an identity or key file's plaintext: its age identities and a
/// key file's master key.
pub fn register_key_material(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if token.starts_with(AGE_IDENTITY_PREFIX) {
            register_secret(token);
        }
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(master) = json.get("master").and_then(|m| m.as_str()) {
            register_secret(master);
        }
    }
}

/// `text` with every registered secret and every age identity replaced by `***`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    for secret in SECRETS.read().unwrap_or_else(|p| p.into_inner()).iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    let upper = out.to_ascii_uppercase();
    if !upper.contains(AGE_IDENTITY_PREFIX) {
        return out;
    }
    // Identities are Bech32, written upper case but valid in lower case too.
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = 0;
    while let Some(found) = upper[rest..].find(AGE_IDENTITY_PREFIX) {
        let start = rest + found;
        let end = upper[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .map_or(upper.len(), |n| start + n);
        scrubbed.push_str(&out[rest..start]);
        scrubbed.push_str("***");
        rest = end;
    }
    scrubbed.push_str(&out[rest..]);
    scrubbed
}

/// One formatted log event, written scrubbed to stderr when complete (the fmt layer writes
/// each event through its own writer).
#[derive(Default)]
struct ScrubbedLine(Vec<u8>);

impl Write for ScrubbedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedLine {
    fn drop(&mut self) {
        let line = scrub(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_and_age_identities_are_scrubbed() {
        register_secret("canary-secret-value");
        register_secret("abc"); // too short to scrub
        let line = "key=canary-secret-value id=AGE-SECRET-KEY-1QQQ9XYZ, lower \
                    age-secret-key-1abc abc";
        assert_eq!(scrub(line), "key=*** id=***, lower *** abc");
    }
}
