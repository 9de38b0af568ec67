//! [`CommandProbe`]: runs an argv (never through a shell); exit 0 is healthy.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Health, Instance};
use crate::probe::HealthProbe;
use crate::process::{Command, Keep, Output, RunError};

/// How much of the command's output goes into an unhealthy reason.
const REASON_OUTPUT_BYTES: usize = 200;

/// Runs a program with `BLUE_GREEN_COLOR`, `BLUE_GREEN_RELEASE` and `BLUE_GREEN_ENDPOINT`
/// (`host:port`) in its environment. Exit code 0 is healthy; anything else is unhealthy, with
/// the code and the start of its output.
///
/// The argv is run as given, never through a shell, by [`process::Command`](crate::process::Command):
/// on Unix in its own process group, so that at the timeout the whole group (the command and
/// anything it started, such as the `curl` of a script) gets SIGTERM, then SIGKILL after a short
/// grace; the command itself is always waited for, and a cancelled check kills the group.
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
        let Some(command) = Command::from_argv(&self.argv) else {
            return Health::Unhealthy(
                "the command probe has no program to run; give it an argv such as [\"/usr/local/bin/check\"]"
                    .into(),
            );
        };
        let command = command
            .env(crate::runtime::COLOR_ENV, instance.color.as_str())
            .env(crate::runtime::RELEASE_ENV, &instance.release)
            .env("BLUE_GREEN_ENDPOINT", instance.endpoint.to_string())
            // A little more than the reason shows, so that a cut is marked.
            .output_limit(REASON_OUTPUT_BYTES + 4, Keep::Start);
        let program = &self.argv[0];
        match command.run(self.timeout).await {
            Ok(output) if output.status.success() => Health::Healthy,
            Ok(output) => Health::Unhealthy(failed_reason(program, &output)),
            Err(RunError::NotFound { .. }) => Health::Unhealthy(format!(
                "cannot run the probe command `{program}`: no such program; check the path (or PATH)"
            )),
            Err(RunError::TimedOut { .. }) => Health::Unhealthy(format!(
                "the probe command `{program}` timed out after {:?} and was killed",
                self.timeout
            )),
            Err(e) => Health::Unhealthy(format!("the probe command failed: {e}")),
        }
    }
}

/// "the probe command `x` exited with code 3: " and the start of its stderr (or stdout).
fn failed_reason(program: &str, output: &Output) -> String {
    let stderr = output.stderr.text();
    let said = if stderr.trim().is_empty() {
        output.stdout.text()
    } else {
        stderr
    };
    let mut reason = format!("the probe command `{program}` {}", output.status_text());
    let said = said.trim();
    if !said.is_empty() {
        reason.push_str(": ");
        reason.push_str(&cut(said, REASON_OUTPUT_BYTES));
    }
    reason
}

/// `text` cut to about `limit` bytes (on a character boundary), with `…` when cut.
fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
