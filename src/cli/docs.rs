//! `qvault completions SHELL` and `qvault man DIR`: shell completions and man pages generated
//! from the clap definitions, so they never drift from the real flags.

use super::{Cli, GlobalArgs};
use anyhow::Result;
use clap::{Args, CommandFactory};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write `qvault.1` and one `qvault-<verb>.1` per verb into.
    pub dir: PathBuf,
}

/// Prints the completion script for `args.shell` on stdout, e.g.
/// `qvault completions bash > /etc/bash_completion.d/qvault`.
pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut command = Cli::command();
    // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "qvault", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)
        .map_err(|e| qvault::Error::io("writing the completion script", e))?;
    Ok(())
}

/// Writes the man pages into `args.dir` (created if needed).
pub fn man(global: &GlobalArgs, args: &ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| qvault::Error::io(format!("creating {}", args.dir.display()), e))?;
    clap_mangen::generate_to(Cli::command(), &args.dir).map_err(|e| {
        qvault::Error::io(format!("writing man pages to {}", args.dir.display()), e)
    })?;
    if super::common::chatty(global) {
        eprintln!("wrote man pages to {}", args.dir.display());
    }
    Ok(())
}
