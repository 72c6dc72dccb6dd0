//! The operation log from the command line: every backup, restore, verify, forget and copy
//! appends a record to the repository it opened (`qvault::oplog::append`), failures
//! included; `qvault log` prints them. Writing the log never fails a command: it warns.

use super::common;
use super::{Command, GlobalArgs};
use anyhow::Result;
use clap::Args;
use qvault::id::BackupId;
use qvault::oplog::{self, OpRecord, Outcome, RestoreTime};
use qvault::repo::Repository;
use qvault::storage::Storage;
use std::sync::Mutex;

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Only the newest N records.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

/// The repository a command opened first (where its record goes) and what it reported.
struct Session {
    target: Option<(Storage, age::x25519::Recipient)>,
    bytes: u64,
    backups: Vec<BackupId>,
    failed_backups: Vec<BackupId>,
    restore_times: Vec<RestoreTime>,
}

static SESSION: Mutex<Session> = Mutex::new(Session {
    target: None,
    bytes: 0,
    backups: Vec::new(),
    failed_backups: Vec::new(),
    restore_times: Vec::new(),
});

fn session() -> std::sync::MutexGuard<'static, Session> {
    SESSION.lock().unwrap_or_else(|p| p.into_inner())
}

/// Called by `common::open`: the first repository a command opens gets its record (for
/// `copy`, the source).
pub fn opened(repo: &Repository) {
    let mut s = session();
    if s.target.is_none() {
        s.target = Some((repo.storage().clone(), repo.key().metadata_recipient()));
    }
}

/// What a command reports for its record: bytes, the backups it concerned, and of those the
/// ones found bad.
pub fn note(bytes: u64, backups: Vec<BackupId>, failed_backups: Vec<BackupId>) {
    let mut s = session();
    s.bytes = bytes;
    s.backups = backups;
    s.failed_backups = failed_backups;
}

/// How long each restore of a restore test took, for its record.
pub fn note_restore_times(times: Vec<RestoreTime>) {
    session().restore_times = times;
}

/// The commands that are logged, with what they were asked; dry runs change nothing and are
/// not logged.
pub fn operation(command: &Command) -> Option<(&'static str, String)> {
    Some(match command {
        Command::Backup(args) => ("backup", args.name.clone().unwrap_or_default()),
        Command::Restore(args) if !args.dry_run => ("restore", args.id.clone()),
        Command::Verify(args) => (
            "verify",
            match (&args.read_data_subset, args.read_data) {
                _ if args.restore_test => "restore-test".to_string(),
                (_, true) => "read-data".to_string(),
                (Some(s), _) => format!("read-data-subset {s}"),
                (None, false) => "structure".to_string(),
            },
        ),
        Command::Forget(args) if !args.dry_run => ("forget", args.ids.join(" ")),
        Command::Copy(args) if !args.dry_run => ("copy", format!("to {}", args.to)),
        _ => return None,
    })
}

/// Appends the record of a finished command to the repository it opened; warns (never
/// fails) when that is impossible. Nothing is recorded when no repository was opened.
pub async fn record(mut record: OpRecord, started: std::time::Instant, result: &Result<()>) {
    let (target, bytes, backups, failed, restore_times) = {
        let mut s = session();
        (
            s.target.take(),
            s.bytes,
            std::mem::take(&mut s.backups),
            std::mem::take(&mut s.failed_backups),
            std::mem::take(&mut s.restore_times),
        )
    };
    let Some((storage, recipient)) = target else { return };
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.bytes = bytes;
    record.backups = backups;
    record.failed_backups = failed;
    record.restore_times = restore_times;
    if let Err(e) = result {
        record.outcome = Outcome::Failed;
        record.error = Some(super::logging::scrub(&crate::error_text(e)));
    }
    if let Err(e) = oplog::append(&storage, &recipient, &record).await {
        eprintln!(
            "qvault: warning: could not append to the operation log of {}: {e}",
            storage.location()
        );
    }
}

pub async fn run(global: &GlobalArgs, args: &LogArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let mut entries = oplog::read(&repo).await?;
    if let Some(n) = args.last {
        entries = entries.split_off(entries.len().saturating_sub(n));
    }
    if global.json {
        return common::print_json(&entries);
    }
    for e in &entries {
        let r = &e.record;
        let outcome = match r.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Failed => format!("FAILED: {}", r.error.as_deref().unwrap_or("")),
        };
        let backups: Vec<String> = r.backups.iter().map(|b| b.short()).collect();
        let restores: String = r
            .restore_times
            .iter()
            .map(|t| {
                format!(" {}:{}={:.1}s", t.backup.short(), t.stream, t.restore_ms as f64 / 1000.0)
            })
            .collect();
        println!(
            "{} {:<8} {}@{} {} {:.1}s {} [{}]{} {outcome}",
            r.time,
            r.operation,
            r.user,
            r.host,
            if r.what.is_empty() { "-" } else { &r.what },
            r.duration_ms as f64 / 1000.0,
            common::human_bytes(r.bytes),
            backups.join(" "),
            if restores.is_empty() { String::new() } else { format!(" restored{restores}") }
        );
    }
    if entries.is_empty() && common::chatty(global) && args.last != Some(0) {
        eprintln!("the operation log of {} is empty", repo.storage().location());
    }
    Ok(())
}
