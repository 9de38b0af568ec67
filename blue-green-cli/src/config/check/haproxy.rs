//! `[router] kind = "haproxy"`, the keys that belong to no other kind, and the verification
//! keys of the routers that switch through an API (HAProxy, Caddy).
//!
//! The values are checked by the router library itself (one validator): each field is handed
//! to it alone, so that a refusal names the key and line it came from.

use blue_green_core::{AppName, ComponentError};
use blue_green_router::haproxy::{HaproxyConfig, HaproxyRouter};
use blue_green_router::ProxyVerify;
use std::ops::Range;
use toml::Spanned;

use super::super::raw::RawRouter;
use super::Checker;

/// The keys only `kind = "haproxy"` takes.
fn haproxy_keys(r: &RawRouter) -> [(&'static str, Option<Range<usize>>); 4] {
    [
        ("socket", r.socket.as_ref().map(Spanned::span)),
        ("backend", r.backend.as_ref().map(Spanned::span)),
        ("servers", r.servers.as_ref().map(Spanned::span)),
        ("state_file", r.state_file.as_ref().map(Spanned::span)),
    ]
}

/// The keys only `kind = "caddy"` takes.
fn caddy_keys(r: &RawRouter) -> [(&'static str, Option<Range<usize>>); 2] {
    [
        ("admin", r.admin.as_ref().map(Spanned::span)),
        ("upstream_id", r.upstream_id.as_ref().map(Spanned::span)),
    ]
}

/// The keys of nginx and of `none` that the API routers do not take.
fn file_router_keys(r: &RawRouter) -> [(&'static str, Option<Range<usize>>, &'static str); 9] {
    let nginx = "kind = \"nginx\"";
    [
        ("upstream", r.upstream.as_ref().map(Spanned::span), nginx),
        (
            "upstream_file",
            r.upstream_file.as_ref().map(Spanned::span),
            nginx,
        ),
        (
            "server_options",
            r.server_options.as_ref().map(Spanned::span),
            nginx,
        ),
        (
            "upstream_directives",
            r.upstream_directives.as_ref().map(Spanned::span),
            nginx,
        ),
        (
            "test_command",
            r.test_command.as_ref().map(Spanned::span),
            nginx,
        ),
        (
            "reload_command",
            r.reload_command.as_ref().map(Spanned::span),
            nginx,
        ),
        (
            "command_timeout",
            r.command_timeout.as_ref().map(Spanned::span),
            nginx,
        ),
        ("pid_file", r.pid_file.as_ref().map(Spanned::span), nginx),
        (
            "target_file",
            r.target_file.as_ref().map(Spanned::span),
            "kind = \"none\"",
        ),
    ]
}

impl Checker<'_> {
    /// Refuses HAProxy's and Caddy's keys under another router kind, and the file routers'
    /// keys under HAProxy and Caddy.
    pub(super) fn refuse_api_router_keys(&mut self, r: &RawRouter) {
        let kind = r.kind.get_ref().as_str();
        if kind != "haproxy" {
            self.refuse_keys("router", &haproxy_keys(r), "kind = \"haproxy\"");
        }
        if kind != "caddy" {
            self.refuse_keys("router", &caddy_keys(r), "kind = \"caddy\"");
        }
        if kind == "haproxy" || kind == "caddy" {
            for (key, span, only) in file_router_keys(r) {
                self.refuse_keys("router", &[(key, span)], only);
            }
        }
    }

    /// Records the library's refusal of one field as a problem of `key` at `span`.
    pub(super) fn refused_by_router<T>(
        &mut self,
        span: Range<usize>,
        key: &str,
        checked: Result<T, ComponentError>,
    ) -> bool {
        match checked {
            Ok(_) => true,
            Err(e) => {
                self.bad(span, key, e.message);
                false
            }
        }
    }

    pub(super) fn haproxy(
        &mut self,
        raw: &Spanned<RawRouter>,
        app: &AppName,
    ) -> Option<HaproxyConfig> {
        let r = raw.get_ref();
        // A stand-in for the fields not under test, so each check names one key.
        let probe = |backend: &str, blue: &str, green: &str| {
            HaproxyRouter::new(HaproxyConfig::new("/admin.sock", backend, blue, green))
        };
        let socket = match &r.socket {
            Some(s) => {
                let filled = self.filled(s, "router.socket", &["app"], app);
                Some(self.path(s, "router.socket", &filled))
            }
            None => {
                self.bad(raw.span(), "router.socket", "kind = \"haproxy\" needs `socket`: the path of HAProxy's admin socket (`stats socket PATH level admin` in its global section)");
                None
            }
        };
        let backend = match &r.backend {
            Some(b) => {
                let filled = self.filled(b, "router.backend", &["app"], app);
                self.refused_by_router(b.span(), "router.backend", probe(&filled, "a", "b"));
                Some(filled)
            }
            None => {
                self.bad(
                    raw.span(),
                    "router.backend",
                    "kind = \"haproxy\" needs `backend`: the HAProxy backend that serves the app",
                );
                None
            }
        };
        let servers = match &r.servers {
            Some(s) => {
                let pair = s.get_ref();
                let blue = self.filled(&pair.blue, "router.servers.blue", &["app"], app);
                let green = self.filled(&pair.green, "router.servers.green", &["app"], app);
                let blue_ok = self.refused_by_router(
                    pair.blue.span(),
                    "router.servers.blue",
                    probe("b", &blue, "x-other"),
                );
                let green_ok = self.refused_by_router(
                    pair.green.span(),
                    "router.servers.green",
                    probe("b", "x-other", &green),
                );
                if blue_ok && green_ok && blue == green {
                    self.bad(
                        s.span(),
                        "router.servers",
                        format!(
                            "blue and green need two different HAProxy servers, not both `{blue}`"
                        ),
                    );
                }
                Some((blue, green))
            }
            None => {
                self.bad(raw.span(), "router.servers", "kind = \"haproxy\" needs `servers = { blue = \"...\", green = \"...\" }`: the backend's two server names, one per color");
                None
            }
        };
        let state_file = r.state_file.as_ref().map(|f| {
            let filled = self.filled(f, "router.state_file", &["app"], app);
            self.path(f, "router.state_file", &filled)
        });
        let verify = self.proxy_verify(r, "HAProxy");
        let (blue, green) = servers?;
        let mut config = HaproxyConfig::new(socket?, backend?, blue, green);
        config.state_file = state_file;
        config.verify = verify;
        Some(config)
    }

    /// `verify_url` and the keys that tune it, for the routers that switch through an API;
    /// `None` without `verify_url` (and then the tuning keys are refused).
    pub(super) fn proxy_verify(&mut self, r: &RawRouter, proxy: &str) -> Option<ProxyVerify> {
        let Some(url) = &r.verify_url else {
            let tuning: [(&str, Option<Range<usize>>); 4] = [
                ("verify_body", r.verify_body.as_ref().map(Spanned::span)),
                (
                    "verify_successes",
                    r.verify_successes.as_ref().map(Spanned::span),
                ),
                (
                    "verify_interval",
                    r.verify_interval.as_ref().map(Spanned::span),
                ),
                (
                    "verify_deadline",
                    r.verify_deadline.as_ref().map(Spanned::span),
                ),
            ];
            self.refuse_keys("router", &tuning, "a router with `verify_url`");
            return None;
        };
        let defaults = ProxyVerify::new(url.get_ref().clone());
        let expect_body = match &r.verify_body {
            Some(b) => {
                self.placeholders(b, "router.verify_body", &["color", "release"]);
                b.get_ref().clone()
            }
            None => defaults.expect_body.clone(),
        };
        let successes = match &r.verify_successes {
            Some(s) if (1..=1000).contains(s.get_ref()) => *s.get_ref() as u32,
            Some(s) => {
                self.bad(
                    s.span(),
                    "router.verify_successes",
                    format!("{} is out of range: expected 1 to 1000", s.get_ref()),
                );
                defaults.successes
            }
            None => defaults.successes,
        };
        let verify = ProxyVerify {
            expect_body,
            successes,
            interval: self.duration(
                r.verify_interval.as_ref(),
                "router.verify_interval",
                defaults.interval,
                false,
            ),
            deadline: self.duration(
                r.verify_deadline.as_ref(),
                "router.verify_deadline",
                defaults.deadline,
                false,
            ),
            ..defaults
        };
        // The URL is the router's to judge (plain http://, no password in it).
        let checked = verify.validate(proxy);
        self.refused_by_router(url.span(), "router.verify_url", checked)
            .then_some(verify)
    }
}

/// `validate`'s look at HAProxy, changing nothing: the socket answers at `level admin`, the
/// backend has both servers.
pub async fn check_haproxy(config: &HaproxyConfig) -> Result<String, String> {
    let router = HaproxyRouter::new(config.clone()).map_err(|e| e.message)?;
    router.check().await.map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, RouterConfig};

    const BASE: &str = r#"
app = "web"
[runtime]
kind = "docker"
image = "web:1"
container_port = 8080
[router]
"#;

    fn problems(router: &str) -> Vec<(Option<usize>, Option<String>, String)> {
        let text = format!("{BASE}{router}");
        match parse(&text, Path::new("/etc/bg/bg.toml"), Path::new("/etc/bg")) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.line, p.key, p.message))
                .collect(),
        }
    }

    fn refused(router: &str, key: &str, line: usize, says: &str) {
        let found = problems(router);
        assert!(
            found
                .iter()
                .any(|(l, k, m)| *l == Some(line) && k.as_deref() == Some(key) && m.contains(says)),
            "expected {key} at line {line} saying `{says}`, got {found:?}"
        );
    }

    #[test]
    fn a_full_haproxy_router_reaches_the_config() {
        let text = format!(
            "{BASE}{}",
            r#"kind = "haproxy"
socket = "run/haproxy.sock"
backend = "{app}_app"
servers = { blue = "{app}_blue", green = "{app}_green" }
state_file = "/var/lib/haproxy/{app}.state"
verify_url = "http://127.0.0.1:8080/health"
verify_body = "{color} {release}"
verify_successes = 2
verify_interval = "50ms"
verify_deadline = "5s"
"#
        );
        let config = parse(&text, Path::new("/etc/bg/bg.toml"), Path::new("/etc/bg")).unwrap();
        let RouterConfig::Haproxy(h) = &config.router else {
            panic!("expected haproxy, got {:?}", config.router)
        };
        assert_eq!(h.socket, Path::new("/etc/bg/run/haproxy.sock"));
        assert_eq!(h.backend, "web_app");
        assert_eq!(h.servers.blue, "web_blue");
        assert_eq!(h.servers.green, "web_green");
        assert_eq!(
            h.state_file.as_deref(),
            Some(Path::new("/var/lib/haproxy/web.state"))
        );
        let v = h.verify.as_ref().unwrap();
        assert_eq!(v.expect_body, "{color} {release}");
        assert_eq!(v.successes, 2);
        assert_eq!(v.interval, std::time::Duration::from_millis(50));
        assert_eq!(v.deadline, std::time::Duration::from_secs(5));
    }

    #[test]
    fn haproxy_errors_name_the_key_and_line() {
        let ok = "kind = \"haproxy\"\nsocket = \"/run/h.sock\"\nbackend = \"app\"\nservers = { blue = \"b\", green = \"g\" }\n";
        assert_eq!(problems(ok), Vec::new());
        // BASE takes 7 lines; the router's keys start on line 8.
        refused(
            &ok.replace("backend = \"app\"", "backend = \"app; shutdown\""),
            "router.backend",
            10,
            "not a valid HAProxy backend name",
        );
        refused(
            &ok.replace("blue = \"b\"", "blue = \"b/c\""),
            "router.servers.blue",
            11,
            "server name (blue)",
        );
        refused(
            &ok.replace("green = \"g\"", "green = \"g\\nset\""),
            "router.servers.green",
            11,
            "server name (green)",
        );
        refused(
            &ok.replace("green = \"g\"", "green = \"b\""),
            "router.servers",
            11,
            "two different",
        );
        refused(
            "kind = \"haproxy\"\nbackend = \"app\"\nservers = { blue = \"b\", green = \"g\" }\n",
            "router.socket",
            7,
            "needs `socket`",
        );
        refused(
            &format!("{ok}verify_url = \"http://u:secret@127.0.0.1/\"\n"),
            "router.verify_url",
            12,
            "user name or password",
        );
        refused(
            &format!("{ok}verify_body = \"x\"\n"),
            "router.verify_body",
            12,
            "only applies to a router with `verify_url`",
        );
        refused(
            &format!("{ok}upstream = \"x\"\n"),
            "router.upstream",
            12,
            "only applies to kind = \"nginx\"",
        );
        refused(
            &format!("{ok}upstream_id = \"x\"\n"),
            "router.upstream_id",
            12,
            "only applies to kind = \"caddy\"",
        );
        refused(
            "kind = \"nginx\"\nupstream = \"u\"\nupstream_file = \"/u.conf\"\nsocket = \"/x.sock\"\n",
            "router.socket",
            11,
            "only applies to kind = \"haproxy\"",
        );
    }
}
