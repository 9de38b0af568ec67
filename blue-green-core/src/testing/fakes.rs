//! The four fakes; their shared world is in the parent module.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ComponentError, ComponentErrorKind, LockHolder};
use crate::hooks::{HookContext, HookOutput, HookPoint, Hooks};
use crate::model::{Color, Endpoint, Health, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::{Responses, RouteReceipt, Router, Split};
use crate::runtime::Runtime;
use crate::state::{AppState, DeployRecord, Lock, LockError, StateStore};

use super::{new_instance, FakeCall, FakeInstance, FakeWorld};

/// A fake [`Runtime`]: instances are entries in the [`FakeWorld`], each with its own endpoint.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    pub(super) world: FakeWorld,
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        self.world
            .enter(FakeCall::Start, format!("{color}, {}", release.id))
            .await?;
        let mut w = self.world.lock();
        if w.instances.iter().any(|i| i.instance.color == color) {
            w.violations.push(format!(
                "started {} in {color}, whose slot is not empty",
                release.id
            ));
        }
        let instance = new_instance(&mut w, color, &release.id);
        let exit_after = w.exit_next_after.take();
        let state = if exit_after == Some(0) {
            exited(1)
        } else {
            InstanceState::Running
        };
        w.instances.push(FakeInstance {
            instance: instance.clone(),
            state,
            ready: false,
            probes: 0,
            exit_after,
        });
        Ok(instance)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        self.world
            .enter(FakeCall::State, instance.id.clone())
            .await?;
        let mut w = self.world.lock();
        Ok(w.find(&instance.id)
            .map_or(InstanceState::Missing, |i| i.state.clone()))
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError> {
        self.world
            .enter(FakeCall::Stop, format!("{}, grace {grace:?}", instance.id))
            .await?;
        let mut w = self.world.lock();
        if w.target.as_ref() == Some(&instance.endpoint) {
            w.violations.push(format!(
                "stopped {}, which the router points at",
                instance.id
            ));
        }
        if w.sends_a_share_to(&instance.endpoint) {
            w.violations.push(format!(
                "stopped {}, to which the router sends a share of traffic",
                instance.id
            ));
        }
        if let Some(i) = w.find(&instance.id) {
            if i.state.is_running() {
                i.state = InstanceState::Exited {
                    code: Some(0),
                    reason: Some("stopped".into()),
                };
            }
            i.ready = false;
        }
        Ok(())
    }

    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        self.world
            .enter(FakeCall::Restart, instance.id.clone())
            .await?;
        let mut w = self.world.lock();
        let exit_after = w.exit_next_after.take();
        let Some(i) = w.find(&instance.id) else {
            return Err(ComponentError::failed(format!(
                "no instance {} to restart",
                instance.id
            )));
        };
        i.state = if exit_after == Some(0) {
            exited(1)
        } else {
            InstanceState::Running
        };
        i.ready = false;
        i.probes = 0;
        i.exit_after = exit_after;
        Ok(i.instance.clone())
    }

    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        self.world
            .enter(FakeCall::Remove, instance.id.clone())
            .await?;
        let mut w = self.world.lock();
        if w.target.as_ref() == Some(&instance.endpoint) {
            w.violations.push(format!(
                "removed {}, which the router points at",
                instance.id
            ));
        }
        if w.sends_a_share_to(&instance.endpoint) {
            w.violations.push(format!(
                "removed {}, to which the router sends a share of traffic",
                instance.id
            ));
        }
        w.instances.retain(|i| i.instance.id != instance.id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
        self.world.enter(FakeCall::List, String::new()).await?;
        Ok(self
            .world
            .lock()
            .instances
            .iter()
            .map(|i| i.instance.clone())
            .collect())
    }

    async fn logs(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, ComponentError> {
        self.world
            .enter(FakeCall::Logs, format!("{}, {lines}", instance.id))
            .await?;
        let mut w = self.world.lock();
        let state = w
            .find(&instance.id)
            .map_or(InstanceState::Missing, |i| i.state.clone());
        let all = vec![
            format!("{} starting on {}", instance.release, instance.endpoint),
            format!("{} is {state}", instance.id),
        ];
        let skip = all.len().saturating_sub(lines);
        Ok(all.into_iter().skip(skip).collect())
    }
}

fn exited(code: i64) -> InstanceState {
    InstanceState::Exited {
        code: Some(code),
        reason: Some("crashed (fake)".into()),
    }
}

/// A fake [`HealthProbe`]: healthy when the instance runs, unless told otherwise
/// ([`FakeWorld::probe_unhealthy`], [`FakeWorld::never_healthy`],
/// [`FakeWorld::exit_next_start_after`], or a fault on [`FakeCall::Check`]).
#[derive(Debug, Clone)]
pub struct FakeProbe {
    pub(super) world: FakeWorld,
}

#[async_trait]
impl HealthProbe for FakeProbe {
    async fn check(&self, instance: &Instance) -> Health {
        if let Err(e) = self.world.enter(FakeCall::Check, instance.id.clone()).await {
            return Health::Unhealthy(e.message);
        }
        let mut w = self.world.lock();
        let told_unhealthy = w.unhealthy_checks > 0;
        w.unhealthy_checks = w.unhealthy_checks.saturating_sub(1);
        let never = w.never_healthy.contains(&instance.release);
        let Some(i) = w.find(&instance.id) else {
            return Health::Unhealthy(format!("connection refused at {}", instance.endpoint));
        };
        if !i.state.is_running() {
            return Health::Unhealthy(format!("connection refused at {}", instance.endpoint));
        }
        i.probes += 1;
        if i.exit_after.is_some_and(|n| i.probes >= n) {
            i.state = exited(1);
            i.ready = false;
            return Health::Unhealthy(format!("connection reset at {}", instance.endpoint));
        }
        if told_unhealthy || never {
            return Health::Unhealthy("HTTP 503 from /health".into());
        }
        i.ready = true;
        Health::Healthy
    }
}

/// A fake [`Router`]: remembers one target; `route_to` returns a receipt holding the endpoint,
/// and `verify` records a violation when handed another; `verify` passes when it points at the
/// instance and the instance runs; `in_flight` counts down from [`FakeWorld::set_in_flight`].
/// It splits when told it can ([`FakeWorld::set_can_split`]), flagging a split to an instance
/// that is not running and ready; `route_to` ends a split. `preview` remembers the endpoint
/// ([`FakeWorld::previewed`]) when it has an address to answer ([`FakeWorld::set_preview_address`]); `responses`
/// counts what [`FakeWorld::count_responses`] says.
#[derive(Debug, Clone)]
pub struct FakeRouter {
    pub(super) world: FakeWorld,
}

#[async_trait]
impl Router for FakeRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        self.world.enter(FakeCall::Target, String::new()).await?;
        Ok(self.world.lock().target.clone())
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        self.world
            .enter(FakeCall::RouteTo, endpoint.to_string())
            .await?;
        let mut w = self.world.lock();
        let fine = w
            .at(endpoint)
            .is_some_and(|i| i.state.is_running() && i.ready);
        if !fine {
            w.violations.push(format!(
                "routed to {endpoint}, where no running instance that passed a probe answers"
            ));
        }
        w.target = Some(endpoint.clone());
        w.splits.split = None;
        Ok(RouteReceipt::with(endpoint.clone()))
    }

    fn can_split(&self) -> bool {
        self.world.lock().splits.can_split
    }

    async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        self.world
            .enter(
                FakeCall::Split,
                format!("{}% to {}", split.percent(), split.next()),
            )
            .await?;
        let mut w = self.world.lock();
        if !w.splits.can_split {
            return Err(ComponentError::invalid(
                "this router cannot split traffic; deploy without steps",
            ));
        }
        let fine = w
            .at(split.next())
            .is_some_and(|i| i.state.is_running() && i.ready);
        if !fine {
            w.violations.push(format!(
                "split {}% to {}, where no running instance that passed a probe answers",
                split.percent(),
                split.next()
            ));
        }
        if w.target.as_ref() != Some(split.current()) {
            let target = w.target.clone();
            w.violations.push(format!(
                "split from {}, which is not the router's target {target:?}",
                split.current()
            ));
        }
        w.splits.split = Some(split.clone());
        Ok(RouteReceipt::with(split.next().clone()))
    }

    async fn current_split(&self) -> Result<Option<Split>, ComponentError> {
        self.world
            .enter(FakeCall::CurrentSplit, String::new())
            .await?;
        Ok(self.world.lock().splits.split.clone())
    }

    async fn preview(&self, endpoint: Option<&Endpoint>) -> Result<Option<String>, ComponentError> {
        let detail = endpoint.map_or("none".to_string(), Endpoint::to_string);
        self.world.enter(FakeCall::Preview, detail).await?;
        let mut w = self.world.lock();
        if let Some(e) = endpoint {
            let fine = w.at(e).is_some_and(|i| i.state.is_running() && i.ready);
            if !fine {
                w.violations.push(format!(
                    "previewed {e}, where no running instance that passed a probe answers"
                ));
            }
        }
        // A router without a preview address has no preview to keep.
        let address = endpoint.and(w.splits.preview_address.clone());
        w.splits.preview = endpoint.filter(|_| address.is_some()).cloned();
        Ok(address)
    }

    async fn responses(&self, endpoint: &Endpoint) -> Result<Option<Responses>, ComponentError> {
        self.world
            .enter(FakeCall::Responses, endpoint.to_string())
            .await?;
        let mut w = self.world.lock();
        let Some(release) = w.at(endpoint).map(|i| i.instance.release.clone()) else {
            return Ok(None);
        };
        let Some(more) = w.splits.per_reading.get(&release).copied() else {
            return Ok(None);
        };
        let counts = w.splits.responses.entry(endpoint.clone()).or_default();
        counts.total += more.total;
        counts.errors += more.errors;
        Ok(Some(*counts))
    }

    async fn verify(
        &self,
        instance: &Instance,
        receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        self.world
            .enter(FakeCall::Verify, instance.id.clone())
            .await?;
        let mut w = self.world.lock();
        if receipt.detail::<Endpoint>() != Some(&instance.endpoint) {
            w.violations.push(format!(
                "verify of {} was handed the receipt of another switch ({receipt:?})",
                instance.id
            ));
        }
        let serves = w.target.as_ref() == Some(&instance.endpoint)
            && w.at(&instance.endpoint)
                .is_some_and(|i| i.state.is_running());
        if serves {
            Ok(())
        } else {
            Err(ComponentError::failed(format!(
                "requests through the router do not reach {}",
                instance.id
            )))
        }
    }

    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        self.world
            .enter(FakeCall::InFlight, endpoint.to_string())
            .await?;
        let mut w = self.world.lock();
        let now = w.in_flight;
        if let Some(n) = w.in_flight.as_mut() {
            *n = n.saturating_sub(1);
        }
        Ok(now)
    }
}

/// A fake [`StateStore`]: state, history and lock in the [`FakeWorld`]. Dropping the
/// [`Lock`] releases it, as a dead process's file lock is released.
#[derive(Debug, Clone)]
pub struct FakeStore {
    pub(super) world: FakeWorld,
}

struct LockGuard {
    world: FakeWorld,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.world.lock().lock = None;
    }
}

#[async_trait]
impl StateStore for FakeStore {
    async fn lock(&self, holder: &LockHolder) -> Result<Lock, LockError> {
        self.world
            .enter(FakeCall::Lock, holder.command.clone())
            .await?;
        let mut w = self.world.lock();
        if let Some(held) = &w.lock {
            return Err(LockError::Held(held.clone()));
        }
        let taken_over_from = w.stale_lock.take();
        w.lock = Some(holder.clone());
        Ok(Lock::new(
            LockGuard {
                world: self.world.clone(),
            },
            taken_over_from,
        ))
    }

    async fn load(&self) -> Result<AppState, ComponentError> {
        self.world.enter(FakeCall::Load, String::new()).await?;
        Ok(self.world.lock().state.clone())
    }

    async fn save(&self, state: &AppState) -> Result<(), ComponentError> {
        let step = state
            .journal
            .as_ref()
            .map_or("no journal".to_string(), |j| format!("journal {}", j.step));
        self.world.enter(FakeCall::Save, step).await?;
        self.world.lock().state = state.clone();
        Ok(())
    }

    async fn append_history(&self, record: &DeployRecord) -> Result<(), ComponentError> {
        self.world
            .enter(FakeCall::AppendHistory, format!("{:?}", record.outcome))
            .await?;
        self.world.lock().history.push(record.clone());
        Ok(())
    }

    async fn history(&self) -> Result<Vec<DeployRecord>, ComponentError> {
        self.world.enter(FakeCall::History, String::new()).await?;
        Ok(self.world.lock().history.clone())
    }
}

/// Fake [`Hooks`]: a hook at every [`HookPoint`] (or at the points given to
/// [`FakeWorld::hooks_at`]), each a call [`FakeCall::Hook`] that a fault can hit. A
/// [`Fault::Fail`](super::Fault::Fail) of kind `Failed` is a hook that ran and exited with
/// code 1; another kind is a hook that could not be run; a hang overruns. The world flags a
/// `pre_switch` hook that sees an instance that is not running and ready, or one the router
/// already points at, and a `post_switch` hook that sees one the router does not point at.
#[derive(Debug, Clone)]
pub struct FakeHooks {
    pub(super) world: FakeWorld,
    pub(super) points: Vec<HookPoint>,
}

/// The timeout of every fake hook.
const FAKE_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[async_trait]
impl Hooks for FakeHooks {
    fn timeout(&self, point: HookPoint) -> Option<Duration> {
        self.points.contains(&point).then_some(FAKE_HOOK_TIMEOUT)
    }

    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<HookOutput, ComponentError> {
        let entered = self
            .world
            .enter(FakeCall::Hook, format!("{point}, {}", context.color))
            .await;
        {
            let mut w = self.world.lock();
            let routed = context.endpoint.is_some() && w.target == context.endpoint;
            let seen = context.endpoint.as_ref().and_then(|e| w.at(e)).cloned();
            let broken = match point {
                HookPoint::PreSwitch => match &seen {
                    Some(i) if i.state.is_running() && i.ready && !routed => None,
                    _ => Some(format!(
                        "the pre_switch hook ran against {:?}, which is not a running, ready, unrouted instance",
                        context.endpoint
                    )),
                },
                HookPoint::PostSwitch if !routed => Some(format!(
                    "the post_switch hook ran against {:?}, which the router does not point at",
                    context.endpoint
                )),
                _ => None,
            };
            w.violations.extend(broken);
        }
        match entered {
            Ok(()) => Ok(HookOutput::new(
                true,
                "exited with code 0",
                format!("{point} ran\n"),
            )),
            Err(e) if e.kind == ComponentErrorKind::Failed => Ok(HookOutput::new(
                false,
                "exited with code 1",
                format!("{point} failed, as the test asked\n"),
            )),
            Err(e) => Err(e),
        }
    }
}
