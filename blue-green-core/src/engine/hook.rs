//! Running a hook as a step of a command: journaled, timed, announced by events (with the
//! hook's output in `HookFinished`), kept in the history line. What a failure means is up to
//! the flow that calls it (`flow`): a `pre_*` hook fails the deploy, the others warn.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ComponentError, Error};
use crate::events::{millis, Event};
use crate::hooks::{HookContext, HookPoint};
use crate::model::{Endpoint, Instance};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{HookRecord, StateStore};

use super::calls::within;
use super::run::Run;

/// Added to a hook's own timeout for the engine's limit around it: the hook runner kills an
/// overrunning hook's group itself (SIGTERM, a grace, SIGKILL) and reports that; the engine's
/// limit only catches a runner that does not.
const HOOK_MARGIN: Duration = Duration::from_secs(5);

/// How many of a failed hook's last output lines its error quotes (the event has all of it).
const QUOTED_LINES: usize = 5;

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Run<'_, R, P, T, S> {
    /// Makes this command run hooks, telling them about a deploy of `release` to the color
    /// `context` names, from `previous` (the instance live before, if any).
    pub(super) fn enable_hooks(&mut self, mut context: HookContext, previous: Option<&Instance>) {
        context.previous_color = previous.map(|i| i.color);
        context.previous_release = previous.map(|i| i.release.clone());
        self.hook_context = Some(context);
    }

    /// Tells the hooks from now on where the new color answers.
    pub(super) fn hooks_see(&mut self, endpoint: &Endpoint) {
        if let Some(context) = self.hook_context.as_mut() {
            context.endpoint = Some(endpoint.clone());
        }
    }

    /// Runs the hook at `point` as its own step, when this command runs hooks and one is
    /// configured there. `Err` is the step's error: the hook failed, overran, could not be
    /// run, or (when `cancellable`) the command was cancelled.
    pub(super) async fn hook(&mut self, point: HookPoint, cancellable: bool) -> Result<(), Error> {
        let eng = self.engine;
        let Some(context) = self.hook_context.clone() else {
            return Ok(());
        };
        let Some(limit) = eng.hooks.timeout(point) else {
            return Ok(());
        };
        let color = context.color;
        let step = point.step();
        let mut ended: Option<HookRecord> = None;
        let ended_ref = &mut ended;
        let result = self
            .step(step, Some(color), cancellable, async move {
                let began = Instant::now();
                let ran = within(
                    limit + HOOK_MARGIN,
                    format!("the {point} hook"),
                    eng.hooks.run(point, &context),
                )
                .await;
                let (success, status, output) = match &ran {
                    Ok(out) => (out.success, out.status.clone(), out.output.clone()),
                    Err(e) => (false, e.message.clone(), String::new()),
                };
                eng.emit(Event::HookFinished {
                    hook: point,
                    color,
                    success,
                    status: status.clone(),
                    output: output.clone(),
                    elapsed_ms: millis(began.elapsed()),
                });
                *ended_ref = Some(HookRecord::new(point, success, status.clone()));
                let failure = match ran {
                    Ok(out) if out.success => return Ok(()),
                    Ok(_) => ComponentError::failed(failed_message(point, &status, &output)),
                    Err(e) => e,
                };
                Err(eng.step_error(step, color, failure))
            })
            .await;
        self.hooks
            .push(ended.unwrap_or_else(|| HookRecord::new(point, false, "cancelled")));
        result
    }

    /// Runs the hook at `point`, whose failure does not fail the command: it becomes a
    /// warning.
    pub(super) async fn hook_or_warn(&mut self, point: HookPoint) {
        if let Err(e) = self.hook(point, false).await {
            self.warn(format!("{e}; the command goes on"));
        }
    }

    /// Runs `on_failure` after a deploy failed with `error` (and was restored), unless the
    /// deploy was refused before it chose a color or as bad usage.
    pub(super) async fn on_failure(&mut self, error: &Error) {
        if matches!(error, Error::Usage { .. }) {
            return;
        }
        // The failure is recorded (or its journal kept by the restore): the hook must not
        // journal anything over it.
        self.journal = None;
        self.hook_or_warn(HookPoint::OnFailure).await;
    }
}

/// The error of a hook that ran and failed, quoting the end of its output.
fn failed_message(point: HookPoint, status: &str, output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(QUOTED_LINES)..];
    if tail.is_empty() {
        format!("the {point} hook {status} and printed nothing")
    } else {
        format!(
            "the {point} hook {status}; its output ended with: {}",
            tail.join(" | ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_hook_quotes_the_end_of_its_output() {
        let output = "1\n2\n\n3\n4\n5\n6\n";
        assert_eq!(
            failed_message(HookPoint::PreSwitch, "exited with code 2", output),
            "the pre_switch hook exited with code 2; its output ended with: 2 | 3 | 4 | 5 | 6"
        );
        assert_eq!(
            failed_message(HookPoint::PreDeploy, "exited with code 1", ""),
            "the pre_deploy hook exited with code 1 and printed nothing"
        );
    }
}
