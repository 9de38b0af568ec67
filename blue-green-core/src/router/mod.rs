//! The [`Router`] trait and the built-in routers.

pub mod nginx;
pub mod none;

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::ComponentError;
use crate::model::{Endpoint, Instance};

pub use nginx::{NginxConfig, NginxRouter, NginxVerify};
pub use none::NoneRouter;

/// Sends the app's live traffic to one endpoint.
#[async_trait]
pub trait Router: Send + Sync {
    /// Where live traffic goes now, as the router itself says (the router is the truth for
    /// "live"). `None` when it routes nowhere yet.
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError>;

    /// Sends new requests to `endpoint`. Returns once the router has taken the change; on error
    /// the previous target must still be in place.
    async fn route_to(&self, endpoint: &Endpoint) -> Result<(), ComponentError>;

    /// Checks that requests through the router now reach `instance` (for example: the router's
    /// public URL answers with the instance's color). The default trusts `route_to`.
    async fn verify(&self, instance: &Instance) -> Result<(), ComponentError> {
        let _ = instance;
        Ok(())
    }

    /// How many requests are still in flight to `endpoint`, if the router can tell. `None`
    /// means it cannot, and the engine waits the configured drain time instead.
    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        let _ = endpoint;
        Ok(None)
    }
}

macro_rules! forward_router {
    ($ty:ty) => {
        #[async_trait]
        impl<T: Router + ?Sized> Router for $ty {
            async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
                (**self).target().await
            }
            async fn route_to(&self, endpoint: &Endpoint) -> Result<(), ComponentError> {
                (**self).route_to(endpoint).await
            }
            async fn verify(&self, instance: &Instance) -> Result<(), ComponentError> {
                (**self).verify(instance).await
            }
            async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
                (**self).in_flight(endpoint).await
            }
        }
    };
}

forward_router!(Box<T>);
forward_router!(Arc<T>);
