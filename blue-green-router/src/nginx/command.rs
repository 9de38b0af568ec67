//! Running nginx's test and reload commands: argv only (never a shell), within a timeout, with
//! what the command said quoted (capped) in the error.
//!

use std::time::Duration;

use blue_green_core::process::{Command, Keep, RunError};
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

impl CommandFailure {
    /// Whether the command's output shows that nginx itself is not running: `nginx -s reload`
    /// found no pid file, or no process behind it (the master died).
    pub(crate) fn nginx_is_down(&self) -> bool {
        self.started
            && (self.detail.contains("failed (3: No such process)")
                || self
                    .detail
                    .contains(".pid\" failed (2: No such file or directory)")
                || self.detail.contains("invalid PID number"))
    }

    /// The same failure as "unreachable", saying what to do, when [`Self::nginx_is_down`]:
    /// the command then exits as for an unreachable environment.
    pub(crate) fn unreachable_if_nginx_is_down(mut self) -> CommandFailure {
        if self.nginx_is_down() {
            self.kind = ComponentErrorKind::Unreachable;
            self.detail.push_str(
                " (nginx is not running: start it again, and it routes as the upstream file says; then run the command again)",
            );
        }
        self
    }
}

/// Runs `argv` (never through a shell) within `timeout`, through the core's one process
/// runner: in its own process group, which is terminated (then killed) if it overruns or if
/// this future is dropped, so no `nginx -s reload` is left running behind a cancelled switch.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<(), CommandFailure> {
    let command = format!("`{}`", argv.join(" "));
    let fail = |kind, detail: String, started| CommandFailure {
        command: command.clone(),
        kind,
        detail,
        started,
    };
    let Some(process) = Command::from_argv(argv) else {
        return Err(fail(
            ComponentErrorKind::Invalid,
            "is empty; give the program and its arguments".into(),
            false,
        ));
    };
    let output = match process
        .output_limit(OUTPUT_LIMIT, Keep::Start)
        .run(timeout)
        .await
    {
        Ok(output) => output,
        Err(RunError::NotFound { .. }) => {
            return Err(fail(
                ComponentErrorKind::Unreachable,
                format!(
                    "`{}` was not found; install nginx or give the command's full path",
                    argv[0]
                ),
                false,
            ))
        }
        Err(e) => {
            let (started, detail) = (e.started(), e.to_string());
            return Err(fail(ComponentError::from(e).kind, detail, started));
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let mut said = output.stderr.text().trim().to_string();
    if said.is_empty() {
        said = output.stdout.text().trim().to_string();
    }
    if output.stderr.is_truncated() || output.stdout.is_truncated() {
        said.push('…');
    }
    let status = output.status_text();
    let detail = if said.is_empty() {
        status
    } else {
        format!("{status}: {}", said.replace('\n', " | "))
    };
    Err(fail(ComponentErrorKind::Failed, detail, true))
}
