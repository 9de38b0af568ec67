//! [`HttpProbe`]: one HTTP request to the instance's endpoint.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which status codes count as healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusMatch {
    /// Exactly this code.
    Code(u16),
    /// Any of these codes.
    List(Vec<u16>),
    /// A range, both ends included, written `"200-399"` in config.
    Range {
        /// Lowest accepted code.
        from: u16,
        /// Highest accepted code.
        to: u16,
    },
}

impl Default for StatusMatch {
    fn default() -> Self {
        StatusMatch::Code(200)
    }
}

/// How an [`HttpProbe`] asks and what it expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbeConfig {
    /// HTTP method, default `GET`.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Optional `Host` header.
    pub host_header: Option<String>,
    /// Other headers, sent as given.
    pub headers: Vec<(String, String)>,
    /// Accepted status codes.
    pub expect_status: StatusMatch,
    /// If set, the body must contain this text, after `{color}` and `{release}` are filled in
    /// from the instance probed.
    pub expect_body: Option<String>,
    /// One attempt's timeout.
    pub timeout: Duration,
}

impl Default for HttpProbeConfig {
    fn default() -> Self {
        HttpProbeConfig {
            method: "GET".into(),
            path: "/health".into(),
            host_header: None,
            headers: Vec::new(),
            expect_status: StatusMatch::default(),
            expect_body: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Probes `http://{endpoint}{path}` once per check. (Placeholder: being implemented.)
#[derive(Debug, Clone)]
pub struct HttpProbe {
    config: HttpProbeConfig,
}

impl HttpProbe {
    /// A probe with `config`.
    pub fn new(config: HttpProbeConfig) -> Self {
        HttpProbe { config }
    }

    /// Its configuration.
    pub fn config(&self) -> &HttpProbeConfig {
        &self.config
    }
}
