//! The knobs of the engine: readiness, switch and timeouts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ComponentError;

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
    /// The share of the new color's responses that may be errors during the watch and the
    /// waits of a gradual shift, with a router that counts them ([`Router::responses`]);
    /// more fails the watch like a failed probe. `None` (the default): probes only, because
    /// what share of 5xx is normal depends on the app, and a guessed threshold would roll
    /// back good releases.
    ///
    /// [`Router::responses`]: crate::Router::responses
    #[serde(default)]
    pub watch_max_error_rate: Option<ErrorRate>,
    /// Responses needed between two readings of the router's counts before their share of
    /// errors counts: a single 500 among three requests says nothing yet.
    #[serde(default = "default_watch_min_requests")]
    pub watch_min_requests: u64,
    /// A gradual shift: the shares of new requests sent to the new color, step by step, before
    /// the switch (`[10, 50, 100]`). `None`: the switch moves all traffic at once. Needs a
    /// router that can split ([`Router::can_split`]); the engine refuses it before anything
    /// starts otherwise.
    ///
    /// [`Router::can_split`]: crate::Router::can_split
    #[serde(default)]
    pub steps: Option<ShiftSteps>,
    /// How long each step of a gradual shift below 100% is watched (probes of the new color,
    /// and its share of errors) before the next one.
    #[serde(default = "default_step_wait")]
    pub step_wait: Duration,
}

fn default_watch_failures() -> u32 {
    2
}

fn default_watch_min_requests() -> u64 {
    20
}

fn default_step_wait() -> Duration {
    Duration::from_secs(30)
}

/// The steps of a gradual shift: percentages of new requests sent to the new color, strictly
/// increasing, each from 1 to 100, the last one 100 (the switch itself).
///
/// ```
/// use blue_green_core::ShiftSteps;
///
/// let steps: ShiftSteps = "10,50,100".parse().unwrap();
/// assert_eq!(steps.percents(), &[10, 50, 100]);
/// assert_eq!(steps.splits().collect::<Vec<_>>(), vec![10, 50]);
/// assert!("50,10,100".parse::<ShiftSteps>().is_err());
/// assert!("10,50".parse::<ShiftSteps>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct ShiftSteps(Vec<u8>);

impl ShiftSteps {
    /// Checks `percents`: not empty, strictly increasing, each from 1 to 100, ending at 100.
    pub fn new(percents: Vec<u8>) -> Result<ShiftSteps, ComponentError> {
        let shown = percents
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(bad) = percents.iter().find(|p| !(1..=100).contains(*p)) {
            return Err(ComponentError::invalid(format!(
                "step {bad} in [{shown}] is not a share of traffic: each step is a percentage from 1 to 100"
            )));
        }
        if percents.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ComponentError::invalid(format!(
                "the steps [{shown}] do not strictly increase: write them in order, each above the one before, for example [10, 50, 100]"
            )));
        }
        if percents.last() != Some(&100) {
            return Err(ComponentError::invalid(format!(
                "the steps [{shown}] do not end at 100: the last step is the switch of all traffic, for example [10, 50, 100]"
            )));
        }
        Ok(ShiftSteps(percents))
    }

    /// Every step, the last one 100.
    pub fn percents(&self) -> &[u8] {
        &self.0
    }

    /// The steps below 100: the splits before the switch.
    pub fn splits(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().copied().filter(|p| *p < 100)
    }
}

impl TryFrom<Vec<u8>> for ShiftSteps {
    type Error = ComponentError;

    fn try_from(percents: Vec<u8>) -> Result<Self, Self::Error> {
        ShiftSteps::new(percents)
    }
}

impl From<ShiftSteps> for Vec<u8> {
    fn from(steps: ShiftSteps) -> Vec<u8> {
        steps.0
    }
}

impl FromStr for ShiftSteps {
    type Err = ComponentError;

    /// Comma-separated percentages, as `deploy --steps 10,50,100` takes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let percents = s
            .split(',')
            .map(|p| {
                p.trim().parse::<u8>().map_err(|_| {
                    ComponentError::invalid(format!(
                        "`{}` in `{s}` is not a percentage: write the steps as numbers from 1 to 100 separated by commas, for example 10,50,100",
                        p.trim().escape_debug()
                    ))
                })
            })
            .collect::<Result<Vec<u8>, _>>()?;
        ShiftSteps::new(percents)
    }
}

impl fmt::Display for ShiftSteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.0.iter().map(|p| format!("{p}%")).collect();
        f.write_str(&shown.join(", "))
    }
}

/// A share of responses, from 0.0 to 1.0, that may be errors ([`SwitchPolicy::watch_max_error_rate`]).
/// Kept in parts per million, so that the policy compares exactly and stays `Eq`.
///
/// ```
/// use blue_green_core::ErrorRate;
///
/// let rate = ErrorRate::new(0.05).unwrap();
/// assert!(!rate.exceeded_by(5, 100));
/// assert!(rate.exceeded_by(6, 100));
/// assert!(ErrorRate::new(1.5).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct ErrorRate {
    per_million: u32,
}

impl ErrorRate {
    /// A share from 0.0 (no error allowed) to 1.0.
    pub fn new(share: f64) -> Result<ErrorRate, ComponentError> {
        if !(0.0..=1.0).contains(&share) {
            return Err(ComponentError::invalid(format!(
                "{share} is not a share of responses: expected a number from 0.0 to 1.0, for example 0.05 for 5%"
            )));
        }
        // In range, so the product fits a u32.
        let per_million = (share * 1_000_000.0).round() as u32;
        Ok(ErrorRate { per_million })
    }

    /// The share, from 0.0 to 1.0.
    pub fn share(self) -> f64 {
        f64::from(self.per_million) / 1_000_000.0
    }

    /// Whether `errors` out of `total` responses are more than this share.
    pub fn exceeded_by(self, errors: u64, total: u64) -> bool {
        u128::from(errors) * 1_000_000 > u128::from(self.per_million) * u128::from(total)
    }
}

impl TryFrom<f64> for ErrorRate {
    type Error = ComponentError;

    fn try_from(share: f64) -> Result<Self, Self::Error> {
        ErrorRate::new(share)
    }
}

impl From<ErrorRate> for f64 {
    fn from(rate: ErrorRate) -> f64 {
        rate.share()
    }
}

impl fmt::Display for ErrorRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.share() * 100.0)
    }
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
            watch_max_error_rate: None,
            watch_min_requests: default_watch_min_requests(),
            steps: None,
            step_wait: default_step_wait(),
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
