//! The readiness wait: the engine's [`ReadinessPolicy`](super::ReadinessPolicy) around single
//! probe attempts, and the drain wait after a switch.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, NotReady};
use crate::events::{millis, Event};
use crate::model::{Endpoint, Health, Instance, InstanceState};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::StateStore;

use super::Engine;

/// How often the drain asks the router how many requests are still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// How long before the drain deadline a router that waits for zero must answer.
const DRAIN_MARGIN: Duration = Duration::from_millis(100);

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    /// Probes `instance` directly until `healthy_threshold` attempts in a row are healthy, or
    /// fails: at once when the runtime says the instance exited or is gone, otherwise at the
    /// deadline. Before every attempt it asks the runtime for the instance's state.
    pub(super) async fn wait_ready(&self, instance: &Instance) -> Result<(), Error> {
        let policy = &self.config.readiness;
        let began = Instant::now();
        let deadline = began + policy.deadline;
        let needed = policy.healthy_threshold.max(1);
        tokio::time::sleep_until((began + policy.initial_delay).min(deadline)).await;

        let mut attempt: u32 = 0;
        let mut in_a_row: u32 = 0;
        let mut last_probe: Option<String> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let reason = format!(
                    "not healthy within the deadline of {:?} ({attempt} probe attempts, {in_a_row} of {needed} needed in a row)",
                    policy.deadline
                );
                return Err(self.not_ready(instance, reason, last_probe).await);
            }
            // A dead instance never becomes ready: stop waiting as soon as the runtime says so.
            match self.rt_state(instance, Some(deadline - now)).await {
                Ok(InstanceState::Running) => {}
                Ok(state) => {
                    let reason = format!("it {state} after {:.1?}", began.elapsed());
                    return Err(self.not_ready(instance, reason, last_probe).await);
                }
                // The runtime could not tell; the probe still can.
                Err(e) => tracing::debug!("readiness: state of {} unknown: {e}", instance.id),
            }

            let tried = Instant::now();
            let limit = policy
                .timeout
                .min(deadline.saturating_duration_since(tried));
            if limit.is_zero() {
                // The runtime's answer used up the time left: no attempt can be made.
                continue;
            }
            attempt += 1;
            // An attempt the readiness deadline cut short (not the probe's own timeout) says
            // nothing about the instance: the report keeps the last real answer instead.
            let mut cut_short = false;
            let health = match tokio::time::timeout(limit, self.probe.check(instance)).await {
                Ok(health) => health,
                Err(_) => {
                    cut_short = limit < policy.timeout;
                    Health::Unhealthy(format!("no answer within {limit:?}"))
                }
            };
            let reason = match &health {
                Health::Healthy => None,
                Health::Unhealthy(reason) => Some(reason.clone()),
            };
            self.emit(Event::ProbeAttempt {
                color: instance.color,
                attempt,
                healthy: health.is_healthy(),
                reason: reason.clone(),
                elapsed_ms: millis(tried.elapsed()),
            });
            match reason {
                None => {
                    in_a_row += 1;
                    if in_a_row >= needed {
                        return Ok(());
                    }
                }
                Some(reason) => {
                    in_a_row = 0;
                    if !(cut_short && last_probe.is_some()) {
                        last_probe = Some(reason);
                    }
                }
            }
            tokio::time::sleep_until((tried + policy.interval).min(deadline)).await;
        }
    }

    async fn not_ready(
        &self,
        instance: &Instance,
        reason: String,
        last_probe: Option<String>,
    ) -> Error {
        let logs = match self.rt_logs(instance).await {
            Ok(lines) => lines,
            Err(e) => vec![format!("(its logs could not be read: {e})")],
        };
        Error::NotReady {
            app: self.config.app.clone(),
            color: instance.color,
            release: instance.release.clone(),
            detail: NotReady {
                reason,
                last_probe,
                logs,
            },
        }
    }

    /// Waits until the router has no requests in flight to `endpoint`, or the drain time has
    /// passed; a router that cannot count makes it wait the whole drain time. At the deadline,
    /// what is left is cut by the router where it can ([`Router::cut`]). Emits
    /// [`Event::Drained`] with how long it waited, what was left and what was cut (or, from a
    /// router that cannot count requests, the connections still open), and returns
    /// warnings (requests cut or still in flight, a router that failed to answer); it never fails.
    pub(super) async fn drain(&self, endpoint: &Endpoint) -> Result<Vec<String>, Error> {
        let limit = self.config.switch.drain;
        let began = Instant::now();
        let deadline = began + limit;
        let (left, mut warnings) = loop {
            // The router may wait for zero itself; it answers with a margin before the deadline
            // so that what is left is known in time to be cut.
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(DRAIN_MARGIN)
                .min(self.config.timeouts.router / 2);
            let counted =
                tokio::time::timeout_at(deadline, self.router_wait_idle(endpoint, wait)).await;
            match counted {
                Ok(Ok(Some(0))) => break (Some(0), Vec::new()),
                Ok(Ok(Some(n))) => {
                    if Instant::now() >= deadline {
                        break (Some(n), Vec::new());
                    }
                    tokio::time::sleep_until((Instant::now() + DRAIN_POLL).min(deadline)).await;
                }
                Ok(Ok(None)) => {
                    tokio::time::sleep_until(deadline).await;
                    break (None, Vec::new());
                }
                Ok(Err(e)) => {
                    tokio::time::sleep_until(deadline).await;
                    break (None, vec![format!(
                        "could not count the requests in flight to {endpoint}: {e}; waited the drain time of {limit:?} instead"
                    )]);
                }
                Err(_) => {
                    break (None, vec![format!(
                        "the router did not say within the drain time of {limit:?} whether requests are in flight to {endpoint}; stopping it anyway"
                    )]);
                }
            }
        };
        let mut cut = None;
        if let Some(n) = left.filter(|&n| n > 0) {
            match self.router_cut(endpoint).await {
                Ok(Some(closed)) => {
                    cut = Some(closed);
                    warnings.push(format!(
                        "{n} requests were still in flight to {endpoint} after the drain time of {limit:?}; the router closed {closed} of them"
                    ));
                }
                Ok(None) => warnings.push(format!(
                    "{n} requests were still in flight to {endpoint} after the drain time of {limit:?}; stopping it anyway"
                )),
                Err(e) => warnings.push(format!(
                    "{n} requests were still in flight to {endpoint} after the drain time of {limit:?}, and the router could not close them: {e}; stopping it anyway"
                )),
            }
        }
        // A router that cannot count requests may count the connections still open (nginx):
        // asked only now, for the report, since such a count must not end a drain early.
        let mut open = None;
        if left.is_none() {
            match self.router_open_connections(endpoint).await {
                Ok(counted) => open = counted,
                Err(e) => warnings.push(format!(
                    "could not count the connections still open to {endpoint}: {e}"
                )),
            }
        }
        self.observer.on_event(&Event::Drained {
            endpoint: endpoint.clone(),
            elapsed_ms: millis(began.elapsed()),
            left,
            cut,
            open,
        });
        Ok(warnings)
    }
}
