//! `check`: is every group of backups healthy, for cron and alerting?
//!
//! Per group (retention's grouping, [`crate::retention::GroupBy`]), the latest backup must be
//! younger than `max_age`, complete (no path left out as unreadable), and its size must have
//! changed by at most `max_size_change` against the previous backup of the group. The group's newest verify (from the operation
//! log, [`crate::oplog`]: the newest that checked any of its backups) must have found every
//! backup it checked there restorable, and be younger than `max_verify_age`. A backup made
//! since that verify is not a failure by itself: hourly backups and a nightly verify pass all
//! day. Every failing group is reported with every reason, not just the first.
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
    /// The group's newest passing verify must be younger than this; `None`: any age.
    pub max_verify_age: Option<RetentionDuration>,
    /// Do not look at verifies at all.
    pub skip_verify: bool,
}

/// The newest verify that checked a backup of the group.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LastVerify {
    pub time: String,
    pub what: String,
    /// Whether that verify found every backup of the group it checked restorable.
    pub passed: bool,
    /// The group's backups that verify found damaged (short ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
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

/// The newest verify record naming any of `ids`, in oldest-first `log`, and its verdict on
/// them: a group is as restorable as the worst of its backups that verify checked.
fn last_verify(log: &[LogEntry], ids: &[BackupId]) -> Option<LastVerify> {
    log.iter().rev().find_map(|e| {
        let r = &e.record;
        let verdicts: Vec<(BackupId, bool)> =
            ids.iter().filter_map(|id| r.verdict(id).map(|ok| (*id, ok))).collect();
        if verdicts.is_empty() {
            return None;
        }
        let failed: Vec<String> = verdicts
            .iter()
            .filter(|(id, ok)| !ok && r.failed_backups.contains(id))
            .map(|(id, _)| id.short())
            .collect();
        Some(LastVerify {
            time: r.time.clone(),
            what: r.what.clone(),
            passed: verdicts.iter().all(|(_, ok)| *ok),
            failed,
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
        if latest.unreadable > 0 {
            failures.push(format!(
                "the latest backup {} is incomplete: {} (`qvault show {}` names them); give \
                 the backup's user read access",
                latest.id.short(),
                crate::report::unreadable_paths(latest.unreadable),
                latest.id.short()
            ));
        }
        let ids: Vec<BackupId> = members.iter().map(|b| b.0.id).collect();
        let last = last_verify(log, &ids);
        if !options.skip_verify {
            failures.extend(verify_failure(last.as_ref(), latest, options, &anchor, now));
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

/// Why the group's verify history fails it, if it does.
fn verify_failure(
    last: Option<&LastVerify>,
    latest: &BackupInfo,
    options: &CheckOptions,
    anchor: &jiff::Zoned,
    now: Timestamp,
) -> Option<String> {
    let Some(v) = last else {
        return Some(format!(
            "the group has not been verified (latest backup {}): run `qvault verify` \
             (e.g. --read-data-subset) on a schedule",
            latest.id.short()
        ));
    };
    if !v.passed {
        let which = if v.failed.is_empty() {
            "it stopped before it could name a damaged backup".to_string()
        } else {
            format!("backup {}", v.failed.join(", "))
        };
        return Some(format!(
            "the last verify of the group ({}, {}) found it cannot be restored whole ({which}): \
             see `qvault verify`, then `qvault repair`",
            v.time, v.what
        ));
    }
    let max = options.max_verify_age.as_ref()?;
    // A log time that does not parse counts as too old: it proves no recent verify.
    let time = v.time.parse::<Timestamp>().ok();
    if time.is_some_and(|t| t > max.boundary(anchor)) {
        return None;
    }
    let age = time.map_or_else(
        || "of unknown age".into(),
        |t| format!("{} ago", human_age(now.duration_since(t).as_secs())),
    );
    Some(format!(
        "the group's last passing verify ({}, {}) was {age}, more than --max-verify-age {max}: \
         is the verify job still running?",
        v.time, v.what
    ))
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
