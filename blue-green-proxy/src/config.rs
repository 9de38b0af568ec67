//! [`ProxyConfig`]: where the proxy listens, where it keeps its state, and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a proxy is started. [`ProxyConfig::new`] gives safe defaults for everything but the
/// listen addresses.
///
/// ```
/// use blue_green_proxy::ProxyConfig;
///
/// let config = ProxyConfig::new(["127.0.0.1:8080".parse().unwrap()])
///     .with_control("/run/blue-green/proxy.sock")
///     .with_state_file("/var/lib/blue-green/proxy.json");
/// assert_eq!(config.health_path, "/_blue-green/health");
/// ```
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The addresses that take client traffic (HTTP/1.1 and HTTP/2 cleartext). Port 0 picks a
    /// free port; [`Proxy::local_addrs`](crate::Proxy::local_addrs) tells which.
    pub listen: Vec<SocketAddr>,
    /// The control socket's path, if the proxy is to be driven from another process. An
    /// embedder that uses [`ProxyHandle`](crate::ProxyHandle) needs none.
    pub control: Option<PathBuf>,
    /// The file the routes are kept in, so that a restarted proxy serves the same targets at
    /// once. `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
    /// A path the proxy answers itself with `200 ok`, in every mode (serving, paused,
    /// maintenance), for a load balancer or an orchestrator in front of it.
    pub health_path: String,
    /// Whether to keep `X-Forwarded-*` headers that clients send (only behind another proxy
    /// you trust). By default the proxy replaces them with what it sees.
    pub trust_forwarded_headers: bool,
    /// Limits against slow, big or broken clients and upstreams.
    pub limits: Limits,
    /// How paused requests are held.
    pub pause: PauseLimits,
}

impl ProxyConfig {
    /// A config that listens on `listen`, with no control socket, no state file and the default
    /// limits.
    pub fn new(listen: impl IntoIterator<Item = SocketAddr>) -> Self {
        ProxyConfig {
            listen: listen.into_iter().collect(),
            control: None,
            state_file: None,
            health_path: "/_blue-green/health".to_string(),
            trust_forwarded_headers: false,
            limits: Limits::default(),
            pause: PauseLimits::default(),
        }
    }

    /// The same config with a control socket at `path`.
    pub fn with_control(mut self, path: impl Into<PathBuf>) -> Self {
        self.control = Some(path.into());
        self
    }

    /// The same config with its routes kept in `path`.
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }
}

/// Limits that keep one bad client or upstream from hurting the others. Each one, when hit,
/// ends only the request or connection that hit it, with a clear status.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers) taken, in bytes: HTTP/1.1 answers `431`
    /// past it, HTTP/2 refuses the stream. At least 8 KiB.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request's head (and, on a fresh connection, its
    /// first bytes): a slowloris client is disconnected after it.
    pub header_read_timeout: Duration,
    /// How long connecting to an upstream may take before the request gets `502`.
    pub upstream_connect_timeout: Duration,
    /// How long an upstream may take to send a response's head before the request gets `504`.
    /// Bodies (an event stream, a download) are not limited by it.
    pub upstream_response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
        }
    }
}

/// How many paused requests are held, and for how long, before they are answered `503`.
#[derive(Debug, Clone)]
pub struct PauseLimits {
    /// Requests held at most; more get `503` at once.
    pub max_queued: usize,
    /// How long a request is held before it gets `503`.
    pub max_wait: Duration,
}

impl Default for PauseLimits {
    fn default() -> Self {
        PauseLimits {
            max_queued: 1024,
            max_wait: Duration::from_secs(30),
        }
    }
}
