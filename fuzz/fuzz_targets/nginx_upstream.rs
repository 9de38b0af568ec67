//! The nginx router's checks and its upstream file: whatever the config holds, either a check
//! refuses it, or the rendered file is one upstream block with one server and the given
//! directives (nothing added), and reading it back gives the endpoint it was rendered for.
//! Reading any file back never panics.

#![no_main]

use std::net::IpAddr;

use blue_green_core::Endpoint;
use blue_green_router::fuzzing::nginx_parse_target;
use blue_green_router::{NginxConfig, NginxRouter, NginxVerify};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    upstream: String,
    server_options: Vec<String>,
    directives: Vec<String>,
    verify: Option<(String, String)>,
    host: String,
    port: u16,
    /// An upstream file as nginx or a person may have left it.
    file: String,
}

/// The same host, as nginx writes it and as it is read back: IPv6 addresses compare as
/// addresses, since the file holds their canonical form.
fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fuzz_target!(|input: Input| {
    let _ = nginx_parse_target(&input.file, &input.upstream);

    let mut config = NginxConfig::new(input.upstream.clone(), "/nonexistent/upstream.conf")
        .with_server_options(input.server_options.clone())
        .with_upstream_directives(input.directives.clone());
    if let Some((url, body)) = &input.verify {
        let mut verify = NginxVerify::new(url.clone());
        verify.expect_body = body.clone();
        config = config.with_verify(verify);
    }
    if let Err(problems) = config.validate() {
        assert!(!problems.is_empty());
        assert!(problems.iter().all(|p| !p.message.is_empty()));
        assert!(
            NginxRouter::new(config).is_err(),
            "the router took what validate refused"
        );
        return;
    }
    let router = NginxRouter::new(config).expect("validate accepted the config");
    let endpoint = Endpoint::new(input.host.clone(), input.port);
    let Ok(text) = router.render(&endpoint) else {
        return;
    };
    // One block, one server, the directives: no input ended a directive or added one. (The
    // first line is the router's own comment.)
    let body = text.split_once('\n').map_or("", |(_, body)| body);
    assert!(!body.contains('#'), "{text}");
    assert_eq!(body.matches('{').count(), 1, "{text}");
    assert_eq!(body.matches('}').count(), 1, "{text}");
    assert_eq!(
        body.matches(';').count(),
        1 + input.directives.len(),
        "{text}"
    );
    let back = nginx_parse_target(&text, &input.upstream)
        .unwrap_or_else(|e| panic!("the rendered file {e}: {text}"))
        .unwrap_or_else(|| panic!("the rendered file has no upstream: {text}"));
    assert_eq!(back.port, endpoint.port, "{text}");
    assert!(
        same_host(&back.host, &endpoint.host),
        "{back} from {endpoint}: {text}"
    );
});
