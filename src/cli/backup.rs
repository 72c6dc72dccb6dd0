//! `qvault backup`: a file, stdin or Qdrant snapshots into the repository.

use super::common;
use super::qdrant::QdrantConnArgs;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::backup::{backup, BackupOptions, BackupSummary, Progress, StreamSource};
use qvault::format::manifest::StreamKind;
use qvault::qdrant::backup::{backup_qdrant, QdrantBackupOptions, QdrantBackupReport};
use qvault::qdrant::SnapshotScope;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// `-` to read the stream from stdin.
    #[arg(value_name = "-")]
    pub stdin: Option<String>,
    /// A file to back up.
    #[arg(long, conflicts_with_all = ["stdin", "qdrant", "dir"])]
    pub file: Option<PathBuf>,
    /// A directory to back up as a deterministic tar stream (e.g. a stopped Qdrant node's
    /// storage directory); restore it with `restore --to-dir`.
    #[arg(long, conflicts_with_all = ["stdin", "qdrant"])]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub qdrant: QdrantConnArgs,
    /// A collection to snapshot (with --qdrant); repeatable, one stream each.
    #[arg(long = "collection", value_name = "NAME", requires = "qdrant")]
    pub collections: Vec<String>,
    /// Snapshot every collection of the node.
    #[arg(long, requires = "qdrant")]
    pub all_collections: bool,
    /// A full-storage snapshot (all collections and aliases; restored by starting Qdrant
    /// with --storage-snapshot).
    #[arg(long, requires = "qdrant")]
    pub full_storage: bool,
    /// Shard snapshots of this shard of the one --collection; repeatable.
    #[arg(long = "shard", value_name = "ID", requires = "qdrant")]
    pub shards: Vec<u32>,
    /// Archive this existing snapshot instead of creating one (it is left on the node).
    #[arg(long, value_name = "NAME", requires = "qdrant")]
    pub snapshot: Option<String>,
    /// Leave the snapshots qvault created on the node.
    #[arg(long, requires = "qdrant")]
    pub keep_remote: bool,
    /// A name for the backup.
    #[arg(long)]
    pub name: Option<String>,
    /// A tag, key=value; repeatable.
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("tag {s:?} is not key=value")),
    }
}

fn source(args: &BackupArgs) -> Result<(StreamSource, Option<u64>)> {
    if let Some(dir) = &args.dir {
        let name =
            dir.file_name().map_or_else(|| "directory".into(), |n| n.to_string_lossy().to_string());
        let source = StreamSource {
            name,
            kind: StreamKind::Directory,
            reader: qvault::dirtar::tar_reader(dir)?,
            source: Some(serde_json::json!({ "path": dir })),
            expected_sha256: None,
        };
        return Ok((source, None));
    }
    match (&args.file, args.stdin.as_deref()) {
        (Some(path), None) => {
            let file = std::fs::File::open(path)
                .map_err(|e| qvault::Error::io(format!("opening {}", path.display()), e))?;
            let size = file.metadata().ok().map(|m| m.len());
            let name =
                path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().to_string());
            let source = StreamSource {
                name,
                kind: StreamKind::File,
                reader: Box::new(file),
                source: Some(serde_json::json!({ "path": path })),
                expected_sha256: None,
            };
            Ok((source, size))
        }
        (None, Some("-")) => Ok((
            StreamSource {
                name: "stdin".into(),
                kind: StreamKind::Stdin,
                reader: Box::new(std::io::stdin()),
                source: None,
                expected_sha256: None,
            },
            None,
        )),
        (None, Some(other)) => Err(qvault::Error::invalid_input(format!(
            "unexpected argument {other:?}: give --file PATH, or - to read stdin"
        ))
        .into()),
        _ => Err(qvault::Error::invalid_input(
            "nothing to back up: give --file PATH, --dir PATH, --qdrant URL --collection C, or - to read stdin",
        )
        .into()),
    }
}

/// A progress bar on stderr while `progress` moves, when stderr is a terminal.
fn progress_bar(
    global: &GlobalArgs,
    total: Option<u64>,
    progress: &Arc<Progress>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !common::chatty(global) || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} read, {msg} added  {bytes_per_sec}  {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = Arc::clone(progress);
    Some(tokio::spawn(async move {
        loop {
            bar.set_position(progress.bytes_read.load(Ordering::Relaxed));
            bar.set_message(common::human_bytes(progress.bytes_added.load(Ordering::Relaxed)));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }))
}

/// Stops a bar from [`progress_bar`] and clears its line.
fn stop_progress_bar(bar: Option<tokio::task::JoinHandle<()>>) {
    if let Some(bar) = bar {
        bar.abort();
        eprint!("\r\x1b[2K");
    }
}

/// The snapshot scopes the flags ask for.
fn qdrant_scopes(args: &BackupArgs) -> Result<Vec<SnapshotScope>> {
    let mut scopes = Vec::new();
    if args.shards.is_empty() {
        scopes.extend(args.collections.iter().cloned().map(SnapshotScope::Collection));
    } else {
        let [collection] = args.collections.as_slice() else {
            return Err(qvault::Error::invalid_input(
                "--shard needs exactly one --collection: the collection the shards belong to",
            )
            .into());
        };
        scopes.extend(args.shards.iter().map(|id| SnapshotScope::shard(collection.clone(), *id)));
    }
    if args.full_storage {
        scopes.push(SnapshotScope::FullStorage);
    }
    Ok(scopes)
}

fn backup_options(args: &BackupArgs) -> BackupOptions {
    BackupOptions {
        name: args.name.clone(),
        tags: args.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..BackupOptions::default()
    }
}

async fn run_qdrant(global: &GlobalArgs, args: &BackupArgs) -> Result<()> {
    let client = args.qdrant.require_client("backing up from Qdrant")?;
    let options = QdrantBackupOptions {
        scopes: qdrant_scopes(args)?,
        all_collections: args.all_collections,
        existing_snapshot: args.snapshot.clone(),
        keep_remote: args.keep_remote,
    };
    let repo = common::open(global).await?;
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(global, None, &progress);
    let result =
        backup_qdrant(&repo, &client, &options, &backup_options(args), Arc::clone(&progress)).await;
    stop_progress_bar(bar);
    let report = result?;
    print_summary(global, &report.summary, Some(&report))?;
    if common::chatty(global) {
        for snap in &report.snapshots {
            eprintln!("snapshot {} of {}: {}", snap.name, snap.scope, snap.outcome);
        }
    }
    for snap in report.left_on_node() {
        eprintln!(
            "qvault: warning: snapshot {} of {} is still on the node: {}",
            snap.name, snap.scope, snap.outcome
        );
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<()> {
    if args.qdrant.qdrant.is_some() {
        return run_qdrant(global, args).await;
    }
    let (source, total) = source(args)?;
    let repo = common::open(global).await?;
    let options = backup_options(args);
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(global, total, &progress);
    let result = backup(&repo, vec![source], &options, Arc::clone(&progress)).await;
    stop_progress_bar(bar);
    print_summary(global, &result?, None)
}

/// Prints a finished backup on stdout: one JSON object with `--json`, else its id and what
/// it read and added. A Qdrant backup (`qdrant`) adds the Qdrant version, the snapshots'
/// fate (JSON only) and its streams.
fn print_summary(
    global: &GlobalArgs,
    summary: &BackupSummary,
    qdrant: Option<&QdrantBackupReport>,
) -> Result<()> {
    let s = &summary.manifest.summary;
    if global.json {
        let mut out = serde_json::json!({
            "id": summary.id,
            "bytes_read": s.bytes_read,
            "bytes_added": s.bytes_added,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "dedup_ratio": summary.dedup_ratio(),
            "duration_ms": s.duration_ms,
        });
        if let Some(report) = qdrant {
            out["qdrant_version"] = serde_json::json!(report.qdrant_version);
            out["streams"] = summary
                .manifest
                .streams
                .iter()
                .map(
                    |st| serde_json::json!({"name": st.name, "size": st.size, "sha256": st.sha256}),
                )
                .collect();
            out["snapshots"] = serde_json::to_value(&report.snapshots)?;
        }
        return common::print_json(&out);
    }
    println!("backup {}", summary.id);
    if qdrant.is_some() {
        for st in &summary.manifest.streams {
            println!("  {} {} sha256 {}", st.name, common::human_bytes(st.size), st.sha256);
        }
    }
    println!(
        "read {}, added {} ({} of {} chunks new), ratio {:.1}x, {:.1} s",
        common::human_bytes(s.bytes_read),
        common::human_bytes(s.bytes_added),
        s.new_chunks,
        s.chunks,
        summary.dedup_ratio(),
        s.duration_ms as f64 / 1000.0
    );
    Ok(())
}
