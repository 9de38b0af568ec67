//! The [`Runtime`] trait: what runs instances of a release in a color.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::ComponentError;
use crate::model::{Color, Instance, InstanceState, Release};

/// The name of the environment variable that tells an instance its color (`blue`, `green`).
pub const COLOR_ENV: &str = "BLUE_GREEN_COLOR";

/// The name of the environment variable that tells an instance its release id.
pub const RELEASE_ENV: &str = "BLUE_GREEN_RELEASE";

/// The environment every instance of `release` in `color` gets: [`COLOR_ENV`] and
/// [`RELEASE_ENV`], ready for `Command::envs` or a container's env list.
///
/// ```
/// use blue_green_core::runtime::instance_env;
/// use blue_green_core::{Color, Release};
///
/// let env = instance_env(Color::Green, &Release::new("v2").unwrap());
/// assert_eq!(env, [("BLUE_GREEN_COLOR", "green".to_string()), ("BLUE_GREEN_RELEASE", "v2".to_string())]);
/// ```
pub fn instance_env(color: Color, release: &Release) -> [(&'static str, String); 2] {
    [
        (COLOR_ENV, color.as_str().to_string()),
        (RELEASE_ENV, release.id.to_string()),
    ]
}

/// Runs instances of an app's releases, one slot per color. An implementation is built for one
/// app; it owns names, labels and ports, and gives every instance [`COLOR_ENV`] and
/// [`RELEASE_ENV`] in its environment ([`instance_env`] builds them).
///
/// Every method is one call to the outside world; the engine puts a timeout around each and
/// decides what to do on failure, so an implementation does not retry.
///
/// # The contract
///
/// - **Slots.** One slot per color. `start` is only called on an empty slot (the engine
///   removes what was there first), and never on the color the router points at.
/// - **Instances.** The [`Instance`] that `start` and `restart` return is what the engine keeps,
///   saves and probes. [`Instance::id`] names it for the runtime; keep your own data in
///   [`Instance::meta`] (a pid and its start time, a container id, a service version): it is
///   saved with the state and handed back to every call, and `list` should return it too, so
///   that a new process can recover what an old one started.
/// - **`restart`** starts a stopped instance again (a rollback to a color kept stopped). It may
///   return a different id, endpoint or meta (a process gets a new pid): the engine uses the
///   returned instance from then on. On an instance that is already running it must leave it
///   running and return it.
/// - **`state`** answers for that instance (by its id), not for the slot: when the slot now holds
///   another instance (another release, or the same release started again), the old one is
///   [`InstanceState::Missing`], or `Exited` if the runtime still remembers it.
/// - **`stop` and `remove`** of something already stopped or gone succeed. `stop` may take up to
///   `grace` and then kills; the engine bounds it by `grace` plus its stop margin. It may
///   return once the instance's process has exited, before the runtime's own bookkeeping is
///   done (Docker's network teardown), as long as every later call on the instance (`state`,
///   `restart`, `remove`) sees it stopped.
/// - **Blocking.** The methods run on the embedder's tokio runtime, current-thread or
///   multi-thread: never block the thread (no `std::thread::sleep`, no blocking waits on a child;
///   use `tokio::process`, `tokio::time`, or `spawn_blocking` for blocking calls;
///   `block_in_place` panics on a current-thread runtime).
/// - **Errors.** Return a [`ComponentError`] whose kind tells "could not reach the platform"
///   ([`unreachable`](ComponentError::unreachable)) from "it refused" ([`failed`](ComponentError::failed));
///   keep your own typed error with [`ComponentError::with_origin`] so callers can match it.
///
/// Implementations use the [`async_trait`](crate::async_trait) attribute, re-exported by this
/// crate (the engine uses the traits as trait objects, which native `async fn` in traits does
/// not allow):
///
/// ```
/// use std::time::Duration;
/// use blue_green_core::{Color, ComponentError, Endpoint, Instance, InstanceState, Release, Runtime};
///
/// /// Pretends to run everything on one port per color.
/// struct Nothing;
///
/// #[blue_green_core::async_trait]
/// impl Runtime for Nothing {
///     async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
///         let port = if color == Color::Blue { 8081 } else { 8082 };
///         Ok(Instance::new(color, release.id.to_string(), format!("{color}"), Endpoint::new("127.0.0.1", port)))
///     }
///     async fn state(&self, _: &Instance) -> Result<InstanceState, ComponentError> {
///         Ok(InstanceState::Running)
///     }
///     async fn stop(&self, _: &Instance, _grace: Duration) -> Result<(), ComponentError> {
///         Ok(())
///     }
///     async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
///         Ok(instance.clone())
///     }
///     async fn remove(&self, _: &Instance) -> Result<(), ComponentError> {
///         Ok(())
///     }
///     async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
///         Ok(Vec::new())
///     }
///     // `logs` has a default: no lines.
/// }
/// ```
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Starts `release` in `color` and returns once the runtime has started it (not when it is
    /// ready: readiness is probed). The color's slot is empty when this is called.
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError>;

    /// What the runtime says about `instance` now.
    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError>;

    /// Stops `instance`: a graceful stop, then a kill once `grace` has passed. Stopping an
    /// instance that is already stopped or missing is not an error.
    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError>;

    /// Starts a stopped instance again (for rollback to a stopped previous color).
    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError>;

    /// Removes `instance` and what it owns (container, project). Removing a missing instance is
    /// not an error.
    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError>;

    /// Every instance this app owns, running or not: the engine reconciles against it.
    async fn list(&self) -> Result<Vec<Instance>, ComponentError>;

    /// At most `lines` lines of the instance's output, for failure reports: the last ones, or
    /// (as the Docker runtimes do) the first after the start and the last, alike lines folded.
    /// The default has none (an empty list), for runtimes that keep no output.
    async fn logs(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, ComponentError> {
        let _ = (instance, lines);
        Ok(Vec::new())
    }
}

macro_rules! forward_runtime {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Runtime + ?Sized> Runtime for $ty {
            async fn start(
                &self,
                color: Color,
                release: &Release,
            ) -> Result<Instance, ComponentError> {
                (**self).start(color, release).await
            }
            async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
                (**self).state(instance).await
            }
            async fn stop(
                &self,
                instance: &Instance,
                grace: Duration,
            ) -> Result<(), ComponentError> {
                (**self).stop(instance, grace).await
            }
            async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
                (**self).restart(instance).await
            }
            async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
                (**self).remove(instance).await
            }
            async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
                (**self).list().await
            }
            async fn logs(
                &self,
                instance: &Instance,
                lines: usize,
            ) -> Result<Vec<String>, ComponentError> {
                (**self).logs(instance, lines).await
            }
        }
    };
}

forward_runtime!(Box<T>);
forward_runtime!(Arc<T>);
