//! The [`Runtime`] trait: what runs instances of a release in a color.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::ComponentError;
use crate::model::{Color, Instance, InstanceState, Release};

/// Runs instances of an app's releases, one slot per color. An implementation is built for one
/// app; it owns names, labels and ports, and gives every instance `BLUE_GREEN_COLOR` and
/// `BLUE_GREEN_RELEASE` in its environment.
///
/// Every method is one call to the outside world; the engine puts a timeout around each and
/// decides what to do on failure, so an implementation does not retry.
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

    /// The last `lines` lines of the instance's output, for failure reports. The default has
    /// none (an empty list), for runtimes that keep no output.
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
