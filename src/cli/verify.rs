//! `qvault verify`: can every backup be restored from what the repository holds?

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::verify::{verify, VerifyOptions};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also decrypt every blob and check every chunk id (needs --identity; reads and
    /// decrypts the whole repository).
    #[arg(long)]
    pub read_data: bool,
}

pub async fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<()> {
    let repo = common::open(global).await?;
    let options = VerifyOptions { read_data: args.read_data, ..Default::default() };
    let report = verify(&repo, &options).await?;
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
            } else {
                String::new()
            }
        );
        for problem in &report.problems {
            println!("PROBLEM {}: {}", problem.object, problem.message);
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
