//! `blue-green-proxy`: blue-green's own reverse proxy, made for switching.
//!
//! - **The switch** is a pointer swap: each request is bound to the target that was current
//!   when it arrived, and a switch never delays, fails or retries one.
//! - **The drain** is exact: every request and upgraded connection (WebSocket) is counted in
//!   flight on its target by a guard that drops when it ends, and a drain wait is woken the
//!   moment the count reaches zero. At the deadline, what is left is cut and counted.
//! - **Pause, resume, maintenance**: hold new requests (bounded), release them in order, or
//!   answer a maintenance page; a health path answers `200` in every mode.
//! - **Control**: a Unix socket with a small JSON API ([`control`]), or a [`ProxyHandle`] in the
//!   same process; routes kept in a state file written atomically.
//! - **Router**: [`ProxyRouter`] (over the socket) and [`EmbeddedRouter`] (in-process)
//!   implement [`blue_green_core::Router`], so the engine switches and drains through it.
//!
//! Built on hyper 1 and hyper-util: HTTP/1.1 and HTTP/2 cleartext from clients, HTTP/1.1
//! keep-alive to upstreams over hyper's own connections pooled per target, bodies streamed,
//! never buffered whole.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use blue_green_core::{Endpoint, Router};
//! use blue_green_proxy::{Proxy, ProxyConfig};
//!
//! let proxy = Proxy::start(ProxyConfig::new(["127.0.0.1:8080".parse()?])).await?;
//! let router = proxy.router("web");
//! router.route_to(&Endpoint::new("127.0.0.1", 8081)).await?; // web now goes to blue
//! # Ok(()) }
//! ```

// The sockets of a handover pass through rustix's safe `sendmsg`/`recvmsg`: no unsafe here.
#![forbid(unsafe_code)]

mod body;
mod config;
pub mod control;
mod error;
mod exchange;
mod forward;
mod gate;
mod handover;
mod proxy;
mod router;
mod routes;
mod serve;
mod state;
mod target;
mod upstream;

pub use config::{Limits, PauseLimits, ProxyConfig};
pub use control::ControlClient;
pub use error::Error;
pub use gate::Mode;
pub use proxy::{
    Drain, Expect, PreviewAnswer, Proxy, ProxyHandle, SplitAnswer, Status, Switched, TargetChange,
};
pub use router::{EmbeddedRouter, ProxyRouter, VerifyRequest};
pub use routes::{AppInfo, PreviewInfo, SplitInfo};
pub use target::TargetStats;

/// Checks a host name as the proxy keys its apps by (an exact name: letters, digits, `-` and
/// `.`), and returns it lowercased; config readers call it so a name is refused where it is
/// written, not at the first switch.
///
/// ```
/// assert_eq!(blue_green_proxy::host_name("App.Example.com").unwrap(), "app.example.com");
/// assert!(blue_green_proxy::host_name("*.example.com").is_err());
/// ```
pub fn host_name(host: &str) -> Result<String, Error> {
    routes::check_host(host)
}
