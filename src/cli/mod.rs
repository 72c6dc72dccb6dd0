//! Command-line definitions (clap) in one place; one file per verb, glue only.

pub mod backup;
pub mod check;
pub mod common;
pub mod config;
pub mod copy;
pub mod docs;
pub mod forget;
pub mod index;
pub mod init;
pub mod interrupt;
pub mod key;
pub mod list;
pub mod log;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod prune;
pub mod qdrant;
pub mod repair;
pub mod report;
pub mod restore;
pub mod stats;
pub mod verify;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "qvault", version, about = "Encrypted, deduplicated backups of Qdrant snapshots")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb takes; `--help` shows them after the verb's own, under their own
/// heading.
#[derive(Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Repository: a path, or s3://bucket/prefix (azblob://, gcs://, webdav://, sftp:// with
    /// the matching cargo feature).
    #[arg(long, short = 'r', env = "QVAULT_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Data identity file (age X25519), needed to restore.
    #[arg(long, short = 'i', env = "QVAULT_IDENTITY", global = true)]
    pub identity: Option<PathBuf>,
    /// Repository key file (from `qvault key export`): enough to back up, not to restore.
    #[arg(long, env = "QVAULT_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The repository key fingerprint (`age1…`, from `qvault init` or `qvault key list`)
    /// the repository must present when opened with an identity; without it, the first
    /// one seen at a location is remembered and a different one later is refused.
    #[arg(long, env = "QVAULT_EXPECT_KEY", global = true)]
    pub expect_key: Option<String>,
    /// Directory of the local index cache.
    #[arg(long, env = "QVAULT_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Keep the local index in memory only (rebuilt from the repository each run).
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// S3 endpoint URL (for S3-compatible servers).
    #[arg(long, env = "QVAULT_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "QVAULT_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// Azure Blob endpoint (Azurite, a private endpoint, a sovereign cloud).
    #[arg(long, value_name = "URL", env = "QVAULT_AZURE_ENDPOINT", global = true)]
    pub azure_endpoint: Option<String>,
    /// TOML config file with every setting a scheduled job needs (docs/configuration.md).
    #[arg(long, env = "QVAULT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The config file's [profiles.NAME] table to apply over its top level.
    #[arg(long, value_name = "NAME", env = "QVAULT_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Backend credentials from the environment or the config file (they have no flag: a
    /// flag's value shows in the process list).
    #[arg(skip)]
    pub s3_access_key_id: Option<String>,
    #[arg(skip)]
    pub s3_secret_access_key: Option<String>,
    #[arg(skip)]
    pub azure_account: Option<String>,
    #[arg(skip)]
    pub azure_key: Option<String>,
    #[arg(skip)]
    pub gcs_credential_file: Option<PathBuf>,
    #[arg(skip)]
    pub webdav_password: Option<String>,
    #[arg(skip)]
    pub webdav_password_file: Option<PathBuf>,
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress or informational output on stderr.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// POST a JSON summary to this URL when the command fails (a webhook for alerts).
    #[arg(
        long,
        value_name = "URL",
        env = "QVAULT_NOTIFY_URL",
        hide_env_values = true,
        global = true
    )]
    pub notify: Option<String>,
    /// With --notify: also when the command succeeds.
    #[arg(long, global = true)]
    pub notify_always: bool,
    /// After the command, write Prometheus metrics (the command's exit code and duration,
    /// the repository's per group) to this file atomically, for node_exporter's textfile
    /// collector.
    #[arg(long, value_name = "PATH", env = "QVAULT_METRICS_FILE", global = true)]
    pub metrics_file: Option<PathBuf>,
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository.
    Init(init::InitArgs),
    /// Manage keys: export the repository key, add or list data recipients.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Back up a file, stdin, or snapshots straight from Qdrant.
    Backup(backup::BackupArgs),
    /// List backups.
    Backups,
    /// Show one backup: streams, sizes, hashes, tags.
    Show(list::ShowArgs),
    /// Restore a backup's stream, byte-exact and checked.
    Restore(restore::RestoreArgs),
    /// Qdrant helpers: `qdrant snapshots list|create|download|delete`.
    #[command(subcommand)]
    Qdrant(qdrant::QdrantCommand),
    /// The local index cache.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Check that every backup can be restored: packs, headers, index files (and with
    /// --read-data every chunk).
    Verify(verify::VerifyArgs),
    /// Heal a repository with lost or damaged objects: `repair index`, `repair backups`.
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Forget backups by a retention policy (or by id): removes their manifests only.
    Forget(forget::ForgetArgs),
    /// Copy backups to a second repository (made with `init --copy-from`): only the chunks
    /// it lacks; resumable.
    Copy(copy::CopyArgs),
    /// The operation log: who backed up, restored, verified, forgot or copied what, when,
    /// and how it ended.
    Log(log::LogArgs),
    /// For cron and alerting: per group, the latest backup is recent, its size did not
    /// jump, and it passed a verify. Exit 9 names the failing groups.
    Check(check::CheckArgs),
    /// Delete data no backup references (marked by one run, deleted by a later one), and
    /// repack partly used packs.
    Prune(prune::PruneArgs),
    /// Repository size, dedup and compression ratios, what each backup added, and what
    /// prune would free.
    Stats,
    /// The repository at a glance: per group, what each backup stored and added, freshness;
    /// `--html FILE` writes one self-contained page.
    Report(report::ReportArgs),
    /// Print Prometheus metrics of the repository (per group: latest backup time, duration,
    /// bytes; totals).
    Metrics(metrics::MetricsArgs),
    /// Print a shell completion script (bash, zsh, fish, …) on stdout.
    Completions(docs::CompletionsArgs),
    /// Write man pages (qvault.1 and one per verb) into a directory.
    Man(docs::ManArgs),
    /// The config file: `config check [FILE]`, `config reference`, `config show`.
    #[command(subcommand)]
    Config(config::command::ConfigCommand),
}

/// The global flags typed on the command line (not from the environment or a default), for
/// `config show`, which reports them as in effect.
static TYPED_GLOBALS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();

/// Global flag ids `config show` can report.
const SHOWN_GLOBALS: &[&str] = &[
    "repo",
    "identity",
    "key",
    "expect_key",
    "cache_dir",
    "no_cache",
    "notify",
    "notify_always",
    "metrics_file",
    "s3_endpoint",
    "s3_region",
    "azure_endpoint",
];

/// Records which global flags were typed (at any level: `qvault --repo X config show` and
/// `qvault config show --repo X` alike).
pub fn remember_typed_globals(matches: &clap::ArgMatches) {
    let mut typed = Vec::new();
    let mut level = Some(matches);
    while let Some(m) = level {
        for id in SHOWN_GLOBALS {
            if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                typed.push(*id);
            }
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    let _ = TYPED_GLOBALS.set(typed);
}

/// Whether the global flag `id` was typed on the command line.
pub fn typed_global(id: &str) -> bool {
    TYPED_GLOBALS.get().is_some_and(|typed| typed.contains(&id))
}

/// Flags that only mean something with a partner the config file or the environment may
/// give (`--notify-always` and `notify`, backup's Qdrant flags and `[qdrant] url`): clap's
/// `requires` sees the command line only, so they are checked here, once the file is read.
/// A flag counts only when it was typed, not when it holds its default.
pub fn check_partners(matches: &clap::ArgMatches, cli: &Cli) -> anyhow::Result<()> {
    let typed = |m: &clap::ArgMatches, id: &str| {
        m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    };
    let mut missing: Vec<(&str, &str)> = Vec::new();
    if typed(matches, "notify_always") && cli.global.notify.is_none() {
        missing.push(("--notify-always", "--notify URL (or QVAULT_NOTIFY_URL, or `notify`)"));
    }
    if let (Command::Backup(a), Some(m)) = (&cli.command, matches.subcommand_matches("backup")) {
        let scope = !a.collections.is_empty() || a.all_collections || a.full_storage;
        let needs = [
            ("shards", "--shard", scope),
            ("snapshot", "--snapshot", scope),
            ("keep_remote", "--keep-remote", scope),
            ("poll_snapshot", "--poll-snapshot", scope),
            ("snapshot_timeout", "--snapshot-timeout", scope),
            ("sample_points", "--sample-points", !a.qdrant.qdrant.is_empty()),
            ("no_sample", "--no-sample", !a.qdrant.qdrant.is_empty()),
            ("streamed", "--streamed", !a.collections.is_empty()),
            ("allow_partial", "--allow-partial", !a.collections.is_empty()),
        ];
        for (id, flag, partnered) in needs {
            if typed(m, id) && !partnered {
                missing.push((flag, partner_of(id)));
            }
        }
    }
    match missing.first() {
        None => Ok(()),
        Some((flag, partner)) => Err(qvault::Error::invalid_input(format!(
            "{flag} needs {partner}, given as a flag or in the environment or the config file"
        ))
        .into()),
    }
}

fn partner_of(id: &str) -> &'static str {
    match id {
        "sample_points" | "no_sample" => "--qdrant URL (or `[qdrant] url`)",
        "streamed" | "allow_partial" => "--collection NAME (or `[backup] collections`)",
        _ => "a Qdrant scope: --collection, --all-collections or --full-storage",
    }
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field("repo", &self.repo)
            .field("identity", &self.identity)
            .field("key", &self.key)
            .field("s3_endpoint", &self.s3_endpoint)
            .finish_non_exhaustive()
    }
}
