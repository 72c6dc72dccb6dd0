//! Where a backup's streams come from: one [`StreamSource`] per stream, handed out by a
//! [`StreamSources`], and constructors for every source qvault knows besides Qdrant (whose
//! lazy snapshot streams live in `qdrant::backup`).
//!
//! Guarantees: a source that cannot vouch for what it produced fails the read, so the
//! pipeline fails before any manifest is written. A command that exits non-zero or is
//! killed ([`StreamSource::command`]) fails at the end of its output; a file whose size or
//! modification time changed while it was read ([`StreamSource::file`]) is reported, and
//! with [`OnChange::Fail`] fails the same way.

use crate::error::{Error, Result};
use crate::format::manifest::StreamKind;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::SystemTime;

/// One stream to archive.
pub struct StreamSource {
    /// Unique within the backup: a file name, `stdin`, a collection name.
    pub name: String,
    pub kind: StreamKind,
    pub reader: Box<dyn Read + Send>,
    /// Free-form provenance stored in the manifest (e.g. Qdrant collection info).
    pub source: Option<serde_json::Value>,
    /// The SHA-256 the producer vouches for (Qdrant's checksum): a mismatch fails the backup.
    pub expected_sha256: Option<String>,
    /// Paths the source left out of the stream (`backup --dir`'s unreadable files), filled
    /// while it is read: recorded in the stream's record when it ends, so `check` and the
    /// metrics know the backup is incomplete.
    pub left_out: Option<crate::dirtar::Unreadable>,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

/// Streams handed to the pipeline one at a time ([`super::backup_from`]).
///
/// The pipeline asks for the next stream only once the previous one was read to its end and
/// checked, so a source can prepare each stream as late as possible and release the previous
/// one as early as possible: a Qdrant source creates a snapshot right before its stream and
/// deletes it right after, and learns the checksum to check only then.
pub trait StreamSources: Send {
    /// The next stream, or `None` after the last. An error fails the backup.
    fn next_stream(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<StreamSource>>> + Send;
}

/// Streams known up front.
impl StreamSources for std::vec::IntoIter<StreamSource> {
    async fn next_stream(&mut self) -> Result<Option<StreamSource>> {
        Ok(self.next())
    }
}

/// What a file source does when the file changed (size or modification time) between
/// opening it and the end of its read: such a stream may hold any mix of old and new bytes.
#[derive(Clone, Copy, Debug, Default)]
pub enum OnChange {
    /// Archive what was read and log a warning (`tracing`) naming the file.
    #[default]
    Warn,
    /// Archive what was read and hand the warning, which names the file, to this function
    /// (the CLI prints it on stderr).
    Notify(fn(&str)),
    /// Fail the read, so nothing is recorded.
    Fail,
}

/// The stream name of a path: its file name, else `fallback`.
fn name_of(path: &Path, fallback: &str) -> String {
    path.file_name().map_or_else(|| fallback.into(), |n| n.to_string_lossy().into_owned())
}

impl StreamSource {
    /// A regular file, and its size when opened (a progress bar's total). The file is
    /// checked again at the end of the read; `on_change` says what a change does.
    pub fn file(path: &Path, on_change: OnChange) -> Result<(StreamSource, u64)> {
        let opening = || format!("opening {}", path.display());
        let file = File::open(path).map_err(|e| Error::io(opening(), e))?;
        let before = file.metadata().map_err(|e| Error::io(opening(), e))?;
        if before.is_dir() {
            return Err(Error::invalid_input(format!(
                "{} is a directory: back it up with --dir",
                path.display()
            )));
        }
        let size = before.len();
        let reader = CheckedFile {
            file,
            path: path.to_path_buf(),
            before: Stamp::of(&before),
            read: 0,
            on_change,
            checked: false,
        };
        let source = StreamSource {
            name: name_of(path, "file"),
            kind: StreamKind::File,
            reader: Box::new(reader),
            source: Some(serde_json::json!({ "path": absolute(path) })),
            expected_sha256: None,
            left_out: None,
        };
        Ok((source, size))
    }

    /// This process's standard input, named `stdin`.
    pub fn stdin() -> StreamSource {
        StreamSource {
            name: "stdin".into(),
            kind: StreamKind::Stdin,
            reader: Box::new(io::stdin()),
            source: None,
            expected_sha256: None,
            left_out: None,
        }
    }

    /// A directory as a deterministic tar stream (see [`crate::dirtar`]), named after the
    /// directory.
    pub fn directory(dir: &Path) -> Result<StreamSource> {
        Ok(Self::directory_from(dir, crate::dirtar::tar_reader(dir)?))
    }

    /// [`StreamSource::directory`] leaving out what cannot be opened (`backup --dir`): the
    /// returned [`crate::dirtar::Unreadable`] names it once the stream has been read.
    pub fn directory_skipping(dir: &Path) -> Result<(StreamSource, crate::dirtar::Unreadable)> {
        let (reader, unreadable) = crate::dirtar::tar_reader_skipping(dir)?;
        let source = StreamSource {
            left_out: Some(unreadable.clone()),
            ..Self::directory_from(dir, reader)
        };
        Ok((source, unreadable))
    }

    fn directory_from(dir: &Path, reader: Box<dyn io::Read + Send>) -> StreamSource {
        StreamSource {
            name: name_of(dir, "directory"),
            kind: StreamKind::Directory,
            reader,
            source: Some(serde_json::json!({ "path": absolute(dir) })),
            expected_sha256: None,
            left_out: None,
        }
    }

    /// The standard output of `program args…`, started now, as a `stdin` stream named after
    /// the program's file name; the command line is recorded as provenance. Its standard
    /// error goes to ours and its standard input is empty. A command that exits non-zero or
    /// is killed fails the read at the end of its output, naming the command and its status.
    pub fn command(program: &str, args: &[String]) -> Result<StreamSource> {
        use std::os::unix::process::CommandExt;
        let line = command_line(program, args);
        // A process group of its own, ended with us: a shell's children too (`sh -c '…;
        // sleep 30'`). A signal to qvault reaches it through crate::held, not the terminal.
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("starting command {line}"), e))?;
        let held = hold_command(&child, program);
        let Some(stdout) = child.stdout.take() else {
            // Unreachable with Stdio::piped, but a child must not be left behind.
            reap(&mut child);
            crate::held::let_go(held);
            return Err(Error::io(
                format!("reading the output of command {line}"),
                io::Error::other("no standard output pipe"),
            ));
        };
        let mut argv = vec![program.to_string()];
        argv.extend(args.iter().cloned());
        Ok(StreamSource {
            name: name_of(Path::new(program), "command"),
            kind: StreamKind::Stdin,
            reader: Box::new(CommandOutput { child, stdout, line, status: None, held }),
            source: Some(serde_json::json!({ "command": argv })),
            expected_sha256: None,
            left_out: None,
        })
    }
}

/// The path as recorded: absolute, so `x.snap` backed up from two directories is two
/// sources (retention groups by it), whatever the working directory was.
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// What tells a file's versions apart cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp { len: meta.len(), modified: meta.modified().ok() }
    }
}

/// A file whose metadata is compared, at the end of the read, with what it was when opened.
struct CheckedFile {
    file: File,
    path: PathBuf,
    before: Stamp,
    read: u64,
    on_change: OnChange,
    checked: bool,
}

impl CheckedFile {
    fn check(&mut self) -> io::Result<()> {
        self.checked = true;
        let after = Stamp::of(&self.file.metadata()?);
        if after == self.before && self.read == self.before.len {
            return Ok(());
        }
        let what = if after.len != self.before.len || self.read != self.before.len {
            format!("{} bytes when opened, {} read, {} now", self.before.len, self.read, after.len)
        } else {
            "its modification time moved".to_string()
        };
        let message = format!(
            "{} changed while it was read ({what}): the stream may mix old and new bytes",
            self.path.display()
        );
        let warning = || format!("{message}; back it up again when it no longer changes");
        match self.on_change {
            OnChange::Warn => {
                tracing::warn!("{}", warning());
                Ok(())
            }
            OnChange::Notify(notify) => {
                notify(&warning());
                Ok(())
            }
            OnChange::Fail => Err(io::Error::other(message)),
        }
    }
}

impl Read for CheckedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && !self.checked {
            self.check()?;
        }
        Ok(n)
    }
}

/// A command line for messages: arguments with spaces or quotes are quoted.
fn command_line(program: &str, args: &[String]) -> String {
    let quote = |s: &str| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut words = vec![quote(program)];
    words.extend(args.iter().map(|a| quote(a)));
    format!("`{}`", words.join(" "))
}

/// Kills and waits for a child whose output is no longer wanted.
fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        kill_group(child.id(), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// How long a command's process group gets to end after SIGTERM before SIGKILL.
const COMMAND_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a process of the group `leader` leads still exists (zombies included).
fn group_alive(leader: u32) -> bool {
    // SAFETY: signal 0 only asks whether the group has a process we may signal.
    libc::pid_t::try_from(leader).is_ok_and(|pid| unsafe { libc::kill(-pid, 0) } == 0)
}

/// Sends `signal` to the process group `leader` leads (the command and what it started).
fn kill_group(leader: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(leader) {
        // SAFETY: kill only sends a signal; the group is the command's own (process_group(0)),
        // and its leader is not yet reaped, so the id cannot have been reused.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Ends the command's process group if a signal stops qvault before the output ends: the
/// blocking thread that would drop [`CommandOutput`] does not run again. SIGTERM first, then
/// SIGKILL for what is still there after [`COMMAND_GRACE`] (a command that ignores SIGTERM
/// kept running, reparented to init). Named by the program alone: arguments may carry
/// tokens.
fn hold_command(child: &Child, program: &str) -> crate::held::Token {
    let leader = child.id();
    crate::held::hold(
        format!("command {program} (process group {leader})"),
        Box::new(move || {
            Box::pin(async move {
                kill_group(leader, libc::SIGTERM);
                let until = std::time::Instant::now() + COMMAND_GRACE;
                while group_alive(leader) && std::time::Instant::now() < until {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                kill_group(leader, libc::SIGKILL);
                Ok(())
            })
        }),
    )
}

/// A command's standard output; its exit status is checked when the output ends.
struct CommandOutput {
    child: Child,
    stdout: ChildStdout,
    line: String,
    /// Set once the command was waited for.
    status: Option<ExitStatus>,
    held: crate::held::Token,
}

impl CommandOutput {
    fn finish(&mut self) -> io::Result<()> {
        let status = match self.status {
            Some(s) => s,
            None => {
                let status = self.child.wait()?;
                crate::held::let_go(self.held);
                *self.status.insert(status)
            }
        };
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was killed ({status})"),
        };
        Err(io::Error::other(format!("command {} {how}: its output is not backed up", self.line)))
    }
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    /// A backup that fails before the output ends must not leave the command running.
    fn drop(&mut self) {
        if self.status.is_none() {
            reap(&mut self.child);
            crate::held::let_go(self.held);
        }
    }
}
