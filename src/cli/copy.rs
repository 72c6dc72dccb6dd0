//! `qvault copy --to REPOSITORY`: backups to a second repository made with
//! `qvault init --copy-from`, transferring only the chunks it lacks.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::copy::{copy, CopyOptions, CopyReport};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The target repository (a path or s3://bucket/prefix), made with
    /// `qvault init --copy-from` this repository.
    #[arg(long, env = "QVAULT_COPY_TO", value_name = "REPOSITORY")]
    pub to: String,
    /// The target's repository key file (writing needs no more).
    #[arg(long, env = "QVAULT_COPY_TO_KEY", value_name = "FILE")]
    pub to_key: Option<PathBuf>,
    /// A data identity of the target (instead of --to-key).
    #[arg(long, env = "QVAULT_COPY_TO_IDENTITY", value_name = "FILE")]
    pub to_identity: Option<PathBuf>,
    /// The target's repository key fingerprint (`age1…`) when opened with --to-identity.
    #[arg(long, value_name = "KEY")]
    pub to_expect_key: Option<String>,
    /// S3 endpoint of the target, when it differs from --s3-endpoint.
    #[arg(long, value_name = "URL")]
    pub to_s3_endpoint: Option<String>,
    /// S3 region of the target, when it differs from --s3-region.
    #[arg(long, value_name = "REGION")]
    pub to_s3_region: Option<String>,
    /// Copy these backups (ids, unique prefixes, or `latest`); default: all.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Only backups with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only backups with this tag (`key` or `key=value`); repeatable, all must match.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Say what would be copied, copy nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Packs read and uploaded at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// The global flags, pointed at the target.
fn target_args(global: &GlobalArgs, args: &CopyArgs) -> GlobalArgs {
    let mut g = global.clone();
    g.repo = Some(args.to.clone());
    g.key = args.to_key.clone();
    g.identity = args.to_identity.clone();
    g.expect_key = args.to_expect_key.clone();
    if args.to_s3_endpoint.is_some() {
        g.s3_endpoint = args.to_s3_endpoint.clone();
    }
    if args.to_s3_region.is_some() {
        g.s3_region = args.to_s3_region.clone();
    }
    g
}

pub async fn run(global: &GlobalArgs, args: &CopyArgs) -> Result<()> {
    let report = run_copy(global, args).await?;
    if global.json {
        return common::print_json(&report);
    }
    print(&report, &args.to);
    Ok(())
}

async fn run_copy(global: &GlobalArgs, args: &CopyArgs) -> Result<CopyReport> {
    if args.to_key.is_none() && args.to_identity.is_none() {
        return Err(qvault::Error::invalid_input(
            "copy needs the target's repository key (--to-key) or a data identity of it \
             (--to-identity)",
        )
        .into());
    }
    let source = common::open(global).await?;
    let target = common::open(&target_args(global, args)).await?;
    let tags = args
        .tags
        .iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (t.clone(), None),
        })
        .collect();
    let options = CopyOptions {
        backups: args.ids.clone(),
        name: args.name.clone(),
        tags,
        concurrency: args.concurrency,
    };
    let report = copy(&source, &target, &options, args.dry_run).await?;
    super::log::note(report.bytes_written, report.copied.keys().copied().collect(), vec![]);
    Ok(report)
}

fn print(report: &CopyReport, to: &str) {
    let plan = &report.plan;
    let verb = if report.dry_run { "would copy" } else { "copied" };
    for b in &plan.backups {
        let state = match (b.in_target, report.copied.get(&b.id)) {
            (Some(t), _) => format!("already in the target as {}", t.short()),
            (None, Some(t)) => format!("copied as {}", t.short()),
            (None, None) => "to copy".to_string(),
        };
        println!(
            "backup {} {} {}: {state}",
            b.id.short(),
            b.time,
            b.name.as_deref().unwrap_or("-")
        );
    }
    let new = plan.backups.iter().filter(|b| b.in_target.is_none()).count();
    println!(
        "{verb} {new} backups to {to}: {} chunks ({}) from {} source packs{}",
        plan.chunks,
        common::human_bytes(plan.blob_bytes),
        plan.source_packs,
        if report.dry_run {
            String::new()
        } else {
            format!(
                ", {} written in {:.1} s",
                common::human_bytes(report.bytes_written),
                report.duration_ms as f64 / 1000.0
            )
        }
    );
}
