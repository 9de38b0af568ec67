//! The upstream block, as pure functions: checking each value that reaches it, rendering it for
//! an endpoint, and reading back the endpoint of a file. No I/O.
//!
//! Every check is strict (a fixed alphabet, a fixed list of directives), so no input can end a
//! directive or add one of its own.

use std::net::{Ipv4Addr, Ipv6Addr};

use blue_green_core::{ComponentError, Endpoint, Split};

use super::NginxConfig;

/// The first line of every file the router writes.
pub(crate) const HEADER: &str =
    "# Managed by blue-green: rewritten on every switch; edits here will be lost.";

/// The comment that marks a split file, before the upstream block: `# blue-green split: current
/// HOST:PORT next HOST:PORT percent N`. It names which server is the live one (weights alone
/// cannot: at 80 percent the new one weighs more), so the file reads back as the split.
const SPLIT_MARKER: &str = "# blue-green split:";

/// Where an upstream file routes: one server, or a split between two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Routing {
    /// All requests to one endpoint.
    One(Endpoint),
    /// A gradual shift: weighted between two.
    Split(Split),
}

impl Routing {
    /// The live endpoint: the one server, or the split's current.
    pub(crate) fn target(&self) -> &Endpoint {
        match self {
            Routing::One(e) => e,
            Routing::Split(s) => s.current(),
        }
    }
}

/// Directives accepted inside the upstream block (each followed by `[A-Za-z0-9._]+` arguments).
pub(crate) const UPSTREAM_DIRECTIVES: &[&str] = &[
    "keepalive",
    "keepalive_requests",
    "keepalive_time",
    "keepalive_timeout",
    "least_conn",
    "ip_hash",
    "random",
    "zone",
    "ntlm",
];

/// The upstream file's content that routes to `endpoint` with `config`'s name, options and
/// directives (which [`NginxConfig::validate`] has checked); the endpoint is checked here.
pub(crate) fn render(config: &NginxConfig, endpoint: &Endpoint) -> Result<String, ComponentError> {
    let server = server_line(config, endpoint, None)?;
    Ok(block(config, HEADER.to_string(), &[server]))
}

/// The upstream file's content that splits new requests: `server CURRENT weight=100-P` and
/// `server NEXT weight=P`, after a marker naming the split. nginx picks a server per request
/// (weighted round robin, or whatever balancing directive the config adds): there is no
/// sticky cookie in open-source nginx's upstream block, so a client's requests may land on
/// both colors while the split lasts (`ip_hash` among the directives keeps a client address
/// on one server, weights included).
pub(crate) fn render_split(config: &NginxConfig, split: &Split) -> Result<String, ComponentError> {
    let percent = u16::from(split.percent());
    let current = server_line(config, split.current(), Some(100 - percent))?;
    let next = server_line(config, split.next(), Some(percent))?;
    let head = format!(
        "{HEADER}\n{SPLIT_MARKER} current {} next {} percent {percent}",
        split.current(),
        split.next()
    );
    Ok(block(config, head, &[current, next]))
}

/// `server HOST:PORT options…`, with `weight` given (replacing any `weight=` among the options).
fn server_line(
    config: &NginxConfig,
    endpoint: &Endpoint,
    weight: Option<u16>,
) -> Result<String, ComponentError> {
    let host = render_host(&endpoint.host).map_err(ComponentError::invalid)?;
    if endpoint.port == 0 {
        return Err(ComponentError::invalid(format!(
            "cannot route nginx to `{endpoint}`: port 0 is not a port"
        )));
    }
    let mut server = format!("server {host}:{}", endpoint.port);
    if let Some(w) = weight {
        server.push_str(&format!(" weight={w}"));
    }
    for option in &config.server_options {
        if weight.is_some() && option.starts_with("weight=") {
            continue;
        }
        server.push(' ');
        server.push_str(option);
    }
    Ok(server)
}

fn block(config: &NginxConfig, head: String, servers: &[String]) -> String {
    let mut text = format!("{head}\nupstream {} {{\n", config.upstream);
    for server in servers {
        text.push_str("    ");
        text.push_str(server);
        text.push_str(";\n");
    }
    for directive in &config.upstream_directives {
        text.push_str("    ");
        text.push_str(directive);
        text.push_str(";\n");
    }
    text.push_str("}\n");
    text
}

/// `[A-Za-z0-9_.-]{1,128}`.
pub(crate) fn check_upstream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid nginx upstream name: use 1 to 128 characters of A-Z, a-z, 0-9, `_`, `.` and `-` (nothing that could end or add a directive)",
            name.escape_debug()
        ))
    }
}

/// `[a-z_]+=[A-Za-z0-9.]+` (`max_fails=0`) or a bare `[a-z_]+` (`backup`).
pub(crate) fn check_server_option(option: &str) -> Result<(), String> {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let value =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    let ok = match option.split_once('=') {
        Some((name, val)) => word(name) && value(val),
        None => word(option),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid nginx server option: write NAME=VALUE (a-z and `_`, then A-Z, a-z, 0-9 and `.`) such as `max_fails=0`, or a bare word such as `backup`",
            option.escape_debug()
        ))
    }
}

/// A known upstream keyword, then arguments of `[A-Za-z0-9._]+`, separated by single spaces.
pub(crate) fn check_directive(directive: &str) -> Result<(), String> {
    let mut words = directive.split(' ');
    let keyword = words.next().unwrap_or_default();
    let known = UPSTREAM_DIRECTIVES.contains(&keyword);
    let args_ok = words.all(|arg| {
        !arg.is_empty()
            && arg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
    });
    if known && args_ok {
        return Ok(());
    }
    let hint = if directive.trim_end().ends_with(';') {
        " (leave out the `;`, the router adds it)"
    } else {
        ""
    };
    if known {
        return Err(format!(
            "`{}` is not an allowed nginx upstream directive{hint}: the arguments of `{keyword}` may only hold A-Z, a-z, 0-9, `.` and `_`, separated by single spaces, such as `keepalive 16`",
            directive.escape_debug()
        ));
    }
    Err(format!(
        "`{}` is not an allowed nginx upstream directive{hint}: use one of {} followed by arguments of A-Z, a-z, 0-9, `.` and `_`, separated by single spaces, such as `keepalive 16`",
        directive.escape_debug(),
        UPSTREAM_DIRECTIVES.join(", ")
    ))
}

/// The host as nginx wants it: an IPv4 address, a bracketed IPv6 address, or a host name of
/// `[A-Za-z0-9.-]`.
pub(crate) fn render_host(host: &str) -> Result<String, String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host.to_string());
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]"));
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if ok {
        Ok(host.to_string())
    } else {
        Err(format!(
            "cannot route nginx to host `{}`: use an IPv4 or IPv6 address or a host name of A-Z, a-z, 0-9, `.` and `-`",
            host.escape_debug()
        ))
    }
}

/// The endpoint of the one `server` in `upstream NAME { … }` (or a split's current); `None`
/// for a file without an upstream block. The error completes "the upstream file X …".
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_target(text: &str, upstream: &str) -> Result<Option<Endpoint>, String> {
    Ok(parse_routing(text, upstream)?.map(|r| r.target().clone()))
}

/// Where the file routes: its one `server`, or the split its marker names (whose two servers,
/// in order and with their weights, must be there); `None` for a file without an upstream
/// block. The error completes "the upstream file X …".
pub(crate) fn parse_routing(text: &str, upstream: &str) -> Result<Option<Routing>, String> {
    let marker = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(SPLIT_MARKER))
        .map(parse_marker)
        .transpose()?;
    // Tokens, with comments dropped and `;`, `{`, `}` as tokens of their own.
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let spaced = line
            .replace(';', " ; ")
            .replace('{', " { ")
            .replace('}', " } ");
        tokens.extend(spaced.split_whitespace().map(str::to_string));
    }
    if tokens.is_empty() {
        return match marker {
            Some(_) => Err("has a split marker but no upstream block".into()),
            None => Ok(None),
        };
    }
    let mut tokens = tokens.iter().map(String::as_str);
    match (tokens.next(), tokens.next(), tokens.next()) {
        (Some("upstream"), Some(name), Some("{")) if name == upstream => {}
        (Some("upstream"), Some(name), Some("{")) => {
            return Err(format!("defines upstream `{name}`, not `{upstream}`"))
        }
        _ => return Err(format!("does not start with `upstream {upstream} {{`")),
    }
    // Each server's address and its `weight=`, if any.
    let mut servers: Vec<(&str, Option<&str>)> = Vec::new();
    let mut closed = false;
    let mut statement: Vec<&str> = Vec::new();
    for token in tokens {
        match token {
            ";" => {
                if statement.first() == Some(&"server") {
                    let weight = statement[1..]
                        .iter()
                        .find_map(|w| w.strip_prefix("weight="));
                    servers.push((statement.get(1).copied().unwrap_or_default(), weight));
                }
                statement.clear();
            }
            "}" if statement.is_empty() && !closed => closed = true,
            _ if closed => return Err("has text after the upstream block".into()),
            "{" | "}" => return Err("has a nested or unbalanced block".into()),
            word => statement.push(word),
        }
    }
    if !closed || !statement.is_empty() {
        return Err("is cut short: the upstream block is not closed".into());
    }
    let endpoint = |address: &str| {
        address
            .parse::<Endpoint>()
            .map_err(|_| format!("has a server `{address}` that is not HOST:PORT"))
    };
    match (servers.as_slice(), marker) {
        ([(address, _)], None) => endpoint(address).map(|e| Some(Routing::One(e))),
        ([], _) => Err("has no `server` in its upstream block".into()),
        ([(a, wa), (b, wb)], Some(split)) => {
            let percent = split.percent().to_string();
            let rest = (100 - split.percent()).to_string();
            if endpoint(a)? == *split.current()
                && endpoint(b)? == *split.next()
                && *wa == Some(rest.as_str())
                && *wb == Some(percent.as_str())
            {
                Ok(Some(Routing::Split(split)))
            } else {
                Err(format!(
                    "has servers `{a}` and `{b}` that are not the split its marker names ({} weight={rest}, {} weight={percent})",
                    split.current(),
                    split.next()
                ))
            }
        }
        (_, Some(split)) => Err(format!(
            "has {} servers in its upstream block, but its marker names a split between two ({} and {})",
            servers.len(),
            split.current(),
            split.next()
        )),
        (many, None) => Err(format!(
            "has {} servers in its upstream block; blue-green writes exactly one (or two, with a split marker)",
            many.len()
        )),
    }
}

/// The split a marker line names, after `# blue-green split:`.
fn parse_marker(rest: &str) -> Result<Split, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let bad = || {
        format!("has a split marker `{SPLIT_MARKER}{rest}` that is not `current HOST:PORT next HOST:PORT percent N`")
    };
    match words.as_slice() {
        ["current", current, "next", next, "percent", percent] => {
            let current: Endpoint = current.parse().map_err(|_| bad())?;
            let next: Endpoint = next.parse().map_err(|_| bad())?;
            let percent: u8 = percent.parse().map_err(|_| bad())?;
            Split::new(current, next, percent).map_err(|e| format!("{}: {}", bad(), e.message))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NginxConfig {
        let mut c = NginxConfig::new("web_app-1.x", "/tmp/upstream.conf");
        c.server_options = vec!["max_fails=0".into(), "backup".into()];
        c.upstream_directives = vec!["keepalive 16".into(), "keepalive_timeout 60s".into()];
        c
    }

    #[test]
    fn renders_one_server_with_options_and_directives() {
        let c = config();
        let text = render(&c, &Endpoint::new("127.0.0.1", 8082)).unwrap();
        assert_eq!(
            text,
            format!(
                "{HEADER}\nupstream web_app-1.x {{\n    server 127.0.0.1:8082 max_fails=0 backup;\n    keepalive 16;\n    keepalive_timeout 60s;\n}}\n"
            )
        );
        let v6 = render(&c, &Endpoint::new("::1", 80)).unwrap();
        assert!(v6.contains("server [::1]:80 "), "{v6}");
        let name = render(&c, &Endpoint::new("app-green.internal", 80)).unwrap();
        assert!(name.contains("server app-green.internal:80 "), "{name}");
        let error = render(&c, &Endpoint::new("127.0.0.1", 0)).unwrap_err();
        assert!(error.message.contains("port 0"), "{error}");
    }

    #[test]
    fn what_it_renders_it_parses_back() {
        let c = config();
        for endpoint in [
            Endpoint::new("127.0.0.1", 8082),
            Endpoint::new("::1", 9000),
            Endpoint::new("green.local", 1),
        ] {
            let text = render(&c, &endpoint).unwrap();
            assert_eq!(parse_target(&text, "web_app-1.x"), Ok(Some(endpoint)));
        }
    }

    fn split(percent: u8) -> Split {
        Split::new(
            Endpoint::new("127.0.0.1", 8081),
            Endpoint::new("::1", 8082),
            percent,
        )
        .unwrap()
    }

    #[test]
    fn a_split_renders_two_weighted_servers_and_parses_back_as_the_split() {
        let mut c = config();
        c.server_options.push("weight=5".into());
        let text = render_split(&c, &split(20)).unwrap();
        assert_eq!(
            text,
            format!(
                "{HEADER}\n# blue-green split: current 127.0.0.1:8081 next [::1]:8082 percent 20\nupstream web_app-1.x {{\n    server 127.0.0.1:8081 weight=80 max_fails=0 backup;\n    server [::1]:8082 weight=20 max_fails=0 backup;\n    keepalive 16;\n    keepalive_timeout 60s;\n}}\n"
            )
        );
        for percent in [1, 20, 50, 80, 99] {
            let text = render_split(&c, &split(percent)).unwrap();
            assert_eq!(
                parse_routing(&text, "web_app-1.x"),
                Ok(Some(Routing::Split(split(percent))))
            );
            // The live target is the split's current, even when the next one weighs more.
            assert_eq!(
                parse_target(&text, "web_app-1.x"),
                Ok(Some(Endpoint::new("127.0.0.1", 8081)))
            );
        }
        let one = render(&c, &Endpoint::new("127.0.0.1", 8082)).unwrap();
        assert!(!one.contains("split"), "{one}");
        assert_eq!(
            parse_routing(&one, "web_app-1.x"),
            Ok(Some(Routing::One(Endpoint::new("127.0.0.1", 8082))))
        );
    }

    #[test]
    fn a_split_file_that_does_not_match_its_marker_is_refused() {
        let text = render_split(&config(), &split(20)).unwrap();
        let cases = [
            (
                text.replace("weight=80", "weight=70"),
                "not the split its marker names",
            ),
            (
                text.replace("percent 20", "percent 30"),
                "not the split its marker names",
            ),
            (text.replace("percent 20", "percent 100"), "1 to 99 percent"),
            (
                text.replace("percent 20", "percent x"),
                "not `current HOST:PORT",
            ),
            (
                text.replace("next [::1]:8082", "next nowhere"),
                "not `current HOST:PORT",
            ),
            (
                text.replace("    server [::1]:8082 weight=20 max_fails=0 backup;\n", ""),
                "1 servers in its upstream block, but its marker",
            ),
        ];
        for (bad, why) in cases {
            let error = parse_routing(&bad, "web_app-1.x").unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn parsing_refuses_files_it_did_not_write() {
        let name = "web";
        assert_eq!(parse_target("", name), Ok(None));
        assert_eq!(parse_target("# only a comment\n", name), Ok(None));
        let cases = [
            (
                "upstream other { server 1.2.3.4:80; }",
                "defines upstream `other`",
            ),
            ("server 1.2.3.4:80;", "does not start with"),
            ("upstream web { keepalive 2; }", "no `server`"),
            ("upstream web { server a:1; server b:2; }", "2 servers"),
            ("upstream web { server 1.2.3.4:80;", "not closed"),
            ("upstream web { server unix:/x.sock; }", "not HOST:PORT"),
            (
                "upstream web { server a:1; } server b:2;",
                "after the upstream block",
            ),
        ];
        for (text, why) in cases {
            let error = parse_target(text, name).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(
            parse_target(
                "upstream web {\n  server 10.0.0.2:81 weight=1; # hand-written\n}\n",
                name
            ),
            Ok(Some(Endpoint::new("10.0.0.2", 81)))
        );
    }

    #[test]
    fn names_options_and_directives_are_checked_strictly() {
        for good in ["web", "Web_1.a-b"] {
            assert!(check_upstream_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a b", "a;b", "a{", "a}", "a\nb", "a$b", "a\"b", "a'b", "a#b", "a/b",
        ] {
            assert!(check_upstream_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_upstream_name(&"a".repeat(129)).is_err());
        for good in [
            "max_fails=0",
            "weight=1",
            "fail_timeout=10s",
            "backup",
            "down",
        ] {
            assert!(check_server_option(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "=1",
            "a=",
            "max_fails=0;",
            "max_fails=a_b",
            "a=1 b=2",
            "a=$x",
            "a=\"1\"",
            "A=1",
            "a=1}",
            "a=1\n",
        ] {
            assert!(check_server_option(bad).is_err(), "{bad:?}");
        }
        for good in [
            "keepalive 16",
            "keepalive_timeout 60s",
            "least_conn",
            "random two least_conn",
        ] {
            assert!(check_directive(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "keepalive 16;",
            "keepalive  16",
            "keepalive\t16",
            "keepalive 16\nserver evil:1",
            "proxy_pass http://evil",
            "server 1.2.3.4:80",
            "hash $remote_addr",
            "hash x",
            "zone a=b",
            "keepalive 1}",
            "keepalive \"1\"",
            "include /etc/passwd",
        ] {
            assert!(check_directive(bad).is_err(), "{bad:?}");
        }
        assert!(check_directive("keepalive 16;")
            .unwrap_err()
            .contains("leave out the `;`"));
        assert!(check_directive("zone a=b")
            .unwrap_err()
            .contains("the arguments of `zone` may only hold"));
        assert!(check_directive("hash x")
            .unwrap_err()
            .contains("use one of"));
    }

    #[test]
    fn hosts_must_be_addresses_or_plain_names() {
        assert_eq!(render_host("10.1.2.3").unwrap(), "10.1.2.3");
        assert_eq!(render_host("::1").unwrap(), "[::1]");
        assert_eq!(
            render_host("blue.app-1.internal").unwrap(),
            "blue.app-1.internal"
        );
        for bad in [
            "",
            "a b",
            "a;b",
            "a}",
            "a{",
            "a\nb",
            "$host",
            "\"a\"",
            "-a",
            "[::1]",
            "a:b",
            "unix:/tmp/x",
            "a#b",
        ] {
            assert!(render_host(bad).is_err(), "{bad:?}");
        }
    }
}
