//! The config file as serde reads it: every value keeps its span so that a later check can name
//! the line. Polymorphic values (`expect_status`) stay `toml::Value` and are read by hand.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A string value with its place in the file.
pub type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub app: Str,
    pub state_dir: Option<Str>,
    pub runtime: Spanned<RawRuntime>,
    pub endpoints: Option<Spanned<RawPerColor>>,
    #[serde(default)]
    pub health: Option<Spanned<RawHealth>>,
    pub router: Spanned<RawRouter>,
    #[serde(default)]
    pub switch: Option<RawSwitch>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default)]
    pub hooks: Option<RawHooks>,
}

/// `blue = "..."`, `green = "..."`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerColor {
    pub blue: Str,
    pub green: Str,
}

/// `[runtime]`: one flat table for every kind, so that every key keeps its line; the checks
/// refuse keys that do not belong to the chosen kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub kind: Str,
    // compose
    pub file: Option<Str>,
    pub files: Option<Spanned<RawPerColor>>,
    pub project: Option<Str>,
    pub service: Option<Str>,
    pub tool: Option<Str>,
    pub working_dir: Option<Str>,
    // docker
    pub image: Option<Str>,
    pub publish_host: Option<Str>,
    pub network: Option<Str>,
    pub networks: Option<Spanned<Vec<Str>>>,
    pub restart_policy: Option<Str>,
    pub stop_signal: Option<Str>,
    pub labels: Option<Spanned<BTreeMap<String, Str>>>,
    pub init: Option<Spanned<bool>>,
    // swarm
    pub published_ports: Option<Spanned<RawPorts>>,
    pub publish_mode: Option<Str>,
    pub replicas: Option<Spanned<i64>>,
    pub max_replicas_per_node: Option<Spanned<i64>>,
    pub constraints: Option<Spanned<Vec<Str>>>,
    pub addresses: Option<Spanned<Vec<Str>>>,
    pub converge_timeout: Option<Str>,
    pub max_task_failures: Option<Spanned<i64>>,
    // more than one kind
    pub container_port: Option<Spanned<i64>>,
    pub env: Option<Spanned<BTreeMap<String, Str>>>,
    // docker and compose: the release command
    pub release_command: Option<Spanned<Vec<Str>>>,
    pub release_timeout: Option<Str>,
}

/// `published_ports = { blue = 8081, green = 8082 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPorts {
    pub blue: Spanned<i64>,
    pub green: Spanned<i64>,
}

/// `[health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<Str>,
    // http
    pub path: Option<Str>,
    pub method: Option<Str>,
    pub host_header: Option<Str>,
    pub headers: Option<Spanned<BTreeMap<String, Str>>>,
    pub expect_status: Option<Spanned<toml::Value>>,
    pub expect_body: Option<Str>,
    // command, exec
    pub command: Option<Spanned<Vec<Str>>>,
    // policy
    pub interval: Option<Str>,
    pub timeout: Option<Str>,
    pub initial_delay: Option<Str>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub deadline: Option<Str>,
}

/// `[router]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub kind: Str,
    // nginx
    pub upstream: Option<Str>,
    pub upstream_file: Option<Str>,
    pub server_options: Option<Spanned<Vec<Str>>>,
    pub upstream_directives: Option<Spanned<Vec<Str>>>,
    pub test_command: Option<Spanned<Vec<Str>>>,
    pub reload_command: Option<Spanned<Vec<Str>>>,
    pub command_timeout: Option<Str>,
    pub verify_url: Option<Str>,
    pub verify_body: Option<Str>,
    pub verify_successes: Option<Spanned<i64>>,
    pub verify_interval: Option<Str>,
    pub verify_deadline: Option<Str>,
    pub pid_file: Option<Str>,
    // none
    pub target_file: Option<Str>,
    // haproxy
    pub socket: Option<Str>,
    pub backend: Option<Str>,
    pub servers: Option<Spanned<RawPerColor>>,
    pub state_file: Option<Str>,
    // caddy
    pub admin: Option<Str>,
    pub upstream_id: Option<Str>,
    // proxy
    pub control: Option<Str>,
    pub hosts: Option<Spanned<Vec<Str>>>,
    pub preview_host: Option<Str>,
}

/// `[switch]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwitch {
    pub drain: Option<Str>,
    pub stop_timeout: Option<Str>,
    pub keep_previous: Option<Str>,
    pub rollback_on_post_switch_failure: Option<Spanned<bool>>,
    pub watch: Option<Str>,
    pub watch_failures: Option<Spanned<i64>>,
    pub watch_max_error_rate: Option<Spanned<f64>>,
    pub watch_min_requests: Option<Spanned<i64>>,
    pub steps: Option<Spanned<Vec<Spanned<i64>>>>,
    pub step_wait: Option<Str>,
}

/// `[hooks]`: one table per hook point.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    pub pre_deploy: Option<Spanned<RawHook>>,
    pub pre_switch: Option<Spanned<RawHook>>,
    pub post_switch: Option<Spanned<RawHook>>,
    pub post_deploy: Option<Spanned<RawHook>>,
    pub on_failure: Option<Spanned<RawHook>>,
}

/// `[hooks.pre_deploy]` and the others: an argv and its timeout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub command: Spanned<Vec<Str>>,
    pub timeout: Option<Str>,
}

/// `[timeouts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub start: Option<Str>,
    pub stop_margin: Option<Str>,
    pub runtime: Option<Str>,
    pub router: Option<Str>,
    pub store: Option<Str>,
}
