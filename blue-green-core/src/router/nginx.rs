//! [`NginxRouter`]: renders an `upstream` block into the file nginx includes, tests, reloads,
//! restores on failure, and verifies through nginx.

use std::path::PathBuf;
use std::time::Duration;

/// How [`NginxRouter`] checks, after a reload, that requests through nginx reach the new color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxVerify {
    /// URL through nginx, for example `http://127.0.0.1/health`.
    pub url: String,
    /// The body must contain this, after `{color}` and `{release}` are filled in (default
    /// `{color}`).
    pub expect_body: String,
    /// Answers in a row needed.
    pub successes: u32,
    /// Time between two requests.
    pub interval: Duration,
    /// Give up after this long.
    pub deadline: Duration,
}

/// Everything [`NginxRouter`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxConfig {
    /// Upstream name, `[A-Za-z0-9_.-]+`.
    pub upstream: String,
    /// The file nginx includes; the router owns it.
    pub upstream_file: PathBuf,
    /// Options after `server HOST:PORT`, each checked against a strict pattern (for example
    /// `max_fails=0`).
    pub server_options: Vec<String>,
    /// Extra directives inside the upstream block, each checked against a strict pattern (for
    /// example `keepalive 16`).
    pub upstream_directives: Vec<String>,
    /// argv of the config test, for example `["nginx", "-t"]`; empty to skip.
    pub test_command: Vec<String>,
    /// argv of the reload, for example `["nginx", "-s", "reload"]`.
    pub reload_command: Vec<String>,
    /// Timeout of each command.
    pub command_timeout: Duration,
    /// Optional verification through nginx.
    pub verify: Option<NginxVerify>,
}

/// Routes through nginx. (Placeholder: being implemented.)
#[derive(Debug, Clone)]
pub struct NginxRouter {
    config: NginxConfig,
}

impl NginxRouter {
    /// A router with `config`. Names and options are checked when the router is built.
    pub fn new(config: NginxConfig) -> Self {
        NginxRouter { config }
    }

    /// Its configuration.
    pub fn config(&self) -> &NginxConfig {
        &self.config
    }
}
