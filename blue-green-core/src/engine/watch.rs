//! The watch after the switch (`SwitchPolicy::watch`): the new color is live, the old one
//! still runs, and the new one keeps being probed directly for that long. Enough failures in a
//! row end it with an error, and the flow routes back to the old color.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ComponentError, Error};
use crate::events::{millis, Event, Step};
use crate::model::{Health, Instance, InstanceState};
use crate::probe::HealthProbe;
use crate::router::Router;
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
            watched = self.watch_until_end(instance) => watched.map(|()| false),
        }
    }

    async fn watch_until_end(&self, instance: &Instance) -> Result<(), Error> {
        let readiness = &self.config.readiness;
        let switch = &self.config.switch;
        let needed = switch.watch_failures.max(1);
        let began = Instant::now();
        let end = began + switch.watch;
        let color = instance.color;
        let failed =
            |message: String| self.step_error(Step::Watch, color, ComponentError::failed(message));
        let mut attempt: u32 = 0;
        let mut in_a_row: u32 = 0;
        while Instant::now() < end {
            let tried = Instant::now();
            match self.rt_state(instance, None).await {
                Ok(InstanceState::Running) | Err(_) => {}
                Ok(state) => {
                    return Err(failed(format!(
                        "{color} {state} {:.1?} into the watch after the switch",
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
                            "{color} failed {in_a_row} probes in a row {:.1?} into the watch after the switch, so live traffic goes back to the old color; last: {reason}",
                            began.elapsed()
                        )));
                    }
                }
            }
            tokio::time::sleep_until((tried + readiness.interval).min(end)).await;
        }
        Ok(())
    }
}
