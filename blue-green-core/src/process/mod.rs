//! Running a child process the one way this project does it: [`Command`].
//!
//! Routers, probes and runtimes all run other programs (`nginx -s reload`, a probe script,
//! `docker compose up -d`). Each of those must be run the same careful way, so it is written
//! once here:
//!
//! - **argv only**: the program and its arguments are passed as given, never through a shell,
//!   so no user text is ever parsed as a command line;
//! - **its own process group**: on Unix the command leads a new process group, so it can be
//!   stopped together with everything it started (the `curl` of a probe script, the
//!   `docker-compose` plugin that `docker compose` runs);
//! - **a timeout** after which the whole group gets SIGTERM, then SIGKILL after a short grace
//!   ([`Command::kill_grace`]);
//! - **captured output**: stdout and stderr are read as the command runs (it never blocks on a
//!   full pipe) and kept up to a byte limit each ([`Command::output_limit`]);
//! - **always reaped**, and **cancellation-safe**: dropping the future of [`Command::run`]
//!   half-way kills the whole group at once (tokio reaps the leader in the background).
//!
//! What the command leaves behind in its group when it exits is killed too: a command's helpers
//! end with it. A program that must outlive the command has to leave the group itself (start a
//! new session, as daemons do).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use blue_green_core::process::Command;
//!
//! let output = Command::new("nginx")
//!     .arg("-t")
//!     .run(Duration::from_secs(10))
//!     .await?; // Err: it did not start, or did not finish in time
//! if !output.status.success() {
//!     eprintln!("nginx -t {}: {}", output.status_text(), output.stderr.text());
//! }
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::error::ComponentError;

mod group;
mod service;

pub use group::kill_all_running;
use group::{Group, Signal};
pub use service::Service;

/// How long a timed-out command's group has between SIGTERM and SIGKILL, unless set otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// How many bytes of stdout, and of stderr, are kept unless set otherwise.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// How long to wait for the output pipes to close once the command's group is gone: only a
/// process that left the group (a new session) could still hold them open.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// A program to run with arguments, environment and working directory, in its own process
/// group, with a timeout. See the [module documentation](self) for what running it guarantees.
///
/// The builder methods take and return the command by value; [`run`](Command::run) borrows it,
/// so one command can be run several times.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    grace: Duration,
    output_limit: usize,
    keep: Keep,
}

/// Which part of an output longer than the limit is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// The first bytes: where most programs (nginx, a probe script) say what is wrong.
    #[default]
    Start,
    /// The last bytes: where a long-running tool (compose after its progress lines) reports
    /// the error it stopped at.
    End,
}

impl Command {
    /// A command that runs `program` (a path, or a name looked up in `PATH`) with no arguments.
    ///
    /// If the environment given with [`env`](Command::env) sets `PATH`, that `PATH` is the one
    /// searched.
    pub fn new(program: impl Into<OsString>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            keep: Keep::Start,
        }
    }

    /// A command from an argv, program first; `None` when `argv` is empty.
    pub fn from_argv<S: AsRef<OsStr>>(argv: &[S]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Command::new(program.as_ref()).args(args))
    }

    /// Adds one argument, passed to the program as it is.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments, passed to the program as they are.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets one environment variable, on top of this process's environment (a later value for
    /// the same key wins).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables, as [`env`](Command::env) does.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Runs the program in `dir` (default: this process's working directory).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How long the group has between SIGTERM and SIGKILL after the timeout (default
    /// [`DEFAULT_KILL_GRACE`]). Zero sends SIGKILL at once.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Keeps at most `bytes` of stdout and `bytes` of stderr, the part that `keep` says
    /// (default [`DEFAULT_OUTPUT_LIMIT`], the start). The rest is read and dropped, so the
    /// command never blocks on a full pipe.
    pub fn output_limit(mut self, bytes: usize, keep: Keep) -> Self {
        self.output_limit = bytes;
        self.keep = keep;
        self
    }

    /// The program, as given.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The command line for a message, program and arguments joined by spaces (not quoted:
    /// for reading, not for a shell): `nginx -s reload`.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command to its end or until `timeout`, and returns its exit status and output.
    ///
    /// A command that ran and failed is `Ok` (look at [`Output::status`]); `Err` means it
    /// could not be started ([`RunError::started`] is false: nothing ran) or did not finish
    /// (timeout, or waiting for it failed: it was killed). At the timeout the group gets
    /// SIGTERM and, if the command has not exited after the [grace](Command::kill_grace),
    /// SIGKILL; the call returns once the command is reaped, so it can take up to
    /// `timeout` + grace.
    ///
    /// Dropping the returned future before it finishes kills the group with SIGKILL at once.
    pub async fn run(&self, timeout: Duration) -> Result<Output, RunError> {
        let mut command = self.tokio_command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(source) => return Err(self.start_error(source).await),
        };
        let mut group = Group::of(&child);
        let mut stdout = Pipe::new(child.stdout.take(), self.output_limit, self.keep);
        let mut stderr = Pipe::new(child.stderr.take(), self.output_limit, self.keep);

        let waited = alongside(
            &mut stdout,
            &mut stderr,
            tokio::time::timeout(timeout, child.wait()),
        )
        .await;
        let status = match waited {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(source)) => Err(RunError::Wait {
                program: self.program_text(),
                source,
            }),
            Err(_) => Err(RunError::TimedOut {
                program: self.program_text(),
                timeout,
            }),
        };
        if status.is_err() {
            self.stop(&mut child, &group, &mut stdout, &mut stderr)
                .await;
        }
        // The leader is reaped (or, if waiting failed, killed): what it left in its group goes
        // with it.
        group.kill_leftovers();
        let _ = tokio::time::timeout(OUTPUT_GRACE, drain(&mut stdout, &mut stderr)).await;
        Ok(Output {
            status: status?,
            stdout: stdout.finish(),
            stderr: stderr.finish(),
        })
    }

    /// Terminates a command that overran (or could not be waited for): SIGTERM to the group,
    /// the grace, then SIGKILL; reaps the leader if it can.
    async fn stop(
        &self,
        child: &mut Child,
        group: &Group,
        stdout: &mut Pipe<ChildStdout>,
        stderr: &mut Pipe<ChildStderr>,
    ) {
        if !self.grace.is_zero() {
            group.signal(Signal::Term);
            let exited = alongside(
                stdout,
                stderr,
                tokio::time::timeout(self.grace, child.wait()),
            )
            .await;
            if matches!(exited, Ok(Ok(_))) {
                return;
            }
        }
        group.signal(Signal::Kill);
        // SIGKILL cannot be ignored: the wait is short. Should it fail, dropping the child
        // hands the leader to tokio's background reaper.
        let _ = child.start_kill();
        let _ = alongside(stdout, stderr, child.wait()).await;
    }

    /// The program with its arguments, environment and directory, stdin closed, leading a
    /// process group of its own, and killed if dropped (the leader, should the group kill miss
    /// it; tokio reaps it in the background): what [`run`](Command::run) and
    /// [`spawn`](Command::spawn) both start.
    fn tokio_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }

    fn program_text(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// The error for a command that could not be started, naming the working directory when
    /// it is what is missing (the OS reports both as "not found").
    async fn start_error(&self, source: io::Error) -> RunError {
        let program = self.program_text();
        if let Some(dir) = &self.dir {
            if !tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
                return RunError::Start {
                    program,
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("its working directory {} does not exist", dir.display()),
                    ),
                };
            }
        }
        if source.kind() == io::ErrorKind::NotFound {
            RunError::NotFound { program, source }
        } else {
            RunError::Start { program, source }
        }
    }
}

/// What a command that ran to its end did: its exit status and its captured output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it exited: `status.success()` is exit code 0.
    pub status: ExitStatus,
    /// What it printed on stdout (up to the limit).
    pub stdout: Captured,
    /// What it printed on stderr (up to the limit).
    pub stderr: Captured,
}

impl Output {
    /// How the command ended, for a message: "exited with code 3", "was killed by signal 9".
    pub fn status_text(&self) -> String {
        if let Some(code) = self.status.code() {
            return format!("exited with code {code}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = self.status.signal() {
                return format!("was killed by signal {signal}");
            }
        }
        format!("failed ({})", self.status)
    }
}

/// The part of one output stream that was kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The bytes kept: the start or the end of the stream, per [`Keep`].
    pub bytes: Vec<u8>,
    /// How many bytes the command wrote beyond the limit and were dropped.
    pub dropped: u64,
}

impl Captured {
    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// Whether some of the stream was dropped for the limit.
    pub fn is_truncated(&self) -> bool {
        self.dropped > 0
    }

    fn push(&mut self, chunk: &[u8], limit: usize, keep: Keep) {
        match keep {
            Keep::Start => {
                let take = chunk.len().min(limit.saturating_sub(self.bytes.len()));
                self.bytes.extend_from_slice(&chunk[..take]);
                self.dropped += (chunk.len() - take) as u64;
            }
            Keep::End => {
                self.bytes.extend_from_slice(chunk);
                // Cut now and then, not at every chunk: each cut moves the kept bytes.
                if self.bytes.len() > limit.saturating_mul(2).max(limit + 8192) {
                    self.cut_to(limit);
                }
            }
        }
    }

    /// Keeps the last `limit` bytes.
    fn cut_to(&mut self, limit: usize) {
        let extra = self.bytes.len().saturating_sub(limit);
        self.bytes.drain(..extra);
        self.dropped += extra as u64;
    }
}

/// Why a command did not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The program does not exist (or, for a script, its interpreter). Nothing ran.
    #[error("cannot run `{program}`: no such program; check its path (or PATH)")]
    NotFound {
        /// The program, as given.
        program: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The program could not be started for another reason (permission, working directory).
    /// Nothing ran.
    #[error("cannot run `{program}`: {source}")]
    Start {
        /// The program, as given.
        program: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// It did not finish within its timeout; its whole process group was terminated.
    #[error("`{program}` did not finish within {timeout:?} and was killed")]
    TimedOut {
        /// The program, as given.
        program: String,
        /// The limit it hit.
        timeout: Duration,
    },
    /// Waiting for it failed; its whole process group was killed.
    #[error("could not wait for `{program}`: {source}; it was killed")]
    Wait {
        /// The program, as given.
        program: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl RunError {
    /// Whether the program was started (and so may have done part of its work): a reload that
    /// timed out may have taken effect, one that could not start did not.
    pub fn started(&self) -> bool {
        matches!(self, RunError::TimedOut { .. } | RunError::Wait { .. })
    }

    /// The program, as given.
    pub fn program(&self) -> &str {
        match self {
            RunError::NotFound { program, .. }
            | RunError::Start { program, .. }
            | RunError::TimedOut { program, .. }
            | RunError::Wait { program, .. } => program,
        }
    }
}

/// A program that could not be started is [`Unreachable`](crate::ComponentErrorKind::Unreachable)
/// (not installed), one that overran a [`Timeout`](crate::ComponentErrorKind::Timeout).
impl From<RunError> for ComponentError {
    fn from(error: RunError) -> Self {
        let message = error.to_string();
        match error {
            RunError::NotFound { .. } | RunError::Start { .. } => {
                ComponentError::unreachable(message)
            }
            RunError::TimedOut { .. } => ComponentError::timeout(message),
            RunError::Wait { .. } => ComponentError::failed(message),
        }
    }
}

/// One output pipe, read as the command runs, keeping what the limit allows.
struct Pipe<R> {
    reader: Option<R>,
    buf: Box<[u8]>,
    kept: Captured,
    limit: usize,
    keep: Keep,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(reader: Option<R>, limit: usize, keep: Keep) -> Self {
        Pipe {
            reader,
            buf: vec![0; 8192].into_boxed_slice(),
            kept: Captured::default(),
            limit,
            keep,
        }
    }

    fn is_closed(&self) -> bool {
        self.reader.is_none()
    }

    /// Reads one chunk; never finishes once the pipe is closed. Cancel-safe: a read that is
    /// dropped has taken nothing from the pipe.
    async fn read_some(&mut self) {
        let Some(reader) = self.reader.as_mut() else {
            return std::future::pending().await;
        };
        match reader.read(&mut self.buf).await {
            Ok(0) | Err(_) => self.reader = None,
            Ok(n) => self.kept.push(&self.buf[..n], self.limit, self.keep),
        }
    }

    fn finish(mut self) -> Captured {
        if self.keep == Keep::End {
            self.kept.cut_to(self.limit);
        }
        self.kept
    }
}

/// Runs `work` while reading both pipes, so that the command never blocks on a full one.
async fn alongside<T>(
    stdout: &mut Pipe<ChildStdout>,
    stderr: &mut Pipe<ChildStderr>,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            value = &mut work => return value,
            () = stdout.read_some() => {}
            () = stderr.read_some() => {}
        }
    }
}

/// Reads both pipes to their end.
async fn drain(stdout: &mut Pipe<ChildStdout>, stderr: &mut Pipe<ChildStderr>) {
    while !(stdout.is_closed() && stderr.is_closed()) {
        tokio::select! {
            () = stdout.read_some() => {}
            () = stderr.read_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_is_kept_up_to_the_limit() {
        let mut kept = Captured::default();
        kept.push(b"hello ", 8, Keep::Start);
        kept.push(b"world", 8, Keep::Start);
        assert_eq!(kept.text(), "hello wo");
        assert_eq!(kept.dropped, 3);
        assert!(kept.is_truncated());
    }

    #[test]
    fn the_end_is_kept_up_to_the_limit() {
        let mut kept = Captured::default();
        for chunk in (0..5000).map(|i| format!("line {i}\n")) {
            kept.push(chunk.as_bytes(), 16, Keep::End);
        }
        kept.cut_to(16);
        assert_eq!(kept.text(), " 4998\nline 4999\n");
        let total: usize = (0..5000).map(|i| format!("line {i}\n").len()).sum();
        assert_eq!(kept.dropped as usize, total - 16);
    }

    // Here rather than in tests/process.rs: it kills every command of the test binary.
    #[tokio::test]
    async fn kill_all_running_ends_every_running_command() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let command = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"/bin/sleep 300 & echo $! > "$0.tmp" && mv "$0.tmp" "$0"; wait"#)
            .arg(&pid_file);
        let run = tokio::spawn(async move { command.run(Duration::from_secs(120)).await });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !pid_file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the command never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kill_all_running();
        let output = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the command outlived kill_all_running")
            .unwrap()
            .unwrap();
        assert_eq!(output.status_text(), "was killed by signal 9");
        let pid = rustix::process::Pid::from_raw(sleeper).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie that init has not reaped yet: either way not running.
        while rustix::process::test_kill_process(pid).is_ok()
            && !std::fs::read_to_string(format!("/proc/{sleeper}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {sleeper} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_command_line_is_shown_as_typed() {
        let command = Command::from_argv(&["nginx", "-s", "reload"]).unwrap();
        assert_eq!(command.display(), "nginx -s reload");
        assert_eq!(command.program(), "nginx");
        assert!(Command::from_argv::<&str>(&[]).is_none());
    }
}
