//! `qvault backup`: a file or stdin into the repository.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::backup::{backup, BackupOptions, Progress, StreamSource};
use qvault::format::manifest::StreamKind;
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
    #[arg(long, conflicts_with = "stdin")]
    pub file: Option<PathBuf>,
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
            "nothing to back up: give --file PATH, or - to read stdin",
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

pub async fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<()> {
    let (source, total) = source(args)?;
    let repo = common::open(global).await?;
    let options = BackupOptions {
        name: args.name.clone(),
        tags: args.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..BackupOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(global, total, &progress);
    let result = backup(&repo, vec![source], &options, Arc::clone(&progress)).await;
    if let Some(bar) = bar {
        bar.abort();
        eprint!("\r\x1b[2K");
    }
    let summary = result?;
    let s = &summary.manifest.summary;
    if global.json {
        common::print_json(&serde_json::json!({
            "id": summary.id,
            "bytes_read": s.bytes_read,
            "bytes_added": s.bytes_added,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "dedup_ratio": summary.dedup_ratio(),
            "duration_ms": s.duration_ms,
        }))?;
    } else {
        println!("backup {}", summary.id);
        println!(
            "read {}, added {} ({} of {} chunks new), ratio {:.1}x, {:.1} s",
            common::human_bytes(s.bytes_read),
            common::human_bytes(s.bytes_added),
            s.new_chunks,
            s.chunks,
            summary.dedup_ratio(),
            s.duration_ms as f64 / 1000.0
        );
    }
    Ok(())
}
