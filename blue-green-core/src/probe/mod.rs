//! The [`HealthProbe`] trait and the built-in probes. A probe does one attempt; timing,
//! thresholds and the deadline belong to the engine's [`ReadinessPolicy`](crate::ReadinessPolicy).

pub mod command;
#[cfg(feature = "http-probe")]
pub mod http;
pub mod tcp;

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Health, Instance};

pub use command::CommandProbe;
#[cfg(feature = "http-probe")]
pub use http::{HttpProbe, HttpProbeConfig, StatusMatch};
pub use tcp::TcpProbe;

/// One health check of one instance, made directly against the instance's endpoint (never
/// through the load balancer). Errors are answers: a refused connection is
/// [`Health::Unhealthy`] with the reason.
///
/// ```
/// use blue_green_core::{Health, HealthProbe, Instance};
///
/// /// Healthy once the instance's port is even (a stand-in for a real check).
/// struct EvenPort;
///
/// #[blue_green_core::async_trait]
/// impl HealthProbe for EvenPort {
///     async fn check(&self, instance: &Instance) -> Health {
///         if instance.endpoint.port % 2 == 0 {
///             Health::Healthy
///         } else {
///             Health::Unhealthy(format!("port {} is odd", instance.endpoint.port))
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// Checks `instance` once.
    async fn check(&self, instance: &Instance) -> Health;
}

#[async_trait]
impl<T: HealthProbe + ?Sized> HealthProbe for Box<T> {
    async fn check(&self, instance: &Instance) -> Health {
        (**self).check(instance).await
    }
}

#[async_trait]
impl<T: HealthProbe + ?Sized> HealthProbe for Arc<T> {
    async fn check(&self, instance: &Instance) -> Health {
        (**self).check(instance).await
    }
}
