//! The [`Router`] trait, the [`RouteReceipt`] a switch hands to its verification, and the
//! [`NoneRouter`] (which only records the target).
//!
//! Routers that drive a proxy (nginx; later haproxy and caddy) live in the `blue-green-router`
//! crate, one cargo feature each, so the engine's crate carries no proxy code.

pub mod none;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::ComponentError;
use crate::model::{Endpoint, Instance};

pub use none::NoneRouter;

/// What a router hands back from [`Router::route_to`]: its own record of that switch, given back
/// to its [`Router::verify`] of the same switch.
///
/// The engine owns the receipt between the two calls, so a router needs no shared slot for what
/// passes from the switch to its verification (nginx's router, in `blue-green-router`, keeps the
/// worker processes it saw before the reload in it). The content is the router's own: other code only passes it on.
///
/// ```
/// use blue_green_core::RouteReceipt;
///
/// #[derive(Debug, PartialEq)]
/// struct Reloaded { generation: u64 }
///
/// let receipt = RouteReceipt::with(Reloaded { generation: 7 });
/// assert_eq!(receipt.detail::<Reloaded>(), Some(&Reloaded { generation: 7 }));
/// assert_eq!(RouteReceipt::new().detail::<Reloaded>(), None);
/// ```
#[derive(Clone, Default)]
pub struct RouteReceipt {
    detail: Option<Arc<dyn Any + Send + Sync>>,
}

impl RouteReceipt {
    /// A receipt that carries nothing (a router whose verification needs no record).
    pub fn new() -> Self {
        RouteReceipt::default()
    }

    /// A receipt carrying `detail`, for the router's own `verify`.
    pub fn with<D: Any + Send + Sync>(detail: D) -> Self {
        RouteReceipt {
            detail: Some(Arc::new(detail)),
        }
    }

    /// The detail, if this receipt carries one of type `D`.
    pub fn detail<D: Any>(&self) -> Option<&D> {
        self.detail.as_deref().and_then(|d| d.downcast_ref::<D>())
    }
}

impl fmt::Debug for RouteReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteReceipt")
            .field("detail", &self.detail.is_some())
            .finish()
    }
}

/// Sends the app's live traffic to one endpoint.
///
/// ```
/// use std::sync::Mutex;
/// use blue_green_core::{ComponentError, Endpoint, RouteReceipt, Router};
///
/// /// Remembers the target (what a router for a proxy would write into its config).
/// #[derive(Default)]
/// struct Remember(Mutex<Option<Endpoint>>);
///
/// #[blue_green_core::async_trait]
/// impl Router for Remember {
///     async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
///         Ok(self.0.lock().unwrap().clone())
///     }
///     async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
///         *self.0.lock().unwrap() = Some(endpoint.clone());
///         Ok(RouteReceipt::new())
///     }
///     // verify, in_flight and cut have defaults.
/// }
/// ```
#[async_trait]
pub trait Router: Send + Sync {
    /// Where live traffic goes now, as the router itself says (the router is the truth for
    /// "live"). `None` when it routes nowhere yet.
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError>;

    /// Sends new requests to `endpoint`. Returns once the router has taken the change, with a
    /// receipt that the engine hands back to [`Router::verify`]; on error the previous target
    /// must still be in place.
    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError>;

    /// Checks that requests through the router now reach `instance` (for example: the router's
    /// public URL answers with the instance's color), after the switch that gave `receipt`.
    /// The default trusts `route_to`.
    async fn verify(
        &self,
        instance: &Instance,
        receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        let _ = (instance, receipt);
        Ok(())
    }

    /// How many requests are still in flight to `endpoint`, if the router can tell. `None`
    /// means it cannot, and the engine waits the configured drain time instead.
    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        let _ = endpoint;
        Ok(None)
    }

    /// Waits up to `within` until nothing is in flight to `endpoint`, then says how many are
    /// left, like [`Router::in_flight`]. The engine's drain calls this rather than polling, so
    /// a router that is told the moment its count reaches zero (blue-green's own proxy) ends
    /// the drain at that moment. The default asks [`Router::in_flight`] once, without waiting,
    /// and the engine polls again later.
    async fn wait_idle(
        &self,
        endpoint: &Endpoint,
        within: Duration,
    ) -> Result<Option<u64>, ComponentError> {
        let _ = within;
        self.in_flight(endpoint).await
    }

    /// Called when the engine's drain of `endpoint` ran out of time with requests still in
    /// flight: the router closes what it still has open to `endpoint` (requests, upgraded
    /// connections) and says how many it closed, so the drain's report counts every cut. `None`
    /// (the default) means it cannot; what is left then ends when the old color stops.
    async fn cut(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
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
            async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
                (**self).route_to(endpoint).await
            }
            async fn verify(
                &self,
                instance: &Instance,
                receipt: &RouteReceipt,
            ) -> Result<(), ComponentError> {
                (**self).verify(instance, receipt).await
            }
            async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
                (**self).in_flight(endpoint).await
            }
            async fn wait_idle(
                &self,
                endpoint: &Endpoint,
                within: Duration,
            ) -> Result<Option<u64>, ComponentError> {
                (**self).wait_idle(endpoint, within).await
            }
            async fn cut(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
                (**self).cut(endpoint).await
            }
        }
    };
}

forward_router!(Box<T>);
forward_router!(Arc<T>);
