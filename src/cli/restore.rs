//! `qvault restore`: a backup's stream to a file, stdout, or a Qdrant node.

use super::common;
use super::qdrant::QdrantConnArgs;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::format::manifest::Manifest;
use qvault::qdrant::cluster::restore::{
    is_cluster_backup, plan_cluster_restore, restore_cluster, ClusterRestoreOptions,
    ClusterRestorePlan,
};
use qvault::qdrant::restore::{
    plan_qdrant_restore, restore_to_qdrant, QdrantRestoreOptions, QdrantRestorePlan,
};
use qvault::qdrant::serve::{serve_restore, ServeOptions};
use qvault::qdrant::streams::{find_stream, restore_targets};
use qvault::qdrant::{QdrantClient, SnapshotPriority};
use qvault::repo::Repository;
use qvault::restore::{execute, restore_to_file, RestoreOptions, RestorePlan, RestoreReport};
use qvault::BackupId;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup id, a unique prefix, or `latest`: the newest backup of the repository or,
    /// with --stream, the newest backup that holds that stream.
    pub id: String,
    /// Output file, or `-` for stdout.
    #[arg(long, required_unless_present_any = ["qdrant", "serve", "to_dir"], conflicts_with_all = ["qdrant", "serve", "to_dir"])]
    pub to: Option<String>,
    /// Serve the stream once over HTTP at ADDR (e.g. 0.0.0.0:8080) for a Qdrant node to
    /// pull with `PUT …/snapshots/recover`; with --qdrant, make that call too.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,
    /// With --serve: the base URL the Qdrant node reaches this machine at.
    #[arg(long, value_name = "URL", requires = "serve")]
    pub advertise_url: Option<String>,
    /// Extract a directory backup (`backup --dir`) into this new or empty directory.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["qdrant", "serve"])]
    pub to_dir: Option<PathBuf>,
    #[command(flatten)]
    pub qdrant: QdrantConnArgs,
    /// Restore into this collection (default: the one backed up); with several streams,
    /// rename with OLD=NEW (repeatable).
    #[arg(long, value_name = "NAME|OLD=NEW")]
    pub collection: Vec<String>,
    /// Qdrant's recovery priority: snapshot (default), replica or no_sync.
    #[arg(long)]
    pub priority: Option<SnapshotPriority>,
    /// Restore into this shard (shard backups).
    #[arg(long)]
    pub shard: Option<u32>,
    /// Replicas per shard when a cluster restore creates the collection (default: the
    /// backup's).
    #[arg(long, value_name = "N", requires = "qdrant")]
    pub replication_factor: Option<u32>,
    /// Restore even when the Qdrant version or the existing collection's layout differ.
    #[arg(long, requires = "qdrant")]
    pub force: bool,
    /// Drop an existing collection first, so it holds exactly the backup (config, indexes,
    /// points); restoring over a non-empty collection is refused without it.
    #[arg(long, requires = "qdrant")]
    pub replace: bool,
    /// Recreate the aliases that pointed at each collection at backup; an alias that now
    /// points at another collection refuses the restore (it is never moved).
    #[arg(long, requires = "qdrant")]
    pub aliases: bool,
    /// Which stream, when the backup has several (with or without its `.snapshot` suffix).
    /// With --qdrant and no --stream, every stream is restored.
    #[arg(long)]
    pub stream: Option<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,
    /// Plan and check only: print what would be read and where it would go, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Plans the restore of the stream the flags pick: computed once, before anything is
/// written or sent.
async fn plan(repo: &Repository, args: &RestoreArgs) -> Result<RestorePlan> {
    let (id, manifest) = resolve(repo, &args.id, args.stream.as_deref()).await?;
    let stream = match args.stream.as_deref() {
        Some(wanted) => find_stream(&manifest, wanted)?,
        None => manifest.stream(None)?,
    };
    Ok(RestorePlan::new(repo, id, stream).await?)
}

/// The backup `spec` names, and its manifest. With a stream, `latest` is the newest backup
/// that holds it: backups of other jobs in the same repository must not hide it.
async fn resolve(
    repo: &Repository,
    spec: &str,
    stream: Option<&str>,
) -> Result<(BackupId, Manifest)> {
    let Some(wanted) = stream.filter(|_| spec == "latest") else {
        let id = repo.resolve_backup(spec)?;
        return Ok((id, repo.read_manifest(id).await?));
    };
    // Newest first, as the index lists them oldest first.
    for listing in repo.backups()?.into_iter().rev() {
        let manifest = repo.read_manifest(listing.id).await?;
        if find_stream(&manifest, wanted).is_ok() {
            return Ok((listing.id, manifest));
        }
    }
    Err(qvault::Error::not_found(format!(
        "no backup in {} holds a stream {wanted:?}: list them with `qvault backups` and \
         `qvault show ID`",
        repo.storage().location()
    ))
    .into())
}

/// Every stream a Qdrant restore takes, each planned and checked against the node before
/// anything is sent: a refusal for any stream stops them all.
async fn plan_qdrant(
    repo: &Repository,
    id: BackupId,
    manifest: &Manifest,
    args: &RestoreArgs,
    client: &QdrantClient,
) -> Result<Vec<(RestorePlan, QdrantRestorePlan, QdrantRestoreOptions)>> {
    let targets = restore_targets(manifest, args.stream.as_deref(), &args.collection)?;
    if targets.len() > 1 && args.shard.is_some() {
        return Err(qvault::Error::invalid_input(
            "--shard names the target of one shard stream: pick it with --stream",
        )
        .into());
    }
    let mut planned = Vec::with_capacity(targets.len());
    for t in targets {
        let plan = RestorePlan::new(repo, id, t.stream).await?;
        let options = qdrant_options(args, t.collection);
        let target = plan_qdrant_restore(client, id, t.stream, &options).await?;
        planned.push((plan, target, options));
    }
    Ok(planned)
}

/// `--dry-run`: what the restore would read, and (for Qdrant) where it would go.
async fn print_dry_run(
    global: &GlobalArgs,
    repo: &Repository,
    plan: &RestorePlan,
    target: Option<&QdrantRestorePlan>,
) -> Result<()> {
    let summary = plan.summary(repo).await?;
    if global.json {
        /// A dry run: the stream and what it reads, and where it would go.
        #[derive(serde::Serialize)]
        struct DryRun<'a> {
            #[serde(flatten)]
            plan: &'a qvault::restore::PlanSummary,
            #[serde(flatten)]
            target: Option<&'a QdrantRestorePlan>,
        }
        return common::print_json(&DryRun { plan: &summary, target });
    }
    let (stream, counts) = (&plan.stream, summary.counts);
    println!(
        "would restore stream {:?} of backup {}: {}, {} chunks from {} packs in {} reads",
        stream.name,
        plan.backup.short(),
        common::human_bytes(stream.size),
        stream.chunk_count(),
        counts.packs,
        counts.pieces
    );
    if let Some(t) = target {
        let exists = if t.collection_exists { "exists" } else { "will be created" };
        println!("into {} (Qdrant {}; the collection {exists})", t.scope, t.target_version);
        for w in &t.forced {
            println!("  forced: {w}");
        }
    }
    Ok(())
}

fn qdrant_options(args: &RestoreArgs, collection: Option<String>) -> QdrantRestoreOptions {
    QdrantRestoreOptions {
        collection,
        priority: args.priority,
        shard: args.shard,
        force: args.force,
        replace: args.replace,
        aliases: args.aliases,
        restore: RestoreOptions::default(),
    }
}

async fn run_serve(
    global: &GlobalArgs,
    args: &RestoreArgs,
    repo: &Repository,
    addr: std::net::SocketAddr,
) -> Result<()> {
    let client = args.qdrant.client()?;
    let plan = plan(repo, args).await?;
    let collection = match args.collection.as_slice() {
        [] => None,
        [one] if !one.contains('=') => Some(one.clone()),
        _ => {
            return Err(qvault::Error::invalid_input(
                "--serve restores one stream: name its target with one --collection NAME",
            )
            .into())
        }
    };
    let options = qdrant_options(args, collection);
    let target = match &client {
        Some(c) => Some(plan_qdrant_restore(c, plan.backup, &plan.stream, &options).await?),
        None => None,
    };
    if args.dry_run {
        return print_dry_run(global, repo, &plan, target.as_ref()).await;
    }
    let serve = ServeOptions { addr, advertise: args.advertise_url.clone() };
    let qdrant = client.as_ref().zip(target.as_ref()).map(|(c, t)| (c, t, &options));
    let making_call = client.is_some();
    let (id, stream) = (plan.backup, &plan.stream);
    let report = serve_restore(repo, &plan, &serve, qdrant, |ready| {
        // The token is a one-time secret: shown to the operator, never logged.
        eprintln!(
            "serving stream {:?} of backup {} once at {}",
            stream.name,
            id.short(),
            ready.location
        );
        if making_call {
            eprintln!("asking Qdrant to recover {} from it …", ready.scope);
        } else {
            eprintln!("make the Qdrant node pull it with:");
            println!("{}", ready.curl);
        }
    })
    .await?;
    for w in &report.warnings {
        eprintln!("qvault: warning: {w}");
    }
    let seconds = report.duration.as_secs_f64();
    if global.json {
        common::print_json(&report)?;
    } else {
        let points = report.points_count.map(|n| format!(", {n} points")).unwrap_or_default();
        eprintln!(
            "served stream {:?} of backup {}: {}{points}, in {seconds:.2} s",
            stream.name,
            id.short(),
            common::human_bytes(report.bytes),
        );
    }
    Ok(())
}

async fn run_qdrant(global: &GlobalArgs, args: &RestoreArgs, repo: &Repository) -> Result<()> {
    let (id, manifest) = resolve(repo, &args.id, args.stream.as_deref()).await?;
    let cluster_backup = args.stream.is_none() && is_cluster_backup(&manifest);
    if args.qdrant.qdrant.len() > 1 || cluster_backup {
        return run_cluster(global, args, repo, id, &manifest).await;
    }
    if args.replication_factor.is_some() {
        return Err(qvault::Error::invalid_input(
            "--replication-factor is for restoring a cluster backup: backup {id} holds no \
             shards read from a cluster",
        )
        .into());
    }
    let client = args.qdrant.require_client("restoring into Qdrant")?;
    let planned = plan_qdrant(repo, id, &manifest, args, &client).await?;
    if args.dry_run {
        for (plan, target, _) in &planned {
            print_dry_run(global, repo, plan, Some(target)).await?;
        }
        return Ok(());
    }
    let mut reports = Vec::with_capacity(planned.len());
    for (plan, target, options) in &planned {
        let (id, stream) = (plan.backup, &plan.stream);
        if common::chatty(global) {
            eprintln!(
                "restoring stream {:?} of backup {} into Qdrant at {} …",
                stream.name,
                id.short(),
                client.url()
            );
        }
        let report = restore_to_qdrant(repo, plan, target, &client, options).await?;
        for w in report.plan.forced.iter().chain(&report.warnings) {
            eprintln!("qvault: warning: {w}");
        }
        let seconds = report.duration.as_secs_f64();
        if global.json {
            reports.push(serde_json::to_value(&report)?);
        } else {
            let points = report.points_count.map_or_else(|| "unknown".into(), |n| n.to_string());
            println!(
                "restored stream {:?} of backup {} into {} at {}: {}, {points} points, in {seconds:.2} s",
                stream.name,
                id.short(),
                report.plan.scope,
                client.url(),
                common::human_bytes(report.bytes),
            );
        }
    }
    if global.json {
        // One stream keeps the single object restore has always printed.
        match reports.as_slice() {
            [one] => common::print_json(one)?,
            _ => common::print_json(&reports)?,
        }
    }
    Ok(())
}

/// A cluster backup, or several target nodes: shard by shard, each to a node hosting it.
async fn run_cluster(
    global: &GlobalArgs,
    args: &RestoreArgs,
    repo: &Repository,
    id: BackupId,
    manifest: &Manifest,
) -> Result<()> {
    if args.shard.is_some() {
        return Err(qvault::Error::invalid_input(
            "a cluster restore recovers every shard on the node that hosts it: --shard takes \
             a single-node restore (one --qdrant URL and --stream)",
        )
        .into());
    }
    let collection =
        match args.collection.as_slice() {
            [] => None,
            [one] if !one.contains('=') => Some(one.clone()),
            _ => return Err(qvault::Error::invalid_input(
                "a cluster restore takes one collection: name its target with one --collection \
                 NAME",
            )
            .into()),
        };
    let nodes = args.qdrant.nodes(&args.qdrant.qdrant)?;
    let options = ClusterRestoreOptions {
        collection,
        replication_factor: args.replication_factor,
        priority: args.priority,
        replace: args.replace,
        aliases: args.aliases,
        force: args.force,
        restore: RestoreOptions::default(),
    };
    let plan = plan_cluster_restore(repo, &nodes, id, manifest, &options).await?;
    if args.dry_run {
        return print_cluster_dry_run(global, &plan);
    }
    let report = restore_cluster(repo, &nodes, &plan, &options).await?;
    for w in &report.warnings {
        eprintln!("qvault: warning: {w}");
    }
    let seconds = report.duration.as_secs_f64();
    if global.json {
        return common::print_json(&report);
    }
    for s in &report.shards {
        println!(
            "restored shard {} of collection `{}` at {}: {}, {} points",
            s.shard_id,
            plan.collection,
            s.url,
            common::human_bytes(s.bytes),
            s.points_count.map_or_else(|| "unknown".into(), |n| n.to_string())
        );
    }
    println!(
        "restored backup {} into collection `{}` ({} shards): {} points, in {seconds:.2} s",
        id.short(),
        plan.collection,
        report.shards.len(),
        report.points_count
    );
    Ok(())
}

fn print_cluster_dry_run(global: &GlobalArgs, plan: &ClusterRestorePlan) -> Result<()> {
    if global.json {
        return common::print_json(plan);
    }
    let how = match (&plan.create, plan.drop_existing) {
        (Some(_), true) => "dropped and created again",
        (Some(_), false) => "created",
        (None, _) => "exists, empty",
    };
    println!(
        "would restore backup {} into collection `{}` ({how}), {} shards, each uploaded to a \
         node that hosts it:",
        plan.backup.short(),
        plan.collection,
        plan.shard_number
    );
    for s in &plan.shards {
        println!(
            "  shard {} from stream {:?}: {}",
            s.shard_id,
            s.plan.stream.name,
            common::human_bytes(s.plan.stream.size)
        );
    }
    for w in &plan.forced {
        println!("  forced: {w}");
    }
    Ok(())
}

async fn run_to_dir(
    global: &GlobalArgs,
    args: &RestoreArgs,
    repo: &Repository,
    dir: &Path,
) -> Result<()> {
    let plan = plan(repo, args).await?;
    if args.dry_run {
        return print_dry_run(global, repo, &plan, None).await;
    }
    let (id, stream) = (plan.backup, &plan.stream);
    if stream.kind != qvault::format::manifest::StreamKind::Directory {
        return Err(qvault::Error::invalid_input(format!(
            "stream {} of backup {} is not a directory backup (`backup --dir`): restore it with \
             --to FILE",
            qvault::redact::printable(&stream.name),
            id.short(),
        ))
        .into());
    }
    let extractor = qvault::dirtar::DirExtractor::new(dir)?;
    let (extractor, summary) = execute(repo, &plan, extractor, &RestoreOptions::default()).await?;
    let entries = extractor.finish()?;
    qvault::held::commit();
    let seconds = summary.duration.as_secs_f64();
    if global.json {
        common::print_json(&RestoreReport::new(&plan, summary.clone()).extracted(dir, entries))?;
    } else if common::chatty(global) {
        eprintln!(
            "restored stream {:?} of backup {} into {}: {entries} entries, {} in {seconds:.2} s",
            stream.name,
            id.short(),
            dir.display(),
            common::human_bytes(summary.bytes),
        );
    }
    Ok(())
}

/// Every kind of restore (file, stdout, directory, Qdrant, cluster, served) runs under one
/// lease taken here, so a prune on another host never deletes a pack it is about to read
/// (docs/retention.md, "Who holds leases"); a dry run reads no pack and takes none.
pub async fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<()> {
    // Asked before the repository is opened.
    if args.to_dir.is_none() && args.serve.is_none() && args.qdrant.qdrant.is_empty() {
        where_to(args)?;
    }
    let repo = common::open(global).await?;
    if args.dry_run {
        return run_on(global, args, &repo).await;
    }
    qvault::prune::read_leased(&repo, "restore", run_on(global, args, &repo)).await
}

async fn run_on(global: &GlobalArgs, args: &RestoreArgs, repo: &Repository) -> Result<()> {
    if let Some(dir) = &args.to_dir {
        return run_to_dir(global, args, repo, dir).await;
    }
    if let Some(addr) = args.serve {
        return run_serve(global, args, repo, addr).await;
    }
    if !args.qdrant.qdrant.is_empty() {
        return run_qdrant(global, args, repo).await;
    }
    let to = where_to(args)?;
    let plan = plan(repo, args).await?;
    if args.dry_run {
        return print_dry_run(global, repo, &plan, None).await;
    }
    let options = RestoreOptions::default();
    let summary = if to == "-" {
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        execute(repo, &plan, out, &options).await?.1
    } else {
        restore_to_file(repo, &plan, Path::new(to), args.overwrite, &options).await?
    };
    // In place (or written out): a signal now lets the restore finish and report success.
    qvault::held::commit();
    super::log::note(summary.bytes, vec![plan.backup], vec![]);
    let stream = &plan.stream;
    if global.json {
        common::print_json(&RestoreReport::new(&plan, summary))?;
    } else if common::chatty(global) {
        eprintln!(
            "restored stream {:?} of backup {}: {} in {:.2} s, SHA-256 {} checked",
            stream.name,
            plan.backup.short(),
            common::human_bytes(summary.bytes),
            summary.duration.as_secs_f64(),
            stream.sha256
        );
    }
    Ok(())
}

/// `--to`, which a restore to a file or stdout needs.
fn where_to(args: &RestoreArgs) -> qvault::Result<&str> {
    args.to.as_deref().ok_or_else(|| {
        qvault::Error::invalid_input("where to? give --to FILE (or - for stdout), or --qdrant URL")
    })
}
