//! # blue-green-docker
//!
//! Runtimes for [`blue_green_core`] that run an app's releases in Docker: [`DockerRuntime`]
//! (plain containers over the Docker API) and [`ComposeRuntime`] (a compose project per
//! color), plus Docker-native probes.

#![warn(missing_docs)]

pub mod config;

pub use config::{ComposeConfig, ComposeFiles, ComposeTool, DockerConfig, PerColor};

/// Runs releases as containers named `{app}-{color}`. (Placeholder: being implemented.)
#[derive(Debug)]
pub struct DockerRuntime;

/// Runs releases as compose projects, one per color. (Placeholder: being implemented.)
#[derive(Debug)]
pub struct ComposeRuntime;
