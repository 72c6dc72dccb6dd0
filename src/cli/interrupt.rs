//! A command stopped by SIGINT (Ctrl-C), SIGTERM (systemd, Kubernetes, `timeout`), SIGHUP
//! (a closed terminal or ssh session) or SIGQUIT: what
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

/// The signals that stop a command: Ctrl-C, a service manager's stop, a closed terminal or
/// ssh session, `Ctrl-\`.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Int,
    Term,
    Hup,
    Quit,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
        }
    }

    fn number(self) -> u8 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Term => 15,
        }
    }
}

impl Interrupted {
    /// 128 + the signal's number: 129 SIGHUP, 130 SIGINT, 131 SIGQUIT, 143 SIGTERM.
    pub fn exit_code(&self) -> u8 {
        128 + self.signal.number()
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

/// The [`Signal`]s, listened for from [`Signals::listen`] on: none arriving after that is
/// missed, however late [`Signals::next`] is asked (a second signal sent while the first is
/// being handled is seen).
pub struct Signals(Vec<(Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Starts listening (needs the runtime). A signal that cannot be listened for keeps its
    /// default action (ending the process).
    pub fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (Signal::Int, SignalKind::interrupt()),
            (Signal::Term, SignalKind::terminate()),
            (Signal::Hup, SignalKind::hangup()),
            (Signal::Quit, SignalKind::quit()),
        ];
        Signals(kinds.into_iter().filter_map(|(s, kind)| Some((s, signal(kind).ok()?))).collect())
    }

    /// The next signal; never, when listening to none.
    pub async fn next(&mut self) -> Signal {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.0.iter_mut().map(|(s, stream)| {
            let s = *s;
            Box::pin(async move {
                stream.recv().await;
                s
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// Removes what this run holds in storage; the error the command then ends with.
pub async fn stop(signal: Signal) -> Interrupted {
    let released = qvault::held::release_all(RELEASE_WAIT).await;
    Interrupted { signal, released }
}
