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

/// A gradual shift's share: `percent` of new requests (1 to 99) go to `next`, the rest to
/// `current`, which stays the live target until the shift ends with
/// [`Router::route_to`]`(next)`.
///
/// ```
/// use blue_green_core::{Endpoint, Split};
///
/// let split = Split::new(Endpoint::new("127.0.0.1", 8081), Endpoint::new("127.0.0.1", 8082), 10)
///     .unwrap();
/// assert_eq!(split.percent(), 10);
/// assert!(Split::new(Endpoint::new("a", 1), Endpoint::new("b", 2), 100).is_err());
/// assert!(Split::new(Endpoint::new("a", 1), Endpoint::new("a", 1), 50).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    current: Endpoint,
    next: Endpoint,
    percent: u8,
}

impl Split {
    /// A split sending `percent` (1 to 99) of new requests to `next`. 0 and 100 are not splits
    /// (route to one endpoint instead), and both endpoints must differ.
    pub fn new(current: Endpoint, next: Endpoint, percent: u8) -> Result<Split, ComponentError> {
        if !(1..=99).contains(&percent) {
            return Err(ComponentError::invalid(format!(
                "a traffic split sends 1 to 99 percent to the new color, not {percent}"
            )));
        }
        if current == next {
            return Err(ComponentError::invalid(format!(
                "a traffic split needs two different endpoints, got {current} twice"
            )));
        }
        Ok(Split {
            current,
            next,
            percent,
        })
    }

    /// The live target, which keeps `100 - percent` of new requests.
    pub fn current(&self) -> &Endpoint {
        &self.current
    }

    /// The new target, which gets `percent` of new requests.
    pub fn next(&self) -> &Endpoint {
        &self.next
    }

    /// The share of new requests that go to [`Split::next`], 1 to 99.
    pub fn percent(&self) -> u8 {
        self.percent
    }
}

/// Responses a router counted for one endpoint since it began routing there, for the watch
/// after a switch: the engine compares two readings, so only the differences matter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Responses {
    /// Every response sent to a client for a request routed to the endpoint.
    pub total: u64,
    /// Those that were errors: a 5xx from the endpoint, or the router's own 502/504 for it.
    pub errors: u64,
}

/// Sends the app's live traffic to one endpoint.
///
/// A router may also split traffic between two endpoints for a gradual shift
/// ([`Router::can_split`], [`Router::split`]); while it does, [`Router::target`] names the split's
/// `current` endpoint, and [`Router::route_to`] ends any split.
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

    /// Sends all new requests to `endpoint`, ending any [`Split`] in place. Returns once the
    /// router has taken the change, with a receipt that the engine hands back to
    /// [`Router::verify`]; on error the previous target (or split) must still be in place.
    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError>;

    /// Whether this router can split traffic ([`Router::split`]). The engine refuses a gradual
    /// shift before anything starts when it cannot. The default is `false`.
    fn can_split(&self) -> bool {
        false
    }

    /// Sends [`Split::percent`] of new requests to [`Split::next`] and the rest to
    /// [`Split::current`], replacing any split in place; a client that already went to one of
    /// the two keeps going there where the router can tell (a sticky cookie). On error the
    /// previous target or split must still be in place. The default refuses: the router cannot
    /// split.
    async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
        Err(ComponentError::invalid(format!(
            "this router cannot split traffic (asked for {}% to {}); deploy without steps",
            split.percent(),
            split.next()
        )))
    }

    /// The split in place, if any, as the router itself says. Recovery uses it to find a
    /// gradual shift that a killed command left half-way. The default (a router that cannot
    /// split) has none.
    async fn current_split(&self) -> Result<Option<Split>, ComponentError> {
        Ok(None)
    }

    /// Makes `endpoint` reachable through the router beside the live target, for a staged
    /// deploy waiting for its promotion (the built-in proxy: at a preview host name), or ends
    /// the preview when `None`. Returns where the preview is reachable (for example
    /// `http://preview.example.com`), `None` when the router has no preview (the default: the
    /// staged color is reachable at its own endpoint only).
    async fn preview(&self, endpoint: Option<&Endpoint>) -> Result<Option<String>, ComponentError> {
        let _ = endpoint;
        Ok(None)
    }

    /// The responses the router counted for `endpoint` ([`Responses`]), if it counts them; the
    /// watch after a switch fails when the share of errors between two readings passes its
    /// threshold. `None` (the default) means the router does not count: the watch probes only.
    async fn responses(&self, endpoint: &Endpoint) -> Result<Option<Responses>, ComponentError> {
        let _ = endpoint;
        Ok(None)
    }

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

    /// How many connections the router still holds open to `endpoint` (WebSockets, streams),
    /// if it can count them, for the drain's report only. The engine asks once, when the drain
    /// time is over and just before it stops the old color, and only when
    /// [`Router::in_flight`] said `None`: unlike an in-flight count, this one may miss a
    /// request that is on its way (nginx reads a request's body before it connects), so it must
    /// never end a drain early. `None` (the default) means it cannot count.
    async fn open_connections(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
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
            fn can_split(&self) -> bool {
                (**self).can_split()
            }
            async fn split(&self, split: &Split) -> Result<RouteReceipt, ComponentError> {
                (**self).split(split).await
            }
            async fn current_split(&self) -> Result<Option<Split>, ComponentError> {
                (**self).current_split().await
            }
            async fn preview(
                &self,
                endpoint: Option<&Endpoint>,
            ) -> Result<Option<String>, ComponentError> {
                (**self).preview(endpoint).await
            }
            async fn responses(
                &self,
                endpoint: &Endpoint,
            ) -> Result<Option<Responses>, ComponentError> {
                (**self).responses(endpoint).await
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
            async fn open_connections(
                &self,
                endpoint: &Endpoint,
            ) -> Result<Option<u64>, ComponentError> {
                (**self).open_connections(endpoint).await
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
