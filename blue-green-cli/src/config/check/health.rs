//! `[health]`: the probe and the readiness policy around it.

use std::ops::Range;
use std::time::Duration;

use blue_green_core::{HttpProbeConfig, ReadinessPolicy, StatusMatch};
use toml::Spanned;

use super::super::raw::RawHealth;
use super::super::HealthConfig;
use super::{Checker, HEADER_NAME, HOST_HEADER, METHOD, URL_PATH};

impl Checker<'_> {
    // ---- health --------------------------------------------------------------------------

    pub(super) fn health(&mut self, raw: &Spanned<RawHealth>) -> (HealthConfig, ReadinessPolicy) {
        let h = raw.get_ref();
        let defaults = ReadinessPolicy::default();
        let readiness = ReadinessPolicy {
            initial_delay: self.duration(
                h.initial_delay.as_ref(),
                "health.initial_delay",
                defaults.initial_delay,
                true,
            ),
            interval: self.duration(
                h.interval.as_ref(),
                "health.interval",
                defaults.interval,
                false,
            ),
            timeout: self.duration(
                h.timeout.as_ref(),
                "health.timeout",
                defaults.timeout,
                false,
            ),
            healthy_threshold: match &h.healthy_threshold {
                Some(t) if (1..=1000).contains(t.get_ref()) => *t.get_ref() as u32,
                Some(t) => {
                    self.bad(
                        t.span(),
                        "health.healthy_threshold",
                        format!(
                            "{} is out of range: expected a number of successes from 1 to 1000",
                            t.get_ref()
                        ),
                    );
                    defaults.healthy_threshold
                }
                None => defaults.healthy_threshold,
            },
            deadline: self.duration(
                h.deadline.as_ref(),
                "health.deadline",
                defaults.deadline,
                false,
            ),
        };
        let kind = h.kind.as_ref().map_or("http", |k| k.get_ref().as_str());
        let http_keys: [(&str, Option<Range<usize>>); 6] = [
            ("path", h.path.as_ref().map(Spanned::span)),
            ("method", h.method.as_ref().map(Spanned::span)),
            ("host_header", h.host_header.as_ref().map(Spanned::span)),
            ("headers", h.headers.as_ref().map(Spanned::span)),
            ("expect_status", h.expect_status.as_ref().map(Spanned::span)),
            ("expect_body", h.expect_body.as_ref().map(Spanned::span)),
        ];
        let command_key = [("command", h.command.as_ref().map(Spanned::span))];
        let kind_span = h.kind.as_ref().map_or(raw.span(), Spanned::span);
        let kind_span = || kind_span.clone();
        let config = match kind {
            "http" => {
                self.refuse_keys("health", &command_key, "kind = \"command\" or \"exec\"");
                HealthConfig::Http(self.http(h, readiness.timeout))
            }
            "tcp" | "docker" => {
                self.refuse_keys("health", &http_keys, "kind = \"http\"");
                self.refuse_keys("health", &command_key, "kind = \"command\" or \"exec\"");
                if kind == "tcp" {
                    HealthConfig::Tcp
                } else {
                    HealthConfig::Docker
                }
            }
            "command" | "exec" => {
                self.refuse_keys("health", &http_keys, "kind = \"http\"");
                let argv = match &h.command {
                    Some(c) => self.argv(c, "health.command", false),
                    None => {
                        self.bad(kind_span(), "health.command", format!("kind = \"{kind}\" needs `command`: an argv array such as [\"curl\", \"-fsS\", \"http://127.0.0.1:8080/health\"]"));
                        Vec::new()
                    }
                };
                if kind == "command" {
                    HealthConfig::Command(argv)
                } else {
                    HealthConfig::Exec(argv)
                }
            }
            other => {
                self.bad(kind_span(), "health.kind", format!("unknown health kind `{other}`: expected \"http\", \"tcp\", \"command\", \"docker\" or \"exec\""));
                HealthConfig::Tcp
            }
        };
        (config, readiness)
    }

    fn http(&mut self, h: &RawHealth, timeout: Duration) -> HttpProbeConfig {
        let mut c = HttpProbeConfig {
            timeout,
            ..HttpProbeConfig::default()
        };
        if let Some(p) = &h.path {
            self.matches(
                p,
                "health.path",
                &URL_PATH,
                "a path starting with `/`, without spaces, for example \"/health\"",
            );
            c.path = p.get_ref().clone();
        }
        if let Some(m) = &h.method {
            self.matches(
                m,
                "health.method",
                &METHOD,
                "an HTTP method in capitals, for example \"GET\"",
            );
            c.method = m.get_ref().clone();
        }
        if let Some(hh) = &h.host_header {
            self.matches(
                hh,
                "health.host_header",
                &HOST_HEADER,
                "a host name, optionally with :PORT",
            );
            c.host_header = Some(hh.get_ref().clone());
        }
        if let Some(headers) = &h.headers {
            for (name, value) in headers.get_ref() {
                let key = format!("health.headers.{name}");
                if !HEADER_NAME.is_match(name) {
                    self.bad(
                        value.span(),
                        &key,
                        format!("`{name}` is not a valid header name: use letters, digits and `-`"),
                    );
                }
                self.no_control(value, &key);
                c.headers.push((name.clone(), value.get_ref().clone()));
            }
        }
        if let Some(s) = &h.expect_status {
            if let Some(m) = self.status_match(s) {
                c.expect_status = m;
            }
        }
        if let Some(b) = &h.expect_body {
            self.placeholders(b, "health.expect_body", &["color", "release"]);
            c.expect_body = Some(b.get_ref().clone());
        }
        c
    }

    fn status_match(&mut self, s: &Spanned<toml::Value>) -> Option<StatusMatch> {
        let key = "health.expect_status";
        let code = |v: &toml::Value| {
            v.as_integer()
                .filter(|c| (100..=599).contains(c))
                .map(|c| c as u16)
        };
        let expected = "expected a status code (200), a list ([200, 204]) or a range (\"200-399\"), with codes from 100 to 599";
        let found = match s.get_ref() {
            toml::Value::Integer(_) => code(s.get_ref()).map(StatusMatch::Code),
            toml::Value::Array(items) => items
                .iter()
                .map(code)
                .collect::<Option<Vec<u16>>>()
                .filter(|l| !l.is_empty())
                .map(StatusMatch::List),
            toml::Value::String(r) => r.split_once('-').and_then(|(a, b)| {
                let from: u16 = a.trim().parse().ok()?;
                let to: u16 = b.trim().parse().ok()?;
                ((100..=599).contains(&from) && (from..=599).contains(&to))
                    .then_some(StatusMatch::Range { from, to })
            }),
            _ => None,
        };
        if found.is_none() {
            self.bad(
                s.span(),
                key,
                format!("`{}` is not a status match: {expected}", s.get_ref()),
            );
        }
        found
    }
}
