//! The strict patterns that every value a router sends to a proxy is checked against first.
//!
//! HAProxy's runtime API reads one line of words (a space, a newline or a `;` would start a
//! new word or a new command) and Caddy's admin API takes object ids in the URL path (a `/`
//! would address another object). So a name is `[A-Za-z0-9_.-]{1,64}` and nothing else, a
//! host is an IP address or a plain host name, and a port is 1 to 65535.

use std::net::IpAddr;

use blue_green_core::{ComponentError, Endpoint};

/// The longest name accepted.
pub(crate) const NAME_MAX: usize = 64;

/// Checks `value` against `[A-Za-z0-9_.-]{1,64}`; `what` names it in the error, for example
/// "HAProxy backend name".
pub(crate) fn name(what: &str, value: &str) -> Result<(), ComponentError> {
    let ok = !value.is_empty()
        && value.len() <= NAME_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ComponentError::invalid(format!(
            "`{}` is not a valid {what}: use 1 to {NAME_MAX} characters of A-Z, a-z, 0-9, `_`, `.` and `-` (no spaces, `;`, `/` or line breaks)",
            value.escape_debug()
        )))
    }
}

/// An endpoint's host, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name of `[A-Za-z0-9.-]`, not starting with `-` or `.`.
    Name(String),
}

/// Checks `endpoint` for `proxy` (named in the error): its host is an IP address or a plain
/// host name, and its port is not 0.
pub(crate) fn endpoint(proxy: &str, endpoint: &Endpoint) -> Result<Host, ComponentError> {
    if endpoint.port == 0 {
        return Err(ComponentError::invalid(format!(
            "cannot route {proxy} to `{endpoint}`: port 0 is not a port"
        )));
    }
    let host = endpoint.host.as_str();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if ok {
        Ok(Host::Name(host.to_string()))
    } else {
        Err(ComponentError::invalid(format!(
            "cannot route {proxy} to host `{}`: use an IPv4 or IPv6 address or a host name of A-Z, a-z, 0-9, `.` and `-`",
            host.escape_debug()
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What every field of both routers must refuse.
    pub(crate) const INJECTIONS: &[&str] = &[
        "",
        " ",
        "a b",
        "a;b",
        "a\nb",
        "a\rb",
        "a\tb",
        "a/b",
        "../x",
        "a\"b",
        "a'b",
        "a$b",
        "a#b",
        "a{b",
        "a}b",
        "a:b",
        "a?b",
        "a%2fb",
        "a\0b",
        "app; shutdown sessions server app/blue",
        "app\nset server app/blue state maint",
    ];

    #[test]
    fn names_take_only_the_strict_pattern() {
        for good in ["app", "App_1.blue-x", "a", &"x".repeat(NAME_MAX)] {
            assert!(name("backend name", good).is_ok(), "{good}");
        }
        for bad in INJECTIONS
            .iter()
            .copied()
            .chain([&*"x".repeat(NAME_MAX + 1)])
        {
            let error = name("HAProxy backend name", bad).unwrap_err();
            assert!(
                error.message.contains("HAProxy backend name"),
                "{}",
                error.message
            );
        }
        let error = name("Caddy upstream id", "a\nb").unwrap_err();
        assert!(error.message.contains("`a\\nb`"), "escaped: {error}");
    }

    #[test]
    fn endpoints_are_addresses_or_plain_names_with_a_port() {
        let ip = |h: &str| endpoint("HAProxy", &Endpoint::new(h, 80));
        assert_eq!(
            ip("10.0.0.2").unwrap(),
            Host::Ip("10.0.0.2".parse().unwrap())
        );
        assert_eq!(ip("::1").unwrap(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            ip("app-green.internal").unwrap(),
            Host::Name("app-green.internal".into())
        );
        for bad in INJECTIONS
            .iter()
            .copied()
            .chain(["-a", ".a", "[::1]", "unix:/x"])
        {
            assert!(ip(bad).is_err(), "{bad:?}");
        }
        let zero = endpoint("Caddy", &Endpoint::new("127.0.0.1", 0)).unwrap_err();
        assert!(zero.message.contains("port 0"), "{zero}");
    }
}
