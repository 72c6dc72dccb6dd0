//! `qvault report`: the repository at a glance, as JSON or one self-contained HTML page.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::report::ReportOptions;
use qvault::retention::{GroupBy, RetentionDuration};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Write the report as one HTML page (no network needed to view it) to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Mark a group stale when its latest backup is older than this (e.g. 90min, 2h, 1d;
    /// `m` is refused: write min or mo).
    #[arg(long, value_name = "DURATION", value_parser = RetentionDuration::parse_short_arg)]
    pub max_age: Option<RetentionDuration>,
    /// Group backups by these fields (source, host, name, tags, streams).
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<GroupBy>,
    /// Recovery time objective (e.g. 15min, 1h): each group's last restore-test time is
    /// compared with it.
    #[arg(long, value_name = "DURATION", value_parser = RetentionDuration::parse_short_arg)]
    pub rto: Option<RetentionDuration>,
}

pub async fn run(global: &GlobalArgs, args: &ReportArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let now = jiff::Timestamp::now();
    let options = ReportOptions {
        group_by: args.group_by.clone().unwrap_or_default(),
        max_age_seconds: args.max_age.map(|d| d.seconds_before(now)),
        rto_seconds: args.rto.map(|d| d.seconds_before(now)),
    };
    let report = qvault::report::build_with(&repo, &options, now).await?;
    if let Some(path) = &args.html {
        let page = qvault::report::html(&report);
        std::fs::write(path, page)
            .map_err(|e| qvault::Error::io(format!("writing {}", path.display()), e))?;
        if common::chatty(global) {
            eprintln!("wrote {}", path.display());
        }
    }
    if global.json {
        return common::print_json(&report);
    }
    if args.html.is_none() {
        for group in &report.groups {
            let fresh = match group.fresh {
                Some(true) => " fresh",
                Some(false) => " STALE",
                None => "",
            };
            let added: u64 = group.backups.iter().map(|b| b.bytes_added).sum();
            let verify = match &group.last_verify {
                Some(v) if v.passed => format!(", verified {}", v.time),
                Some(v) => format!(", last verify FAILED {}", v.time),
                None => ", never verified".to_string(),
            };
            let test = match (&group.last_restore_test, group.rto_met) {
                (Some(t), met) => format!(
                    ", restore test {} in {:.1} s{}",
                    if t.passed { "passed" } else { "FAILED" },
                    t.duration_seconds,
                    match met {
                        Some(true) => " (within the RTO)",
                        Some(false) if t.passed => " (MISSES the RTO)",
                        _ => "",
                    }
                ),
                (None, _) => String::new(),
            };
            println!(
                "{}: {} backups, {} added{fresh}{verify}{test}",
                group.key,
                group.backups.len(),
                common::human_bytes(added)
            );
        }
    }
    Ok(())
}
