//! Programmable in-memory fakes of the four components — [`FakeRuntime`], [`FakeProbe`],
//! [`FakeRouter`], [`FakeStore`] — for tests of the engine and of embedders' own tools.
//!
//! The fakes share one [`FakeWorld`]: the instances the runtime runs, where the router points,
//! the saved state and history, the lock. A test tells the world what to do wrong ("fail the
//! 3rd call to `route_to` from now", "the next instance exits after 2 probes", "the probe
//! answers unhealthy 5 times", "hang at the next `save`"), runs the engine, then looks at what
//! happened: every call made, what runs, where the router points, and any broken rule of the
//! engine the world noticed (see [`FakeWorld::violations`]).
//!
//! The fakes never sleep; under tokio's paused clock (`#[tokio::test(start_paused = true)]`)
//! a whole deploy with its readiness interval and drain time runs in microseconds.
//!
//! To use them, enable the feature in the dev-dependencies (the paused clock needs tokio's
//! `test-util` there too):
//!
//! ```toml
//! [dev-dependencies]
//! blue-green-core = { version = "0.1", features = ["testing"] }
//! tokio = { version = "1", features = ["macros", "rt", "test-util"] }
//! ```
//!
//! [`FakeWorld::engine`] builds an engine over the four fakes ([`FakeEngine`]). The fake
//! runtime gives the `n`th instance it starts (counting from 1 across the world) the id
//! `{color}-{n}` and the endpoint `127.0.0.1:{20000 + n}`; nothing listens there: the fake
//! probe and router only look the endpoint up in the world. For mocks of single traits with
//! mockall, see the `mocks` feature.
//!
//! ```
//! use blue_green_core::testing::{FakeCall, FakeWorld};
//! use blue_green_core::{AppName, CancellationToken, Color, Engine, EngineConfig, Release};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let world = FakeWorld::new();
//! world.seed_live(Color::Blue, "v1");
//! world.fail_nth(FakeCall::RouteTo, 1); // the switch will fail
//! let engine = Engine::new(
//!     EngineConfig::new(AppName::new("web").unwrap()),
//!     world.runtime(),
//!     world.probe(),
//!     world.router(),
//!     world.store(),
//! );
//! let result = engine.deploy(Release::new("v2").unwrap(), &CancellationToken::new()).await;
//! assert!(result.is_err());
//! // Nothing that served changed, and the new instance is gone.
//! assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
//! assert!(world.instances_of(Color::Green).is_empty());
//! assert!(world.violations().is_empty());
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{ComponentError, ComponentErrorKind, LockHolder};
use crate::model::{Color, Endpoint, Instance, InstanceState, Release};
use crate::state::{AppState, DeployRecord, Deployment};

mod fakes;
mod split;

pub use fakes::{FakeHooks, FakeProbe, FakeRouter, FakeRuntime, FakeStore};

/// Every method of the four components, to name a call when injecting a fault or counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeCall {
    /// [`Runtime::start`](crate::Runtime::start)
    Start,
    /// [`Runtime::state`](crate::Runtime::state)
    State,
    /// [`Runtime::stop`](crate::Runtime::stop)
    Stop,
    /// [`Runtime::restart`](crate::Runtime::restart)
    Restart,
    /// [`Runtime::remove`](crate::Runtime::remove)
    Remove,
    /// [`Runtime::list`](crate::Runtime::list)
    List,
    /// [`Runtime::logs`](crate::Runtime::logs)
    Logs,
    /// [`HealthProbe::check`](crate::HealthProbe::check)
    Check,
    /// [`Router::target`](crate::Router::target)
    Target,
    /// [`Router::route_to`](crate::Router::route_to)
    RouteTo,
    /// [`Router::verify`](crate::Router::verify)
    Verify,
    /// [`Router::in_flight`](crate::Router::in_flight)
    InFlight,
    /// [`Router::split`](crate::Router::split)
    Split,
    /// [`Router::current_split`](crate::Router::current_split)
    CurrentSplit,
    /// [`Router::preview`](crate::Router::preview)
    Preview,
    /// [`Router::responses`](crate::Router::responses)
    Responses,
    /// [`StateStore::lock`](crate::StateStore::lock)
    Lock,
    /// [`StateStore::load`](crate::StateStore::load)
    Load,
    /// [`StateStore::save`](crate::StateStore::save)
    Save,
    /// [`StateStore::append_history`](crate::StateStore::append_history)
    AppendHistory,
    /// [`StateStore::history`](crate::StateStore::history)
    History,
    /// [`Hooks::run`](crate::Hooks::run)
    Hook,
}

impl FakeCall {
    /// Every call, in the order above.
    pub const ALL: [FakeCall; 22] = [
        FakeCall::Start,
        FakeCall::State,
        FakeCall::Stop,
        FakeCall::Restart,
        FakeCall::Remove,
        FakeCall::List,
        FakeCall::Logs,
        FakeCall::Check,
        FakeCall::Target,
        FakeCall::RouteTo,
        FakeCall::Verify,
        FakeCall::InFlight,
        FakeCall::Split,
        FakeCall::CurrentSplit,
        FakeCall::Preview,
        FakeCall::Responses,
        FakeCall::Lock,
        FakeCall::Load,
        FakeCall::Save,
        FakeCall::AppendHistory,
        FakeCall::History,
        FakeCall::Hook,
    ];
}

/// What an injected fault does to the call it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call returns an error of this kind (a probe answers unhealthy instead).
    Fail(ComponentErrorKind),
    /// The call never returns: the engine's timeout (or cancellation) must deal with it.
    Hang,
}

/// One call a component received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Which method.
    pub call: FakeCall,
    /// Its argument, briefly (an instance id, an endpoint, a color).
    pub detail: String,
    /// Whether an injected fault hit it.
    pub faulted: bool,
}

impl fmt::Display for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.call, self.detail)?;
        if self.faulted {
            f.write_str(" [fault]")?;
        }
        Ok(())
    }
}

/// An instance as the fake runtime keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeInstance {
    /// The instance handed to the engine.
    pub instance: Instance,
    /// What [`Runtime::state`](crate::Runtime::state) answers for it.
    pub state: InstanceState,
    /// Whether it answered a healthy probe since it was last (re)started: the world's notion
    /// of "passed readiness".
    pub ready: bool,
    /// How many probes it answered since it was last (re)started.
    pub probes: u32,
    /// It exits (code 1) after this many probes, if set.
    pub(crate) exit_after: Option<u32>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) next_id: u32,
    pub(crate) instances: Vec<FakeInstance>,
    pub(crate) target: Option<Endpoint>,
    pub(crate) counts: HashMap<FakeCall, u32>,
    pub(crate) faults: Vec<(FakeCall, u32, Fault)>,
    pub(crate) calls: Vec<CallRecord>,
    pub(crate) crashed: bool,
    pub(crate) violations: Vec<String>,
    pub(crate) unhealthy_checks: u32,
    pub(crate) never_healthy: HashSet<String>,
    pub(crate) exit_next_after: Option<u32>,
    pub(crate) in_flight: Option<u64>,
    pub(crate) splits: split::SplitWorld,
    pub(crate) state: AppState,
    pub(crate) history: Vec<DeployRecord>,
    pub(crate) lock: Option<LockHolder>,
    pub(crate) stale_lock: Option<LockHolder>,
}

impl Inner {
    pub(crate) fn find(&mut self, id: &str) -> Option<&mut FakeInstance> {
        self.instances.iter_mut().find(|i| i.instance.id == id)
    }

    /// Whether a split sends a share of traffic to `endpoint`.
    pub(crate) fn sends_a_share_to(&self, endpoint: &Endpoint) -> bool {
        self.splits
            .split
            .as_ref()
            .is_some_and(|s| s.next() == endpoint)
    }

    pub(crate) fn at(&self, endpoint: &Endpoint) -> Option<&FakeInstance> {
        self.instances
            .iter()
            .find(|i| &i.instance.endpoint == endpoint)
    }
}

/// The world the fakes share. Cheap to clone (every clone is the same world); all methods take
/// `&self`.
#[derive(Clone, Default)]
pub struct FakeWorld {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for FakeWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.lock();
        f.debug_struct("FakeWorld")
            .field("instances", &w.instances)
            .field("target", &w.target)
            .field("state", &w.state)
            .finish_non_exhaustive()
    }
}

/// An engine over a [`FakeWorld`]'s components, as [`FakeWorld::engine`] builds it.
pub type FakeEngine = crate::Engine<FakeRuntime, FakeProbe, FakeRouter, FakeStore>;

impl FakeWorld {
    /// An empty world: nothing runs, the router points nowhere, nothing is saved.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in a test thread must not hide the world from the test that looks at it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An engine over this world's runtime, probe, router and store, ready for tests:
    ///
    /// ```
    /// use blue_green_core::testing::FakeWorld;
    /// use blue_green_core::{AppName, CancellationToken, EngineConfig, Release};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let world = FakeWorld::new();
    /// let engine = world.engine(EngineConfig::new(AppName::new("web").unwrap()));
    /// let report = engine.deploy(Release::new("v1").unwrap(), &CancellationToken::new()).await.unwrap();
    /// assert_eq!(world.router_target(), Some(report.live.endpoint));
    /// # }
    /// ```
    pub fn engine(&self, config: crate::EngineConfig) -> FakeEngine {
        crate::Engine::new(
            config,
            self.runtime(),
            self.probe(),
            self.router(),
            self.store(),
        )
    }

    /// The runtime of this world.
    pub fn runtime(&self) -> FakeRuntime {
        FakeRuntime {
            world: self.clone(),
        }
    }

    /// The health probe of this world.
    pub fn probe(&self) -> FakeProbe {
        FakeProbe {
            world: self.clone(),
        }
    }

    /// The router of this world.
    pub fn router(&self) -> FakeRouter {
        FakeRouter {
            world: self.clone(),
        }
    }

    /// The state store of this world.
    pub fn store(&self) -> FakeStore {
        FakeStore {
            world: self.clone(),
        }
    }

    /// Hooks at every point ([`crate::HookPoint::ALL`]), for
    /// [`Engine::with_hooks`](crate::Engine::with_hooks).
    pub fn hooks(&self) -> FakeHooks {
        self.hooks_at(&crate::HookPoint::ALL)
    }

    /// Hooks at the given points only.
    pub fn hooks_at(&self, points: &[crate::HookPoint]) -> FakeHooks {
        FakeHooks {
            world: self.clone(),
            points: points.to_vec(),
        }
    }

    // --- telling it what to do ----------------------------------------------------------

    /// The `n`th call (1-based) to `call` from now fails with [`ComponentErrorKind::Failed`]
    /// (a probe answers unhealthy).
    pub fn fail_nth(&self, call: FakeCall, n: u32) {
        self.fault_nth(call, n, Fault::Fail(ComponentErrorKind::Failed));
    }

    /// The `n`th call (1-based) to `call` from now meets `fault`.
    pub fn fault_nth(&self, call: FakeCall, n: u32, fault: Fault) {
        let mut w = self.lock();
        let base = w.counts.get(&call).copied().unwrap_or(0);
        w.faults.push((call, base + n.max(1), fault));
    }

    /// Every call from now on, to any component, hangs forever: the process "died". Drop the
    /// engine's future, then [`FakeWorld::revive`] and run the next command to test recovery.
    pub fn crash(&self) {
        self.lock().crashed = true;
    }

    /// Calls answer again after [`FakeWorld::crash`]; pending faults are forgotten.
    pub fn revive(&self) {
        let mut w = self.lock();
        w.crashed = false;
        w.faults.clear();
    }

    /// The next `n` probes answer unhealthy, whatever they probe.
    pub fn probe_unhealthy(&self, n: u32) {
        self.lock().unhealthy_checks = n;
    }

    /// Instances of `release` never answer a probe healthily.
    pub fn never_healthy(&self, release: &str) {
        self.lock().never_healthy.insert(release.to_string());
    }

    /// The next instance started exits with code 1 after answering `probes` probes (0: it has
    /// exited before the first probe).
    pub fn exit_next_start_after(&self, probes: u32) {
        self.lock().exit_next_after = Some(probes);
    }

    /// The router counts `n` requests in flight to any endpoint, one fewer per call, down to 0.
    /// By default the router cannot count (`None`), and the engine waits the drain time.
    pub fn set_in_flight(&self, n: u64) {
        self.lock().in_flight = Some(n);
    }

    /// A live process holds the lock: `lock` answers [`LockError::Held`](crate::LockError::Held) until
    /// [`FakeWorld::release_lock`].
    pub fn hold_lock(&self, holder: LockHolder) {
        self.lock().lock = Some(holder);
    }

    /// Releases a lock set with [`FakeWorld::hold_lock`].
    pub fn release_lock(&self) {
        self.lock().lock = None;
    }

    /// A lock is left by a process that is gone: the next `lock` takes it over and says so in
    /// [`Lock::taken_over_from`](crate::Lock::taken_over_from).
    pub fn leave_stale_lock(&self, holder: LockHolder) {
        self.lock().stale_lock = Some(holder);
    }

    /// Puts a running, ready instance of `release` in `color`, points the router at it and
    /// records it as live, as a finished deploy would have.
    pub fn seed_live(&self, color: Color, release: &str) -> Instance {
        let instance = self.seed_instance(color, release, InstanceState::Running);
        let mut w = self.lock();
        w.target = Some(instance.endpoint.clone());
        w.state.live = Some(Deployment {
            color,
            release: Release::new(release).expect("seed_live needs a valid release id"),
            endpoint: instance.endpoint.clone(),
            since: time::macros::datetime!(2026-01-01 0:00 UTC),
        });
        instance
    }

    /// Puts an instance of `release` in `color` in the given state (ready when running), without
    /// routing to it or recording it.
    pub fn seed_instance(&self, color: Color, release: &str, state: InstanceState) -> Instance {
        let mut w = self.lock();
        let instance = new_instance(&mut w, color, release);
        let ready = state.is_running();
        w.instances.push(FakeInstance {
            instance: instance.clone(),
            state,
            ready,
            probes: 0,
            exit_after: None,
        });
        instance
    }

    /// Replaces the saved state.
    pub fn set_saved_state(&self, state: AppState) {
        self.lock().state = state;
    }

    /// Sets what the runtime says about an instance (for example: it exited behind the
    /// engine's back).
    pub fn set_instance_state(&self, id: &str, state: InstanceState) {
        if let Some(i) = self.lock().find(id) {
            i.state = state;
        }
    }

    // --- looking at what happened -------------------------------------------------------

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// How many calls to `call` were made so far.
    pub fn count(&self, call: FakeCall) -> u32 {
        self.lock().counts.get(&call).copied().unwrap_or(0)
    }

    /// Every instance the runtime has, in the order they were started.
    pub fn instances(&self) -> Vec<FakeInstance> {
        self.lock().instances.clone()
    }

    /// The instances in `color`.
    pub fn instances_of(&self, color: Color) -> Vec<FakeInstance> {
        self.instances()
            .into_iter()
            .filter(|i| i.instance.color == color)
            .collect()
    }

    /// Where the router points.
    pub fn router_target(&self) -> Option<Endpoint> {
        self.lock().target.clone()
    }

    /// The instance at the router's target, if any answers there.
    pub fn routed_instance(&self) -> Option<FakeInstance> {
        let w = self.lock();
        w.target.as_ref().and_then(|t| w.at(t)).cloned()
    }

    /// The saved state.
    pub fn saved_state(&self) -> AppState {
        self.lock().state.clone()
    }

    /// The saved history.
    pub fn history(&self) -> Vec<DeployRecord> {
        self.lock().history.clone()
    }

    /// Who holds the lock now.
    pub fn lock_holder(&self) -> Option<LockHolder> {
        self.lock().lock.clone()
    }

    /// The rules of the engine the world saw broken, as sentences: the router was pointed at an
    /// instance that is not running or never answered a healthy probe; the instance the router
    /// points at was stopped or removed; an instance was started in an occupied slot.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Checks DESIGN.md's invariants on the world as it is now: no violation so far, and the
    /// router points nowhere or at a running instance that passed a probe. Returns the first
    /// broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let w = self.lock();
        if let Some(v) = w.violations.first() {
            return Err(v.clone());
        }
        if let Some(split) = &w.splits.split {
            if w.target.as_ref() != Some(split.current()) {
                return Err(format!(
                    "the router splits from {}, but its target is {:?}",
                    split.current(),
                    w.target
                ));
            }
            match w.at(split.next()) {
                Some(i) if i.state.is_running() && i.ready => {}
                Some(i) => {
                    return Err(format!(
                        "the router sends {}% to {}, which is {} or never passed a probe",
                        split.percent(),
                        i.instance.id,
                        i.state
                    ))
                }
                None => {
                    return Err(format!(
                        "the router sends {}% to {}, where no instance is",
                        split.percent(),
                        split.next()
                    ))
                }
            }
        }
        if let Some(target) = &w.target {
            match w.at(target) {
                None => {
                    return Err(format!(
                        "the router points at {target}, where no instance is"
                    ))
                }
                Some(i) if !i.state.is_running() => {
                    return Err(format!(
                        "the router points at {}, which is {}",
                        i.instance.id, i.state
                    ))
                }
                Some(i) if !i.ready => {
                    return Err(format!(
                        "the router points at {}, which never passed a probe",
                        i.instance.id
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    // --- the gate every call goes through -----------------------------------------------

    pub(crate) async fn enter(&self, call: FakeCall, detail: String) -> Result<(), ComponentError> {
        let fault = {
            let mut w = self.lock();
            let n = {
                let count = w.counts.entry(call).or_insert(0);
                *count += 1;
                *count
            };
            let fault = if w.crashed {
                Some(Fault::Hang)
            } else {
                w.faults
                    .iter()
                    .position(|(c, at, _)| *c == call && *at == n)
                    .map(|at| w.faults.remove(at).2)
            };
            w.calls.push(CallRecord {
                call,
                detail: detail.clone(),
                faulted: fault.is_some(),
            });
            fault
        };
        match fault {
            None => Ok(()),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Fail(kind)) => Err(ComponentError::new(
                kind,
                format!("fake {call:?}({detail}) failed, as the test asked"),
            )),
        }
    }
}

pub(crate) fn new_instance(w: &mut Inner, color: Color, release: &str) -> Instance {
    w.next_id += 1;
    let n = w.next_id;
    Instance::new(
        color,
        release.to_string(),
        format!("{color}-{n}"),
        Endpoint::new("127.0.0.1", 20000 + u16::try_from(n % 40000).unwrap_or(0)),
    )
}
