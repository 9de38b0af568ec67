//! Events: one for every step and every probe attempt, handed to an [`Observer`] the caller gives.
//! The CLI turns them into progress lines or NDJSON; an embedder can forward them anywhere.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hooks::HookPoint;
use crate::model::{Color, Endpoint};

/// A step of a command, in the order a deploy runs them. Also the unit of the journal: each step
/// is recorded before it runs, so that the next command can repair what a crash left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// Take the app's deploy lock.
    Lock,
    /// Compare saved state, runtime and router, and repair leftovers.
    Reconcile,
    /// Remove a leftover instance from the idle color's slot.
    Clear,
    /// Start the release in the idle color.
    Start,
    /// Probe the new instance directly until it is ready.
    Ready,
    /// Point the router at the new instance.
    Switch,
    /// Check that the router's switch took effect.
    Verify,
    /// Wait for the old color's in-flight requests to finish.
    Drain,
    /// Stop the old color (graceful, then kill after the stop timeout).
    Stop,
    /// Remove an instance.
    Remove,
    /// Put things back as they were after a failure.
    Restore,
    /// Write the outcome to state and history.
    Record,
    /// The `pre_deploy` hook (before the new color starts).
    PreDeploy,
    /// The `pre_switch` hook (the new color is ready, not yet routed to).
    PreSwitch,
    /// The `post_switch` hook (the new color is live, the old one still runs).
    PostSwitch,
    /// The `post_deploy` hook (after the deploy was recorded).
    PostDeploy,
    /// The `on_failure` hook (after a failed deploy was restored).
    OnFailure,
    /// Keep probing the new color after the switch, the old one still running.
    Watch,
    /// One step of a gradual shift: send a share of new requests to the new color, then watch
    /// it for `step_wait` (the old color keeps the rest).
    Shift,
    /// Make a staged color reachable through the router beside the live one (or end that).
    Preview,
}

impl Step {
    /// The lowercase name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::Reconcile => "reconcile",
            Step::Clear => "clear",
            Step::Start => "start",
            Step::Ready => "ready",
            Step::Switch => "switch",
            Step::Verify => "verify",
            Step::Drain => "drain",
            Step::Stop => "stop",
            Step::Remove => "remove",
            Step::Restore => "restore",
            Step::Record => "record",
            Step::PreDeploy => "pre_deploy",
            Step::PreSwitch => "pre_switch",
            Step::PostSwitch => "post_switch",
            Step::PostDeploy => "post_deploy",
            Step::OnFailure => "on_failure",
            Step::Watch => "watch",
            Step::Shift => "shift",
            Step::Preview => "preview",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The command an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// `deploy`
    Deploy,
    /// `rollback`
    Rollback,
    /// `switch`
    Switch,
    /// `down`
    Down,
    /// `status`
    Status,
    /// `repair`
    Repair,
    /// `deploy --no-switch`: start and ready a release in the idle color, leave the router.
    Stage,
    /// `promote`: switch to the staged color.
    Promote,
    /// `abort`: remove the staged color.
    Abort,
}

impl Command {
    /// Whether the command points the router somewhere new (deploy, rollback, switch,
    /// promote): what a repair of its journal looks for.
    pub fn routes(self) -> bool {
        matches!(
            self,
            Command::Deploy | Command::Rollback | Command::Switch | Command::Promote
        )
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Deploy => "deploy",
            Command::Rollback => "rollback",
            Command::Switch => "switch",
            Command::Down => "down",
            Command::Status => "status",
            Command::Repair => "repair",
            Command::Stage => "stage",
            Command::Promote => "promote",
            Command::Abort => "abort",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened during a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A command began.
    CommandStarted {
        /// The app.
        app: String,
        /// Which command.
        command: Command,
        /// The release, for deploys.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<String>,
    },
    /// A step began.
    StepStarted {
        /// The step.
        step: Step,
        /// The color it acts on, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<Color>,
    },
    /// A step finished.
    StepFinished {
        /// The step.
        step: Step,
        /// The color it acted on, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<Color>,
        /// How long it took, in milliseconds.
        elapsed_ms: u64,
    },
    /// A step failed; a `Restore` follows where something must be put back.
    StepFailed {
        /// The step.
        step: Step,
        /// The color it acted on, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<Color>,
        /// How long it ran, in milliseconds.
        elapsed_ms: u64,
        /// Why.
        error: String,
    },
    /// The runtime started an instance: a fresh start of a release (`restarted: false`), or a
    /// stopped instance started again (`restarted: true`, for a rollback to a stopped color).
    InstanceStarted {
        /// The color it runs in.
        color: Color,
        /// The release it runs.
        release: String,
        /// The runtime's id of it.
        id: String,
        /// Whether a stopped instance was started again rather than a new one started.
        restarted: bool,
    },
    /// One probe attempt of the readiness wait.
    ProbeAttempt {
        /// The color probed.
        color: Color,
        /// 1-based attempt number.
        attempt: u32,
        /// Whether it was healthy.
        healthy: bool,
        /// Why not, when it was not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How long the attempt took, in milliseconds.
        elapsed_ms: u64,
    },
    /// Something worth a person's attention that did not fail the command (the old color did
    /// not stop, a stale lock was taken over, a leftover was repaired).
    Warning {
        /// What happened.
        message: String,
    },
    /// The router now points at this endpoint.
    Routed {
        /// The color now live.
        color: Color,
        /// Its endpoint.
        endpoint: Endpoint,
    },
    /// A step of a gradual shift took effect: the router sends `percent` of new requests to
    /// `color` at `endpoint`, the rest to the old color. The watch of this step follows.
    Shifted {
        /// The new color.
        color: Color,
        /// Its share of new requests, 1 to 99.
        percent: u8,
        /// Its endpoint.
        endpoint: Endpoint,
    },
    /// The router previews a staged color beside the live one (`deploy --no-switch`), or
    /// (`address: None` after `promote`, `abort` or a repair) previews nothing any more.
    Previewed {
        /// The staged color.
        color: Color,
        /// Where the preview is reachable through the router (for example a preview host
        /// name), when the router has one; the staged color's own endpoint works regardless.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// The drain of an old target ended: at once when the router counted nothing left in
    /// flight, otherwise at the drain deadline.
    Drained {
        /// The endpoint drained.
        endpoint: Endpoint,
        /// How long the drain waited, in milliseconds.
        elapsed_ms: u64,
        /// Requests (and upgraded connections) still in flight when it ended, when the router
        /// can count them: `Some(0)` is a complete drain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<u64>,
        /// How many of those the router closed, when it can close them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cut: Option<u64>,
        /// When the router cannot count requests in flight (`left` is `None`) but can count
        /// the connections it still holds open to the endpoint (nginx): how many were open
        /// when the drain time was over and the old color was stopped. Long-lived connections
        /// (WebSockets, streams) that the stop ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        open: Option<u64>,
    },
    /// A hook ran to its end (or could not be run, or overran its timeout: then `success` is
    /// false and `status` says why). Its step's `StepFinished` or `StepFailed` follows.
    HookFinished {
        /// Which hook.
        hook: HookPoint,
        /// The color the deploy brings up.
        color: Color,
        /// Whether it succeeded.
        success: bool,
        /// How it ended: "exited with code 0", "did not finish within 5s and was killed".
        status: String,
        /// What it printed (stdout, then stderr; the end of it when it printed a lot).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        output: String,
        /// How long it ran, in milliseconds.
        elapsed_ms: u64,
    },
    /// A command ended.
    CommandFinished {
        /// Which command.
        command: Command,
        /// Whether it succeeded.
        ok: bool,
        /// The live color afterwards, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        live: Option<Color>,
        /// Total time, in milliseconds.
        elapsed_ms: u64,
    },
}

/// Receives events as they happen. Must not block: a slow observer slows the deploy.
pub trait Observer: Send + Sync {
    /// Called once per event, in order.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Observer for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// An observer that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn on_event(&self, _event: &Event) {}
}

/// Milliseconds of a duration, saturating, for event fields.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_tag() {
        let e = Event::StepFinished {
            step: Step::Ready,
            color: Some(Color::Green),
            elapsed_ms: 1200,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"event":"step_finished","step":"ready","color":"green","elapsed_ms":1200}"#
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
