//! `qvault metrics` and `--metrics-file PATH`: Prometheus text format for node_exporter's
//! textfile collector, from the repository (per group: the latest backup's time, duration
//! and bytes, the last verify and restore test and its recovery time; totals) and, with
//! `--metrics-file`, the command that just ran.
//!
//! Guarantees of `--metrics-file`: the file is written atomically (a temporary sibling,
//! then a rename), so the collector never reads half a file, and failing to write it only
//! warns. One file serves every command: each run replaces its own `qvault_command_*`
//! samples (label `command`) and keeps the other commands'; when the repository cannot be
//! read, its series from the previous run stay, with `qvault_repository_up 0`.

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

/// The families `--metrics-file` keeps one sample of per command.
const COMMAND_FAMILIES: [&str; 3] = [
    "qvault_command_exit_code",
    "qvault_command_last_run_timestamp_seconds",
    "qvault_command_duration_seconds",
];
const UP: &str = "qvault_repository_up";

/// Writes the metrics of `command` (its exit code and duration) and the repository's to
/// `path`, merged with what the file held: other commands' samples stay (a failed backup's
/// exit code must outlive the next `check`), and when the repository cannot be read, its
/// last known series stay too, with `qvault_repository_up 0` saying they are stale (an
/// alert on the last backup's age keeps its series while storage is down).
pub async fn write_file(path: &Path, global: &GlobalArgs, command: &str, code: u8, took: Duration) {
    let now = jiff::Timestamp::now().as_second();
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let old = Families::parse(&previous);
    let mut text = String::new();
    let values = [f64::from(code), now as f64, took.as_secs_f64()];
    let helps = [
        "The exit code of the command's last run (0 is success).",
        "When the command's last run ended (Unix time).",
        "How long the command's last run took.",
    ];
    for ((name, value), help) in COMMAND_FAMILIES.iter().zip(values).zip(helps) {
        let mut samples: Vec<String> = old
            .samples(name)
            .filter(|line| label(line, "command").is_some_and(|c| c != command))
            .map(str::to_string)
            .collect();
        samples.sort_by_key(|line| label(line, "command").map(str::to_string));
        // The run that just ended first: a reader taking the first sample gets it.
        samples.insert(0, format!("{name}{{command=\"{}\"}} {value}", command.replace('"', "")));
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for line in samples {
            let _ = writeln!(text, "{line}");
        }
    }
    // The command already ran with this configuration: it loads.
    let group_by = super::config::load(global).ok().and_then(|c| c.group_by()).unwrap_or_default();
    let up = match repository_metrics(global, &group_by).await {
        Ok(repo) => {
            text.push_str(&repo);
            1
        }
        Err(e) => {
            // A failed command already said why; a successful one (`config`, `man`…) that
            // has no repository only loses the repository's series, kept stale.
            if code == 0 && common::chatty(global) {
                eprintln!(
                    "qvault: warning: metrics file {}: the repository's series are the last \
                     known ones, marked {UP} 0: {}",
                    path.display(),
                    super::logging::scrub(&crate::error_text(&e))
                );
            }
            for (name, lines) in &old.families {
                if !COMMAND_FAMILIES.contains(&name.as_str()) && name != UP {
                    lines.iter().for_each(|line| {
                        let _ = writeln!(text, "{line}");
                    });
                }
            }
            0
        }
    };
    let _ = write!(
        text,
        "# HELP {UP} Whether the repository could be read at the last run (0: the other \
         qvault_backup_*, qvault_verify_*, qvault_restore_test_* series are the last known).\n\
         # TYPE {UP} gauge\n{UP} {up}\n"
    );
    let partial = path.with_extension("prom.partial");
    let written = std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        eprintln!("qvault: warning: could not write the metrics file {}: {e}", path.display());
    }
}

/// A Prometheus text file's lines by family, in file order (comments with their family).
struct Families {
    families: Vec<(String, Vec<String>)>,
}

impl Families {
    fn parse(text: &str) -> Families {
        let mut families: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let name = match line.strip_prefix('#') {
                Some(comment) => comment.split_whitespace().nth(1).unwrap_or_default(),
                None => line.split(['{', ' ']).next().unwrap_or_default(),
            };
            match families.iter_mut().find(|(n, _)| n == name) {
                Some((_, lines)) => lines.push(line.to_string()),
                None => families.push((name.to_string(), vec![line.to_string()])),
            }
        }
        Families { families }
    }

    fn samples<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let lines = self.families.iter().find(|(n, _)| n == name).map(|(_, l)| l.as_slice());
        lines.unwrap_or_default().iter().map(String::as_str).filter(|l| !l.starts_with('#'))
    }
}

/// The value of label `key` in a sample line (values here never hold quotes).
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}
