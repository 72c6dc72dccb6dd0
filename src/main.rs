//! The `qvault` binary: parse, call the library, print. Exit codes are in the README.

mod cli;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use qvault::ErrorKind;
use std::io::Write;
use std::process::ExitCode;

/// The reader of stdout went away (`qvault backups | head -1`): the command stops quietly.
#[derive(Debug)]
struct ClosedStdout;

impl std::fmt::Display for ClosedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed before the output was written")
    }
}

impl std::error::Error for ClosedStdout {}

/// Exit codes scripts can rely on (documented in README.md).
fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<cli::check::CheckFailed>().is_some() {
        return 9;
    }
    if error.downcast_ref::<cli::backup::IncompleteBackup>().is_some() {
        return 10;
    }
    if let Some(stopped) = error.downcast_ref::<cli::interrupt::Interrupted>() {
        return stopped.exit_code();
    }
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    let logged = cli::log::operation(&cli.command);
    let record = logged.map(|(op, what)| qvault::oplog::OpRecord::started(op, what));
    let started = std::time::Instant::now();
    let mut signals = cli::interrupt::Signals::listen();
    let mut command = std::pin::pin!(dispatch(g, &cli.command));
    let result = tokio::select! {
        result = &mut command => result,
        signal = signals.next() => {
            // A write under way that must not be cut (a lease, a manifest) finishes first;
            // a command that completes meanwhile ends as it would have (qvault::held). A
            // second signal does not wait (storage that hangs in its retries).
            if qvault::held::in_critical() {
                eprintln!(
                    "qvault: {}: finishing what is under way, then stopping (send it again to \
                     stop at once)",
                    signal.name()
                );
            }
            tokio::select! {
                result = &mut command => result,
                () = qvault::held::critical_done() => Err(cli::interrupt::stop(signal).await.into()),
                again = signals.next() => Err(cli::interrupt::stop(again).await.into()),
            }
        }
    };
    if let Some(record) = record {
        cli::log::record(record, started, &result).await;
    }
    result
}

async fn dispatch(g: &cli::GlobalArgs, command: &Command) -> anyhow::Result<()> {
    match command {
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
        Command::Copy(args) => cli::copy::run(g, args).await,
        Command::Log(args) => cli::log::run(g, args).await,
        Command::Check(args) => cli::check::run(g, args).await,
        Command::Prune(args) => cli::prune::run(g, args).await,
        Command::Stats => cli::stats::run(g).await,
        Command::Report(args) => cli::report::run(g, args).await,
        Command::Metrics(args) => cli::metrics::run(g, args).await,
        Command::Completions(args) => cli::docs::completions(args),
        Command::Man(args) => cli::docs::man(g, args),
        Command::Config(command) => cli::config::command::run(g, command),
    }
}

/// The error and its causes, each said once: `qvault::Error` messages already quote their
/// source (so a library caller sees it too), and anyhow's `{:#}` would repeat it.
pub(crate) fn error_text(error: &anyhow::Error) -> String {
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

/// Runs the command; `print!` panics when stdout's reader has gone (it is how std reports
/// EPIPE, SIGPIPE being ignored so that network writes fail instead of killing us): that
/// one panic becomes [`ClosedStdout`], in this one place, so no verb handles it.
fn run_catching_closed_stdout(runtime: &tokio::runtime::Runtime, cli: Cli) -> anyhow::Result<()> {
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run(cli))));
    match outcome {
        Ok(result) => result,
        Err(payload) if cli::logging::is_closed_stdout(payload.as_ref()) => {
            Err(ClosedStdout.into())
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// With `--json`, a failure is a JSON object on stdout too, unless the command already
/// printed its own (`check`, `config check` print their verdict, then fail):
/// `{"error": {"exit_code", "kind", "message"}}`.
fn json_error(code: u8, kind: Option<&str>, message: &str) {
    let value = serde_json::json!({
        "error": { "exit_code": code, "kind": kind, "message": message }
    });
    // Not print_json: stdout may be the closed pipe, and this must not panic.
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn main() -> ExitCode {
    qvault::alloc::bound_retained_memory();
    let matches = Cli::command().get_matches();
    let verb = matches.subcommand_name().unwrap_or("qvault").to_string();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cli::logging::init(cli.global.verbose);
    cli::remember_typed_globals(&matches);
    // Before --notify and --metrics-file are read: the file may give them. `config …`
    // reads the file itself, so that a broken one can be checked; completions and man
    // pages need no settings, so a broken file or variable does not stop them.
    let configured = match cli.command {
        Command::Config(_) | Command::Completions(_) | Command::Man(_) => Ok(()),
        _ => cli::config::configure(&mut cli).and_then(|()| cli::check_partners(&matches, &cli)),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qvault: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let notify = cli.global.notify.clone().map(|url| (url, cli.global.notify_always));
    let metrics = cli.global.metrics_file.clone().map(|path| (path, cli.global.clone()));
    let repository = cli.global.repo.as_deref().map(qvault::redact::url);
    let json = cli.global.json;
    let started = std::time::Instant::now();
    let result = match configured {
        Ok(()) => run_catching_closed_stdout(&runtime, cli),
        Err(e) => Err(e),
    };
    // A thread blocked reading a source (stdin, a FIFO) would keep the runtime's drop
    // waiting for it after a signal.
    let interrupted =
        result.as_ref().is_err_and(|e| e.downcast_ref::<cli::interrupt::Interrupted>().is_some());
    let (code, error) = match &result {
        Ok(()) => (0, None),
        Err(e) if e.downcast_ref::<ClosedStdout>().is_some() => (1, None),
        Err(e) => {
            let text = cli::logging::scrub(&error_text(e));
            eprintln!("qvault: error: {text}");
            let kind = e.downcast_ref::<qvault::Error>().map(|q| format!("{:?}", q.kind()));
            let code = exit_code(e);
            if json && !cli::common::printed_json() {
                json_error(code, kind.as_deref(), &text);
            }
            (code, Some((kind, text)))
        }
    };
    if let Some((path, global)) = metrics {
        let took = started.elapsed();
        runtime.block_on(cli::metrics::write_file(&path, &global, &verb, code, took));
    }
    if let Some((url, always)) = notify {
        if error.is_some() || always {
            let (error_kind, message) = error.map_or((None, None), |(k, m)| (k, Some(m)));
            let note = cli::notify::Notification {
                command: verb,
                ok: code == 0,
                exit_code: code,
                error_kind,
                message,
                duration_seconds: started.elapsed().as_secs_f64(),
                repository,
                host: qvault::backup::host_name(),
                qvault_version: env!("CARGO_PKG_VERSION"),
            };
            runtime.block_on(cli::notify::send(&url, &note));
        }
    }
    if interrupted {
        // Threads the stopped command handed work to end by themselves once their channels
        // close, and clean up as they go (a directory restore's extraction removes its
        // partial tree): given a moment, not forever (one blocked reading a source). Everything
        // is reported by now; a thread that touches the stopping runtime (a download's timer)
        // panics, harmlessly, and must not print a backtrace after the error.
        std::panic::set_hook(Box::new(|_| {}));
        runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    }
    ExitCode::from(code)
}
