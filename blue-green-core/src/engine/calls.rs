//! Every call the engine makes to the outside world, each behind its timeout from [`Timeouts`],
//! with a component's error turned into an engine [`Error`] that names app, color and step.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::error::{ComponentError, Error};
use crate::events::{Event, Step};
use crate::model::{Color, Endpoint, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::{Responses, RouteReceipt, Router, Split};
use crate::runtime::Runtime;
use crate::state::{AppState, DeployRecord, StateStore};

use super::{Engine, Timeouts};

/// Runs `fut` for at most `limit`; a late answer becomes a [`ComponentError::timeout`] that
/// says what did not answer.
pub(super) async fn within<T>(
    limit: Duration,
    what: impl Display,
    fut: impl Future<Output = Result<T, ComponentError>>,
) -> Result<T, ComponentError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(ComponentError::timeout(format!(
            "{what} did not answer within {limit:?}; check that it is reachable, or raise the timeout"
        ))),
    }
}

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    pub(super) fn emit(&self, event: Event) {
        self.observer.on_event(&event);
    }

    fn timeouts(&self) -> &Timeouts {
        &self.config.timeouts
    }

    pub(super) fn step_error(&self, step: Step, color: Color, source: ComponentError) -> Error {
        Error::Step {
            app: self.config.app.clone(),
            color,
            step,
            source,
        }
    }

    pub(super) fn state_error(&self, source: ComponentError) -> Error {
        Error::State {
            app: self.config.app.clone(),
            source,
        }
    }

    // --- runtime -------------------------------------------------------------------------

    pub(super) async fn rt_start(
        &self,
        color: Color,
        release: &Release,
    ) -> Result<Instance, ComponentError> {
        let started = within(
            self.timeouts().start,
            format!("the runtime starting release {} in {color}", release.id),
            self.runtime.start(color, release),
        )
        .await?;
        self.emit_started(&started, false);
        Ok(started)
    }

    fn emit_started(&self, instance: &Instance, restarted: bool) {
        self.emit(Event::InstanceStarted {
            color: instance.color,
            release: instance.release.clone(),
            id: instance.id.clone(),
            restarted,
        });
    }

    pub(super) async fn rt_restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        let started = within(
            self.timeouts().start,
            format!("the runtime restarting {}", describe(instance)),
            self.runtime.restart(instance),
        )
        .await?;
        self.emit_started(&started, true);
        Ok(started)
    }

    pub(super) async fn rt_state(
        &self,
        instance: &Instance,
        limit: Option<Duration>,
    ) -> Result<InstanceState, ComponentError> {
        let limit = limit.map_or(self.timeouts().runtime, |l| l.min(self.timeouts().runtime));
        within(
            limit,
            format!("the runtime reporting the state of {}", describe(instance)),
            self.runtime.state(instance),
        )
        .await
    }

    pub(super) async fn rt_stop(&self, instance: &Instance) -> Result<(), ComponentError> {
        let grace = self.config.switch.stop_timeout;
        within(
            grace + self.timeouts().stop_margin,
            format!("the runtime stopping {}", describe(instance)),
            self.runtime.stop(instance, grace),
        )
        .await
    }

    pub(super) async fn rt_remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        within(
            self.timeouts().runtime,
            format!("the runtime removing {}", describe(instance)),
            self.runtime.remove(instance),
        )
        .await
    }

    pub(super) async fn rt_list(&self) -> Result<Vec<Instance>, ComponentError> {
        within(
            self.timeouts().runtime,
            "the runtime listing the app's instances",
            self.runtime.list(),
        )
        .await
    }

    pub(super) async fn rt_logs(&self, instance: &Instance) -> Result<Vec<String>, ComponentError> {
        within(
            self.timeouts().runtime,
            format!("the runtime reading the logs of {}", describe(instance)),
            self.runtime.logs(instance, self.config.log_lines),
        )
        .await
    }

    /// Stops `instance` unless the router points at it: the one thing the engine never does.
    pub(super) async fn stop_unless_routed(
        &self,
        instance: &Instance,
        routed: Option<&Endpoint>,
    ) -> Result<(), ComponentError> {
        if routed == Some(&instance.endpoint) {
            return Err(ComponentError::failed(format!(
                "{} was not stopped because the router points at it",
                describe(instance)
            )));
        }
        self.rt_stop(instance).await.map_err(|e| {
            ComponentError::new(
                e.kind,
                format!("{} could not be stopped: {}", describe(instance), e.message),
            )
        })
    }

    /// Stops, then removes `instance`, unless the router points at it.
    pub(super) async fn remove_unless_routed(
        &self,
        instance: &Instance,
        routed: Option<&Endpoint>,
    ) -> Result<(), ComponentError> {
        self.stop_unless_routed(instance, routed).await?;
        self.rt_remove(instance).await.map_err(|e| {
            ComponentError::new(
                e.kind,
                format!("{} could not be removed: {}", describe(instance), e.message),
            )
        })
    }

    // --- router --------------------------------------------------------------------------

    pub(super) async fn router_target(&self) -> Result<Option<Endpoint>, ComponentError> {
        within(
            self.timeouts().router,
            "the router reporting its target",
            self.router.target(),
        )
        .await
    }

    pub(super) async fn router_route_to(
        &self,
        endpoint: &Endpoint,
    ) -> Result<RouteReceipt, ComponentError> {
        within(
            self.timeouts().router,
            format!("the router switching to {endpoint}"),
            self.router.route_to(endpoint),
        )
        .await
    }

    pub(super) async fn router_verify(
        &self,
        instance: &Instance,
        receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        within(
            self.timeouts().router,
            format!(
                "the router verifying that traffic reaches {}",
                describe(instance)
            ),
            self.router.verify(instance, receipt),
        )
        .await
    }

    pub(super) async fn router_split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        within(
            self.timeouts().router,
            format!(
                "the router sending {}% of new requests to {}",
                split.percent(),
                split.next()
            ),
            self.router.split(split),
        )
        .await
    }

    pub(super) async fn router_current_split(&self) -> Result<Option<Split>, ComponentError> {
        within(
            self.timeouts().router,
            "the router reporting its traffic split",
            self.router.current_split(),
        )
        .await
    }

    pub(super) async fn router_preview(
        &self,
        endpoint: Option<&Endpoint>,
    ) -> Result<Option<String>, ComponentError> {
        let what = match endpoint {
            Some(e) => format!("the router previewing {e}"),
            None => "the router ending the preview".to_string(),
        };
        within(self.timeouts().router, what, self.router.preview(endpoint)).await
    }

    pub(super) async fn router_responses(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Option<Responses>, ComponentError> {
        within(
            self.timeouts().router,
            format!("the router counting responses from {endpoint}"),
            self.router.responses(endpoint),
        )
        .await
    }

    /// The router's count after waiting up to `wait` for it to reach zero; `wait` must stay
    /// under the router timeout, which bounds the whole call.
    pub(super) async fn router_wait_idle(
        &self,
        endpoint: &Endpoint,
        wait: Duration,
    ) -> Result<Option<u64>, ComponentError> {
        within(
            self.timeouts().router,
            format!("the router counting requests in flight to {endpoint}"),
            self.router.wait_idle(endpoint, wait),
        )
        .await
    }

    pub(super) async fn router_open_connections(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Option<u64>, ComponentError> {
        within(
            self.timeouts().router,
            format!("the router counting connections open to {endpoint}"),
            self.router.open_connections(endpoint),
        )
        .await
    }

    pub(super) async fn router_cut(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Option<u64>, ComponentError> {
        within(
            self.timeouts().router,
            format!("the router closing what is left in flight to {endpoint}"),
            self.router.cut(endpoint),
        )
        .await
    }

    // --- store ---------------------------------------------------------------------------

    pub(super) async fn store_load(&self) -> Result<AppState, ComponentError> {
        within(
            self.timeouts().store,
            "the state store loading state",
            self.store.load(),
        )
        .await
    }

    pub(super) async fn store_save(&self, state: &AppState) -> Result<(), ComponentError> {
        within(
            self.timeouts().store,
            "the state store saving state",
            self.store.save(state),
        )
        .await
    }

    pub(super) async fn store_append(&self, record: &DeployRecord) -> Result<(), ComponentError> {
        within(
            self.timeouts().store,
            "the state store appending to the history",
            self.store.append_history(record),
        )
        .await
    }
}

/// "green instance abc (release v2) at 127.0.0.1:8082", for messages.
pub(super) fn describe(instance: &Instance) -> String {
    format!(
        "{} instance {} (release {}) at {}",
        instance.color, instance.id, instance.release, instance.endpoint
    )
}

/// Now, in UTC.
pub(super) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ComponentErrorKind;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_answer_in_time_is_a_timeout_naming_it() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<(), ComponentError>(())
        };
        let err = within(Duration::from_secs(3), "the router switching", slow)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ComponentErrorKind::Timeout);
        assert!(err
            .message
            .contains("the router switching did not answer within 3s"));
        let fast = async { Ok::<u8, ComponentError>(7) };
        assert_eq!(within(Duration::from_secs(3), "x", fast).await.unwrap(), 7);
    }
}
