//! # blue-green-router
//!
//! [`Router`](blue_green_core::Router)s for [`blue_green_core`] that drive other people's
//! proxies. One module per proxy, each behind a cargo feature of the same name, so an embedder
//! builds only the proxies it uses:
//!
//! | module | feature | what it does |
//! | --- | --- | --- |
//! | [`nginx`] | `nginx` (default) | rewrites the `upstream` file nginx includes, tests and reloads nginx, restores the file on failure, verifies through nginx |
//! | [`haproxy`] | `haproxy` (default) | switches a backend between two server slots through HAProxy's runtime API (the admin socket), with no reload; counts the old slot's sessions for the drain, cuts what is left at the deadline, and keeps a server-state file current so that a reload of HAProxy keeps the new color |
//! | [`caddy`] | `caddy` (default) | replaces the upstreams of a `reverse_proxy` handler (found by its `@id`) through Caddy's admin API |
//!
//! The engine's own [`NoneRouter`](blue_green_core::NoneRouter) (it only records the target)
//! stays in the core, and our own proxy is the crate `blue-green-proxy`.
//!
//! Every value that reaches a proxy's config or API is checked once, by that proxy's module,
//! against a strict pattern before anything is written or sent (for nginx
//! [`NginxConfig::validate`], whose refusals name the field they are about, so that a caller
//! such as the CLI can point at the line of its own file that set it): nothing a user types can
//! add a directive or a command.
//!
//! ```no_run
//! # #[cfg(feature = "nginx")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use blue_green_core::{Endpoint, Router};
//! use blue_green_router::{NginxConfig, NginxRouter};
//!
//! let router = NginxRouter::new(NginxConfig::new("web", "/etc/nginx/conf.d/web-upstream.conf"))?;
//! let receipt = router.route_to(&Endpoint::new("127.0.0.1", 8082)).await?;
//! # let _ = receipt;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "caddy")]
pub mod caddy;
pub mod error;
/// Entry points for the fuzz targets in `fuzz/`; not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "haproxy")]
pub mod haproxy;
#[cfg(feature = "nginx")]
pub mod nginx;
#[cfg(any(feature = "haproxy", feature = "caddy"))]
mod validate;
#[cfg(any(feature = "haproxy", feature = "caddy"))]
mod verify;

pub use error::Error;
#[cfg(feature = "nginx")]
pub use nginx::{
    NginxConfig, NginxConfigError, NginxField, NginxRouter, NginxVerify, PrivateNginx,
};
#[cfg(any(feature = "haproxy", feature = "caddy"))]
pub use verify::ProxyVerify;
