//! Qdrant connection flags shared by `backup`, `restore` and `qdrant`, and the `qdrant` verb.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Args;
use qvault::qdrant::cluster::ClusterNodes;
use qvault::qdrant::files::download_to_file;
use qvault::qdrant::{QdrantClient, QdrantOptions, SnapshotScope};
use std::path::PathBuf;

/// How to reach a Qdrant node.
#[derive(Args, Debug, Clone, Default)]
pub struct QdrantConnArgs {
    /// Qdrant REST URL, e.g. http://localhost:6333. Backup and restore take it once per
    /// node of a cluster.
    #[arg(long, value_name = "URL", help_heading = "Qdrant connection")]
    pub qdrant: Vec<String>,
    /// Qdrant API key (sent as the `api-key` header; see --bearer).
    #[arg(
        long,
        env = "QDRANT_API_KEY",
        hide_env_values = true,
        help_heading = "Qdrant connection"
    )]
    pub api_key: Option<String>,
    /// Send the key as `Authorization: Bearer …` (a JWT) instead.
    #[arg(long, help_heading = "Qdrant connection")]
    pub bearer: bool,
    /// PEM file with the CA certificate of a private TLS setup.
    #[arg(long, value_name = "PEM", help_heading = "Qdrant connection")]
    pub ca_cert: Option<PathBuf>,
}

impl QdrantConnArgs {
    /// The client for the one `--qdrant`, or `None` when no URL was given.
    pub fn client(&self) -> Result<Option<QdrantClient>> {
        match self.qdrant.as_slice() {
            [] => Ok(None),
            [url] => self.client_at(url).map(Some),
            _ => Err(qvault::Error::invalid_input(
                "this command talks to one Qdrant node: give one --qdrant URL (several are for \
                 backing up and restoring a cluster)",
            )
            .into()),
        }
    }

    pub fn require_client(&self, what: &str) -> Result<QdrantClient> {
        self.client()?.ok_or_else(|| {
            qvault::Error::invalid_input(format!("{what} needs --qdrant URL")).into()
        })
    }

    /// A client for the node at `url`, with these flags' key and CA.
    pub fn client_at(&self, url: &str) -> Result<QdrantClient> {
        let mut options = QdrantOptions::new(url.to_string());
        options.api_key = self.api_key.clone().filter(|k| !k.is_empty());
        options.bearer = self.bearer;
        options.ca_cert = self.ca_cert.clone();
        Ok(QdrantClient::new(options)?)
    }

    /// The cluster at `urls` (one node is a cluster of one).
    pub fn nodes(&self, urls: &[String]) -> Result<ClusterNodes> {
        let clients = urls.iter().map(|u| self.client_at(u)).collect::<Result<Vec<_>>>()?;
        Ok(ClusterNodes::new(clients)?)
    }
}

/// `qvault qdrant …`: helpers on the same client as backup and restore.
#[derive(clap::Subcommand, Debug)]
pub enum QdrantCommand {
    /// Qdrant snapshots on a node: list, create, download, delete.
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
}

impl QdrantCommand {
    /// The connection flags, for the config file to fill.
    pub fn conn_mut(&mut self) -> &mut QdrantConnArgs {
        let QdrantCommand::Snapshots(cmd) = self;
        match cmd {
            SnapshotsCommand::List(scope) | SnapshotsCommand::Create(scope) => &mut scope.conn,
            SnapshotsCommand::Download { scope, .. } | SnapshotsCommand::Delete { scope, .. } => {
                &mut scope.conn
            }
        }
    }
}

/// Which snapshots: a collection's, one of its shards', or the full storage's.
#[derive(Args, Debug, Clone)]
pub struct ScopeArgs {
    #[command(flatten)]
    pub conn: QdrantConnArgs,
    /// The collection.
    #[arg(long, required_unless_present = "full_storage")]
    pub collection: Option<String>,
    /// A shard of the collection (shard snapshots).
    #[arg(long, requires = "collection")]
    pub shard: Option<u32>,
    /// Full-storage snapshots instead.
    #[arg(long, conflicts_with_all = ["collection", "shard"])]
    pub full_storage: bool,
}

impl ScopeArgs {
    fn scope(&self) -> SnapshotScope {
        match (&self.collection, self.shard) {
            (Some(c), Some(id)) => SnapshotScope::shard(c.clone(), id),
            (Some(c), None) => SnapshotScope::collection(c.clone()),
            (None, _) => SnapshotScope::FullStorage,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotsCommand {
    /// List snapshots (name, size, creation time, checksum).
    List(ScopeArgs),
    /// Create a snapshot and wait until it is complete.
    Create(ScopeArgs),
    /// Download a snapshot to a file, checked against Qdrant's checksum.
    Download {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The snapshot's name.
        name: String,
        /// Output file (default: the snapshot's name in the current directory).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Delete a snapshot from the node.
    Delete {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The snapshot's name.
        name: String,
    },
}

pub async fn run(global: &GlobalArgs, cmd: &QdrantCommand) -> Result<()> {
    let QdrantCommand::Snapshots(cmd) = cmd;
    match cmd {
        SnapshotsCommand::List(args) => {
            let client = args.conn.require_client("listing snapshots")?;
            let list = client.list_snapshots(&args.scope()).await?;
            if global.json {
                return common::print_json(&list);
            }
            for s in &list {
                println!(
                    "{}  {:>10}  {}  {}",
                    s.name,
                    common::human_bytes(s.size),
                    s.creation_time.as_deref().unwrap_or("-"),
                    s.checksum.as_deref().unwrap_or("-")
                );
            }
            if list.is_empty() && common::chatty(global) {
                eprintln!("no snapshots of {}", args.scope());
            }
        }
        SnapshotsCommand::Create(args) => {
            let client = args.conn.require_client("creating a snapshot")?;
            let made = client.create_snapshot(&args.scope(), true).await?;
            match (&made, global.json) {
                (Some(s), true) => common::print_json(s)?,
                (Some(s), false) => println!("{} {}", s.name, common::human_bytes(s.size)),
                (None, _) => eprintln!("Qdrant accepted the request; list the snapshots to see it"),
            }
        }
        SnapshotsCommand::Download { scope, name, to, overwrite } => {
            let client = scope.conn.require_client("downloading a snapshot")?;
            let path = to.clone().unwrap_or_else(|| PathBuf::from(name));
            let report = download_to_file(&client, &scope.scope(), name, &path, *overwrite).await?;
            if global.json {
                common::print_json(&report)?;
            } else {
                let checked = if report.checksum_checked {
                    "checked against Qdrant's checksum"
                } else {
                    "Qdrant reported no checksum to check"
                };
                println!(
                    "{}: {}, SHA-256 {} ({checked})",
                    report.path.display(),
                    common::human_bytes(report.bytes),
                    report.sha256
                );
            }
        }
        SnapshotsCommand::Delete { scope, name } => {
            let client = scope.conn.require_client("deleting a snapshot")?;
            client.delete_snapshot(&scope.scope(), name, true).await?;
            if common::chatty(global) {
                eprintln!("deleted snapshot {name} of {}", scope.scope());
            }
        }
    }
    Ok(())
}
