//! The `qvault` binary: parse, call the library, print. Exit codes are in the README.

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use qvault::ErrorKind;
use std::process::ExitCode;

/// Exit codes scripts can rely on (documented in README.md).
fn exit_code(error: &anyhow::Error) -> u8 {
    let Some(e) = error.downcast_ref::<qvault::Error>() else { return 1 };
    match e.kind() {
        ErrorKind::InvalidInput => 2,
        ErrorKind::NotFound | ErrorKind::NotARepository => 3,
        ErrorKind::KeyRejected | ErrorKind::NeedsDataIdentity => 4,
        ErrorKind::Corrupt => 5,
        ErrorKind::Storage | ErrorKind::Qdrant => 6,
        ErrorKind::UnsupportedVersion => 7,
        ErrorKind::AlreadyExists | ErrorKind::Refused => 8,
        _ => 1,
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    let file = cli::config_file::load(&cli.global)?;
    cli::config_file::apply(&mut cli.global, file);
    if let Some(secret) = &cli.global.s3_secret_access_key {
        cli::logging::register_secret(secret);
    }
    let g = &cli.global;
    match &cli.command {
        Command::Init(args) => cli::init::run(g, args).await,
        Command::Key(cmd) => cli::key::run(g, cmd).await,
        Command::Backup(args) => cli::backup::run(g, args).await,
        Command::Backups => cli::list::backups(g).await,
        Command::Show(args) => cli::list::show(g, args).await,
        Command::Restore(args) => cli::restore::run(g, args).await,
        Command::Index(cmd) => cli::index::run(g, cmd).await,
        Command::Qdrant(cmd) => cli::qdrant::run(g, cmd).await,
        Command::Verify(args) => cli::verify::run(g, args).await,
        Command::Repair(command) => cli::repair::run(g, command).await,
        Command::Forget(args) => cli::forget::run(g, args).await,
        Command::Prune(args) => cli::prune::run(g, args).await,
        Command::Stats => cli::stats::run(g).await,
    }
}

/// The error and its causes, each said once: `qvault::Error` messages already quote their
/// source (so a library caller sees it too), and anyhow's `{:#}` would repeat it.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn main() -> ExitCode {
    qvault::alloc::bound_retained_memory();
    let cli = Cli::parse();
    cli::logging::init(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qvault: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qvault: error: {}", error_text(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
