//! `qvault restore`: a backup's stream to a file, stdout, or a Qdrant node.

use super::common;
use super::qdrant::QdrantConnArgs;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::format::manifest::{Manifest, StreamRecord};
use qvault::qdrant::restore::{restore_to_qdrant, QdrantRestoreOptions};
use qvault::qdrant::serve::{serve_restore, ServeOptions};
use qvault::qdrant::SnapshotPriority;
use qvault::restore::{restore_stream, RestoreOptions};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup id (or a unique prefix, or `latest`).
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
    /// Restore into this collection (default: the one backed up).
    #[arg(long)]
    pub collection: Option<String>,
    /// Qdrant's recovery priority: snapshot (default), replica or no_sync.
    #[arg(long)]
    pub priority: Option<SnapshotPriority>,
    /// Restore into this shard (shard backups).
    #[arg(long)]
    pub shard: Option<u32>,
    /// Restore even when the Qdrant version or the existing collection's layout differ.
    #[arg(long, requires = "qdrant")]
    pub force: bool,
    /// Which stream, when the backup has several.
    #[arg(long)]
    pub stream: Option<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,
}

fn pick_stream<'a>(m: &'a Manifest, wanted: Option<&str>) -> qvault::Result<&'a StreamRecord> {
    let names = || m.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    match wanted {
        Some(name) => m.streams.iter().find(|s| s.name == name).ok_or_else(|| {
            qvault::Error::not_found(format!(
                "the backup has no stream {name:?}; its streams: {}",
                names()
            ))
        }),
        None if m.streams.len() == 1 => Ok(&m.streams[0]),
        None => Err(qvault::Error::invalid_input(format!(
            "the backup has {} streams: choose one with --stream ({})",
            m.streams.len(),
            names()
        ))),
    }
}

/// A temporary sibling of `target`: same directory, so the final rename is atomic.
fn partial_path(target: &Path) -> PathBuf {
    let name =
        target.file_name().map_or_else(|| "restore".into(), |n| n.to_string_lossy().to_string());
    let nonce: u32 = rand::random();
    target.with_file_name(format!(".{name}.qvault-partial-{nonce:08x}"))
}

fn qdrant_options(args: &RestoreArgs) -> QdrantRestoreOptions {
    QdrantRestoreOptions {
        collection: args.collection.clone(),
        priority: args.priority,
        shard: args.shard,
        force: args.force,
        restore: RestoreOptions::default(),
    }
}

async fn run_serve(
    global: &GlobalArgs,
    args: &RestoreArgs,
    addr: std::net::SocketAddr,
) -> Result<()> {
    let client = args.qdrant.client()?;
    let repo = common::open(global).await?;
    let id = repo.resolve_backup(&args.id)?;
    let manifest = repo.read_manifest(id).await?;
    let stream = pick_stream(&manifest, args.stream.as_deref())?;
    let options = qdrant_options(args);
    let serve = ServeOptions { addr, advertise: args.advertise_url.clone() };
    let qdrant = client.as_ref().map(|c| (c, &options));
    let making_call = client.is_some();
    let report = serve_restore(&repo, id, stream, &serve, qdrant, |ready| {
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
        common::print_json(&serde_json::json!({
            "id": id, "stream": stream.name, "bytes": report.bytes, "seconds": seconds,
            "sha256": stream.sha256, "points_count": report.points_count,
            "target": report.plan.as_ref().map(|p| p.scope.to_string()),
        }))?;
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

async fn run_qdrant(global: &GlobalArgs, args: &RestoreArgs) -> Result<()> {
    let client = args.qdrant.require_client("restoring into Qdrant")?;
    let repo = common::open(global).await?;
    let id = repo.resolve_backup(&args.id)?;
    let manifest = repo.read_manifest(id).await?;
    let stream = pick_stream(&manifest, args.stream.as_deref())?;
    let options = qdrant_options(args);
    if common::chatty(global) {
        eprintln!(
            "restoring stream {:?} of backup {} into Qdrant at {} …",
            stream.name,
            id.short(),
            client.url()
        );
    }
    let report = restore_to_qdrant(&repo, id, stream, &client, &options).await?;
    for w in report.plan.forced.iter().chain(&report.warnings) {
        eprintln!("qvault: warning: {w}");
    }
    let seconds = report.duration.as_secs_f64();
    if global.json {
        common::print_json(&serde_json::json!({
            "id": id, "stream": stream.name, "target": report.plan.scope.to_string(),
            "qdrant_version": report.plan.target_version, "bytes": report.bytes,
            "points_count": report.points_count, "seconds": seconds, "sha256": stream.sha256,
            "uploaded_file": report.uploaded_file, "uploaded_file_deleted": report.uploaded_file_deleted,
        }))?;
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
    Ok(())
}

async fn run_to_dir(global: &GlobalArgs, args: &RestoreArgs, dir: &Path) -> Result<()> {
    let repo = common::open(global).await?;
    let id = repo.resolve_backup(&args.id)?;
    let manifest = repo.read_manifest(id).await?;
    let stream = pick_stream(&manifest, args.stream.as_deref())?;
    let extractor = qvault::dirtar::DirExtractor::new(dir)?;
    let (extractor, summary) =
        restore_stream(&repo, id, stream, extractor, &RestoreOptions::default()).await?;
    let entries = extractor.finish()?;
    let seconds = summary.duration.as_secs_f64();
    if global.json {
        common::print_json(&serde_json::json!({
            "id": id, "stream": stream.name, "dir": dir, "entries": entries,
            "bytes": summary.bytes, "seconds": seconds, "sha256": stream.sha256,
        }))?;
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

pub async fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<()> {
    if let Some(dir) = &args.to_dir {
        return run_to_dir(global, args, dir).await;
    }
    if let Some(addr) = args.serve {
        return run_serve(global, args, addr).await;
    }
    if args.qdrant.qdrant.is_some() {
        return run_qdrant(global, args).await;
    }
    let to = args.to.as_deref().ok_or_else(|| {
        qvault::Error::invalid_input("where to? give --to FILE (or - for stdout), or --qdrant URL")
    })?;
    let target = (to != "-").then(|| PathBuf::from(to));
    if let Some(path) = &target {
        if path.exists() && !args.overwrite {
            return Err(qvault::Error::new(
                qvault::ErrorKind::AlreadyExists,
                format!("{} exists: choose another --to, or pass --overwrite", path.display()),
            )
            .into());
        }
    }
    let repo = common::open(global).await?;
    let id = repo.resolve_backup(&args.id)?;
    let manifest = repo.read_manifest(id).await?;
    let stream = pick_stream(&manifest, args.stream.as_deref())?;
    let options = RestoreOptions::default();
    let summary = match &target {
        None => {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            restore_stream(&repo, id, stream, out, &options).await?.1
        }
        Some(path) => {
            let partial = partial_path(path);
            let file = std::fs::File::create(&partial)
                .map_err(|e| qvault::Error::io(format!("creating {}", partial.display()), e))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, file);
            let result = restore_stream(&repo, id, stream, out, &options).await;
            let finished = result.and_then(|(out, summary)| {
                let file = out.into_inner().map_err(|e| {
                    qvault::Error::io(format!("writing {}", partial.display()), e.into_error())
                })?;
                file.sync_all()
                    .map_err(|e| qvault::Error::io(format!("syncing {}", partial.display()), e))?;
                std::fs::rename(&partial, path).map_err(|e| {
                    qvault::Error::io(
                        format!("renaming {} to {}", partial.display(), path.display()),
                        e,
                    )
                })?;
                Ok(summary)
            });
            match finished {
                Ok(summary) => summary,
                Err(e) => {
                    // Nothing that looks complete is left behind.
                    let _ = std::fs::remove_file(&partial);
                    return Err(e.into());
                }
            }
        }
    };
    let seconds = summary.duration.as_secs_f64();
    if global.json {
        common::print_json(&serde_json::json!({
            "id": id, "stream": stream.name, "bytes": summary.bytes, "chunks": summary.chunks,
            "packs_read": summary.packs_read, "reads": summary.reads,
            "bytes_fetched": summary.bytes_fetched, "seconds": seconds, "sha256": stream.sha256,
        }))?;
    } else if common::chatty(global) {
        eprintln!(
            "restored stream {:?} of backup {}: {} in {:.2} s, SHA-256 {} checked",
            stream.name,
            id.short(),
            common::human_bytes(summary.bytes),
            seconds,
            stream.sha256
        );
    }
    Ok(())
}
