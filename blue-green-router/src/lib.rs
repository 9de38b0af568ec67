//! # blue-green-router
//!
//! Routers for proxies that someone else runs, each behind its own cargo feature:
//!
//! - `haproxy`: [`haproxy::HaproxyRouter`] switches a backend between two server slots through
//!   HAProxy's runtime API (the admin socket), with no reload; it counts the old slot's
//!   sessions for the drain, cuts what is left at the deadline, and keeps a server-state file
//!   current so that a reload of HAProxy keeps the new color;
//! - `caddy`: [`caddy::CaddyRouter`] replaces the upstreams of a `reverse_proxy` handler
//!   (found by its `@id`) through Caddy's admin API.
//!
//! Both implement [`blue_green_core::Router`], so the engine drives them like any other
//! router. Every name and value that goes to the proxy is checked against a strict pattern
//! before anything is sent: nothing a user types can add a command or change another object.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "caddy")]
pub mod caddy;
#[cfg(feature = "haproxy")]
pub mod haproxy;
#[cfg(any(feature = "haproxy", feature = "caddy"))]
mod validate;
#[cfg(any(feature = "haproxy", feature = "caddy"))]
mod verify;

#[cfg(any(feature = "haproxy", feature = "caddy"))]
pub use verify::ProxyVerify;
