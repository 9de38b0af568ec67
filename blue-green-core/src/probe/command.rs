//! [`CommandProbe`]: runs an argv (never through a shell); exit 0 is healthy.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::model::{Health, Instance};
use crate::probe::HealthProbe;

/// How much of the command's output goes into an unhealthy reason.
const REASON_OUTPUT_BYTES: usize = 200;

/// How long to wait for the output pipes to close after the command exited (a background
/// process that escaped the process group could keep them open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs a program with `BLUE_GREEN_COLOR`, `BLUE_GREEN_RELEASE` and `BLUE_GREEN_ENDPOINT`
/// (`host:port`) in its environment. Exit code 0 is healthy; anything else is unhealthy, with
/// the code and the start of its output.
///
/// The argv is run as given, never through a shell. On Unix the command runs in its own process
/// group, so that at the timeout the whole group (the command and anything it started, such as
/// the `curl` of a script) is killed; the command itself is always waited for.
///
/// ```
/// use std::time::Duration;
/// use blue_green_core::CommandProbe;
///
/// let probe = CommandProbe::new(
///     vec!["/usr/local/bin/check-app".into(), "--quick".into()],
///     Duration::from_secs(5),
/// );
/// assert_eq!(probe.argv()[0], "/usr/local/bin/check-app");
/// ```
#[derive(Debug, Clone)]
pub struct CommandProbe {
    argv: Vec<String>,
    timeout: Duration,
}

impl CommandProbe {
    /// A probe that runs `argv` (program first) and kills it after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        CommandProbe { argv, timeout }
    }

    /// The argv.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The kill timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[async_trait]
impl HealthProbe for CommandProbe {
    async fn check(&self, instance: &Instance) -> Health {
        let Some((program, args)) = self.argv.split_first() else {
            return Health::Unhealthy(
                "the command probe has no program to run; give it an argv such as [\"/usr/local/bin/check\"]"
                    .into(),
            );
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("BLUE_GREEN_COLOR", instance.color.as_str())
            .env("BLUE_GREEN_RELEASE", &instance.release)
            .env("BLUE_GREEN_ENDPOINT", instance.endpoint.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // If the engine drops this future (cancellation), the command is killed too.
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);

        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Health::Unhealthy(format!(
                    "cannot run the probe command `{program}`: no such program; check the path (or PATH)"
                ))
            }
            Err(e) => {
                return Health::Unhealthy(format!("cannot run the probe command `{program}`: {e}"))
            }
        };
        let group = ProcessGroup::of(child.id());
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s)));

        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                group.kill();
                let _ = child.kill().await;
                return Health::Unhealthy(format!(
                    "could not wait for the probe command `{program}`: {e}"
                ));
            }
            Err(_) => {
                group.kill();
                // Kills the command if the group kill missed it, and waits for it (no zombie).
                let _ = child.kill().await;
                return Health::Unhealthy(format!(
                    "the probe command `{program}` timed out after {:?} and was killed",
                    self.timeout
                ));
            }
        };
        // Whatever the command left running in its group would only hold the pipes open.
        group.kill();
        if status.success() {
            return Health::Healthy;
        }
        let stderr = collect(stderr).await;
        let stdout = collect(stdout).await;
        let output = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        let mut reason = format!("the probe command `{program}` {}", describe(status));
        let output = output.trim();
        if !output.is_empty() {
            reason.push_str(": ");
            reason.push_str(output);
        }
        Health::Unhealthy(reason)
    }
}

/// "exited with code 3" or "was killed by signal 9".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    format!("failed ({status})")
}

/// Reads a pipe to its end (so the command never blocks on a full pipe), keeping the start.
async fn read_capped(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = (REASON_OUTPUT_BYTES + 4).saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The start of a captured output, as text, cut to about [`REASON_OUTPUT_BYTES`].
async fn collect(reader: Option<tokio::task::JoinHandle<Vec<u8>>>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    let bytes = match tokio::time::timeout(OUTPUT_GRACE, &mut reader).await {
        Ok(Ok(bytes)) => bytes,
        _ => {
            reader.abort();
            return String::new();
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    if text.len() <= REASON_OUTPUT_BYTES {
        return text.into_owned();
    }
    let mut end = REASON_OUTPUT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The process group the command leads (Unix), killed as a whole at the timeout, after the
/// command, and when the check is dropped (cancelled) half-way.
struct ProcessGroup(#[cfg_attr(not(unix), allow(dead_code))] Option<u32>);

impl ProcessGroup {
    fn of(leader: Option<u32>) -> Self {
        ProcessGroup(leader)
    }

    fn kill(&self) {
        #[cfg(unix)]
        if let Some(pid) = self
            .0
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            // ESRCH (the group is already gone) is the expected, common case.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
