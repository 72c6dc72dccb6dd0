//! `qvault verify`: can every backup be restored from what the repository holds?

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::verify::{verify, DataSubset, VerifyOptions};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also decrypt every blob and check every chunk id (needs --identity; reads and
    /// decrypts the whole repository).
    #[arg(long)]
    pub read_data: bool,
    /// Decrypt and check only part of the packs (needs --identity): `N/T` (part N of T,
    /// the same packs every time, so T runs cover all: `$(date +%u)/7`), `X%` (a random
    /// share) or a size (`500M`, `2G`: random packs until that much is read).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data", value_parser = parse_subset)]
    pub read_data_subset: Option<DataSubset>,
}

fn parse_subset(s: &str) -> Result<DataSubset, String> {
    s.parse().map_err(|e: qvault::Error| e.to_string())
}

pub async fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let options = VerifyOptions {
        read_data: args.read_data,
        read_data_subset: args.read_data_subset.clone(),
        ..Default::default()
    };
    let report = verify(&repo, &options).await?;
    super::log::note(
        report.pack_bytes,
        repo.backups()?.into_iter().map(|b| b.id).collect(),
        report.damaged_backups.keys().copied().collect(),
    );
    if global.json {
        common::print_json(&report)?;
    } else {
        println!(
            "checked {} backups and {} packs ({:.1} MiB){}",
            report.backups,
            report.packs,
            report.pack_bytes as f64 / (1024.0 * 1024.0),
            if args.read_data {
                format!(", decrypted and checked {} chunks", report.chunks_read)
            } else if let Some(subset) = &report.data_subset {
                format!(
                    ", decrypted and checked {} chunks in {} packs ({}, subset {subset})",
                    report.chunks_read,
                    report.data_packs,
                    common::human_bytes(report.data_bytes)
                )
            } else {
                String::new()
            }
        );
        for problem in &report.problems {
            let affects = if problem.backups.is_empty() {
                String::new()
            } else {
                let ids: Vec<String> = problem.backups.iter().map(|b| b.short()).collect();
                format!(" (affects backups {})", ids.join(", "))
            };
            println!("PROBLEM {}: {}{affects}", problem.object, problem.message);
        }
        for (backup, why) in &report.damaged_backups {
            println!("backup {backup} cannot be restored whole: {why}");
        }
        if !report.problems.is_empty() {
            println!(
                "next: `qvault repair index` (missing or damaged packs and index files), \
                 `qvault repair backups` (damaged manifests), `qvault forget ID` (backups that \
                 cannot be restored)"
            );
        }
        if !report.unindexed_packs.is_empty() {
            println!(
                "{} packs are in no index file (left by an interrupted backup, or a backup is \
                 running): the next backup, or `qvault repair index`, indexes them",
                report.unindexed_packs.len()
            );
        }
    }
    if report.is_ok() {
        if !global.json {
            println!("no problems found");
        }
        Ok(())
    } else {
        let n = report.problems.len();
        Err(qvault::Error::corrupt(format!(
            "verify found {n} {} in {} (listed on stdout)",
            if n == 1 { "problem" } else { "problems" },
            repo.storage().location()
        ))
        .into())
    }
}
