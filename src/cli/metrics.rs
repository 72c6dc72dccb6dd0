//! `qvault metrics` and `--metrics-file PATH`: Prometheus text format for node_exporter's
//! textfile collector, from the repository (per group: the latest backup's time, duration
//! and bytes, the last verify and restore test and its recovery time; totals) and, with
//! `--metrics-file`, the command that just ran.
//!
//! The file is written atomically (a temporary sibling, then a rename), so the collector
//! never reads half a file; failing to write it only warns.

use super::{common, GlobalArgs};
use anyhow::Result;
use clap::Args;
use qvault::retention::GroupBy;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Group backups by these fields (source, host, name, tags, streams).
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<GroupBy>,
}

async fn repository_metrics(global: &GlobalArgs, group_by: &GroupBy) -> Result<String> {
    let repo = common::open(global).await?;
    let report = qvault::report::build(&repo, group_by, None, jiff::Timestamp::now()).await?;
    Ok(qvault::report::prometheus(&report))
}

pub async fn run(global: &GlobalArgs, args: &MetricsArgs) -> Result<()> {
    print!("{}", repository_metrics(global, &args.group_by.clone().unwrap_or_default()).await?);
    Ok(())
}

/// Writes the metrics of `command` (its exit code and duration) and, when the repository
/// opens, the repository's, to `path`.
pub async fn write_file(path: &Path, global: &GlobalArgs, command: &str, code: u8, took: Duration) {
    let now = jiff::Timestamp::now().as_second();
    let mut text = String::new();
    let labels = format!("{{command=\"{command}\"}}");
    let _ = write!(
        text,
        "# HELP qvault_command_exit_code The exit code of the last run (0 is success).\n\
         # TYPE qvault_command_exit_code gauge\nqvault_command_exit_code{labels} {code}\n\
         # HELP qvault_command_last_run_timestamp_seconds When the last run ended (Unix time).\n\
         # TYPE qvault_command_last_run_timestamp_seconds gauge\n\
         qvault_command_last_run_timestamp_seconds{labels} {now}\n\
         # HELP qvault_command_duration_seconds How long the last run took.\n\
         # TYPE qvault_command_duration_seconds gauge\n\
         qvault_command_duration_seconds{labels} {}\n",
        took.as_secs_f64()
    );
    // The command already ran with this configuration: it loads.
    let group_by = super::config::load(global).ok().and_then(|c| c.group_by()).unwrap_or_default();
    match repository_metrics(global, &group_by).await {
        Ok(repo) => text.push_str(&repo),
        Err(e) => tracing::warn!("metrics without the repository's: {e:#}"),
    }
    let partial = path.with_extension("prom.partial");
    let written = std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        eprintln!("qvault: warning: could not write the metrics file {}: {e}", path.display());
    }
}
