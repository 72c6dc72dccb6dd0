//! `check`: is every group of backups healthy, for cron and alerting?
//!
//! Per group (retention's grouping, [`crate::retention::GroupBy`]), the latest backup must be
//! younger than `max_age`, its size must have changed by at most `max_size_change` against
//! the previous backup of the group, and the newest verify that checked it (from the
//! operation log, [`crate::oplog`]) must have found it restorable. Every failing group is
//! reported with every reason, not just the first.
//!
//! [`evaluate`] is pure (backups, log, options, now in; report out), so every rule is tested
//! without storage; [`check`] reads what it needs from the repository.

use crate::error::Result;
use crate::id::BackupId;
use crate::oplog::LogEntry;
use crate::repo::Repository;
use crate::retention::{BackupInfo, GroupBy, RetentionDuration};
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub group_by: GroupBy,
    /// The latest backup of each group must be younger than this.
    pub max_age: Option<RetentionDuration>,
    /// Largest allowed change of the latest backup's size against the previous one, in
    /// percent of the previous size (either direction).
    pub max_size_change: Option<f64>,
    /// Do not require a passing verify of the latest backup.
    pub skip_verify: bool,
}

/// The newest verify that checked a backup.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LastVerify {
    pub time: String,
    pub what: String,
    /// Whether that verify found this backup restorable.
    pub passed: bool,
}

/// One group's verdict.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupCheck {
    pub group: String,
    pub backups: usize,
    pub latest: BackupId,
    pub latest_time: String,
    pub age_seconds: i64,
    pub size: u64,
    pub previous_size: Option<u64>,
    /// Percent change against the previous backup's size.
    pub size_change_percent: Option<f64>,
    pub last_verify: Option<LastVerify>,
    /// Why the group fails; empty when it passes.
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckReport {
    pub ok: bool,
    /// Set when the repository holds no backup at all (which fails the check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub groups: Vec<GroupCheck>,
}

impl CheckReport {
    /// The groups that fail.
    pub fn failing(&self) -> impl Iterator<Item = &GroupCheck> {
        self.groups.iter().filter(|g| !g.failures.is_empty())
    }
}

/// The newest verify record naming `id`, oldest-first `log`.
fn last_verify(log: &[LogEntry], id: &BackupId) -> Option<LastVerify> {
    log.iter().rev().find_map(|e| {
        let r = &e.record;
        r.verdict(id).map(|passed| LastVerify {
            time: r.time.clone(),
            what: r.what.clone(),
            passed,
        })
    })
}

fn human_age(seconds: i64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Judges every group. `backups` pairs each backup with its size in bytes.
pub fn evaluate(
    backups: &[(BackupInfo, u64)],
    log: &[LogEntry],
    options: &CheckOptions,
    now: Timestamp,
) -> CheckReport {
    if backups.is_empty() {
        return CheckReport {
            ok: false,
            problem: Some("the repository holds no backups".into()),
            groups: Vec::new(),
        };
    }
    let mut groups: BTreeMap<String, Vec<&(BackupInfo, u64)>> = BTreeMap::new();
    for b in backups {
        groups.entry(options.group_by.key(&b.0)).or_default().push(b);
    }
    let anchor = now.to_zoned(jiff::tz::TimeZone::UTC);
    let mut out = Vec::new();
    for (group, mut members) in groups {
        members.sort_by(|a, b| a.0.time.cmp(&b.0.time).then_with(|| a.0.id.cmp(&b.0.id)));
        let Some(&&(ref latest, size)) = members.last() else { continue };
        let previous_size = members.len().checked_sub(2).map(|i| members[i].1);
        let age_seconds = now.duration_since(latest.time).as_secs();
        let mut failures = Vec::new();
        if let Some(max) = &options.max_age {
            if latest.time <= max.boundary(&anchor) {
                failures.push(format!(
                    "the latest backup is {} old, more than --max-age {max}",
                    human_age(age_seconds)
                ));
            }
        }
        let size_change_percent =
            previous_size.filter(|p| *p > 0).map(|p| (size as f64 - p as f64) * 100.0 / p as f64);
        if let (Some(max), Some(prev)) = (options.max_size_change, previous_size) {
            let change = size_change_percent.unwrap_or(if size > 0 { f64::INFINITY } else { 0.0 });
            if change.abs() > max {
                failures.push(format!(
                    "its size changed by {change:+.1}% ({prev} → {size} bytes), more than \
                     --max-size-change {max}%"
                ));
            }
        }
        let last = last_verify(log, &latest.id);
        if !options.skip_verify {
            match &last {
                None => failures.push(format!(
                    "the latest backup ({}) has not been verified: run `qvault verify` \
                     (e.g. --read-data-subset) after backups",
                    latest.id.short()
                )),
                Some(v) if !v.passed => failures.push(format!(
                    "the last verify of the latest backup ({}, {}) found it cannot be restored \
                     whole: see `qvault verify`, then `qvault repair`",
                    v.time, v.what
                )),
                Some(_) => {}
            }
        }
        out.push(GroupCheck {
            group,
            backups: members.len(),
            latest: latest.id,
            latest_time: latest.time.to_string(),
            age_seconds,
            size,
            previous_size,
            size_change_percent,
            last_verify: last,
            failures,
        });
    }
    let ok = out.iter().all(|g| g.failures.is_empty());
    CheckReport { ok, problem: None, groups: out }
}

/// Reads the backups and the operation log, then [`evaluate`]s them.
pub async fn check(repo: &Repository, options: &CheckOptions) -> Result<CheckReport> {
    let sizes: HashMap<BackupId, u64> =
        repo.backups()?.into_iter().map(|b| (b.id, b.bytes)).collect();
    let infos = crate::retention::load_backups(repo).await?;
    let backups: Vec<(BackupInfo, u64)> = infos
        .into_iter()
        .map(|b| {
            let size = sizes.get(&b.id).copied().unwrap_or(0);
            (b, size)
        })
        .collect();
    let log = if options.skip_verify { Vec::new() } else { crate::oplog::read(repo).await? };
    Ok(evaluate(&backups, &log, options, Timestamp::now()))
}
