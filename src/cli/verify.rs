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
    /// The recovery drill instead: restore the latest backup of each group (or the IDs
    /// given) to a scratch directory, compare size, SHA-256 and BLAKE3 with what was backed
    /// up, and report how long each restore took (needs --identity). With --qdrant URL,
    /// Qdrant collection streams go into a scratch collection `qvault-restore-test-…` on
    /// that node, are compared (exact point count, vectors config, the sampled points and
    /// probe queries the backup recorded) and the collection is deleted again.
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset"])]
    pub restore_test: bool,
    /// Backups for --restore-test (ids, prefixes, `latest`).
    #[arg(value_name = "ID", requires = "restore_test")]
    pub ids: Vec<String>,
    /// Where --restore-test puts its scratch copies (default: the temporary directory).
    #[arg(long, value_name = "DIR", requires = "restore_test")]
    pub scratch: Option<std::path::PathBuf>,
    /// Groups for --restore-test, as for forget (default source,name,streams).
    #[arg(long, value_name = "FIELDS", requires = "restore_test")]
    pub group_by: Option<qvault::retention::GroupBy>,
    /// The node for --restore-test's Qdrant streams.
    #[command(flatten)]
    pub qdrant: super::qdrant::QdrantConnArgs,
}

fn parse_subset(s: &str) -> Result<DataSubset, String> {
    s.parse().map_err(|e: qvault::Error| e.to_string())
}

pub async fn run(global: &GlobalArgs, args: &VerifyArgs) -> Result<()> {
    if !args.qdrant.qdrant.is_empty() && !args.restore_test {
        return Err(qvault::Error::invalid_input(
            "--qdrant is for --restore-test: verify reads the repository only",
        )
        .into());
    }
    let repo = common::open(global).await?;
    if args.restore_test {
        return run_restore_test(global, args, &repo).await;
    }
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
                "next: `qvault repair index` (missing or damaged packs and index files; with \
                 `--read-packs` when it runs with another cache directory than this verify), \
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

async fn run_restore_test(
    global: &GlobalArgs,
    args: &VerifyArgs,
    repo: &qvault::repo::Repository,
) -> Result<()> {
    use qvault::oplog::RestoreTime;
    use qvault::qdrant::drill::QdrantDrill;
    use qvault::restore_test::{restore_test, restore_test_with, RestoreTestOptions};
    repo.data_identities("verify --restore-test")?;
    let options = RestoreTestOptions {
        backups: args.ids.clone(),
        group_by: args.group_by.clone().unwrap_or_default(),
        scratch: args.scratch.clone(),
    };
    let report = match args.qdrant.client()? {
        Some(client) => {
            let drill = QdrantDrill::connect(client).await?;
            restore_test_with(repo, &options, &drill).await?
        }
        None => restore_test(repo, &options).await?,
    };
    super::log::note_restore_times(
        report
            .streams
            .iter()
            .map(|s| RestoreTime {
                backup: s.backup,
                stream: s.stream.clone(),
                restore_ms: s.restore_ms,
                passed: s.passed,
            })
            .collect(),
    );
    let mut tested: Vec<qvault::BackupId> = report.streams.iter().map(|s| s.backup).collect();
    tested.dedup();
    let mut failed: Vec<qvault::BackupId> =
        report.streams.iter().filter(|s| !s.passed).map(|s| s.backup).collect();
    failed.dedup();
    let bytes = report.streams.iter().map(|s| s.size).sum();
    super::log::note(bytes, tested, failed);
    if global.json {
        common::print_json(&report)?;
    } else {
        for s in &report.streams {
            println!(
                "{} backup {} stream {:?} ({}): restored in {:.2} s, compared in {:.2} s{}",
                if s.passed { "ok" } else { "FAILED" },
                s.backup.short(),
                s.stream,
                common::human_bytes(s.size),
                s.restore_ms as f64 / 1000.0,
                s.compare_ms as f64 / 1000.0,
                s.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            );
            if let Some(q) = &s.qdrant {
                print_qdrant(q);
            }
        }
        for s in &report.skipped {
            println!("skipped backup {} stream {:?}: {}", s.backup.short(), s.stream, s.reason);
        }
    }
    let failures = report.streams.iter().filter(|s| !s.passed).count();
    if failures > 0 {
        return Err(qvault::Error::corrupt(format!(
            "the restore test failed for {failures} of {} streams (listed on stdout)",
            report.streams.len()
        ))
        .into());
    }
    if report.streams.is_empty() && common::chatty(global) {
        eprintln!("no stream to restore-test");
    }
    Ok(())
}

/// The comparisons of a Qdrant stream, under its line.
fn print_qdrant(q: &qvault::restore_test::QdrantStreamTest) {
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    let config = match q.config_matches {
        Some(true) => "same vectors config",
        Some(false) => "OTHER vectors config",
        None => "config not compared",
    };
    println!(
        "    Qdrant at {}: {} points (backup: {}), {config}, {} sampled points and {} probe \
         queries compared; scratch collection {} {}",
        q.node,
        count(q.points_restored),
        count(q.points_expected),
        q.sampled_points,
        q.probes,
        q.scratch_collection,
        if q.scratch_deleted { "deleted" } else { "NOT deleted" }
    );
    for note in &q.notes {
        println!("    note: {note}");
    }
}
