//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, never on by default): the
//! crate's parsers of other programs' text and its strict checks, which are private to their
//! modules, reached without copying them. Not a stable API.

use std::collections::HashMap;

use blue_green_core::{ComponentError, Endpoint};

/// Reads back the endpoint of an nginx upstream file, as `NginxRouter::target` does.
#[cfg(feature = "nginx")]
pub fn nginx_parse_target(text: &str, upstream: &str) -> Result<Option<Endpoint>, String> {
    crate::nginx::upstream::parse_target(text, upstream)
}

/// The servers of `backend` in HAProxy's answer to `show servers state`, as
/// `(name, address, port)`.
#[cfg(feature = "haproxy")]
pub fn haproxy_parse_servers_state(
    text: &str,
    backend: &str,
) -> Result<Vec<(String, Option<std::net::IpAddr>, u16)>, String> {
    crate::haproxy::servers::parse_servers_state(text, backend).map(|servers| {
        servers
            .into_iter()
            .map(|s| (s.name, s.addr, s.port))
            .collect()
    })
}

/// In-flight requests per server in HAProxy's CSV answer to `show stat`.
#[cfg(feature = "haproxy")]
pub fn haproxy_parse_sessions(text: &str) -> Result<HashMap<String, u64>, String> {
    crate::haproxy::servers::parse_sessions(text)
}

/// The strict name check every HAProxy and Caddy name goes through.
#[cfg(any(feature = "haproxy", feature = "caddy"))]
pub fn check_name(value: &str) -> Result<(), ComponentError> {
    crate::validate::name("name", value)
}

/// The endpoint check made before HAProxy or Caddy is sent anywhere.
#[cfg(any(feature = "haproxy", feature = "caddy"))]
pub fn check_endpoint(endpoint: &Endpoint) -> Result<(), ComponentError> {
    crate::validate::endpoint("the proxy", endpoint).map(|_| ())
}

/// The `dial` address Caddy is given for an endpoint.
#[cfg(feature = "caddy")]
pub fn caddy_dial(endpoint: &Endpoint) -> Result<String, ComponentError> {
    crate::caddy::admin::dial(endpoint)
}
