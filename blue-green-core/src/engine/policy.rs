//! The knobs of the engine: readiness, switch and timeouts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the engine waits for a new instance to be ready. A probe does one attempt; this decides
/// when to start, how often to try, how long each try may take, how many successes in a row
/// count as ready, and when to give up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessPolicy {
    /// Wait this long after start before the first probe.
    pub initial_delay: Duration,
    /// Time between the start of two attempts.
    pub interval: Duration,
    /// One attempt's timeout; a slower answer counts as unhealthy.
    pub timeout: Duration,
    /// Successes in a row needed.
    pub healthy_threshold: u32,
    /// Give up after this long (counted from the start of the wait).
    pub deadline: Duration,
}

impl Default for ReadinessPolicy {
    fn default() -> Self {
        ReadinessPolicy {
            initial_delay: Duration::ZERO,
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            deadline: Duration::from_secs(60),
        }
    }
}

/// What happens to the old color once the new one is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeepPrevious {
    /// Leave it running: rollback is instant (costs the memory of a second copy).
    Running,
    /// Stop it but keep it: rollback restarts it.
    #[default]
    Stopped,
    /// Remove it: rollback starts the previous release afresh.
    Removed,
}

/// How the switch ends: drain, stop, keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchPolicy {
    /// Longest wait for the old color's in-flight requests after the switch. With a router that
    /// cannot count in-flight requests, the engine waits exactly this long.
    pub drain: Duration,
    /// Grace period of the old color's stop before it is killed.
    pub stop_timeout: Duration,
    /// What to do with the old color.
    pub keep_previous: KeepPrevious,
    /// Whether a failing `post_switch` hook routes back to the old color (still running then)
    /// and fails the deploy; otherwise the failure is a warning and the new color stays live.
    #[serde(default)]
    pub rollback_on_post_switch_failure: bool,
    /// After the switch (and `post_switch`), keep the old color running and probe the new one
    /// for this long before the drain; a failure routes back. Zero: no watch.
    #[serde(default)]
    pub watch: Duration,
    /// Unhealthy probes in a row that fail the watch.
    #[serde(default = "default_watch_failures")]
    pub watch_failures: u32,
}

fn default_watch_failures() -> u32 {
    2
}

impl Default for SwitchPolicy {
    fn default() -> Self {
        SwitchPolicy {
            drain: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(30),
            keep_previous: KeepPrevious::Stopped,
            rollback_on_post_switch_failure: false,
            watch: Duration::ZERO,
            watch_failures: default_watch_failures(),
        }
    }
}

/// Timeouts around every external call the engine makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// `Runtime::start` and `Runtime::restart` (may include an image pull or compose up).
    pub start: Duration,
    /// Added to the stop grace period for `Runtime::stop`.
    pub stop_margin: Duration,
    /// `Runtime::remove`, `state`, `list`, `logs`.
    pub runtime: Duration,
    /// Every router call, including verification.
    pub router: Duration,
    /// Every state store call, and the wait for the lock file.
    pub store: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(300),
            stop_margin: Duration::from_secs(15),
            runtime: Duration::from_secs(60),
            router: Duration::from_secs(60),
            store: Duration::from_secs(10),
        }
    }
}
