//! # blue-green-docker
//!
//! Runtimes for [`blue_green_core`] that run an app's releases in Docker, and Docker-native
//! health probes:
//!
//! - [`DockerRuntime`]: plain containers named `{app}-{color}` over the Docker API (bollard);
//! - [`ComposeRuntime`]: a compose project per color, driven through `docker compose` (v2) or
//!   `docker-compose` (v1), with the service's state read through the Docker API;
//! - [`SwarmRuntime`]: a Docker Swarm service per color, N tasks over the swarm's nodes,
//!   answering on the color's published port;
//! - [`ContainerHealthProbe`] (the image's `HEALTHCHECK` status) and [`ExecProbe`] (a command
//!   run inside the container);
//! - [`ReleaseCommand`]: a release command (migrations) run once before the new color starts,
//!   in a one-off container of the new release, as a `pre_deploy` hook.
//!
//! Every instance gets `BLUE_GREEN_COLOR` and `BLUE_GREEN_RELEASE` in its environment (compose:
//! also for `${...}` interpolation in the compose file). Errors are one [`Error`] enum whose
//! messages say what to do; it converts into [`blue_green_core::ComponentError`] with the kind
//! the engine needs (an unreachable daemon is [`ComponentErrorKind::Unreachable`]).
//!
//! [`ComponentErrorKind::Unreachable`]: blue_green_core::ComponentErrorKind::Unreachable

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
pub mod compose;
pub mod config;
mod container;
pub mod docker;
pub mod error;
pub mod probe;
pub mod release;
pub mod swarm;

pub use compose::ComposeRuntime;
pub use config::{
    ComposeConfig, ComposeFiles, ComposeTool, DockerConfig, PerColor, PublishMode, SwarmConfig,
};
pub use docker::DockerRuntime;
pub use error::Error;
pub use probe::{ContainerHealthProbe, ExecProbe};
pub use release::ReleaseCommand;
pub use swarm::SwarmRuntime;
