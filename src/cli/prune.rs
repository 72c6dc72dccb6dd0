//! `qvault prune`: give back the space of data no backup references (two runs per pack: the
//! first marks, a later one deletes; see README "Retention").

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use common::human_bytes;
use qvault::prune::{PruneOptions, PruneReport, DEFAULT_MAX_UNUSED_PERCENT};
use qvault::repo::Repository;

/// Crash tests only: abort the process right after this step of prune's execution.
const ABORT_AFTER_STEP_ENV: &str = "QVAULT_TEST_PRUNE_ABORT_AFTER_STEP";

#[derive(Args, Debug, Clone, Default)]
pub struct PruneArgs {
    /// Unused space to tolerate in partly used packs, as a percentage of the repository
    /// (e.g. `5%`); packs with more unused space are repacked (needs a data identity).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_unused: Option<f64>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the prune lock left by a prune that crashed (only when no prune runs), and the
    /// leases of this host's processes that no longer run (killed backups or copies).
    #[arg(long)]
    pub unlock: bool,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage: give e.g. 5%"))?;
    if (0.0..100.0).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{s} is out of range: give a percentage from 0% to below 100%"))
    }
}

impl PruneArgs {
    pub fn options(&self) -> PruneOptions {
        // Test hook, not a flag: `kill -9` at a chosen step, for the crash tests.
        let abort_after = std::env::var(ABORT_AFTER_STEP_ENV).ok().and_then(|v| v.parse().ok());
        PruneOptions {
            max_unused_percent: self.max_unused.unwrap_or(DEFAULT_MAX_UNUSED_PERCENT),
            dry_run: self.dry_run,
            fail_after_step: abort_after,
            abort_on_fail: abort_after.is_some(),
            ..Default::default()
        }
    }
}

pub async fn run(global: &GlobalArgs, args: &PruneArgs) -> Result<()> {
    let repo = common::open(global).await?;
    if args.unlock {
        let unlocked = qvault::prune::locks::unlock(&repo, args.dry_run).await?;
        if global.json {
            return common::print_json(&unlocked);
        }
        if !global.quiet {
            let removed = if args.dry_run { "would remove" } else { "removed" };
            if unlocked.prune_lock {
                println!("{removed} the prune lock");
            } else {
                println!("no prune lock was held");
            }
            for lease in &unlocked.dead_leases {
                println!("{removed} {lease} (its process no longer runs on this host)");
            }
            println!(
                "{removed} {} leases of processes no longer running on this host; {} other \
                 leases stay until their commands end or they go stale",
                unlocked.dead_leases.len(),
                unlocked.other_leases
            );
        }
        return Ok(());
    }
    let report = run_on(&repo, args).await?;
    if global.json {
        common::print_json(&report)
    } else {
        print_report(&report);
        Ok(())
    }
}

/// Prunes an open repository (also `forget --prune`).
pub async fn run_on(repo: &Repository, args: &PruneArgs) -> Result<PruneReport> {
    Ok(qvault::prune::prune(repo, &args.options()).await?)
}

pub fn print_report(report: &PruneReport) {
    let plan = &report.plan;
    let verb =
        |now: &str, later: &str| if report.dry_run { later.to_string() } else { now.to_string() };
    println!(
        "{} packs, {}: {} used, {} unused",
        plan.packs,
        human_bytes(plan.pack_bytes),
        human_bytes(plan.used_bytes),
        human_bytes(plan.unused_bytes)
    );
    if !plan.delete_packs.is_empty() {
        println!(
            "{} {} marked packs ({})",
            verb("deleted", "would delete"),
            plan.delete_packs.len(),
            human_bytes(plan.delete_bytes)
        );
    }
    if !plan.rewrite_index.is_empty() {
        println!("{} {} index files", verb("rewrote", "would rewrite"), plan.rewrite_index.len());
    }
    if !plan.unmarked_packs.is_empty() {
        println!("kept {} marked packs that a backup references again", plan.unmarked_packs.len());
    }
    for damaged in &plan.damaged_marks {
        println!(
            "{} damaged prune mark {} ({}): it never let a pack be deleted; packs still unused \
             are marked again and deleted by a later prune",
            verb("removed", "would remove"),
            damaged.path,
            damaged.reason
        );
    }
    for waiting in &plan.waiting_marks {
        println!(
            "waiting: {} marked packs stay until {} leases end or go stale: backups, copies or \
             restores running, or killed (`qvault prune --unlock` removes this host's dead ones) ({})",
            waiting.packs,
            waiting.live_leases.len(),
            waiting.path
        );
    }
    if !plan.mark_unused.is_empty() {
        println!(
            "{} {} unused packs ({}) for deletion by the next prune",
            verb("marked", "would mark"),
            plan.mark_unused.len(),
            human_bytes(plan.mark_unused_bytes)
        );
    }
    // Without a data identity only list-block packs are repacked.
    let (done, skipped): (Vec<_>, Vec<_>) =
        plan.repack.iter().partition(|r| plan.can_repack || r.list);
    if !done.is_empty() {
        println!(
            "{} {} partly used packs, freeing {} after the next prune",
            verb("repacked", "would repack"),
            done.len(),
            human_bytes(done.iter().map(|r| r.unused_bytes).sum())
        );
    }
    if !skipped.is_empty() {
        println!(
            "repacking {} partly used packs would free {}: run prune with a data identity (--identity)",
            skipped.len(),
            human_bytes(skipped.iter().map(|r| r.unused_bytes).sum())
        );
    }
    if plan.is_empty() && plan.waiting_marks.is_empty() {
        println!("nothing to prune");
    }
}
