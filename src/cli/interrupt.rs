//! A command stopped by SIGINT (Ctrl-C) or SIGTERM (systemd, Kubernetes, `timeout`): what
//! it holds is undone before the process exits (`qvault::held`: leases, the prune lock,
//! snapshots it created on a Qdrant node, a command's process group, partial output), the
//! operation log and metrics record the stop, and the exit code is 128 + the signal's
//! number, as a shell reports a process the signal killed. A write that must not be cut
//! finishes first, unless a second signal comes.

use std::time::Duration;

/// How long each delete of a held object may take once a signal came: a service manager
/// sends SIGKILL after its own grace period (systemd 90 s, Kubernetes 30 s).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// The command was stopped by a signal.
#[derive(Debug)]
pub struct Interrupted {
    signal: Signal,
    /// `location/path` of each object deleted on the way out.
    released: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }
}

impl Interrupted {
    /// 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(&self) -> u8 {
        match self.signal {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.signal.name())?;
        if !self.released.is_empty() {
            write!(f, "; removed what this run held: {}", self.released.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT and SIGTERM, listened for from [`Signals::listen`] on: none arriving after that is
/// missed, however late [`Signals::next`] is asked (a second signal sent while the first is
/// being handled is seen).
pub struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Starts listening (needs the runtime). If neither signal can be listened for, the
    /// signals' default action, ending the process, stays in force.
    pub fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(int), Ok(term)) => Signals(Some((int, term))),
            _ => Signals(None),
        }
    }

    /// The next signal; never, when not listening.
    pub async fn next(&mut self) -> Signal {
        let Some((int, term)) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => Signal::Int,
            _ = term.recv() => Signal::Term,
        }
    }
}

/// Removes what this run holds in storage; the error the command then ends with.
pub async fn stop(signal: Signal) -> Interrupted {
    let released = qvault::held::release_all(RELEASE_WAIT).await;
    Interrupted { signal, released }
}
