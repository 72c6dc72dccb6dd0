//! `qvault key`: export the repository key, add and list data recipients.

use super::common::{self, write_secret_file};
use super::GlobalArgs;
use anyhow::Result;
use clap::Subcommand;
use qvault::crypto;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write the repository key for a backup host: it can back up and dedup, not restore.
    Export {
        /// File to create (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Protect it with a passphrase (QVAULT_PASSPHRASE or prompt).
        #[arg(long)]
        passphrase: bool,
    },
    /// Add a data recipient (age1…): new backups become readable with its identity.
    AddRecipient { recipient: String },
    /// List the data recipients.
    List,
}

pub async fn run(global: &GlobalArgs, command: &KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Export { out, passphrase } => {
            let repo = common::open(global).await?;
            let key = repo.export_key()?;
            let bytes = if *passphrase {
                let pass = common::passphrase("Passphrase for the exported key: ")?;
                crypto::passphrase_wrap(key.expose(), &pass)?
            } else {
                key.expose().clone()
            };
            write_secret_file(out, &bytes)?;
            if common::chatty(global) {
                eprintln!(
                    "wrote the repository key to {}: a host holding it can back up to {} but not restore",
                    out.display(),
                    repo.storage().location()
                );
            }
            Ok(())
        }
        KeyCommand::AddRecipient { recipient } => {
            let mut repo = common::open(global).await?;
            repo.add_recipient(crypto::parse_recipient(recipient)?).await?;
            if common::chatty(global) {
                eprintln!(
                    "added {recipient}: backups made from now on can be restored with its identity; \
                     earlier ones only with the identities they were made for"
                );
            }
            Ok(())
        }
        KeyCommand::List => {
            let repo = common::open(global).await?;
            let recipients = &repo.config().data_recipients;
            if global.json {
                common::print_json(recipients)?;
            } else {
                for r in recipients {
                    println!("{r}");
                }
                if common::chatty(global) {
                    eprintln!(
                        "repository key (for --expect-key): {}",
                        repo.key().metadata_recipient()
                    );
                }
            }
            Ok(())
        }
    }
}
