//! One error type for the whole library.
//!
//! Every error carries a matchable [`ErrorKind`], a message that names the object it is about
//! (path, backup id, chunk id, collection) and says what to do next, and optionally the
//! underlying cause. There is deliberately no blanket `From<io::Error>`: context is added
//! where the error happens.

use std::fmt;

/// What went wrong, for callers that branch on it (and for the CLI's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad argument, option or input from the user.
    InvalidInput,
    /// A named thing (backup, object, file, collection) does not exist.
    NotFound,
    /// The location exists but holds no qvault repository.
    NotARepository,
    /// Creating something that is already there (e.g. `init` over a repository).
    AlreadyExists,
    /// The repository or an object in it uses a format version this build does not know.
    UnsupportedVersion,
    /// A key, identity or passphrase does not open what it was given.
    KeyRejected,
    /// The operation reads backup data and needs a data identity, not only the repository key.
    NeedsDataIdentity,
    /// Stored bytes fail an integrity check (hash, authentication tag, structure).
    Corrupt,
    /// The storage backend failed (network, permissions, server error).
    Storage,
    /// Local I/O failed (source file, output file, cache).
    Io,
    /// Qdrant answered with an error, or could not be reached.
    Qdrant,
    /// A precondition about the target does not hold (e.g. incompatible Qdrant collection).
    Refused,
}

/// The library's error: a kind, a message for humans, and an optional cause.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message that names the object and the next step.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind, for matching.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the cause chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with more context, keeping kind and cause.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Shorthand constructors for the most common kinds.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }
    /// Local I/O failed while doing `what` (which names the path).
    /// A local I/O error (source file, restore output, cache), with what to do about the
    /// two a disk fills up or is mounted into.
    pub fn io(what: impl fmt::Display, source: std::io::Error) -> Self {
        let advice = match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                ": the filesystem is full; free space there, or write somewhere else"
            }
            std::io::ErrorKind::ReadOnlyFilesystem => {
                ": the filesystem is mounted read-only; write somewhere else"
            }
            _ => "",
        };
        Error::new(ErrorKind::Io, format!("{what}: {source}{advice}")).with_source(source)
    }
}

/// The cause a pipeline stage (backup's, copy's) reports when it stops because another stage
/// stopped first (a channel closed): the stage that stopped first has the real error.
/// Checked by type, never by text.
#[derive(Debug)]
struct PipelineStopped;

impl fmt::Display for PipelineStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("backup pipeline stopped")
    }
}

impl std::error::Error for PipelineStopped {}

/// What a stage returns when it stops because another stage stopped first.
pub(crate) fn pipeline_stopped() -> Error {
    Error::new(ErrorKind::Io, PipelineStopped.to_string()).with_source(PipelineStopped)
}

fn is_pipeline_stopped(e: &Error) -> bool {
    std::error::Error::source(e).is_some_and(|cause| cause.is::<PipelineStopped>())
}

/// Picks the error that explains a pipeline's failure over the ones it caused downstream.
pub(crate) fn first_real_error(errors: impl IntoIterator<Item = Error>) -> Option<Error> {
    let mut fallback = None;
    for e in errors {
        if !is_pipeline_stopped(&e) {
            return Some(e);
        }
        fallback.get_or_insert(e);
    }
    fallback
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", &source.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stopped_marker_is_told_apart_by_type_not_by_text() {
        let lookalike = Error::new(ErrorKind::Io, "backup pipeline stopped");
        assert!(!is_pipeline_stopped(&lookalike));
        assert!(is_pipeline_stopped(&pipeline_stopped().context("packer")));
        let picked = first_real_error([pipeline_stopped(), lookalike]).unwrap();
        assert!(!is_pipeline_stopped(&picked));
        assert!(is_pipeline_stopped(&first_real_error([pipeline_stopped()]).unwrap()));
        assert!(first_real_error([]).is_none());
    }
}
