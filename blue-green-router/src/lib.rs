//! # blue-green-router
//!
//! [`Router`](blue_green_core::Router)s for [`blue_green_core`] that drive other people's
//! proxies. One module per proxy, each behind a cargo feature of the same name, so an embedder
//! builds only the proxies it uses:
//!
//! | module | feature | what it does |
//! | --- | --- | --- |
//! | [`nginx`] | `nginx` (default) | rewrites the `upstream` file nginx includes, tests and reloads nginx, restores the file on failure, verifies through nginx |
//!
//! haproxy and caddy come later as modules `haproxy` and `caddy`, behind features of those
//! names. The engine's own [`NoneRouter`](blue_green_core::NoneRouter) (it only records the
//! target) stays in the core.
//!
//! Every value that reaches a proxy's config is checked once, by the config type of that
//! proxy's module (for nginx [`NginxConfig::validate`]), and every refusal names the field it is
//! about, so that a caller (the CLI) can point at the line of its own file that set it.
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

pub mod error;
#[cfg(feature = "nginx")]
pub mod nginx;

pub use error::Error;
#[cfg(feature = "nginx")]
pub use nginx::{NginxConfig, NginxConfigError, NginxField, NginxRouter, NginxVerify};
