//! # blue-green-core
//!
//! The engine of zero-downtime blue/green deploys. An app runs as one of two colors; a deploy
//! starts the new release in the idle color, probes it directly until it is ready, switches the
//! router, verifies, drains and stops the old color — and on any failure puts everything back.
//!
//! The engine is written once, generic over four small traits:
//!
//! - [`Runtime`] runs instances (Docker, compose, processes, your own);
//! - [`HealthProbe`] checks one instance once (HTTP, TCP, a command, your own);
//! - [`Router`] sends live traffic to one endpoint ([`NoneRouter`] here; nginx in the
//!   `blue-green-router` crate; your own);
//! - [`StateStore`] keeps state, history and the lock ([`FileStore`] in a directory).
//!
//! ```no_run
//! # async fn demo<R: blue_green_core::Runtime, P: blue_green_core::HealthProbe, T: blue_green_core::Router>(runtime: R, probe: P, router: T) -> Result<(), Box<dyn std::error::Error>> {
//! use blue_green_core::{AppName, Engine, EngineConfig, FileStore, Release};
//! use blue_green_core::CancellationToken;
//!
//! let app = AppName::new("web")?;
//! let store = FileStore::new(".blue-green");
//! let engine = Engine::new(EngineConfig::new(app), runtime, probe, router, store);
//! let report = engine.deploy(Release::new("v2")?, &CancellationToken::new()).await?;
//! println!("{} is live", report.live.color);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod engine;
pub mod error;
pub mod events;
pub mod hooks;
#[cfg(feature = "mocks")]
#[cfg_attr(docsrs, doc(cfg(feature = "mocks")))]
pub mod mocks;
pub mod model;
pub mod probe;
pub mod process;
pub mod router;
pub mod runtime;
pub mod state;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use engine::{
    DeployReport, DownReport, DownTarget, Engine, EngineConfig, ErrorRate, IfLive, InstanceStatus,
    KeepPrevious, Leftover, ReadinessPolicy, RepairReport, ShiftSteps, StageReport, Status,
    SwitchPolicy, Timeouts,
};
pub use error::{
    ComponentError, ComponentErrorKind, Error, ExitClass, Leftovers, LockHolder,
    NotReady as NotReadyDetail,
};
pub use events::{Command, Event, NoopObserver, Observer, Step};
pub use hooks::{
    Chain, CommandHooks, HookCommand, HookContext, HookOutput, HookPoint, Hooks, NoHooks,
};
pub use model::{
    AppName, Artifact, Color, Endpoint, Health, Instance, InstanceState, Release, ReleaseId,
};
pub use probe::{CommandProbe, HealthProbe, TcpProbe};
#[cfg(feature = "http-probe")]
pub use probe::{HttpProbe, HttpProbeConfig, StatusMatch};
pub use router::{NoneRouter, Responses, RouteReceipt, Router, Split};
pub use runtime::{instance_env, Runtime, COLOR_ENV, RELEASE_ENV};
pub use state::file::FileStore;
pub use state::{
    AppState, DeployRecord, Deployment, HookRecord, JournalEntry, Lock, LockError, Outcome,
    StateStore, StepTiming,
};
/// The time types of the saved state and history ([`Deployment::since`],
/// [`DeployRecord::started_at`], ...), re-exported so that an embedder that builds or reads them
/// needs no dependency of its own on `time` and cannot get a second version of it.
pub use time::{self, OffsetDateTime};
pub use tokio_util::sync::CancellationToken;

/// The attribute the four traits are written with: put `#[blue_green_core::async_trait]` on
/// an `impl Runtime for ...` (and `HealthProbe`, `Router`, `StateStore`), so an embedder needs no
/// dependency of its own on `async-trait`. The traits stay on `async-trait` rather than native
/// `async fn` in traits because the engine and the CLI use them as trait objects
/// (`Box<dyn Runtime>`), which native async trait methods do not allow yet.
pub use async_trait::async_trait;
