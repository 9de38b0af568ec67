//! `[router]`: nginx or none (haproxy and caddy: in their own files). The nginx values are
//! checked by the router crate's [`NginxConfig::validate`], once; this module reads them and maps
//! each refusal to its key and line.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blue_green_core::AppName;
use blue_green_router::{NginxConfig, NginxField, NginxVerify};
use toml::Spanned;

use super::super::raw::{RawRouter, Str};
use super::super::RouterConfig;
use super::Checker;

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
        self.refuse_api_router_keys(r);
        self.refuse_proxy_keys(raw);
        match r.kind.get_ref().as_str() {
            "proxy" => self.proxy(raw, app),
            "haproxy" => self
                .haproxy(raw, app)
                .map(|h| RouterConfig::Haproxy(Box::new(h))),
            "caddy" => self
                .caddy(raw, app)
                .map(|c| RouterConfig::Caddy(Box::new(c))),
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
                    format!("unknown router kind `{other}`: expected \"proxy\", \"nginx\", \"haproxy\", \"caddy\" or \"none\""),
                );
                None
            }
        }
    }

    /// Reads the nginx keys into an [`NginxConfig`] (filling `{app}` and `{config_dir}`, parsing
    /// durations) and leaves every check of the values to [`NginxConfig::validate`], whose
    /// problems are mapped to the lines of the keys that set them.
    fn nginx(&mut self, raw: &Spanned<RawRouter>, app: &AppName) -> Option<NginxConfig> {
        let r = raw.get_ref();
        let upstream = match &r.upstream {
            Some(u) => Some(self.filled(u, "router.upstream", &["app"], app)),
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
        let strings = |list: &Option<Spanned<Vec<Str>>>| -> Vec<String> {
            list.as_ref()
                .map(|l| l.get_ref().iter().map(|s| s.get_ref().clone()).collect())
                .unwrap_or_default()
        };
        let defaults = NginxConfig::new("", "");
        let verify =
            match &r.verify_url {
                Some(url) => {
                    let mut verify = NginxVerify::new(url.get_ref().clone());
                    if let Some(b) = &r.verify_body {
                        verify.expect_body = b.get_ref().clone();
                    }
                    if let Some(s) = &r.verify_successes {
                        // Out of u32's range is out of the router's range too: it says so.
                        verify.successes = u32::try_from(*s.get_ref())
                            .unwrap_or(if *s.get_ref() < 0 { 0 } else { u32::MAX });
                    }
                    verify.interval = self.duration(
                        r.verify_interval.as_ref(),
                        "router.verify_interval",
                        Duration::from_millis(20),
                        true,
                    );
                    verify.deadline = self.duration(
                        r.verify_deadline.as_ref(),
                        "router.verify_deadline",
                        verify.deadline,
                        true,
                    );
                    Some(verify)
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
        let config = NginxConfig {
            // Stand-ins for missing keys (already reported) let the other values be checked.
            upstream: upstream.clone().unwrap_or_else(|| "upstream".into()),
            upstream_file: upstream_file
                .clone()
                .unwrap_or_else(|| PathBuf::from("upstream.conf")),
            server_options: strings(&r.server_options),
            upstream_directives: strings(&r.upstream_directives),
            test_command: match &r.test_command {
                Some(c) => self.argv_filled(c),
                None => defaults.test_command,
            },
            reload_command: match &r.reload_command {
                Some(c) => self.argv_filled(c),
                None => defaults.reload_command,
            },
            command_timeout: self.duration(
                r.command_timeout.as_ref(),
                "router.command_timeout",
                defaults.command_timeout,
                true,
            ),
            verify,
            pid_file: r.pid_file.as_ref().map(|f| {
                let filled = self.filled(f, "router.pid_file", &["app"], app);
                self.path(f, "router.pid_file", &filled)
            }),
        };
        // The router's config type is the one check of these values (nothing a user types may
        // add a directive); a key this file's own reading already refused is not refused twice.
        let read_problems = self.problems.len();
        if let Err(problems) = config.validate() {
            for problem in problems {
                let (key, span) = nginx_key(raw, problem.field);
                let known = self.problems[..read_problems]
                    .iter()
                    .any(|p| p.key.as_deref() == Some(key.as_str()));
                if !known {
                    self.bad(span, &key, problem.message);
                }
            }
        }
        upstream?;
        upstream_file?;
        Some(config)
    }
}

/// The key that sets `field` (`router.verify_url`), and the span to point at: the value (the
/// list element for an option or directive), else the `[router]` table (a default was refused).
fn nginx_key(raw: &Spanned<RawRouter>, field: NginxField) -> (String, Range<usize>) {
    let r = raw.get_ref();
    let one = |v: &Option<Str>| v.as_ref().map(Spanned::span);
    let element = |list: &Option<Spanned<Vec<Str>>>, i: usize| {
        list.as_ref()
            .map(|l| l.get_ref().get(i).map_or_else(|| l.span(), Spanned::span))
    };
    let list = |l: &Option<Spanned<Vec<Str>>>| l.as_ref().map(Spanned::span);
    let (key, span) = match field {
        NginxField::Upstream => ("upstream", one(&r.upstream)),
        NginxField::UpstreamFile => ("upstream_file", one(&r.upstream_file)),
        NginxField::ServerOption(i) => ("server_options", element(&r.server_options, i)),
        NginxField::UpstreamDirective(i) => {
            ("upstream_directives", element(&r.upstream_directives, i))
        }
        NginxField::TestCommand => ("test_command", list(&r.test_command)),
        NginxField::ReloadCommand => ("reload_command", list(&r.reload_command)),
        NginxField::CommandTimeout => ("command_timeout", one(&r.command_timeout)),
        NginxField::VerifyUrl => ("verify_url", one(&r.verify_url)),
        NginxField::VerifyBody => ("verify_body", one(&r.verify_body).or(one(&r.verify_url))),
        NginxField::VerifySuccesses => (
            "verify_successes",
            r.verify_successes.as_ref().map(Spanned::span),
        ),
        NginxField::VerifyInterval => ("verify_interval", one(&r.verify_interval)),
        NginxField::VerifyDeadline => ("verify_deadline", one(&r.verify_deadline)),
        // A field added to the router later: point at the table.
        _ => return ("router".into(), raw.span()),
    };
    (format!("router.{key}"), span.unwrap_or_else(|| raw.span()))
}
