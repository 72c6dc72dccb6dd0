//! `qvault index`: the local index cache.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Drop the local index and read it again from the repository.
    Rebuild {
        /// Also index packs no index file lists (left by an interrupted backup), from their
        /// own headers, so their chunks are reused and restorable.
        #[arg(long)]
        read_packs: bool,
    },
}

pub async fn run(global: &GlobalArgs, command: &IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Rebuild { read_packs } => {
            let repo = common::open(global).await?;
            repo.rebuild_index().await?;
            let indexed = if *read_packs {
                qvault::index::sync::index_unlisted_packs(&repo).await?.indexed.len()
            } else {
                0
            };
            let chunks = repo.index().chunk_count()?;
            let backups = repo.backups()?.len();
            if global.json {
                common::print_json(&serde_json::json!({
                    "chunks": chunks, "backups": backups, "packs_indexed": indexed
                }))?;
            } else {
                let kept = match repo.index().path() {
                    Some(path) => format!("in {}", path.display()),
                    None => "in memory only: nothing was kept for later runs".to_string(),
                };
                println!("local index rebuilt {kept}: {chunks} chunks, {backups} backups");
                if *read_packs {
                    println!("indexed {indexed} packs that no index file listed");
                }
            }
            Ok(())
        }
    }
}
