//! `[router]`: nginx or none.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use blue_green_core::{AppName, NginxConfig, NginxRouter, NginxVerify};
use toml::Spanned;

use super::super::raw::RawRouter;
use super::super::RouterConfig;
use super::{Checker, SERVER_OPTION, UPSTREAM, UPSTREAM_DIRECTIVE, URL};

impl Checker<'_> {
    // ---- router --------------------------------------------------------------------------

    pub(super) fn router(
        &mut self,
        raw: &Spanned<RawRouter>,
        app: &AppName,
        state_dir: &Path,
    ) -> Option<RouterConfig> {
        let r = raw.get_ref();
        let nginx_keys: [(&str, Option<Range<usize>>); 12] = [
            ("upstream", r.upstream.as_ref().map(Spanned::span)),
            ("upstream_file", r.upstream_file.as_ref().map(Spanned::span)),
            (
                "server_options",
                r.server_options.as_ref().map(Spanned::span),
            ),
            (
                "upstream_directives",
                r.upstream_directives.as_ref().map(Spanned::span),
            ),
            ("test_command", r.test_command.as_ref().map(Spanned::span)),
            (
                "reload_command",
                r.reload_command.as_ref().map(Spanned::span),
            ),
            (
                "command_timeout",
                r.command_timeout.as_ref().map(Spanned::span),
            ),
            ("verify_url", r.verify_url.as_ref().map(Spanned::span)),
            ("pid_file", r.pid_file.as_ref().map(Spanned::span)),
            ("verify_body", r.verify_body.as_ref().map(Spanned::span)),
            (
                "verify_successes",
                r.verify_successes.as_ref().map(Spanned::span),
            ),
            (
                "verify_interval",
                r.verify_interval.as_ref().map(Spanned::span),
            ),
        ];
        self.refuse_proxy_keys(raw);
        match r.kind.get_ref().as_str() {
            "proxy" => self.proxy(raw, app),
            "nginx" => {
                self.refuse_keys(
                    "router",
                    &[("target_file", r.target_file.as_ref().map(Spanned::span))],
                    "kind = \"none\"",
                );
                self.nginx(raw, app)
                    .map(|n| RouterConfig::Nginx(Box::new(n)))
            }
            "none" => {
                self.refuse_keys("router", &nginx_keys, "kind = \"nginx\"");
                self.refuse_keys(
                    "router",
                    &[(
                        "verify_deadline",
                        r.verify_deadline.as_ref().map(Spanned::span),
                    )],
                    "kind = \"nginx\"",
                );
                let target_file = match &r.target_file {
                    Some(t) => {
                        let filled = self.filled(t, "router.target_file", &["app"], app);
                        self.path(t, "router.target_file", &filled)
                    }
                    None => state_dir.join("router-target"),
                };
                Some(RouterConfig::None { target_file })
            }
            other => {
                self.bad(
                    r.kind.span(),
                    "router.kind",
                    format!(
                        "unknown router kind `{other}`: expected \"proxy\", \"nginx\" or \"none\""
                    ),
                );
                None
            }
        }
    }

    fn nginx(&mut self, raw: &Spanned<RawRouter>, app: &AppName) -> Option<NginxConfig> {
        let r = raw.get_ref();
        let upstream = match &r.upstream {
            Some(u) => {
                let filled = self.filled(u, "router.upstream", &["app"], app);
                if !UPSTREAM.is_match(&filled) {
                    self.bad(u.span(), "router.upstream", format!("`{}` is not a safe nginx upstream name: use only letters, digits, `_`, `.` and `-` (nothing that could end or add a directive)", u.get_ref()));
                }
                Some(filled)
            }
            None => {
                self.bad(raw.span(), "router.upstream", "kind = \"nginx\" needs `upstream`: the name of the upstream block that your nginx server's proxy_pass uses");
                None
            }
        };
        let upstream_file = match &r.upstream_file {
            Some(f) => {
                let filled = self.filled(f, "router.upstream_file", &["app"], app);
                Some(self.path(f, "router.upstream_file", &filled))
            }
            None => {
                self.bad(raw.span(), "router.upstream_file", "kind = \"nginx\" needs `upstream_file`: the file your nginx config includes, which blue-green rewrites");
                None
            }
        };
        let mut server_options = Vec::new();
        if let Some(list) = &r.server_options {
            for o in list.get_ref() {
                self.matches(
                    o,
                    "router.server_options",
                    &SERVER_OPTION,
                    "an nginx server parameter such as \"max_fails=0\" or \"fail_timeout=5s\"",
                );
                server_options.push(o.get_ref().clone());
            }
        }
        let mut upstream_directives = Vec::new();
        if let Some(list) = &r.upstream_directives {
            for d in list.get_ref() {
                self.matches(
                    d,
                    "router.upstream_directives",
                    &UPSTREAM_DIRECTIVE,
                    "an nginx upstream directive without `;`, such as \"keepalive 16\"",
                );
                upstream_directives.push(d.get_ref().clone());
            }
        }
        let test_command = match &r.test_command {
            Some(c) => self.argv(c, "router.test_command", true),
            None => vec!["nginx".into(), "-t".into()],
        };
        let reload_command = match &r.reload_command {
            Some(c) => self.argv(c, "router.reload_command", false),
            None => vec!["nginx".into(), "-s".into(), "reload".into()],
        };
        let command_timeout = self.duration(
            r.command_timeout.as_ref(),
            "router.command_timeout",
            Duration::from_secs(30),
            false,
        );
        let verify = match &r.verify_url {
            Some(url) => {
                self.matches(url, "router.verify_url", &URL, "an http:// or https:// URL through nginx, for example \"http://127.0.0.1/health\"");
                let expect_body = match &r.verify_body {
                    Some(b) => {
                        self.placeholders(b, "router.verify_body", &["color", "release"]);
                        b.get_ref().clone()
                    }
                    None => "{color}".to_string(),
                };
                let successes = match &r.verify_successes {
                    Some(s) if (1..=1000).contains(s.get_ref()) => *s.get_ref() as u32,
                    Some(s) => {
                        self.bad(
                            s.span(),
                            "router.verify_successes",
                            format!("{} is out of range: expected 1 to 1000", s.get_ref()),
                        );
                        1
                    }
                    None => 3,
                };
                Some(NginxVerify {
                    url: url.get_ref().clone(),
                    expect_body,
                    successes,
                    interval: self.duration(
                        r.verify_interval.as_ref(),
                        "router.verify_interval",
                        Duration::from_millis(20),
                        false,
                    ),
                    deadline: self.duration(
                        r.verify_deadline.as_ref(),
                        "router.verify_deadline",
                        Duration::from_secs(10),
                        false,
                    ),
                })
            }
            None => {
                let verify_only: [(&str, Option<Range<usize>>); 4] = [
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
                self.refuse_keys("router", &verify_only, "a router with `verify_url`");
                None
            }
        };
        let pid_file = r.pid_file.as_ref().map(|f| {
            let filled = self.filled(f, "router.pid_file", &["app"], app);
            self.path(f, "router.pid_file", &filled)
        });
        let config = NginxConfig {
            upstream: upstream?,
            upstream_file: upstream_file?,
            server_options,
            upstream_directives,
            test_command,
            reload_command,
            command_timeout,
            verify,
            pid_file,
        };
        // The router checks names and options itself (strictly: nothing a user types may add a
        // directive); building it here touches nothing and turns its refusal into a config error.
        if self.problems.is_empty() {
            if let Err(e) = NginxRouter::new(config.clone()) {
                self.bad(raw.span(), "router", e.message);
                return None;
            }
        }
        Some(config)
    }
}
