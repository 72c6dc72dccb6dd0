//! `qvault repair index|backups`: heal a repository with lost or damaged objects.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Subcommand;
use qvault::repair::{
    plan_repair_backups, plan_repair_index, repair_backups, repair_index, RepairIndexOptions,
    QUARANTINE,
};

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Stop listing packs that are missing or damaged (so the next backup stores their
    /// chunks again), move damaged index files and packs to quarantine/, and index packs no
    /// index file lists. Run it after `qvault verify` reports missing or damaged packs.
    Index {
        /// First read every pack and check it against its id and header (as `verify`);
        /// otherwise only missing packs and those the last `verify` found damaged count.
        #[arg(long)]
        read_packs: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move manifests that fail their checks to quarantine/, so listings stop warning about
    /// them. Backups that are intact but miss chunks are removed with `qvault forget`.
    Backups {
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(global: &GlobalArgs, command: &RepairCommand) -> Result<()> {
    let repo = common::open(global).await?;
    match command {
        RepairCommand::Index { read_packs, dry_run } => {
            let options = RepairIndexOptions { read_packs: *read_packs };
            let plan = plan_repair_index(&repo, &options).await?;
            if *dry_run || plan.is_empty() {
                if global.json {
                    return common::print_json(&plan);
                }
                if plan.is_empty() {
                    println!("nothing to repair in the index");
                    return Ok(());
                }
                println!("would:");
            }
            if !global.json || *dry_run {
                for p in &plan.missing_packs {
                    println!("  drop pack {p}: missing from storage");
                }
                for p in &plan.damaged_packs {
                    println!("  drop pack {p}: damaged; move it to {QUARANTINE}");
                }
                for (file, kept) in &plan.rewrite {
                    println!("  rewrite index file {file} keeping {} packs", kept.len());
                }
                for d in &plan.damaged_index_files {
                    println!("  move {} to {QUARANTINE}: {}", d.path, d.reason);
                }
                if !plan.unlisted_packs.is_empty() {
                    println!("  index {} packs no index file lists", plan.unlisted_packs.len());
                }
            }
            if *dry_run {
                return Ok(());
            }
            let report = repair_index(&repo, &plan).await?;
            if global.json {
                return common::print_json(&report);
            }
            println!(
                "repaired the index: {} index files written, {} deleted, {} objects moved to \
                 {QUARANTINE}, {} packs indexed from their headers",
                report.index_files_written,
                report.index_files_deleted,
                report.quarantined.len(),
                report.packs_indexed
            );
            for d in &report.unreadable_packs {
                println!("  left alone, header unreadable: {}: {}", d.path, d.reason);
            }
            println!("next: `qvault verify` names the backups that still cannot be restored");
            Ok(())
        }
        RepairCommand::Backups { dry_run } => {
            let plan = plan_repair_backups(&repo).await?;
            if *dry_run {
                if global.json {
                    return common::print_json(&plan);
                }
                for d in &plan.damaged_manifests {
                    println!("would move {} to {QUARANTINE}: {}", d.path, d.reason);
                }
                return Ok(());
            }
            let moved = repair_backups(&repo, &plan).await?;
            if global.json {
                return common::print_json(&serde_json::json!({ "quarantined": moved }));
            }
            println!("moved {} damaged manifests to {QUARANTINE}", moved.len());
            Ok(())
        }
    }
}
