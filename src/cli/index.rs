//! `qvault index`: the local index cache.

use super::common;
use super::GlobalArgs;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Drop the local index and read it again from the repository.
    Rebuild,
}

pub async fn run(global: &GlobalArgs, command: &IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Rebuild => {
            let repo = common::open(global).await?;
            repo.rebuild_index().await?;
            let chunks = repo.index().chunk_count()?;
            let backups = repo.backups()?.len();
            if global.json {
                common::print_json(&serde_json::json!({"chunks": chunks, "backups": backups}))?;
            } else {
                println!("local index rebuilt: {chunks} chunks, {backups} backups");
            }
            Ok(())
        }
    }
}
