//! `[runtime]` (compose, docker, and what swarm shares with docker) and `[endpoints]`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use blue_green_core::{AppName, Endpoint, HookCommand};
use blue_green_docker::{ComposeConfig, ComposeFiles, ComposeTool, DockerConfig, PerColor};
use toml::Spanned;

use super::super::raw::{RawPerColor, RawRuntime, Str};
use super::super::RuntimeConfig;
use super::{
    Checker, COMPOSE_PROJECT, DEFAULT_HOOK_TIMEOUT, DOCKER_NAME, ENV_NAME, IMAGE, LABEL,
    RESERVED_ENV, SERVICE, SIGNAL,
};

/// What kinds `docker` and `swarm` both give every container they run.
pub(super) struct ContainerSettings {
    pub(super) image: String,
    pub(super) container_port: u16,
    pub(super) networks: Vec<String>,
    pub(super) stop_signal: Option<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) init: bool,
}

/// The keys only kind `swarm` takes, with their places.
fn swarm_keys(r: &RawRuntime) -> [(&'static str, Option<Range<usize>>); 8] {
    [
        (
            "published_ports",
            r.published_ports.as_ref().map(Spanned::span),
        ),
        ("publish_mode", r.publish_mode.as_ref().map(Spanned::span)),
        ("replicas", r.replicas.as_ref().map(Spanned::span)),
        (
            "max_replicas_per_node",
            r.max_replicas_per_node.as_ref().map(Spanned::span),
        ),
        ("constraints", r.constraints.as_ref().map(Spanned::span)),
        ("addresses", r.addresses.as_ref().map(Spanned::span)),
        (
            "converge_timeout",
            r.converge_timeout.as_ref().map(Spanned::span),
        ),
        (
            "max_task_failures",
            r.max_task_failures.as_ref().map(Spanned::span),
        ),
    ]
}

impl Checker<'_> {
    // ---- runtime -------------------------------------------------------------------------

    pub(super) fn runtime(
        &mut self,
        raw: &Spanned<RawRuntime>,
        app: &AppName,
        endpoints: Option<PerColor<Endpoint>>,
    ) -> Option<RuntimeConfig> {
        let r = raw.get_ref();
        let compose_only: [(&str, Option<Range<usize>>); 6] = [
            ("file", r.file.as_ref().map(Spanned::span)),
            ("files", r.files.as_ref().map(Spanned::span)),
            ("project", r.project.as_ref().map(Spanned::span)),
            ("service", r.service.as_ref().map(Spanned::span)),
            ("tool", r.tool.as_ref().map(Spanned::span)),
            ("working_dir", r.working_dir.as_ref().map(Spanned::span)),
        ];
        let docker_only: [(&str, Option<Range<usize>>); 2] = [
            ("publish_host", r.publish_host.as_ref().map(Spanned::span)),
            (
                "restart_policy",
                r.restart_policy.as_ref().map(Spanned::span),
            ),
        ];
        let container_keys: [(&str, Option<Range<usize>>); 6] = [
            ("image", r.image.as_ref().map(Spanned::span)),
            ("network", r.network.as_ref().map(Spanned::span)),
            ("networks", r.networks.as_ref().map(Spanned::span)),
            ("stop_signal", r.stop_signal.as_ref().map(Spanned::span)),
            ("labels", r.labels.as_ref().map(Spanned::span)),
            ("init", r.init.as_ref().map(Spanned::span)),
        ];
        let swarm_only = swarm_keys(r);
        match r.kind.get_ref().as_str() {
            "compose" => {
                self.refuse_keys("runtime", &docker_only, "kind = \"docker\"");
                self.refuse_keys("runtime", &container_keys, "kind = \"docker\" or \"swarm\" (with compose, put `init: true` under the service in the compose file)");
                self.refuse_keys("runtime", &swarm_only, "kind = \"swarm\"");
                self.compose(raw, app, endpoints)
                    .map(RuntimeConfig::Compose)
            }
            "docker" => {
                self.refuse_keys("runtime", &compose_only, "kind = \"compose\"");
                self.refuse_keys("runtime", &swarm_only, "kind = \"swarm\"");
                self.docker(raw, endpoints).map(RuntimeConfig::Docker)
            }
            "swarm" => {
                let release_keys: [(&str, Option<Range<usize>>); 2] = [
                    (
                        "release_command",
                        r.release_command.as_ref().map(Spanned::span),
                    ),
                    (
                        "release_timeout",
                        r.release_timeout.as_ref().map(Spanned::span),
                    ),
                ];
                self.refuse_keys(
                    "runtime",
                    &release_keys,
                    "kind = \"docker\" or \"compose\", which run it in a one-off container (on a swarm, run the migration as a `[hooks] pre_deploy` command)",
                );
                self.refuse_keys("runtime", &compose_only, "kind = \"compose\"");
                self.refuse_keys("runtime", &docker_only, "kind = \"docker\"");
                self.swarm(raw).map(RuntimeConfig::Swarm)
            }
            other => {
                self.bad(
                    r.kind.span(),
                    "runtime.kind",
                    format!("unknown runtime kind `{other}`: expected \"compose\", \"docker\" or \"swarm\""),
                );
                None
            }
        }
    }

    /// `release_command` and `release_timeout`: for kinds `docker` and `compose`, which can
    /// run a one-off container of the new release (the kind itself refuses the keys for
    /// `swarm`). The argv is the container's command, passed as it is (never through a shell).
    pub(super) fn release_command(&mut self, r: &RawRuntime) -> Option<HookCommand> {
        if !matches!(r.kind.get_ref().as_str(), "docker" | "compose") {
            return None;
        }
        let Some(list) = &r.release_command else {
            if let Some(t) = &r.release_timeout {
                self.bad(
                    t.span(),
                    "runtime.release_timeout",
                    "`release_timeout` is the limit of `release_command`, which is not set: set `release_command = [\"./migrate\", \"up\"]` or remove `release_timeout`",
                );
            }
            return None;
        };
        let argv = self.argv(list, "runtime.release_command", false);
        let timeout = self.duration(
            r.release_timeout.as_ref(),
            "runtime.release_timeout",
            DEFAULT_HOOK_TIMEOUT,
            false,
        );
        // The checks above report what `HookCommand::new` would refuse, with the line.
        HookCommand::new(argv, timeout).ok()
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
        let container = self.container(raw, "docker");
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
        let container = container?;
        Some(DockerConfig {
            image: container.image,
            container_port: container.container_port,
            endpoints,
            publish_host,
            env: container.env,
            networks: container.networks,
            restart_policy,
            stop_signal: container.stop_signal,
            labels: container.labels,
            init: container.init,
        })
    }

    /// The keys a container of kind `docker` and a task of kind `swarm` share.
    pub(super) fn container(
        &mut self,
        raw: &Spanned<RawRuntime>,
        kind: &str,
    ) -> Option<ContainerSettings> {
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
                    format!("kind = \"{kind}\" needs `image`: the default image to run (`deploy --image` overrides it)"),
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
                    format!("kind = \"{kind}\" needs `container_port`: the port the app listens on inside the container"),
                );
                None
            }
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
        Some(ContainerSettings {
            image: image?,
            container_port: container_port?,
            networks,
            stop_signal,
            labels,
            env,
            init: r.init.as_ref().is_some_and(|i| *i.get_ref()),
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

    pub(super) fn endpoints(
        &mut self,
        raw: &Spanned<RawPerColor>,
        key: &str,
    ) -> Option<PerColor<Endpoint>> {
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
}
