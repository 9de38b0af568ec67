//! The switch algorithm, written once and generic over [`Runtime`], [`HealthProbe`], [`Router`]
//! and [`StateStore`].
//!
//! A deploy runs these steps, each announced by an [`Event`](crate::Event) and, from `clear`
//! on, written to the journal in the saved state *before* it runs:
//!
//! `lock` → `reconcile` → `clear` → `start` → `ready` → `switch` → `verify` → `drain` → `stop`
//! → `remove` → `record`
//!
//! A failure or cancellation before the switch is verified runs `restore` (route back, remove
//! what was started). A command that finds a journal left by a killed one repairs from it
//! before anything else. Both go through one recovery planner: a pure function from the world,
//! the saved state and the intent to a list of actions, and one executor that carries them
//! out. `status` only reads: it shows the repair's plan as leftovers. `docs/architecture.md`
//! has the whole story: each step, the repair rules, the invariants and the exit classes.
//!
//! Files: `flow` (deploy, rollback, switch), `shift` (the gradual shift before a switch),
//! `watch` (the watch after it, and between shift steps), `plan` (the recovery planner),
//! `recover` (its executor: restore and repair), `reconcile`, `readiness` (and the drain), `ops`
//! (down, repair, status), `run` (one command: lock, journal, events, history), `calls` (every
//! external call with its timeout).

mod calls;
mod flow;
mod hook;
mod ops;
mod plan;
mod policy;
mod readiness;
mod reconcile;
mod recover;
mod run;
mod shift;
mod watch;

use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use policy::{ErrorRate, KeepPrevious, ReadinessPolicy, ShiftSteps, SwitchPolicy, Timeouts};

use crate::error::{Error, LockHolder};
use crate::events::{Command, NoopObserver, Observer};
use crate::hooks::{Hooks, NoHooks};
use crate::model::{AppName, Color, Endpoint, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{DeployRecord, Deployment, StateStore, StepTiming};

/// Everything the engine needs to know about one app, besides its components.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The app.
    pub app: AppName,
    /// Readiness wait.
    pub readiness: ReadinessPolicy,
    /// Drain, stop and keep.
    pub switch: SwitchPolicy,
    /// Timeouts of external calls.
    pub timeouts: Timeouts,
    /// How many log lines of a failed instance to report.
    pub log_lines: usize,
}

impl EngineConfig {
    /// Defaults for `app`.
    pub fn new(app: AppName) -> Self {
        EngineConfig {
            app,
            readiness: ReadinessPolicy::default(),
            switch: SwitchPolicy::default(),
            timeouts: Timeouts::default(),
            log_lines: 20,
        }
    }
}

/// What [`Engine::down`] takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownTarget {
    /// The idle color (both colors when nothing is live): never the live color.
    Idle,
    /// This color.
    Color(Color),
    /// Both colors.
    All,
}

/// What [`Engine::down`] does when its target includes the live color.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IfLive {
    /// Refuse with [`Error::Usage`]: the app would stop serving.
    Refuse,
    /// Take it down anyway; the app stops serving.
    TakeDown,
}

/// The result of a command that changed what serves (`deploy`, `rollback`, `switch`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeployReport {
    /// The color live now.
    pub live: Deployment,
    /// The color live before, if any.
    pub previous: Option<Color>,
    /// Each step and its time.
    pub steps: Vec<StepTiming>,
    /// Warnings that did not fail the command.
    pub warnings: Vec<String>,
}

/// The result of [`Engine::stage`] (`deploy --no-switch`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StageReport {
    /// The staged deployment: its color, release and the endpoint where it answers.
    pub staged: Deployment,
    /// Where the router previews it beside the live color, when the router has a preview
    /// ([`Router::preview`]).
    pub preview: Option<String>,
    /// The color live now (unchanged), if any.
    pub live: Option<Color>,
    /// Each step and its time.
    pub steps: Vec<StepTiming>,
    /// Warnings that did not fail the command.
    pub warnings: Vec<String>,
}

/// The result of `down`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DownReport {
    /// The instances stopped and removed.
    pub removed: Vec<Instance>,
    /// Warnings that did not fail the command (for example: the live color was taken down).
    pub warnings: Vec<String>,
}

/// One instance as `status` shows it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// The instance.
    pub instance: Instance,
    /// Its state now.
    pub state: InstanceState,
    /// Whether the router points at it.
    pub live: bool,
}

/// The result of `repair`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// The live color after the repair, as the router says.
    pub live: Option<Color>,
    /// What was repaired, one sentence each: an interrupted command finished or undone, the
    /// saved state made to agree with the router. Empty when nothing was left to repair.
    pub repaired: Vec<String>,
    /// Other warnings (a lock taken over from a process that is gone, a drain cut short).
    pub warnings: Vec<String>,
}

/// Something left to repair, as `status` found it: an interrupted command's leftovers, or a
/// saved state that disagrees with the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Leftover {
    /// What was found ("an interrupted `deploy` (pid 4242, started …) stopped at its ready
    /// step").
    pub found: String,
    /// What a repair does about it, in order ("remove green instance … (release v2) at …").
    pub repair: Vec<String>,
}

/// The answer of `status`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The app.
    pub app: AppName,
    /// The live color, as the router says.
    pub live: Option<Color>,
    /// The live deployment as recorded.
    pub deployment: Option<Deployment>,
    /// The router's target.
    pub router_target: Option<Endpoint>,
    /// The staged deployment (`deploy --no-switch`), while it stands: its instance runs and
    /// the router does not point at it.
    pub staged: Option<Deployment>,
    /// Where the router previews the staged deployment, when it has a preview.
    pub staged_preview: Option<String>,
    /// Every instance the runtime has for this app.
    pub instances: Vec<InstanceStatus>,
    /// What is left to repair. `status` changes nothing: [`Engine::repair`] repairs these, and
    /// so does the next `deploy`, `rollback`, `switch` or `down` (each reconciles first).
    pub leftovers: Vec<Leftover>,
    /// The command at work, when one holds the lock: its journal is work in progress, not a
    /// leftover.
    pub in_progress: Option<LockHolder>,
    /// Oddities a person should know.
    pub warnings: Vec<String>,
}

/// The deploy engine for one app: its config, its four components and an observer of events.
///
/// Every command takes the app's lock for its whole run, so one engine (or several processes
/// with engines over the same store) runs one command at a time; a second fails at once with
/// [`Error::Locked`]. The command futures are `Send`; dropping one mid-way is like killing the
/// process: the next command repairs from the journal.
pub struct Engine<R, P, T, S> {
    config: EngineConfig,
    runtime: R,
    probe: P,
    router: T,
    store: S,
    observer: Arc<dyn Observer>,
    hooks: Arc<dyn Hooks>,
}

impl<R: Runtime, P: HealthProbe, T: Router, S: StateStore> Engine<R, P, T, S> {
    /// An engine over the given components, with no observer.
    pub fn new(config: EngineConfig, runtime: R, probe: P, router: T, store: S) -> Self {
        Engine {
            config,
            runtime,
            probe,
            router,
            store,
            observer: Arc::new(NoopObserver),
            hooks: Arc::new(NoHooks),
        }
    }

    /// Runs `hooks` at the points of a deploy ([`HookPoint`](crate::HookPoint)); without
    /// this, an engine runs none.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Sends every event to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Replaces the configuration (for example to change a timeout between commands).
    pub fn with_config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Deploys `release` to the idle color and switches to it: lock, reconcile, clear the idle
    /// slot, start, wait until ready, switch, verify, drain, stop (or keep) the old color,
    /// record. On any failure or cancellation before the switch is verified, what was serving is
    /// left or put back as it was and the new instance is removed; if putting back fails, the
    /// error is [`Error::Inconsistent`] and names what is left.
    ///
    /// With [`SwitchPolicy::steps`] and a color live, traffic moves to the new color step by
    /// step before the switch (a split per step, each watched for
    /// [`SwitchPolicy::step_wait`]); a failure or a cancel during a step routes all traffic
    /// back to the old color and removes the new one. Steps with a router that cannot split
    /// are [`Error::Usage`], before anything starts.
    ///
    /// Cancellation is honoured until the old color begins to stop (a cancel during the drain
    /// routes back to the old color, which is still running); the stop, remove and record steps
    /// then run to their end, each bounded by its timeout.
    pub async fn deploy(
        &self,
        release: Release,
        cancel: &CancellationToken,
    ) -> Result<DeployReport, Error> {
        let mut run = self
            .begin(Command::Deploy, Some(release.id.to_string()), cancel)
            .await?;
        let result = flow::deploy(&mut run, release, false).await;
        if let Err(error) = &result {
            run.on_failure(error).await;
        }
        run.finish_switch(result).await
    }

    /// Stages `release` (`deploy --no-switch`): like [`Engine::deploy`] up to and including
    /// readiness and the `pre_switch` hook, then records the new color as staged and leaves the
    /// router as it is. The staged color runs beside the live one, reachable at its own
    /// endpoint, until [`Engine::promote`] switches to it or [`Engine::abort`] removes it. A
    /// failure removes what was started, as a deploy's does. A router with a preview
    /// ([`Router::preview`]) previews the staged color until it is promoted or removed
    /// ([`StageReport::preview`] says where); a failed preview fails the stage.
    pub async fn stage(
        &self,
        release: Release,
        cancel: &CancellationToken,
    ) -> Result<StageReport, Error> {
        let mut run = self
            .begin(Command::Stage, Some(release.id.to_string()), cancel)
            .await?;
        let result = flow::deploy(&mut run, release, true).await;
        if let Err(error) = &result {
            run.on_failure(error).await;
        }
        run.finish_stage(result).await
    }

    /// Switches to the staged color (step by step with [`SwitchPolicy::steps`], as a deploy
    /// does): re-checks its readiness, switches, verifies, ends its preview, runs the
    /// `post_switch` hook, drains and retires the old color, records, runs `post_deploy`. Same
    /// failure guarantees as [`Engine::deploy`], except that a failure leaves the staged color
    /// staged (promote again, or abort). With nothing staged it changes nothing and reports
    /// the live deployment (a second promote); with nothing staged and nothing live it is
    /// [`Error::Usage`].
    pub async fn promote(&self, cancel: &CancellationToken) -> Result<DeployReport, Error> {
        let mut run = self.begin(Command::Promote, None, cancel).await?;
        let result = flow::promote(&mut run).await;
        if let Err(error) = &result {
            run.on_failure(error).await;
        }
        run.finish_promote(result).await
    }

    /// Stops and removes the staged color and forgets it; the router is not touched. With
    /// nothing staged it changes nothing (a second abort).
    pub async fn abort(&self) -> Result<DownReport, Error> {
        let never = CancellationToken::new();
        let mut run = self.begin(Command::Abort, None, &never).await?;
        let result = ops::abort(&mut run).await;
        run.finish_abort(result).await
    }

    /// Routes back to the previous color (the one recorded as `previous`): probes it if it is
    /// running, restarts it if it was stopped, starts its release afresh if it was removed; then
    /// switches, verifies and retires the current color by [`SwitchPolicy::keep_previous`]. Same
    /// failure guarantees as [`Engine::deploy`].
    pub async fn rollback(&self, cancel: &CancellationToken) -> Result<DeployReport, Error> {
        let mut run = self.begin(Command::Rollback, None, cancel).await?;
        let result = flow::rollback(&mut run).await;
        run.finish_switch(result).await
    }

    /// Routes to `color`, which must be running and pass readiness. Unlike `deploy` and
    /// `rollback`, the color that was live keeps running (no drain, no stop), so that switching
    /// back is instant; take it down with [`Engine::down`] when it is no longer wanted.
    pub async fn switch(
        &self,
        color: Color,
        cancel: &CancellationToken,
    ) -> Result<DeployReport, Error> {
        let mut run = self.begin(Command::Switch, None, cancel).await?;
        let result = flow::switch(&mut run, color).await;
        run.finish_switch(result).await
    }

    /// Stops (with the stop timeout as grace) and removes every instance of `target`
    /// ([`DownTarget::Idle`]: the idle color, both colors when nothing is live). When the target
    /// includes the live color, `if_live` says whether to refuse (the app would stop serving) or
    /// take it down anyway.
    pub async fn down(&self, target: DownTarget, if_live: IfLive) -> Result<DownReport, Error> {
        let never = CancellationToken::new();
        let mut run = self.begin(Command::Down, None, &never).await?;
        let result = ops::down(&mut run, target, if_live == IfLive::TakeDown).await;
        run.finish_down(result).await
    }

    /// Reports the live color (as the router says), the recorded deployment, the router's
    /// target and every instance with its state, and what is left to repair
    /// ([`Status::leftovers`]). It only reads: it never stops, removes, routes or saves
    /// anything, so a dashboard may poll it. It does not wait for the lock; when it finds a
    /// journal it takes the lock for an instant, only to tell an interrupted command (whose
    /// leftovers it lists) from one at work ([`Status::in_progress`]).
    pub async fn status(&self) -> Result<Status, Error> {
        ops::status(self, &*self.observer).await
    }

    /// [`Engine::status`], with its events (only `CommandStarted` and `CommandFinished`) sent
    /// to `observer` instead of the engine's own: a dashboard that polls status can pass
    /// [`NoopObserver`] and keep the engine's observer for the commands that
    /// change something.
    pub async fn status_with(&self, observer: &dyn Observer) -> Result<Status, Error> {
        ops::status(self, observer).await
    }

    /// Repairs what an interrupted command left, by its journal (finishes it when its switch
    /// happened, undoes it otherwise), and makes the saved state agree with the router: what
    /// [`Engine::status`] lists as leftovers. Takes the lock like every command that changes
    /// something. The other commands that change something repair first, too; this one does
    /// only that. A repair that fails is [`Error::Inconsistent`], naming what is left.
    pub async fn repair(&self) -> Result<RepairReport, Error> {
        let never = CancellationToken::new();
        let mut run = self.begin(Command::Repair, None, &never).await?;
        let result = ops::repair(&mut run).await;
        run.finish_repair(result).await
    }

    /// The deploy history, oldest first.
    pub async fn history(&self) -> Result<Vec<DeployRecord>, Error> {
        self.store.history().await.map_err(|source| Error::State {
            app: self.config.app.clone(),
            source,
        })
    }
}
