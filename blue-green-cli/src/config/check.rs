//! Turns the raw file into a [`Config`]: every value is checked against what its key expects,
//! every problem is collected with its line, and keys that do not belong to the chosen kind are
//! refused.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use blue_green_core::{
    AppName, Endpoint, EngineConfig, HttpProbeConfig, KeepPrevious, NginxConfig, NginxRouter,
    NginxVerify, ReadinessPolicy, StatusMatch, SwitchPolicy, Timeouts,
};
use blue_green_docker::{ComposeConfig, ComposeFiles, ComposeTool, DockerConfig, PerColor};
use regex::Regex;
use toml::Spanned;

use super::raw::{
    RawConfig, RawHealth, RawPerColor, RawRouter, RawRuntime, RawSwitch, RawTimeouts, Str,
};
use super::{Config, ConfigError, HealthConfig, Problem, RouterConfig, RuntimeConfig, Source};

fn pattern(re: &str) -> Regex {
    // The patterns below are literals, checked by the unit tests.
    Regex::new(re).unwrap_or_else(|e| panic!("bad built-in pattern {re}: {e}"))
}

static COMPOSE_PROJECT: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-z0-9][a-z0-9_-]*$"));
static SERVICE: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"));
static DOCKER_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"));
pub(super) static IMAGE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"));
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"));
static LABEL: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$"));
static SIGNAL: LazyLock<Regex> = LazyLock::new(|| pattern(r"^(SIG[A-Z0-9+]+|[A-Z0-9+]+|[0-9]+)$"));
static METHOD: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Z]{1,16}$"));
static HOST_HEADER: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"));
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9-]+$"));
static URL_PATH: LazyLock<Regex> = LazyLock::new(|| pattern(r"^/[\x21-\x7e]*$"));
static UPSTREAM: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9_.-]+$"));
static SERVER_OPTION: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-z_]+(=[A-Za-z0-9_.]+)?$"));
static UPSTREAM_DIRECTIVE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[a-z_]+( [A-Za-z0-9_.=]+)*$"));
static URL: LazyLock<Regex> = LazyLock::new(|| pattern(r"^https?://[\x21-\x7e]+$"));

const RESERVED_ENV: [&str; 2] = ["BLUE_GREEN_COLOR", "BLUE_GREEN_RELEASE"];

/// Collects problems while building a [`Config`].
pub(super) struct Checker<'a> {
    src: Source<'a>,
    dir: &'a Path,
    problems: Vec<Problem>,
    /// `[endpoints]` is in the file (even if a value in it was refused).
    endpoints_written: bool,
}

impl<'a> Checker<'a> {
    pub fn new(src: Source<'a>, dir: &'a Path) -> Self {
        Checker {
            src,
            dir,
            problems: Vec::new(),
            endpoints_written: false,
        }
    }

    fn bad(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.problems.push(self.src.problem(span, key, message));
    }

    /// Checks the whole file.
    pub fn config(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let app = match AppName::new(raw.app.get_ref().clone()) {
            Ok(app) => app,
            Err(e) => {
                self.bad(raw.app.span(), "app", e.message);
                // Go on with a stand-in so that the other keys are checked too.
                AppName::new("app").map_err(|_| ConfigError {
                    problems: self.problems.clone(),
                })?
            }
        };
        let state_dir = match &raw.state_dir {
            Some(s) => {
                let filled = self.filled(s, "state_dir", &["app"], &app);
                self.path(s, "state_dir", &filled)
            }
            None => self.dir.join(".blue-green"),
        };
        self.endpoints_written = raw.endpoints.is_some();
        let endpoints = raw
            .endpoints
            .as_ref()
            .and_then(|e| self.endpoints(e, "endpoints"));
        let runtime = self.runtime(&raw.runtime, &app, endpoints);
        let (health, readiness) = match &raw.health {
            Some(h) => self.health(h),
            None => (
                HealthConfig::Http(HttpProbeConfig::default()),
                ReadinessPolicy::default(),
            ),
        };
        let router = self.router(&raw.router, &app, &state_dir);
        let switch = self.switch(raw.switch.as_ref());
        let timeouts = self.timeouts(raw.timeouts.as_ref());

        if !self.problems.is_empty() {
            self.problems.sort_by_key(|p| p.line);
            return Err(ConfigError {
                problems: self.problems,
            });
        }
        let (Some(runtime), Some(router)) = (runtime, router) else {
            // Unreachable in practice: a `None` always comes with a problem.
            return Err(ConfigError::one(self.src.file, "the config is incomplete"));
        };
        let mut engine = EngineConfig::new(app.clone());
        engine.readiness = readiness;
        engine.switch = switch;
        engine.timeouts = timeouts;
        Ok(Config {
            path: self.src.file.to_path_buf(),
            app,
            state_dir,
            runtime,
            health,
            router,
            engine,
        })
    }

    // ---- runtime -------------------------------------------------------------------------

    fn runtime(
        &mut self,
        raw: &Spanned<RawRuntime>,
        app: &AppName,
        endpoints: Option<PerColor<Endpoint>>,
    ) -> Option<RuntimeConfig> {
        let r = raw.get_ref();
        match r.kind.get_ref().as_str() {
            "compose" => {
                let docker_only: [(&str, Option<Range<usize>>); 7] = [
                    ("image", r.image.as_ref().map(Spanned::span)),
                    ("publish_host", r.publish_host.as_ref().map(Spanned::span)),
                    ("network", r.network.as_ref().map(Spanned::span)),
                    ("networks", r.networks.as_ref().map(Spanned::span)),
                    (
                        "restart_policy",
                        r.restart_policy.as_ref().map(Spanned::span),
                    ),
                    ("stop_signal", r.stop_signal.as_ref().map(Spanned::span)),
                    ("labels", r.labels.as_ref().map(Spanned::span)),
                ];
                self.refuse_keys("runtime", &docker_only, "kind = \"docker\"");
                self.compose(raw, app, endpoints)
                    .map(RuntimeConfig::Compose)
            }
            "docker" => {
                let compose_only: [(&str, Option<Range<usize>>); 6] = [
                    ("file", r.file.as_ref().map(Spanned::span)),
                    ("files", r.files.as_ref().map(Spanned::span)),
                    ("project", r.project.as_ref().map(Spanned::span)),
                    ("service", r.service.as_ref().map(Spanned::span)),
                    ("tool", r.tool.as_ref().map(Spanned::span)),
                    ("working_dir", r.working_dir.as_ref().map(Spanned::span)),
                ];
                self.refuse_keys("runtime", &compose_only, "kind = \"compose\"");
                self.docker(raw, endpoints).map(RuntimeConfig::Docker)
            }
            other => {
                self.bad(
                    r.kind.span(),
                    "runtime.kind",
                    format!("unknown runtime kind `{other}`: expected \"compose\" or \"docker\""),
                );
                None
            }
        }
    }

    fn refuse_keys(&mut self, table: &str, keys: &[(&str, Option<Range<usize>>)], only: &str) {
        for (key, span) in keys {
            if let Some(span) = span {
                self.bad(
                    span.clone(),
                    &format!("{table}.{key}"),
                    format!("`{key}` only applies to {only}; remove it"),
                );
            }
        }
    }

    fn compose(
        &mut self,
        raw: &Spanned<RawRuntime>,
        app: &AppName,
        endpoints: Option<PerColor<Endpoint>>,
    ) -> Option<ComposeConfig> {
        let r = raw.get_ref();
        let has_endpoints = endpoints.is_some() || self.endpoints_written;
        let files = match (&r.file, &r.files) {
            (Some(_), Some(files)) => {
                self.bad(
                    files.span(),
                    "runtime.files",
                    "both `file` and `files` are set: use `file` for one compose file shared by both colors, or `files = { blue = ..., green = ... }` for one per color, not both",
                );
                None
            }
            (Some(file), None) => self
                .existing_file(file, "runtime.file")
                .map(ComposeFiles::Shared),
            (None, Some(files)) => {
                let f = files.get_ref();
                let blue = self.existing_file(&f.blue, "runtime.files.blue");
                let green = self.existing_file(&f.green, "runtime.files.green");
                match (blue, green) {
                    (Some(blue), Some(green)) => {
                        Some(ComposeFiles::PerColor(PerColor { blue, green }))
                    }
                    _ => None,
                }
            }
            (None, None) => {
                self.bad(
                    raw.span(),
                    "runtime.file",
                    "kind = \"compose\" needs the compose file: `file = \"docker-compose.yml\"` (shared by both colors) or `files = { blue = \"...\", green = \"...\" }`",
                );
                None
            }
        };
        let project = match &r.project {
            Some(p) => {
                let ok = self.placeholders(p, "runtime.project", &["app", "color"]);
                if ok && !p.get_ref().contains("{color}") {
                    self.bad(
                        p.span(),
                        "runtime.project",
                        "the project name must contain `{color}` so that blue and green are separate compose projects, for example \"{app}-{color}\"",
                    );
                }
                if ok {
                    let sample = p
                        .get_ref()
                        .replace("{app}", app.as_str())
                        .replace("{color}", "green");
                    if !COMPOSE_PROJECT.is_match(&sample) {
                        self.bad(
                            p.span(),
                            "runtime.project",
                            format!("`{}` does not make a valid compose project name (`{sample}`): use a-z, 0-9, `_` and `-`, starting with a letter or digit", p.get_ref()),
                        );
                    }
                }
                p.get_ref().clone()
            }
            None => "{app}-{color}".to_string(),
        };
        let service = match &r.service {
            Some(s) => {
                self.matches(
                    s,
                    "runtime.service",
                    &SERVICE,
                    "a compose service name: a-z, A-Z, 0-9, `_`, `.` and `-`",
                );
                Some(s.get_ref().clone())
            }
            None => {
                self.bad(
                    raw.span(),
                    "runtime.service",
                    "kind = \"compose\" needs `service`: the compose service that answers on the endpoint",
                );
                None
            }
        };
        let tool = match &r.tool {
            None => ComposeTool::Auto,
            Some(t) => match t.get_ref().as_str() {
                "auto" => ComposeTool::Auto,
                "v1" | "docker-compose" => ComposeTool::V1,
                "v2" | "docker compose" => ComposeTool::V2,
                other => {
                    self.bad(
                        t.span(),
                        "runtime.tool",
                        format!("unknown compose tool `{other}`: expected \"auto\", \"v1\" (docker-compose) or \"v2\" (docker compose)"),
                    );
                    ComposeTool::Auto
                }
            },
        };
        let working_dir = r.working_dir.as_ref().and_then(|w| {
            let p = self.path(w, "runtime.working_dir", w.get_ref());
            if p.is_dir() {
                Some(p)
            } else {
                self.bad(
                    w.span(),
                    "runtime.working_dir",
                    format!("directory {} does not exist", p.display()),
                );
                None
            }
        });
        let container_port = r
            .container_port
            .as_ref()
            .and_then(|p| self.port(p, "runtime.container_port"));
        if !has_endpoints && container_port.is_none() {
            self.bad(
                raw.span(),
                "endpoints",
                "kind = \"compose\" needs `[endpoints]` (blue = \"127.0.0.1:8081\", green = \"127.0.0.1:8082\"), or `runtime.container_port` to ask compose for the published port",
            );
        }
        let env = self.env(r.env.as_ref());
        Some(ComposeConfig {
            tool,
            files: files?,
            project,
            service: service?,
            endpoints,
            container_port,
            working_dir,
            env,
        })
    }

    fn docker(
        &mut self,
        raw: &Spanned<RawRuntime>,
        endpoints: Option<PerColor<Endpoint>>,
    ) -> Option<DockerConfig> {
        let r = raw.get_ref();
        let image = match &r.image {
            Some(i) => {
                self.matches(i, "runtime.image", &IMAGE, "an image reference such as \"myapp:1.2\" or \"registry.local/myapp@sha256:...\"");
                Some(i.get_ref().clone())
            }
            None => {
                self.bad(
                    raw.span(),
                    "runtime.image",
                    "kind = \"docker\" needs `image`: the default image to run (`deploy --image` overrides it)",
                );
                None
            }
        };
        let container_port = match &r.container_port {
            Some(p) => self.port(p, "runtime.container_port"),
            None => {
                self.bad(
                    raw.span(),
                    "runtime.container_port",
                    "kind = \"docker\" needs `container_port`: the port the app listens on inside the container",
                );
                None
            }
        };
        let publish_host = match &r.publish_host {
            Some(h) => {
                if h.get_ref().parse::<IpAddr>().is_err() {
                    self.bad(
                        h.span(),
                        "runtime.publish_host",
                        format!(
                            "`{}` is not an IP address: expected for example \"127.0.0.1\"",
                            h.get_ref()
                        ),
                    );
                }
                h.get_ref().clone()
            }
            None => "127.0.0.1".to_string(),
        };
        let mut networks = Vec::new();
        match (&r.network, &r.networks) {
            (Some(_), Some(list)) => self.bad(
                list.span(),
                "runtime.networks",
                "both `network` and `networks` are set: use one",
            ),
            (Some(n), None) => {
                self.matches(n, "runtime.network", &DOCKER_NAME, "a Docker network name");
                networks.push(n.get_ref().clone());
            }
            (None, Some(list)) => {
                for n in list.get_ref() {
                    self.matches(n, "runtime.networks", &DOCKER_NAME, "a Docker network name");
                    networks.push(n.get_ref().clone());
                }
            }
            (None, None) => {}
        }
        let restart_policy = r.restart_policy.as_ref().map(|p| {
            if !["no", "on-failure", "unless-stopped", "always"].contains(&p.get_ref().as_str()) {
                self.bad(
                    p.span(),
                    "runtime.restart_policy",
                    format!("unknown restart policy `{}`: expected \"no\", \"on-failure\", \"unless-stopped\" or \"always\"", p.get_ref()),
                );
            }
            p.get_ref().clone()
        });
        let stop_signal = r.stop_signal.as_ref().map(|s| {
            self.matches(
                s,
                "runtime.stop_signal",
                &SIGNAL,
                "a signal name such as \"SIGTERM\" or \"SIGQUIT\"",
            );
            s.get_ref().clone()
        });
        let mut labels = BTreeMap::new();
        if let Some(map) = &r.labels {
            for (k, v) in map.get_ref() {
                if !LABEL.is_match(k) {
                    self.bad(
                        v.span(),
                        &format!("runtime.labels.{k}"),
                        format!("`{k}` is not a valid label name: use letters, digits, `_`, `.`, `/` and `-`"),
                    );
                }
                self.no_control(v, &format!("runtime.labels.{k}"));
                labels.insert(k.clone(), v.get_ref().clone());
            }
        }
        let env = self.env(r.env.as_ref());
        Some(DockerConfig {
            image: image?,
            container_port: container_port?,
            endpoints,
            publish_host,
            env,
            networks,
            restart_policy,
            stop_signal,
            labels,
        })
    }

    fn env(&mut self, env: Option<&Spanned<BTreeMap<String, Str>>>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(env) = env else { return out };
        for (k, v) in env.get_ref() {
            let key = format!("runtime.env.{k}");
            if !ENV_NAME.is_match(k) {
                self.bad(
                    v.span(),
                    &key,
                    format!("`{k}` is not a valid environment variable name: use letters, digits and `_`, not starting with a digit"),
                );
            } else if RESERVED_ENV.contains(&k.as_str()) {
                self.bad(
                    v.span(),
                    &key,
                    format!("`{k}` is set by blue-green itself for every instance; remove it"),
                );
            }
            if v.get_ref().contains('\0') {
                self.bad(v.span(), &key, "the value contains a NUL character");
            }
            out.insert(k.clone(), v.get_ref().clone());
        }
        out
    }

    fn endpoints(&mut self, raw: &Spanned<RawPerColor>, key: &str) -> Option<PerColor<Endpoint>> {
        let r = raw.get_ref();
        let blue = self.endpoint(&r.blue, &format!("{key}.blue"));
        let green = self.endpoint(&r.green, &format!("{key}.green"));
        let (blue, green) = (blue?, green?);
        if blue == green {
            self.bad(
                r.green.span(),
                &format!("{key}.green"),
                format!("blue and green both use {blue}: each color needs its own endpoint, for example 127.0.0.1:8081 and 127.0.0.1:8082"),
            );
            return None;
        }
        Some(PerColor { blue, green })
    }

    fn endpoint(&mut self, s: &Str, key: &str) -> Option<Endpoint> {
        match s.get_ref().parse::<Endpoint>() {
            Ok(e) => Some(e),
            Err(e) => {
                let mut message = e.message;
                if let Some((_, port)) = s.get_ref().rsplit_once(':') {
                    if port.parse::<u64>().is_ok_and(|p| p == 0 || p > 65535) {
                        message = format!("{message}; the port must be from 1 to 65535");
                    }
                }
                self.bad(s.span(), key, message);
                None
            }
        }
    }

    // ---- health --------------------------------------------------------------------------

    fn health(&mut self, raw: &Spanned<RawHealth>) -> (HealthConfig, ReadinessPolicy) {
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

    // ---- router --------------------------------------------------------------------------

    fn router(
        &mut self,
        raw: &Spanned<RawRouter>,
        app: &AppName,
        state_dir: &Path,
    ) -> Option<RouterConfig> {
        let r = raw.get_ref();
        let nginx_keys: [(&str, Option<Range<usize>>); 11] = [
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
        match r.kind.get_ref().as_str() {
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
                    format!("unknown router kind `{other}`: expected \"nginx\" or \"none\""),
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
                        Duration::from_millis(100),
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
        let config = NginxConfig {
            upstream: upstream?,
            upstream_file: upstream_file?,
            server_options,
            upstream_directives,
            test_command,
            reload_command,
            command_timeout,
            verify,
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

    // ---- switch, timeouts ----------------------------------------------------------------

    fn switch(&mut self, raw: Option<&RawSwitch>) -> SwitchPolicy {
        let d = SwitchPolicy::default();
        let Some(s) = raw else { return d };
        SwitchPolicy {
            drain: self.duration(s.drain.as_ref(), "switch.drain", d.drain, true),
            stop_timeout: self.duration(
                s.stop_timeout.as_ref(),
                "switch.stop_timeout",
                d.stop_timeout,
                true,
            ),
            keep_previous: match &s.keep_previous {
                None => d.keep_previous,
                Some(k) => match k.get_ref().as_str() {
                    "running" => KeepPrevious::Running,
                    "stopped" => KeepPrevious::Stopped,
                    "removed" => KeepPrevious::Removed,
                    other => {
                        self.bad(k.span(), "switch.keep_previous", format!("unknown value `{other}`: expected \"running\" (instant rollback), \"stopped\" or \"removed\""));
                        d.keep_previous
                    }
                },
            },
        }
    }

    fn timeouts(&mut self, raw: Option<&RawTimeouts>) -> Timeouts {
        let d = Timeouts::default();
        let Some(t) = raw else { return d };
        Timeouts {
            start: self.duration(t.start.as_ref(), "timeouts.start", d.start, false),
            stop_margin: self.duration(
                t.stop_margin.as_ref(),
                "timeouts.stop_margin",
                d.stop_margin,
                true,
            ),
            runtime: self.duration(t.runtime.as_ref(), "timeouts.runtime", d.runtime, false),
            router: self.duration(t.router.as_ref(), "timeouts.router", d.router, false),
            store: self.duration(t.store.as_ref(), "timeouts.store", d.store, false),
        }
    }

    // ---- value helpers -------------------------------------------------------------------

    fn duration(
        &mut self,
        v: Option<&Str>,
        key: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(s) = v else { return default };
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.bad(
                    s.span(),
                    key,
                    "must be longer than zero, for example \"500ms\" or \"30s\"",
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.bad(s.span(), key, format!("`{}` is not a duration ({e}): write a number and a unit, for example \"500ms\", \"30s\" or \"2m\"", s.get_ref()));
                default
            }
        }
    }

    fn port(&mut self, p: &Spanned<i64>, key: &str) -> Option<u16> {
        match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.bad(
                    p.span(),
                    key,
                    format!(
                        "{} is not a port: expected a number from 1 to 65535",
                        p.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn matches(&mut self, s: &Str, key: &str, re: &Regex, expected: &str) -> bool {
        if re.is_match(s.get_ref()) {
            return true;
        }
        self.bad(
            s.span(),
            key,
            format!(
                "`{}` is not allowed here: expected {expected}",
                s.get_ref().escape_debug()
            ),
        );
        false
    }

    fn no_control(&mut self, s: &Str, key: &str) {
        if s.get_ref().chars().any(char::is_control) {
            self.bad(
                s.span(),
                key,
                "the value contains a control character (a line break or similar): remove it",
            );
        }
    }

    /// An argv array: at least a program unless `empty_ok`, no empty program, no NUL.
    /// `{config_dir}` becomes the config file's directory; other braces are left as they are
    /// (an argument may well be JSON).
    fn argv(&mut self, list: &Spanned<Vec<Str>>, key: &str, empty_ok: bool) -> Vec<String> {
        let dir = self.dir.display().to_string();
        let argv: Vec<String> = list
            .get_ref()
            .iter()
            .map(|a| a.get_ref().replace("{config_dir}", &dir))
            .collect();
        if argv.is_empty() && !empty_ok {
            self.bad(list.span(), key, "the command is empty: expected an argv array with the program first, for example [\"nginx\", \"-s\", \"reload\"]");
        } else if argv.first().is_some_and(|p| p.trim().is_empty()) {
            self.bad(list.span(), key, "the program (the first element) is empty");
        } else if argv.iter().any(|a| a.contains('\0')) {
            self.bad(list.span(), key, "an argument contains a NUL character");
        }
        argv
    }

    /// Checks that `{...}` placeholders are among `allowed`; true when they are.
    fn placeholders(&mut self, s: &Str, key: &str, allowed: &[&str]) -> bool {
        let text = s.get_ref();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                self.bad(
                    s.span(),
                    key,
                    "an unclosed `{`: placeholders are written {name}",
                );
                return false;
            };
            let name = &after[..close];
            if !allowed.contains(&name) {
                let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
                self.bad(
                    s.span(),
                    key,
                    format!(
                        "unknown placeholder `{{{name}}}`: this key understands {}",
                        list.join(" and ")
                    ),
                );
                return false;
            }
            rest = &after[close + 1..];
        }
        true
    }

    /// The value with `{app}` filled in, after checking its placeholders.
    fn filled(&mut self, s: &Str, key: &str, allowed: &[&str], app: &AppName) -> String {
        self.placeholders(s, key, allowed);
        s.get_ref().replace("{app}", app.as_str())
    }

    /// `value` as a path, relative to the config file's directory.
    fn path(&mut self, s: &Str, key: &str, value: &str) -> PathBuf {
        if value.trim().is_empty() {
            self.bad(s.span(), key, "the path is empty");
        }
        let p = PathBuf::from(value);
        if p.is_absolute() {
            p
        } else {
            self.dir.join(p)
        }
    }

    fn existing_file(&mut self, s: &Str, key: &str) -> Option<PathBuf> {
        let p = self.path(s, key, s.get_ref());
        if p.is_file() {
            Some(p)
        } else {
            self.bad(s.span(), key, format!("file {} does not exist (relative paths are relative to the config file's directory)", p.display()));
            None
        }
    }
}
