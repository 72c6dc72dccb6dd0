//! `qvault backup`: a file, stdin, a command's output, a directory or Qdrant snapshots into
//! the repository. The sources themselves are library constructors
//! ([`qvault::backup::StreamSource`]); this maps flags to them and prints the summary.

use super::common;
use super::qdrant::QdrantConnArgs;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::backup::{backup, BackupOptions, BackupSummary, OnChange, Progress, StreamSource};
use qvault::dirtar::Unreadable;
use qvault::qdrant::backup::{
    backup_qdrant, CreateOptions, QdrantBackupOptions, QdrantBackupReport, RemoteSnapshot,
};
use qvault::qdrant::cluster::backup::{backup_cluster, ClusterBackupOptions, ShardRead};
use qvault::qdrant::SnapshotScope;
use qvault::redact::printable;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("qdrant_scope")
    .args(["collections", "all_collections", "full_storage"]).multiple(true)))]
pub struct BackupArgs {
    /// `-` to read the stream from stdin.
    #[arg(value_name = "-")]
    pub stdin: Option<String>,
    /// A file to back up.
    #[arg(long, conflicts_with_all = ["stdin", "qdrant", "dir", "from_command"])]
    pub file: Option<PathBuf>,
    /// Fail (record nothing) instead of warning when the --file changes while it is read.
    #[arg(long, requires = "file")]
    pub strict: bool,
    /// Back up the standard output of the command given after `--`; nothing is recorded
    /// when it exits non-zero or is killed.
    #[arg(long, requires = "command", conflicts_with_all = ["stdin", "qdrant", "dir"])]
    pub from_command: bool,
    /// The command for --from-command and its arguments.
    #[arg(last = true, value_name = "CMD", requires = "from_command")]
    pub command: Vec<String>,
    /// Accept an empty (0-byte) stream; by default it is refused, as a failed producer
    /// looks like one.
    #[arg(long)]
    pub allow_empty: bool,
    /// A directory to back up as a deterministic tar stream (e.g. a stopped Qdrant node's
    /// storage directory); restore it with `restore --to-dir`.
    #[arg(long, conflicts_with_all = ["stdin", "qdrant"])]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub qdrant: QdrantConnArgs,
    /// A collection to snapshot (from --qdrant, or the config file's `[qdrant] url`);
    /// repeatable, one stream each (one per shard from a cluster).
    #[arg(long = "collection", value_name = "NAME")]
    pub collections: Vec<String>,
    /// Snapshot every collection of the node.
    #[arg(long)]
    pub all_collections: bool,
    /// A full-storage snapshot (all collections and aliases; restored by starting Qdrant
    /// with --storage-snapshot).
    #[arg(long)]
    pub full_storage: bool,
    /// Shard snapshots of this shard of the one --collection; repeatable.
    #[arg(long = "shard", value_name = "ID")]
    pub shards: Vec<u32>,
    /// Archive this existing snapshot instead of creating one (it is left on the node).
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Leave the snapshots qvault created on the node.
    #[arg(long)]
    pub keep_remote: bool,
    /// Create snapshots with `wait=false` and poll until they are listed, instead of one
    /// request held open while Qdrant writes (for big collections behind a proxy).
    #[arg(long)]
    pub poll_snapshot: bool,
    /// How long to wait for a snapshot to appear when polling, or after a create that
    /// failed while Qdrant may still be writing it (then it is found and deleted).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub snapshot_timeout: u64,
    /// Points to sample for `verify --restore-test` (with --qdrant): their ids, a hash of
    /// each one's vectors and payload, and a few probe queries are recorded in the backup
    /// (0: none, as --no-sample).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub sample_points: usize,
    /// Record no point sample: a restore test then compares the point count and the vectors
    /// config only.
    #[arg(long, conflicts_with = "sample_points")]
    pub no_sample: bool,
    /// Read each shard with Qdrant's streamed shard snapshot: nothing is stored on the
    /// node's disk (a shard snapshot is created only where streaming is refused). Implied
    /// by several --qdrant (a cluster: one Active replica of every shard is read).
    #[arg(long)]
    pub streamed: bool,
    /// Cluster backup: when a shard has no reachable Active replica, record the other
    /// shards anyway (the backup says which it lacks) instead of failing.
    #[arg(long)]
    pub allow_partial: bool,
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

/// The one stream the flags name (everything but Qdrant), its size when known, and for a
/// directory where the paths it could not read are recorded.
fn source(args: &BackupArgs) -> Result<(StreamSource, Option<u64>, Option<Unreadable>)> {
    if let Some(dir) = &args.dir {
        let (source, unreadable) = StreamSource::directory_skipping(dir)?;
        return Ok((source, None, Some(unreadable)));
    }
    if args.from_command {
        let Some((program, rest)) = args.command.split_first() else {
            return Err(qvault::Error::invalid_input(
                "--from-command needs a command after --: qvault backup --from-command -- CMD ARGS…",
            )
            .into());
        };
        return Ok((StreamSource::command(program, rest)?, None, None));
    }
    match (&args.file, args.stdin.as_deref()) {
        (Some(path), None) => {
            let on_change = if args.strict { OnChange::Fail } else { OnChange::Notify(warn) };
            let (source, size) = StreamSource::file(path, on_change)?;
            Ok((test_hook::grow_file_during_read(source, path), Some(size), None))
        }
        (None, Some("-")) => {
            if args.name.is_none() {
                // Nothing else tells two stdin jobs apart: forget would thin them as one.
                warn(
                    "reading stdin without --name: forget, check and report group every unnamed \
                     stdin backup of this host as one job; give each job its own --name",
                );
            }
            Ok((StreamSource::stdin(), None, None))
        }
        (None, Some(other)) => Err(qvault::Error::invalid_input(format!(
            "unexpected argument {other:?}: give --file PATH, or - to read stdin"
        ))
        .into()),
        _ => Err(qvault::Error::invalid_input(
            "nothing to back up: give --file PATH, --dir PATH, --from-command -- CMD, \
             --qdrant URL --collection C, or - to read stdin",
        )
        .into()),
    }
}

fn warn(message: &str) {
    eprintln!("qvault: warning: {message}");
}

/// Lets the CLI tests change a file while `backup --file` reads it, deterministically: with
/// `QVAULT_TEST_APPEND_DURING_READ=TEXT` (debug builds only), TEXT is appended to the file
/// right after the first bytes were read from it.
mod test_hook {
    use qvault::backup::StreamSource;
    use std::path::Path;

    #[cfg(debug_assertions)]
    pub fn grow_file_during_read(mut source: StreamSource, path: &Path) -> StreamSource {
        use std::io::{Read, Write};
        struct Grow {
            inner: Box<dyn Read + Send>,
            append: Option<(std::path::PathBuf, String)>,
        }
        impl Read for Grow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.inner.read(buf)?;
                if n > 0 {
                    if let Some((path, text)) = self.append.take() {
                        std::fs::OpenOptions::new()
                            .append(true)
                            .open(path)?
                            .write_all(text.as_bytes())?;
                    }
                }
                Ok(n)
            }
        }
        if let Ok(text) = std::env::var("QVAULT_TEST_APPEND_DURING_READ") {
            let append = Some((path.to_path_buf(), text));
            source.reader = Box::new(Grow { inner: source.reader, append });
        }
        source
    }

    #[cfg(not(debug_assertions))]
    pub fn grow_file_during_read(source: StreamSource, _path: &Path) -> StreamSource {
        source
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
        allow_empty: args.allow_empty,
        ..BackupOptions::default()
    }
}

/// The Qdrant nodes to back up from: the --qdrant flags (or the config file's `qdrant.url`,
/// which fills them), required when a collection (or all, or full storage) is asked for.
fn qdrant_urls(args: &BackupArgs) -> Result<Vec<String>> {
    let wanted = !args.collections.is_empty() || args.all_collections || args.full_storage;
    if wanted && args.qdrant.qdrant.is_empty() {
        return Err(qvault::Error::invalid_input(
            "backing up from Qdrant needs --qdrant URL (once per node of a cluster), or \
             `url` in the config file's [qdrant] section",
        )
        .into());
    }
    Ok(args.qdrant.qdrant.clone())
}

async fn run_qdrant(global: &GlobalArgs, args: &BackupArgs, url: &str) -> Result<()> {
    let client = args.qdrant.client_at(url)?;
    let options = QdrantBackupOptions {
        scopes: qdrant_scopes(args)?,
        all_collections: args.all_collections,
        existing_snapshot: args.snapshot.clone(),
        keep_remote: args.keep_remote,
        create: create_options(args),
        sample: (!args.no_sample).then(|| qvault::qdrant::sample::SampleOptions {
            points: args.sample_points,
            ..Default::default()
        }),
    };
    let repo = common::open(global).await?;
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(global, None, &progress);
    let result =
        backup_qdrant(&repo, &client, &options, &backup_options(args), Arc::clone(&progress)).await;
    stop_progress_bar(bar);
    let report = result?;
    super::log::note(report.summary.manifest.summary.bytes_added, vec![report.summary.id], vec![]);
    print_summary(global, &report.summary, Some(&report))?;
    report_snapshots(global, &report.snapshots);
    Ok(())
}

fn create_options(args: &BackupArgs) -> CreateOptions {
    CreateOptions {
        poll: args.poll_snapshot,
        timeout: std::time::Duration::from_secs(args.snapshot_timeout),
    }
}

/// What became of the snapshots qvault created (with -v), and a warning for each left.
fn report_snapshots(global: &GlobalArgs, snapshots: &[RemoteSnapshot]) {
    if common::chatty(global) {
        for snap in snapshots {
            eprintln!("snapshot {} of {}: {}", snap.name, snap.scope, snap.outcome);
        }
    }
    for snap in snapshots.iter().filter(|s| s.outcome.delete_failed()) {
        eprintln!(
            "qvault: warning: snapshot {} of {} is still on the node: {}",
            snap.name, snap.scope, snap.outcome
        );
    }
}

/// Several nodes (or --streamed): every shard of each collection, one replica each.
async fn run_cluster(global: &GlobalArgs, args: &BackupArgs, urls: &[String]) -> Result<()> {
    let single_node_only = args.all_collections
        || args.full_storage
        || !args.shards.is_empty()
        || args.snapshot.is_some()
        || args.keep_remote;
    if single_node_only {
        return Err(qvault::Error::invalid_input(
            "a cluster (or --streamed) backup reads every shard of each --collection and \
             stores nothing on the nodes: --all-collections, --full-storage, --shard, \
             --snapshot and --keep-remote take one --qdrant URL without --streamed",
        )
        .into());
    }
    let nodes = args.qdrant.nodes(urls)?;
    let options = ClusterBackupOptions {
        collections: args.collections.clone(),
        allow_partial: args.allow_partial,
        create: create_options(args),
    };
    let repo = common::open(global).await?;
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(global, None, &progress);
    let result =
        backup_cluster(&repo, &nodes, &options, &backup_options(args), Arc::clone(&progress)).await;
    stop_progress_bar(bar);
    let report = result?;
    super::log::note(report.summary.manifest.summary.bytes_added, vec![report.summary.id], vec![]);
    if global.json {
        common::print_json(&ClusterSummary {
            summary: &report.summary,
            qdrant_version: &report.qdrant_version,
            reads: &report.reads,
            missing_shards: report.missing.iter().map(|m| m.shard_id).collect(),
            snapshots: &report.snapshots,
        })?;
    } else {
        print_summary(global, &report.summary, None)?;
        for (st, read) in report.summary.manifest.streams.iter().zip(&report.reads) {
            println!(
                "  {} {} sha256 {} from {}",
                st.name,
                common::human_bytes(st.size),
                st.sha256,
                read.url
            );
        }
    }
    report_snapshots(global, &report.snapshots);
    for m in &report.missing {
        eprintln!("qvault: warning: PARTIAL backup {}: {}", report.summary.id, m.why);
    }
    Ok(())
}

/// `backup --json` of a cluster backup: the summary, which node gave each shard, and the
/// shards a partial backup lacks.
#[derive(serde::Serialize)]
struct ClusterSummary<'a> {
    #[serde(flatten)]
    summary: &'a BackupSummary,
    qdrant_version: &'a str,
    reads: &'a [ShardRead],
    missing_shards: Vec<u32>,
    snapshots: &'a [RemoteSnapshot],
}

pub async fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<()> {
    let urls = qdrant_urls(args)?;
    if urls.len() > 1 || (args.streamed && !urls.is_empty()) {
        return run_cluster(global, args, &urls).await;
    }
    if let Some(url) = urls.first() {
        return run_qdrant(global, args, url).await;
    }
    // Flags are checked before the repository is opened, but a command is started only
    // after: it may be costly or have effects, and nothing would read its output.
    let early = if args.from_command { None } else { Some(source(args)?) };
    let repo = common::open(global).await?;
    let (source, total, unreadable) = match early {
        Some(early) => early,
        None => source(args)?,
    };
    let options = backup_options(args);
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(global, total, &progress);
    let result = backup(&repo, vec![source], &options, Arc::clone(&progress)).await;
    stop_progress_bar(bar);
    let summary = result?;
    super::log::note(summary.manifest.summary.bytes_added, vec![summary.id], vec![]);
    let unreadable = unreadable.map(|u| u.paths()).unwrap_or_default();
    if unreadable.is_empty() {
        return print_summary(global, &summary, None);
    }
    // Each path was warned about as the walk met it; the summary lists them all.
    if global.json {
        let unreadable: Vec<_> = unreadable
            .iter()
            .map(|(path, error)| serde_json::json!({ "path": path, "error": error }))
            .collect();
        common::print_json(&WithUnreadable { summary: &summary, unreadable })?;
    } else {
        print_summary(global, &summary, None)?;
    }
    Err(incomplete(&summary, &unreadable))
}

/// `backup --dir --json` with paths left out: the summary plus `unreadable`.
#[derive(serde::Serialize)]
struct WithUnreadable<'a> {
    #[serde(flatten)]
    summary: &'a BackupSummary,
    unreadable: Vec<serde_json::Value>,
}

/// `backup --dir` recorded a backup without some paths it could not read: exit 10, as
/// restic's exit 3 ("snapshot created, but some files could not be read").
#[derive(Debug)]
pub struct IncompleteBackup(pub String);

impl std::fmt::Display for IncompleteBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IncompleteBackup {}

/// Paths an error names at most (the operation log keeps the text).
const NAMED_PATHS: usize = 10;

fn incomplete(summary: &BackupSummary, unreadable: &[(PathBuf, String)]) -> anyhow::Error {
    let mut named: Vec<String> = unreadable
        .iter()
        .take(NAMED_PATHS)
        .map(|(path, error)| {
            let path = path.display().to_string();
            format!("{} ({})", printable(&path), printable(error))
        })
        .collect();
    if unreadable.len() > NAMED_PATHS {
        named.push(format!("and {} more", unreadable.len() - NAMED_PATHS));
    }
    IncompleteBackup(format!(
        "backup {} was recorded, but {}: {}; make them readable by this user and back up again",
        summary.id,
        qvault::report::unreadable_paths(unreadable.len() as u64),
        named.join(", ")
    ))
    .into()
}

/// `backup --json` of a Qdrant backup: the summary plus what only Qdrant has.
#[derive(serde::Serialize)]
struct QdrantSummary<'a> {
    #[serde(flatten)]
    summary: &'a BackupSummary,
    qdrant_version: &'a str,
    snapshots: &'a [RemoteSnapshot],
}

/// Prints a finished backup on stdout: one JSON object with `--json` (see
/// [`BackupSummary`]; `dedup_ratio` is null when nothing was added), else its id and what
/// it read and added. A Qdrant backup (`qdrant`) adds the Qdrant version, the snapshots'
/// fate (JSON only) and its streams.
fn print_summary(
    global: &GlobalArgs,
    summary: &BackupSummary,
    qdrant: Option<&QdrantBackupReport>,
) -> Result<()> {
    if global.json {
        return match qdrant {
            Some(report) => common::print_json(&QdrantSummary {
                summary,
                qdrant_version: &report.qdrant_version,
                snapshots: &report.snapshots,
            }),
            None => common::print_json(summary),
        };
    }
    let s = &summary.manifest.summary;
    println!("backup {}", summary.id);
    if qdrant.is_some() {
        for st in &summary.manifest.streams {
            println!("  {} {} sha256 {}", st.name, common::human_bytes(st.size), st.sha256);
        }
    }
    let ratio = match summary.dedup_ratio() {
        Some(r) => format!("{r:.1}x"),
        None => "n/a".to_string(),
    };
    println!(
        "read {}, added {} ({} of {} chunks new), ratio {ratio}, {:.1} s",
        common::human_bytes(s.bytes_read),
        common::human_bytes(s.bytes_added),
        s.new_chunks,
        s.chunks,
        s.duration_ms as f64 / 1000.0
    );
    Ok(())
}
