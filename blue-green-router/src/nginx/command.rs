//! Running nginx's test and reload commands: argv only (never a shell), within a timeout, with
//! what the command said quoted (capped) in the error.
//!
//! Kept apart so that it can give way to the core's one process runner unchanged for callers.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use blue_green_core::{ComponentError, ComponentErrorKind};

/// How much of a command's output an error quotes.
const OUTPUT_LIMIT: usize = 2000;

/// A command that failed: which one, and what it said.
pub(crate) struct CommandFailure {
    /// The argv, quoted for a message: `` `nginx -s reload` ``.
    pub(crate) command: String,
    pub(crate) kind: ComponentErrorKind,
    /// Why, with the command's output.
    pub(crate) detail: String,
    /// False when the program could not even be started (so it changed nothing).
    pub(crate) started: bool,
}

impl CommandFailure {
    /// The error for a failed switch: the command, `what` it did, why, and what was done
    /// about it.
    pub(crate) fn into_error(
        self,
        what: String,
        restored: Result<&'static str, String>,
        reloaded_again: bool,
    ) -> ComponentError {
        match restored {
            Ok(done) => {
                let again = if reloaded_again && self.started {
                    " and nginx reloaded with it"
                } else {
                    ""
                };
                ComponentError::new(
                    self.kind,
                    format!(
                        "{} {what}: {}; {done}{again}, so nginx still routes as before",
                        self.command, self.detail
                    ),
                )
            }
            Err(why) => ComponentError::failed(format!(
                "{} {what}: {}; {why}: check the file by hand and reload nginx",
                self.command, self.detail
            )),
        }
    }
}

/// Runs `argv` (never through a shell) within `timeout`; the child is killed if it overruns.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<(), CommandFailure> {
    let command = format!("`{}`", argv.join(" "));
    let fail = |kind, detail: String| CommandFailure {
        command: command.clone(),
        kind,
        detail,
        started: true,
    };
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            let detail = if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "`{}` was not found; install nginx or give the command's full path",
                    argv[0]
                )
            } else {
                format!("could not be started: {e}")
            };
            return Err(CommandFailure {
                started: false,
                ..fail(ComponentErrorKind::Unreachable, detail)
            });
        }
    };
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            return Err(fail(
                ComponentErrorKind::Timeout,
                format!("did not finish within {timeout:?} and was killed"),
            ))
        }
        Ok(Err(e)) => {
            return Err(fail(
                ComponentErrorKind::Unreachable,
                format!("could not be waited for: {e}"),
            ))
        }
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    if said.len() > OUTPUT_LIMIT {
        let mut cut = OUTPUT_LIMIT;
        while !said.is_char_boundary(cut) {
            cut -= 1;
        }
        said.truncate(cut);
        said.push('…');
    }
    let status = match output.status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_string(),
    };
    let detail = if said.is_empty() {
        status
    } else {
        format!("{status}: {}", said.replace('\n', " | "))
    };
    Err(fail(ComponentErrorKind::Failed, detail))
}
