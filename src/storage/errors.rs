//! OpenDAL errors made into [`crate::Error`]s that name the location and the object, say
//! what went wrong in a few words, and say what to do next.
//!
//! Guarantees:
//! - An error is classified from typed facts only: OpenDAL's [`opendal::ErrorKind`], the
//!   HTTP status of the response, the operations that failed (from the error's structured
//!   fields) and the types in its source chain (`reqwest::Error`, `std::io::Error`). Never
//!   from its free text: under `RUST_BACKTRACE=1` that text carries a backtrace whose frame
//!   names ("timeout", "credential") once turned a wrong password into "timed out".
//! - Messages never quote OpenDAL's `Display`, which lists every response header; the kept
//!   source ([`BackendError`]) shows only the kind, the HTTP status and the service's own
//!   message, then the transport errors beneath.
//! - Retry warnings are one line each: the operation, the object, the attempt, the cause.

use std::fmt;

use opendal::layers::{RetryEvent, RetryInterceptor};

use super::Storage;
use crate::error::{Error, ErrorKind};

/// Which service a [`Storage`] talks to; chooses the wording of error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backend {
    Memory,
    Fs,
    S3,
    #[cfg_attr(not(feature = "azure"), allow(dead_code))]
    Azblob,
    #[cfg_attr(not(feature = "gcs"), allow(dead_code))]
    Gcs,
    #[cfg_attr(not(feature = "webdav"), allow(dead_code))]
    Webdav,
    #[cfg_attr(not(feature = "sftp"), allow(dead_code))]
    Sftp,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory storage",
            Backend::Fs => "the filesystem",
            Backend::S3 => "S3",
            Backend::Azblob => "Azure Blob Storage",
            Backend::Gcs => "Google Cloud Storage",
            Backend::Webdav => "the WebDAV server",
            Backend::Sftp => "the SFTP server",
        }
    }

    /// What to check when the backend refuses access.
    fn credentials_hint(self) -> &'static str {
        match self {
            Backend::Memory => "this should not happen with memory storage",
            Backend::Fs => "check the permissions of the repository directory",
            Backend::S3 => {
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the access key options) \
                 and that the key may use this bucket"
            }
            Backend::Azblob => {
                "check AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY and the container's access policy"
            }
            Backend::Gcs => {
                "check GOOGLE_APPLICATION_CREDENTIALS and the service account's bucket roles"
            }
            Backend::Webdav => "check the user and password in the location",
            Backend::Sftp => "check the SSH user and key (ssh-agent or ~/.ssh/config)",
        }
    }
}

/// What an operation was doing, for error messages.
#[derive(Clone, Copy)]
pub(super) enum Op {
    Read,
    Write,
    Stat,
    List,
    Delete,
    Check,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Read => "reading",
            Op::Write => "writing",
            Op::Stat => "looking up",
            Op::List => "listing",
            Op::Delete => "deleting",
            Op::Check => "checking",
        }
    }
}

/// What an OpenDAL error means for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// The bucket or container itself is missing.
    MissingContainer,
    /// A range read got fewer bytes than asked for.
    ShortRead,
    NotFound,
    /// The server refused the credentials (403, 401, or a permission error).
    Denied,
    /// No connection could be made (refused, unroutable, unknown host).
    Unreachable,
    TimedOut,
    /// The request could not be signed: no usable credentials.
    Unsigned,
    RateLimited,
    Other,
}

/// The facts about an OpenDAL error that classification reads.
struct Facts {
    kind: opendal::ErrorKind,
    /// The HTTP status of the response, for errors from HTTP services.
    status: Option<u16>,
    /// The failed operation and every operation it was called from.
    operations: Vec<String>,
    context: Vec<(String, String)>,
}

impl Facts {
    fn of(e: &opendal::Error) -> Facts {
        let fields = Fields::of(e);
        let status = fields.get("response").and_then(|r| {
            // `with_error_response_context` stores the response head as `{parts:?}`.
            let digits = r.strip_prefix("Parts { status: ")?.get(..3)?;
            digits.parse().ok()
        });
        let mut operations = vec![fields.operation.clone()];
        operations.extend(fields.all("called").map(str::to_string));
        Facts { kind: e.kind(), status, operations, context: fields.context }
    }

    fn has(&self, key: &str) -> bool {
        self.context.iter().any(|(k, _)| k == key)
    }

    /// The object a request was about, from its URL (`url` for send errors, `uri` for error
    /// responses), without scheme, host or query.
    fn object(&self) -> Option<&str> {
        let (_, url) = self.context.iter().find(|(k, _)| k == "url" || k == "uri")?;
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        Some(path.split('?').next().unwrap_or(path))
    }

    fn cause(&self, e: &opendal::Error) -> Cause {
        use opendal::ErrorKind as K;
        // S3 reports a missing bucket as a configuration error with status 404; Azure as a
        // 404 whose service code names the container.
        if self.status == Some(404)
            && (self.kind == K::ConfigInvalid || e.message().contains("ContainerNotFound"))
        {
            return Cause::MissingContainer;
        }
        if self.kind == K::RangeNotSatisfied || is_short_read(e) {
            return Cause::ShortRead;
        }
        if self.kind == K::NotFound {
            return Cause::NotFound;
        }
        if self.kind == K::PermissionDenied || matches!(self.status, Some(401 | 403)) {
            return Cause::Denied;
        }
        if self.kind == K::RateLimited || self.status == Some(429) {
            return Cause::RateLimited;
        }
        if self.status.is_none() {
            match transport_failure(e) {
                Some(t) => return t,
                None if self.has("timeout") => return Cause::TimedOut,
                None => {}
            }
        }
        if self.operations.iter().any(|o| o.starts_with("reqsign::")) {
            return Cause::Unsigned;
        }
        Cause::Other
    }
}

/// OpenDAL's reader reports a range that ends past the object as "got too little data"
/// (its complete layer and HTTP body check), with no kind of its own.
fn is_short_read(e: &opendal::Error) -> bool {
    e.message().contains("too little data")
}

/// Walks the source chain for a connection that could not be made or that timed out.
fn transport_failure(e: &opendal::Error) -> Option<Cause> {
    use std::io::ErrorKind as Io;
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            if r.is_connect() {
                return Some(Cause::Unreachable);
            }
            if r.is_timeout() {
                return Some(Cause::TimedOut);
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                Io::ConnectionRefused
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::AddrNotAvailable => return Some(Cause::Unreachable),
                Io::TimedOut => return Some(Cause::TimedOut),
                _ => {}
            }
        }
        next = err.source();
    }
    None
}

/// An OpenDAL error's operation and context. OpenDAL 0.59 keeps both private; its
/// struct-style Debug (`{:#?}`) prints them as escaped strings, one field per line, and
/// never the backtrace, so they are read back from there.
struct Fields {
    operation: String,
    context: Vec<(String, String)>,
}

impl Fields {
    fn of(e: &opendal::Error) -> Fields {
        let text = format!("{e:#?}");
        let field = |name: &str| {
            let start = text.find(&format!("\n    {name}: "))? + name.len() + 7;
            Some(&text[start..])
        };
        let operation = field("operation")
            .and_then(|s| debug_strings(s.lines().next().unwrap_or("")).into_iter().next())
            .unwrap_or_default();
        let context = field("context")
            .and_then(|s| s.strip_prefix("[\n"))
            .map(|s| {
                let end = s.find("\n    ]").unwrap_or(s.len());
                let strings = debug_strings(&s[..end]);
                strings.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
            })
            .unwrap_or_default();
        Fields { operation, context }
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.context.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.all(key).next()
    }
}

/// The string literals in Rust `Debug` output, unescaped.
fn debug_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some('0') => s.push('\0'),
                    Some('u') => {
                        let hex: String =
                            chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                        let decoded = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        s.push(decoded.unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    Some(other) => s.push(other),
                    None => break,
                },
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

/// The backend's error as kept under a [`crate::Error`]: kind, HTTP status and the
/// service's message, then the transport errors beneath it (connection refused, …). Not
/// OpenDAL's own `Display`, which lists every response header.
pub struct BackendError {
    kind: opendal::ErrorKind,
    status: Option<u16>,
    inner: opendal::Error,
}

impl BackendError {
    fn new(inner: opendal::Error, status: Option<u16>) -> BackendError {
        BackendError { kind: inner.kind(), status, inner }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        let message = self.inner.message().lines().next().unwrap_or("");
        if !message.is_empty() {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("message", &self.inner.message())
            .finish()
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.inner)
    }
}

/// Logs each retry as one line: operation, object, attempt, cause.
pub(super) struct RetryNote;

impl RetryInterceptor for RetryNote {
    fn intercept(&self, event: RetryEvent<'_>) {
        let facts = Facts::of(event.err);
        let object = facts.object().unwrap_or("");
        let cause = match (facts.cause(event.err), facts.status) {
            (Cause::Unreachable, _) => "connection failed".to_string(),
            (Cause::TimedOut, _) => "timed out".to_string(),
            (_, Some(status)) => format!("HTTP {status}"),
            _ => event.err.kind().to_string(),
        };
        tracing::warn!(
            "retrying {} {object} (attempt {}, in {:.1}s): {cause}",
            event.op,
            event.attempt,
            event.retry_after.as_secs_f64()
        );
    }
}

impl Storage {
    pub(super) fn missing_root(&self, path: &str) -> Error {
        let what = if path.is_empty() { String::new() } else { format!("{path}: ") };
        Error::not_found(format!(
            "{what}repository location {} does not exist (no such directory)",
            self.inner.display
        ))
    }

    pub(super) fn already_exists(&self, path: &str) -> Error {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("{path} already exists in {}", self.inner.display),
        )
    }

    /// Turns an OpenDAL error into one that names the location and object and says what to
    /// do. The OpenDAL error is kept, reduced, as the source (see [`BackendError`]).
    pub(super) fn map_err(&self, op: Op, path: &str, e: opendal::Error) -> Error {
        let loc = &self.inner.display;
        let backend = self.inner.backend;
        let object =
            if path.is_empty() || path == "/" { String::new() } else { format!(" {path}") };
        let what = format!("{}{object} in {loc}", op.verb());
        let facts = Facts::of(&e);
        let (kind, message) = match facts.cause(&e) {
            Cause::MissingContainer => (
                ErrorKind::NotFound,
                format!(
                    "{} says the bucket or container of {loc} does not exist (while {}{object}): \
                     create it first or check the name",
                    backend.name(),
                    op.verb()
                ),
            ),
            // The index promised bytes that are not there: the object is damaged or cut short.
            Cause::ShortRead => (
                ErrorKind::Corrupt,
                format!("{}is shorter than the requested range in {loc}", trail(path)),
            ),
            Cause::NotFound => match op {
                Op::Check | Op::List if backend != Backend::Fs => (
                    ErrorKind::NotFound,
                    format!(
                        "{} says {loc} does not exist: create the bucket or container first",
                        backend.name()
                    ),
                ),
                _ => (ErrorKind::NotFound, format!("{}not found in {loc}", trail(path))),
            },
            Cause::Denied => {
                let status = facts.status.map(|s| format!(" ({s})")).unwrap_or_default();
                (
                    ErrorKind::Storage,
                    format!(
                        "{} refused the credentials for {loc}{status} while {}{object}: {}",
                        backend.name(),
                        op.verb(),
                        backend.credentials_hint()
                    ),
                )
            }
            Cause::Unreachable => {
                let endpoint = self.inner.endpoint.as_deref().unwrap_or("the server");
                (
                    ErrorKind::Storage,
                    format!("cannot reach {endpoint} for {what}: is the server running?"),
                )
            }
            Cause::Unsigned => (
                ErrorKind::Storage,
                format!(
                    "no usable credentials for {loc} while {}{object}: {}",
                    op.verb(),
                    backend.credentials_hint()
                ),
            ),
            Cause::TimedOut => (
                ErrorKind::Storage,
                format!("{} timed out while {what}; retry, or raise the timeout", backend.name()),
            ),
            Cause::RateLimited => (
                ErrorKind::Storage,
                format!(
                    "{} kept rate-limiting requests while {what}; retry later or lower the \
                     concurrency",
                    backend.name()
                ),
            ),
            Cause::Other => {
                let status = facts.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
                (
                    ErrorKind::Storage,
                    format!(
                        "{} failed while {what}: {}{status}: {}",
                        backend.name(),
                        e.kind(),
                        e.message()
                    ),
                )
            }
        };
        Error::new(kind, message).with_source(BackendError::new(e, facts.status))
    }
}

/// `"path "` or nothing, to start a message about an object.
fn trail(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path} ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error as OpenDAL's HTTP services build it for an error response, after the
    /// layers have wrapped it.
    fn http_error(kind: opendal::ErrorKind, status: u16, message: &str) -> opendal::Error {
        let (parts, ()) = axum::http::Response::builder()
            .status(status)
            .header("x-amz-request-id", "said \"hi\", status: 500")
            .body(())
            .unwrap_or_default()
            .into_parts();
        let e = opendal::Error::new(kind, message).with_context("service_operation", "GetObject");
        opendal::raw::with_error_response_context(e, parts)
            .with_operation("read")
            .with_operation("Read")
            .with_context("path", "data/ab/cd")
    }

    #[test]
    fn the_status_and_operations_are_read_from_the_fields_not_the_text() {
        // A message that mentions other statuses and a timeout must not fool the reader.
        let e = http_error(opendal::ErrorKind::Unexpected, 401, "status: 500 timeout\n403");
        let facts = Facts::of(&e);
        assert_eq!(facts.status, Some(401));
        assert_eq!(facts.operations, ["Read", "read"]);
        assert!(!facts.has("timeout"));
        assert_eq!(facts.cause(&e), Cause::Denied);
        assert_eq!(Fields::of(&e).get("path"), Some("data/ab/cd"));
    }

    #[test]
    fn a_404_configuration_error_is_a_missing_bucket() {
        let e = http_error(opendal::ErrorKind::ConfigInvalid, 404, "NoSuchBucket");
        assert_eq!(Facts::of(&e).cause(&e), Cause::MissingContainer);
    }

    #[test]
    fn the_timeout_layer_is_recognised_by_its_context() {
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "operation timeout reached")
            .with_operation("read")
            .with_context("timeout", "1");
        assert_eq!(Facts::of(&e).cause(&e), Cause::TimedOut);
        let plain = opendal::Error::new(opendal::ErrorKind::Unexpected, "timeout reached");
        assert_eq!(Facts::of(&plain).cause(&plain), Cause::Other);
    }

    #[test]
    fn backend_errors_show_kind_status_and_message_only() {
        let e = http_error(opendal::ErrorKind::PermissionDenied, 403, "AccessDenied");
        let shown = BackendError::new(e, Some(403)).to_string();
        assert_eq!(shown, "PermissionDenied (HTTP 403): AccessDenied");
    }

    #[test]
    fn debug_strings_unescape() {
        assert_eq!(
            debug_strings(r#"("a\"b", "c\\d\ne\u{1f600}")"#),
            ["a\"b".to_string(), "c\\d\ne\u{1f600}".to_string()]
        );
    }
}
