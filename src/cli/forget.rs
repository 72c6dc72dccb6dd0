//! `qvault forget`: apply a retention policy (or forget given ids) by removing manifests.
//!
//! The policy comes from the keep flags, else from the config file's `[forget]` table, so a
//! CronJob runs `qvault forget` with no flags. Flags replace the file's policy as a whole
//! (group overrides included): what the command line says is all that applies.

use super::common;
use super::config;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::retention::{self, ForgetOptions, ForgetReport, GroupBy, Policy, RetentionDuration};

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Forget exactly these backups (ids, unique prefixes, or `latest`) instead of applying
    /// a policy.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Keep the N newest backups.
    #[arg(long, value_name = "N", help_heading = "Policy")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N newest hours that have one.
    #[arg(long, value_name = "N", help_heading = "Policy")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the N newest days that have one.
    #[arg(long, value_name = "N", help_heading = "Policy")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N", help_heading = "Policy")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the N newest months that have one.
    #[arg(long, value_name = "N", help_heading = "Policy")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the N newest years that have one.
    #[arg(long, value_name = "N", help_heading = "Policy")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup within DURATION (e.g. 1y2m3d4h) of the group's newest backup.
    #[arg(long, value_name = "DURATION", help_heading = "Policy")]
    pub keep_within: Option<RetentionDuration>,
    /// Keep the newest backup of each hour within DURATION (e.g. 7d).
    #[arg(long, value_name = "DURATION", help_heading = "Policy")]
    pub keep_within_hourly: Option<RetentionDuration>,
    /// Keep the newest backup of each day within DURATION (e.g. 30d).
    #[arg(long, value_name = "DURATION", help_heading = "Policy")]
    pub keep_within_daily: Option<RetentionDuration>,
    /// Keep the newest backup of each ISO week within DURATION (e.g. 6m).
    #[arg(long, value_name = "DURATION", help_heading = "Policy")]
    pub keep_within_weekly: Option<RetentionDuration>,
    /// Keep the newest backup of each month within DURATION (e.g. 2y).
    #[arg(long, value_name = "DURATION", help_heading = "Policy")]
    pub keep_within_monthly: Option<RetentionDuration>,
    /// Keep the newest backup of each year within DURATION.
    #[arg(long, value_name = "DURATION", help_heading = "Policy")]
    pub keep_within_yearly: Option<RetentionDuration>,
    /// Keep backups with this tag (`key` or `key=value`); repeatable.
    #[arg(long = "keep-tag", value_name = "TAG", help_heading = "Policy")]
    pub keep_tags: Vec<String>,
    /// Keep backups with this name; repeatable.
    #[arg(long = "keep-name", value_name = "NAME", help_heading = "Policy")]
    pub keep_names: Vec<String>,
    /// Group backups by these, comma-separated: source (Qdrant URL, else host and the paths
    /// or command read), host, name, tags, streams. Default: source,name,streams.
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<GroupBy>,
    /// Zone of the calendar buckets: an IANA name (Europe/Berlin), UTC, or local.
    /// Default: UTC.
    #[arg(long, env = "QVAULT_TIME_ZONE", value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Print every backup with the rules that keep it, or "remove"; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `qvault prune` afterwards (with --dry-run, show its plan).
    #[arg(long)]
    pub prune: bool,
    /// Let the policy remove every backup of a group.
    #[arg(long)]
    pub allow_empty: bool,
}

impl ForgetArgs {
    /// The policy the flags give (empty when they give none).
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_yearly: self.keep_yearly.unwrap_or(0),
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            keep_tags: self.keep_tags.clone(),
            keep_names: self.keep_names.clone(),
        }
    }
}

pub async fn run(global: &GlobalArgs, args: &ForgetArgs) -> Result<()> {
    let file = config::forget_section(global)?;
    let flags = args.policy();
    let (policy, group_policies) = if !flags.is_empty() || !args.ids.is_empty() {
        (flags, Default::default())
    } else {
        (file.policy, file.groups)
    };
    let zone = args.time_zone.as_deref().or(file.time_zone.as_deref()).unwrap_or("UTC");
    let repo = common::open(global).await?;
    let mut ids = Vec::new();
    for spec in &args.ids {
        let id = repo.resolve_backup(spec)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let options = ForgetOptions {
        policy,
        group_policies,
        group_by: args.group_by.clone().or(file.group_by).unwrap_or_default(),
        time_zone: retention::parse_time_zone(zone)?,
        allow_empty: args.allow_empty,
        ids,
    };
    let backups = retention::load_backups(&repo).await?;
    let plan = retention::plan(&backups, &options, jiff::Timestamp::now())?;
    for key in &plan.unmatched_group_policies {
        eprintln!("qvault: warning: the config file has a policy for group {key:?}, which holds no backup");
    }
    let report = retention::execute(&repo, plan, args.dry_run).await;
    super::log::note(0, report.removed.clone(), vec![]);
    // Prune even when nothing was forgotten now: an earlier run's marks may be ready. A dry
    // run forgot nothing, so prune's plan would show the data of the backups it would
    // forget as still used: no plan beats a wrong one then.
    let prune_plan_wrong = args.dry_run && !report.plan.removals().is_empty();
    let pruned = if args.prune && report.failed.is_empty() && !prune_plan_wrong {
        let prune_args = super::prune::PruneArgs { dry_run: args.dry_run, ..Default::default() };
        Some(super::prune::run_on(&repo, &prune_args).await)
    } else {
        None
    };
    match (&pruned, global.json) {
        (Some(Ok(pruned)), true) => {
            common::print_json(&serde_json::json!({ "forget": &report, "prune": pruned }))?
        }
        (_, true) => common::print_json(&report)?,
        (_, false) => {
            print_report(&report, args.prune);
            if let Some(Ok(pruned)) = &pruned {
                super::prune::print_report(pruned);
            } else if args.prune && prune_plan_wrong {
                println!(
                    "dry run: what prune would free depends on this forget having run; see \
                     `qvault prune --dry-run` after it"
                );
            }
        }
    }
    if let Some(Err(e)) = pruned {
        return Err(e.context("the backups were forgotten, but prune failed"));
    }
    if report.failed.is_empty() {
        return Ok(());
    }
    let failures: Vec<String> =
        report.failed.iter().map(|f| format!("{}: {}", f.id.short(), f.error)).collect();
    Err(qvault::Error::new(
        qvault::ErrorKind::Storage,
        format!(
            "{} of {} backups could not be forgotten ({}); run the same forget again",
            report.failed.len(),
            report.failed.len() + report.removed.len(),
            failures.join("; ")
        ),
    )
    .into())
}

fn print_report(report: &ForgetReport, pruning: bool) {
    let plan = &report.plan;
    for group in &plan.groups {
        println!("group {}  ({})", group.key, group.policy);
        for b in &group.backups {
            let fate = if b.remove {
                "remove".to_string()
            } else {
                let reasons: Vec<String> = b.keep.iter().map(|r| r.to_string()).collect();
                format!("keep: {}", reasons.join(", "))
            };
            println!(
                "  {:<8}  {}  {:<20} {fate}",
                b.id.short(),
                b.local_time,
                b.name.as_deref().unwrap_or("-")
            );
        }
    }
    let to_remove = plan.removals().len();
    if report.dry_run {
        println!(
            "dry run: {to_remove} of {} backups would be forgotten (time zone {})",
            to_remove + plan.kept_count(),
            plan.time_zone
        );
    } else {
        println!(
            "forgot {} backups, kept {}; {}",
            report.removed.len(),
            plan.kept_count(),
            if pruning { "prune follows" } else { "their data stays until prune" }
        );
    }
}
