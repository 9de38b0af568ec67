//! The watch after the switch (`SwitchPolicy::watch`): the new color is live, the old one
//! still runs, and the new one keeps being probed directly for that long. Enough failures in a
//! row end it with an error, and the flow routes back to the old color. The waits between the
//! steps of a gradual shift are the same watch, for `SwitchPolicy::step_wait`.
//!
//! With `SwitchPolicy::watch_max_error_rate` and a router that counts responses, each probe
//! interval also reads the router's counts for the new color: when the responses since the
//! last reading that counted reach `watch_min_requests` and more than that share of them were
//! errors, the watch fails too.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ComponentError, Error};
use crate::events::{millis, Event, Step};
use crate::model::{Health, Instance, InstanceState};
use crate::probe::HealthProbe;
use crate::router::{Responses, Router};
use crate::runtime::Runtime;
use crate::state::StateStore;

use super::Engine;

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    /// Probes `instance` every readiness interval (each attempt under the readiness timeout)
    /// until the watch time has passed, or `cancel` fires: then it ends at once with
    /// `Ok(true)` (the new color stays live). Fails when the runtime says it exited, or after
    /// `watch_failures` unhealthy answers in a row.
    pub(super) async fn watch(
        &self,
        instance: &Instance,
        cancel: &CancellationToken,
    ) -> Result<bool, Error> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => Ok(true),
            watched = self.watch_for(instance, self.config.switch.watch, Step::Watch, "the watch after the switch") => watched.map(|()| false),
        }
    }

    /// Probes `instance` (and reads its share of errors, when asked for and counted) every
    /// readiness interval for `length`; a failure is an error of `step`, its message saying
    /// how far into `during` it came.
    pub(super) async fn watch_for(
        &self,
        instance: &Instance,
        length: Duration,
        step: Step,
        during: &str,
    ) -> Result<(), Error> {
        let readiness = &self.config.readiness;
        let switch = &self.config.switch;
        let needed = switch.watch_failures.max(1);
        let began = Instant::now();
        let end = began + length;
        let color = instance.color;
        let failed =
            |message: String| self.step_error(step, color, ComponentError::failed(message));
        let mut attempt: u32 = 0;
        let mut in_a_row: u32 = 0;
        let mut errors = ErrorWatch::new(self, instance).await;
        while Instant::now() < end {
            let tried = Instant::now();
            match self.rt_state(instance, None).await {
                Ok(InstanceState::Running) | Err(_) => {}
                Ok(state) => {
                    return Err(failed(format!(
                        "{color} {state} {:.1?} into {during}",
                        began.elapsed()
                    )))
                }
            }
            attempt += 1;
            let health = match tokio::time::timeout(readiness.timeout, self.probe.check(instance))
                .await
            {
                Ok(health) => health,
                Err(_) => Health::Unhealthy(format!("no answer within {:?}", readiness.timeout)),
            };
            let reason = match &health {
                Health::Healthy => None,
                Health::Unhealthy(reason) => Some(reason.clone()),
            };
            self.emit(Event::ProbeAttempt {
                color,
                attempt,
                healthy: reason.is_none(),
                reason: reason.clone(),
                elapsed_ms: millis(tried.elapsed()),
            });
            match reason {
                None => in_a_row = 0,
                Some(reason) => {
                    in_a_row += 1;
                    if in_a_row >= needed {
                        return Err(failed(format!(
                            "{color} failed {in_a_row} probes in a row {:.1?} into {during}, so live traffic goes back to the old color; last: {reason}",
                            began.elapsed()
                        )));
                    }
                }
            }
            if let Some(too_many) = errors.check(self, instance).await {
                return Err(failed(format!(
                    "{too_many} {:.1?} into {during}, so live traffic goes back to the old color",
                    began.elapsed()
                )));
            }
            tokio::time::sleep_until((tried + readiness.interval).min(end)).await;
        }
        Ok(())
    }
}

/// The share-of-errors side of a watch: the reading that later ones are compared with.
/// Inactive (never asks the router) without `watch_max_error_rate`, and after a router
/// answered that it does not count.
struct ErrorWatch {
    active: bool,
    base: Option<Responses>,
}

impl ErrorWatch {
    async fn new<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
        engine: &Engine<R, P, T, S>,
        instance: &Instance,
    ) -> ErrorWatch {
        let mut watch = ErrorWatch {
            active: engine.config.switch.watch_max_error_rate.is_some(),
            base: None,
        };
        watch.base = watch.read(engine, instance).await;
        watch
    }

    /// The router's counts now; `None` when inactive, when the router does not count (which
    /// ends the reading for this watch), or when it could not answer this time (a router
    /// that is slow to count must not fail a healthy release: the probes still watch).
    async fn read<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
        &mut self,
        engine: &Engine<R, P, T, S>,
        instance: &Instance,
    ) -> Option<Responses> {
        if !self.active {
            return None;
        }
        match engine.router_responses(&instance.endpoint).await {
            Ok(Some(now)) => Some(now),
            Ok(None) => {
                self.active = false;
                None
            }
            Err(_) => None,
        }
    }

    /// Reads the counts again; says what was too many errors when the share since the base
    /// reading passes the threshold over at least the minimum of responses. A reading with
    /// fewer responses keeps the base, so that slow traffic still adds up to a verdict.
    async fn check<R: Runtime, P: HealthProbe, T: Router, S: StateStore>(
        &mut self,
        engine: &Engine<R, P, T, S>,
        instance: &Instance,
    ) -> Option<String> {
        let now = self.read(engine, instance).await?;
        let switch = &engine.config.switch;
        let rate = switch.watch_max_error_rate?;
        let Some(base) = self.base else {
            self.base = Some(now);
            return None;
        };
        // A router that restarted counts from zero again: start over from this reading.
        if now.total < base.total || now.errors < base.errors {
            self.base = Some(now);
            return None;
        }
        let total = now.total - base.total;
        let errors = now.errors - base.errors;
        if total < switch.watch_min_requests.max(1) {
            return None;
        }
        self.base = Some(now);
        rate.exceeded_by(errors, total).then(|| {
            format!(
                "{errors} of {total} responses from {} were errors ({:.1}%), more than [switch] watch_max_error_rate ({rate})",
                instance.color,
                errors as f64 * 100.0 / total as f64
            )
        })
    }
}
