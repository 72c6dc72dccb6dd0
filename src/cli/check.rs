//! `qvault check`: for cron and alerting. Exit 0 when every group is healthy, 9 (with
//! every failing group and why on stdout, or in `--json`) when one is not.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::check::{check, CheckOptions, CheckReport};
use qvault::retention::{GroupBy, RetentionDuration};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The latest backup of each group must be younger than this (90min, 26h, 2d, 1w; `m`
    /// is refused: write min or mo).
    #[arg(long, value_name = "DURATION", value_parser = RetentionDuration::parse_short_arg)]
    pub max_age: Option<RetentionDuration>,
    /// Largest change of the latest backup's size against the previous one, in percent
    /// (20 or 20%), either direction.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_size_change: Option<f64>,
    /// Group backups by these fields: source, host, name, tags, streams (default
    /// source,name,streams, as forget).
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<GroupBy>,
    /// Each group's newest verify must have passed and be younger than this (default 8d, so
    /// a weekly verify passes). A backup made since that verify does not fail the group.
    #[arg(long, value_name = "DURATION", value_parser = RetentionDuration::parse_short_arg)]
    pub max_verify_age: Option<RetentionDuration>,
    /// Do not look at verifies: neither a failed nor a missing or old one fails a group.
    #[arg(long)]
    pub skip_verify: bool,
}

/// A weekly verify, with a day to spare: the schedule the README's recipe beats.
const DEFAULT_MAX_VERIFY_AGE: RetentionDuration =
    RetentionDuration { years: 0, months: 0, weeks: 0, days: 8, hours: 0, minutes: 0, seconds: 0 };

fn parse_percent(s: &str) -> Result<f64, String> {
    let value: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 20 or 20%)"))?;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("{s:?}: the percentage must be 0 or more"))
    }
}

/// The error `check` ends with when a group fails: exit code 9 (README).
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let options = CheckOptions {
        group_by: args.group_by.clone().unwrap_or_default(),
        max_age: args.max_age,
        max_size_change: args.max_size_change,
        max_verify_age: Some(args.max_verify_age.unwrap_or(DEFAULT_MAX_VERIFY_AGE)),
        skip_verify: args.skip_verify,
    };
    let report = check(&repo, &options).await?;
    if global.json {
        common::print_json(&report)?;
    } else {
        print(&report);
    }
    if report.ok {
        return Ok(());
    }
    let failing: Vec<&str> = report.failing().map(|g| g.group.as_str()).collect();
    Err(CheckFailed(match &report.problem {
        Some(problem) => format!("check failed: {problem} ({})", repo.storage().location()),
        None => format!(
            "check failed for {} of {} groups: {}",
            failing.len(),
            report.groups.len(),
            failing.join("; ")
        ),
    })
    .into())
}

fn print(report: &CheckReport) {
    for g in &report.groups {
        let verdict = if g.failures.is_empty() { "ok" } else { "FAILED" };
        println!(
            "{verdict} {}: latest {} at {}, {} backups{}",
            g.group,
            g.latest.short(),
            g.latest_time,
            g.backups,
            g.last_verify
                .as_ref()
                .map(|v| format!(", last verified {}", v.time))
                .unwrap_or_default()
        );
        for why in &g.failures {
            println!("  - {why}");
        }
    }
    if let Some(problem) = &report.problem {
        println!("FAILED: {problem}");
    }
}
