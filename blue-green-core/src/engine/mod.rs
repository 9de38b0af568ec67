//! The switch algorithm, written once and generic over [`Runtime`], [`HealthProbe`], [`Router`]
//! and [`StateStore`].

mod policy;

use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use policy::{KeepPrevious, ReadinessPolicy, SwitchPolicy, Timeouts};

use crate::error::Error;
use crate::events::{NoopObserver, Observer};
use crate::model::{AppName, Color, Endpoint, Instance, InstanceState, Release};
use crate::probe::HealthProbe;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::state::{DeployRecord, Deployment, StateStore, StepTiming};

/// Everything the engine needs to know about one app, besides its components.
#[derive(Debug, Clone)]
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

/// The result of a command that changed what serves (`deploy`, `rollback`, `switch`).
#[derive(Debug, Clone, Serialize)]
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

/// The result of `down`.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    /// The instances stopped and removed.
    pub removed: Vec<Instance>,
}

/// One instance as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// The instance.
    pub instance: Instance,
    /// Its state now.
    pub state: InstanceState,
    /// Whether the router points at it.
    pub live: bool,
}

/// The answer of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The app.
    pub app: AppName,
    /// The live color, as the router says.
    pub live: Option<Color>,
    /// The live deployment as recorded.
    pub deployment: Option<Deployment>,
    /// The router's target.
    pub router_target: Option<Endpoint>,
    /// Every instance the runtime has for this app.
    pub instances: Vec<InstanceStatus>,
    /// Repairs and oddities found while reconciling.
    pub warnings: Vec<String>,
}

/// The deploy engine for one app.
pub struct Engine<R, P, T, S> {
    config: EngineConfig,
    runtime: R,
    probe: P,
    router: T,
    store: S,
    observer: Arc<dyn Observer>,
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
        }
    }

    /// Sends every event to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Deploys `release` to the idle color and switches to it. On any failure or cancellation,
    /// what was serving is left or put back as it was.
    pub async fn deploy(
        &self,
        release: Release,
        cancel: &CancellationToken,
    ) -> Result<DeployReport, Error> {
        let _ = (
            release,
            cancel,
            &self.runtime,
            &self.probe,
            &self.router,
            &self.store,
        );
        todo!("engine: deploy")
    }

    /// Routes back to the previous color, starting it again if it was stopped or removed.
    pub async fn rollback(&self, cancel: &CancellationToken) -> Result<DeployReport, Error> {
        let _ = cancel;
        todo!("engine: rollback")
    }

    /// Routes to `color`, which must be running and pass readiness.
    pub async fn switch(
        &self,
        color: Color,
        cancel: &CancellationToken,
    ) -> Result<DeployReport, Error> {
        let _ = (color, cancel);
        todo!("engine: switch")
    }

    /// Stops and removes `color` (the idle one when `None`). Refuses the live color unless
    /// `force`.
    pub async fn down(&self, color: Option<Color>, force: bool) -> Result<DownReport, Error> {
        let _ = (color, force);
        todo!("engine: down")
    }

    /// Reconciles and reports the live color, instances and router target.
    pub async fn status(&self) -> Result<Status, Error> {
        todo!("engine: status")
    }

    /// The deploy history, oldest first.
    pub async fn history(&self) -> Result<Vec<DeployRecord>, Error> {
        todo!("engine: history")
    }
}
