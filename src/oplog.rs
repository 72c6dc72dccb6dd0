//! The operation log: one small encrypted record per backup, restore, verify, forget, prune
//! and copy, stored in the repository as its own object, so every machine that works on a
//! repository leaves an audit trail there, and `qvault check` can tell when a backup was last
//! verified.
//!
//! Guarantees:
//! - A record is sealed to the metadata recipient (like manifests): writing one needs only
//!   that public key and storage, reading needs the repository key.
//! - Records are content-addressed (`log/<BLAKE3 of the stored bytes>`), written once, never
//!   modified: appends from several machines cannot collide or overwrite each other.
//! - Reading skips (with a warning) records that fail their id check, do not decrypt or have
//!   an unknown version: a damaged record never hides the others.
//!
//! Object (docs/design.md, "Operation log"): binary age file to the metadata recipient whose
//! plaintext is `"QVLG" ‖ u32 LE version (1) ‖ JSON` ([`OpRecord`]).

use crate::error::{Error, Result};
use crate::format::{put_header, ByteReader};
use crate::id::BackupId;
use crate::repo::Repository;
use crate::storage::Storage;
use bytes::Bytes;
use futures::stream::{self, StreamExt};

pub const LOG_DIR: &str = "log";
pub const LOG_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"QVLG";
/// A record's JSON is a few hundred bytes; this bounds what a reader accepts.
const MAX_RECORD_LEN: usize = 1 << 20;
/// Record reads in flight.
const CONCURRENCY: usize = 16;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
}

/// One operation on the repository.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpRecord {
    /// When it started: RFC 3339 UTC, milliseconds (sorts as text).
    pub time: String,
    pub host: String,
    pub user: String,
    /// `backup`, `restore`, `verify`, `forget`, `prune`, `copy`.
    pub operation: String,
    /// What it was asked to do, in the words of the command line (`latest`, `1/7`, a target).
    #[serde(default)]
    pub what: String,
    pub outcome: Outcome,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Bytes added (backup), restored (restore), read (verify), written (copy).
    #[serde(default)]
    pub bytes: u64,
    /// The backups it concerned: made, restored, checked, forgotten, copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupId>,
    /// Of those, the ones it found could not be restored whole (verify).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_backups: Vec<BackupId>,
    /// `verify --restore-test`: how long each stream took to restore (the recovery time
    /// to plan for) and whether it matched the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_times: Vec<RestoreTime>,
}

/// One stream's restore in a restore test.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreTime {
    pub backup: BackupId,
    pub stream: String,
    /// From the start of the restore until the restored copy was complete (for Qdrant: the
    /// recovered collection's point count confirmed).
    pub restore_ms: u64,
    pub passed: bool,
}

/// A record and its object id.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    pub id: String,
    #[serde(flatten)]
    pub record: OpRecord,
}

impl OpRecord {
    /// A record of `operation` starting now on this host, by this user; the caller fills in
    /// how it ended.
    pub fn started(operation: &str, what: String) -> OpRecord {
        OpRecord {
            time: crate::repo::now_rfc3339(),
            host: crate::backup::host_name(),
            user: user_name(),
            operation: operation.to_string(),
            what,
            outcome: Outcome::Ok,
            error: None,
            duration_ms: 0,
            bytes: 0,
            backups: Vec::new(),
            failed_backups: Vec::new(),
            restore_times: Vec::new(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        put_header(&mut out, MAGIC, LOG_VERSION);
        serde_json::to_writer(&mut out, self)
            .map_err(|e| Error::invalid_input(format!("cannot encode a log record: {e}")))?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<OpRecord> {
        let mut r = ByteReader::new(bytes, what);
        r.expect_header(MAGIC, LOG_VERSION)?;
        let json = &bytes[8..];
        if json.len() > MAX_RECORD_LEN {
            return Err(Error::corrupt(format!("{what} is larger than any log record")));
        }
        serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(format!("{what} is not a valid log record: {e}")))
    }
}

/// The user name for records: `$USER`, else `$LOGNAME`, else the process's uid as
/// /etc/passwd names it, else `uid N` (cron and containers often set neither variable).
pub fn user_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(uid_name)
        .unwrap_or_else(|| "unknown".to_string())
}

/// The name of the uid this process runs as, or `uid N` when /etc/passwd lacks it.
fn uid_name() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's (real) uid: no unsafe getuid() needed.
        let uid = std::fs::metadata("/proc/self").ok()?.uid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let name = passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        });
        Some(name.unwrap_or_else(|| format!("uid {uid}")))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Appends a record to the log of the repository at `storage`: seals it to
/// `metadata_recipient` and writes `log/<id>`. Returns the id. The one way records are
/// written; callers that must not fail on it (every command) warn on an error.
pub async fn append(
    storage: &Storage,
    metadata_recipient: &age::x25519::Recipient,
    record: &OpRecord,
) -> Result<String> {
    let sealed =
        crate::crypto::encrypt(std::slice::from_ref(metadata_recipient), &record.encode()?)?;
    let id = blake3::hash(&sealed).to_hex().to_string();
    storage.write(&format!("{LOG_DIR}/{id}"), Bytes::from(sealed)).await?;
    Ok(id)
}

/// Every readable record, oldest first. Damaged records are skipped with a warning.
pub async fn read(repo: &Repository) -> Result<Vec<LogEntry>> {
    let ids: Vec<[u8; 32]> = repo.list_objects(LOG_DIR).await?.into_keys().collect();
    let results: Vec<Result<LogEntry>> = stream::iter(ids)
        .map(|id| async move {
            let hex = hex::encode(id);
            let what = format!("log record {hex}");
            let sealed = repo.storage().read(&format!("{LOG_DIR}/{hex}")).await?;
            if blake3::hash(&sealed).as_bytes() != &id {
                return Err(Error::corrupt(format!("{what} does not match its id")));
            }
            let plain = repo.key().open_metadata(&sealed, &what)?;
            Ok(LogEntry { id: hex, record: OpRecord::decode(&plain, &what)? })
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut entries = Vec::new();
    for result in results {
        match result {
            Ok(entry) => entries.push(entry),
            Err(e) => tracing::warn!("skipping a log record: {e}"),
        }
    }
    entries.sort_by(|a, b| a.record.time.cmp(&b.record.time).then_with(|| a.id.cmp(&b.id)));
    Ok(entries)
}

impl OpRecord {
    /// Whether this is a restore test (`verify --restore-test`, whatever it restored into).
    pub fn is_restore_test(&self) -> bool {
        self.operation == "verify" && self.what.starts_with("restore-test")
    }

    /// For a verify (or restore test) that checked backup `id`: whether it found it
    /// restorable. A failed run that named no bad backup (it stopped early) passed nothing.
    pub fn verdict(&self, id: &BackupId) -> Option<bool> {
        (self.operation == "verify" && self.backups.contains(id)).then(|| {
            !self.failed_backups.contains(id)
                && (self.outcome == Outcome::Ok || !self.failed_backups.is_empty())
        })
    }
}
