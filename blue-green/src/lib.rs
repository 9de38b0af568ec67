//! # blue-green
//!
//! Zero-downtime blue/green deploys as one dependency: everything of [`blue_green_core`] (the
//! engine, the four traits, probes, the file store) at the root, and the implementations in
//! other crates as modules behind features, as `kube` does:
//!
//! | feature | module | crate |
//! | --- | --- | --- |
//! | `docker` | `docker` | `blue-green-docker`: Docker and compose runtimes |
//! | `nginx` (default), `haproxy`, `caddy` | `router` | `blue-green-router` |
//! | `proxy` | `proxy` | `blue-green-proxy`: our own reverse proxy and its router |
//! | `http-probe` (default) | `HttpProbe` | core |
//! | `testing`, `mocks` | `testing`, `mocks` | core: fakes and mockall mocks |
//!
//! ```toml
//! blue-green = { version = "0.1", features = ["docker"] }
//! ```
//!
//! See `docs/embedding.md` for a complete tool built on it.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub use blue_green_core::*;

/// Docker and compose runtimes and Docker-native probes (`blue-green-docker`).
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use blue_green_docker as docker;

/// Routers for nginx, HAProxy and Caddy (`blue-green-router`), one feature each.
#[cfg(any(feature = "nginx", feature = "haproxy", feature = "caddy"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "nginx", feature = "haproxy", feature = "caddy")))
)]
pub use blue_green_router as router;

/// blue-green's own reverse proxy (`blue-green-proxy`): run it in-process and hand the engine
/// its router, or drive a `blue-green proxy run` over its control socket.
#[cfg(feature = "proxy")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy")))]
pub use blue_green_proxy as proxy;
