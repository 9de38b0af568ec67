//! Every router's input checks (HAProxy, Caddy, the built-in proxy; nginx has its own target)
//! and the parsers of what HAProxy answers: a value either is refused with a message or
//! holds nothing that could start another word, command or path; an accepted endpoint or
//! address writes back to the same value; no text panics a parser.

#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use blue_green_core::Endpoint;
use blue_green_router::caddy::{CaddyAdmin, CaddyConfig, CaddyRouter};
use blue_green_router::fuzzing::{
    caddy_dial, check_endpoint, check_name, haproxy_parse_servers_state, haproxy_parse_sessions,
};
use blue_green_router::haproxy::{HaproxyConfig, HaproxyRouter};
use blue_green_router::ProxyVerify;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    backend: String,
    blue: String,
    green: String,
    socket: String,
    verify_url: Option<String>,
    caddy_admin: String,
    endpoint: String,
    host: String,
    port: u16,
    /// An answer of HAProxy's runtime API.
    answer: String,
}

/// What a name must never hold: anything that ends a word, a command or a path segment.
fn harmless(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ";/#\"'$:{}?%\\".contains(c))
}

fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fuzz_target!(|input: Input| {
    if check_name(&input.name).is_ok() {
        assert!(harmless(&input.name), "{:?}", input.name);
    }

    // HAProxy: a router is built only from names that pass the strict check.
    let mut config = HaproxyConfig::new(
        input.socket.clone(),
        input.backend.clone(),
        input.blue.clone(),
        input.green.clone(),
    );
    config.timeout = Duration::from_secs(1);
    config.verify = input.verify_url.clone().map(ProxyVerify::new);
    if HaproxyRouter::new(config).is_ok() {
        for name in [&input.backend, &input.blue, &input.green] {
            assert!(harmless(name), "HAProxy took {name:?}");
        }
    }
    let _ = haproxy_parse_servers_state(&input.answer, &input.backend);
    let _ = haproxy_parse_sessions(&input.answer);

    // Caddy: an admin address writes back to itself; a router needs a harmless @id.
    if let Ok(admin) = input.caddy_admin.parse::<CaddyAdmin>() {
        let again: CaddyAdmin = admin
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{admin} does not read back: {e}"));
        assert_eq!(again, admin);
        if CaddyRouter::new(CaddyConfig::new(admin, input.name.clone())).is_ok() {
            assert!(harmless(&input.name));
        }
    }

    // Endpoints as written in a config, and as Caddy is told to dial them.
    if let Ok(endpoint) = input.endpoint.parse::<Endpoint>() {
        let again: Endpoint = endpoint
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{endpoint:?} does not read back: {e}"));
        assert_eq!(again, endpoint);
    }
    let endpoint = Endpoint::new(input.host.clone(), input.port);
    if check_endpoint(&endpoint).is_ok() {
        let dial = caddy_dial(&endpoint).expect("a checked endpoint has a dial address");
        assert!(!dial.contains(['/', ' ', '"', '\n']), "{dial}");
        let back: Endpoint = dial.parse().expect("a dial address is HOST:PORT");
        assert_eq!(back.port, endpoint.port);
        assert!(
            same_host(&back.host, &endpoint.host),
            "{dial} for {endpoint:?}"
        );
    }

    // The built-in proxy: host names and verify URLs.
    if let Ok(host) = blue_green_proxy::host_name(&input.host) {
        assert_eq!(blue_green_proxy::host_name(&host).ok(), Some(host.clone()));
        assert!(harmless(&host), "{host:?}");
    }
    if let Some(url) = &input.verify_url {
        let _ = blue_green_proxy::VerifyRequest::new(url);
    }
});
