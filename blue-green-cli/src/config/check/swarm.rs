//! `[runtime] kind = "swarm"`: a swarm service per color.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use blue_green_core::Endpoint;
use blue_green_docker::{PerColor, PublishMode, SwarmConfig};
use regex::Regex;
use toml::Spanned;

use super::super::raw::RawRuntime;
use super::{pattern, Checker};

/// A placement constraint as swarm takes it: `node.role==worker`, `node.labels.zone != b`,
/// `engine.labels.os==linux`.
static CONSTRAINT: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^(node|engine)\.[A-Za-z0-9_.-]+ *(==|!=) *[A-Za-z0-9_.:/-]+$"));

/// How long `start` waits for every task of a new spec when the file does not say.
const DEFAULT_CONVERGE: Duration = Duration::from_secs(120);

/// How many failed tasks of a new spec make `start` give up when the file does not say.
const DEFAULT_TASK_FAILURES: u32 = 3;

impl Checker<'_> {
    pub(super) fn swarm(&mut self, raw: &Spanned<RawRuntime>) -> Option<SwarmConfig> {
        let r = raw.get_ref();
        if let Some(span) = self.endpoints_span.clone() {
            self.bad(
                span,
                "endpoints",
                "kind = \"swarm\" does not take [endpoints]: a color answers on its `published_ports` at the `addresses` of the swarm's nodes (or of a balancer in front of them); remove [endpoints]",
            );
        }
        let container = self.container(raw, "swarm");
        let published_ports = match &r.published_ports {
            Some(ports) => {
                let p = ports.get_ref();
                let blue = self.port(&p.blue, "runtime.published_ports.blue");
                let green = self.port(&p.green, "runtime.published_ports.green");
                match (blue, green) {
                    (Some(blue), Some(green)) if blue == green => {
                        self.bad(
                            p.green.span(),
                            "runtime.published_ports.green",
                            format!("blue and green both publish port {blue}: each color needs its own, for example 8081 and 8082 (both run during a switch)"),
                        );
                        None
                    }
                    (Some(blue), Some(green)) => Some(PerColor { blue, green }),
                    _ => None,
                }
            }
            None => {
                self.bad(
                    raw.span(),
                    "runtime.published_ports",
                    "kind = \"swarm\" needs `published_ports = { blue = 8081, green = 8082 }`: the port each color's service publishes on the swarm's nodes",
                );
                None
            }
        };
        let publish_mode = match &r.publish_mode {
            None => PublishMode::Ingress,
            Some(m) => match m.get_ref().as_str() {
                "ingress" => PublishMode::Ingress,
                "host" => PublishMode::Host,
                other => {
                    self.bad(
                        m.span(),
                        "runtime.publish_mode",
                        format!("unknown publish mode `{other}`: expected \"ingress\" (the routing mesh: every node answers) or \"host\" (only the nodes running a task answer)"),
                    );
                    PublishMode::Ingress
                }
            },
        };
        let replicas = r
            .replicas
            .as_ref()
            .map_or(Some(1), |n| self.count(n, "runtime.replicas", 1, 1000));
        let max_replicas_per_node = r
            .max_replicas_per_node
            .as_ref()
            .and_then(|n| self.count(n, "runtime.max_replicas_per_node", 1, 1000));
        let max_task_failures = r
            .max_task_failures
            .as_ref()
            .map_or(Some(DEFAULT_TASK_FAILURES), |n| {
                self.count(n, "runtime.max_task_failures", 1, 1000)
            });
        let mut constraints = Vec::new();
        if let Some(list) = &r.constraints {
            for c in list.get_ref() {
                self.matches(
                    c,
                    "runtime.constraints",
                    &CONSTRAINT,
                    "a placement constraint such as \"node.role==worker\" or \"node.labels.zone==a\"",
                );
                constraints.push(c.get_ref().clone());
            }
        }
        let mut addresses = Vec::new();
        if let Some(list) = &r.addresses {
            for a in list.get_ref() {
                // An IP address, or a host name as an endpoint takes it; never a port.
                let host = a.get_ref();
                let ok = host.parse::<IpAddr>().is_ok()
                    || (!host.is_empty()
                        && !host.contains(':')
                        && format!("{host}:1").parse::<Endpoint>().is_ok());
                if ok {
                    addresses.push(host.clone());
                } else {
                    self.bad(
                        a.span(),
                        "runtime.addresses",
                        format!("`{}` is not a host address: expected an IP address or host name without a port, for example \"10.0.0.11\"", host.escape_debug()),
                    );
                }
            }
        }
        let converge_timeout = self.duration(
            r.converge_timeout.as_ref(),
            "runtime.converge_timeout",
            DEFAULT_CONVERGE,
            false,
        );
        let container = container?;
        Some(SwarmConfig {
            image: container.image,
            container_port: container.container_port,
            published_ports: published_ports?,
            publish_mode,
            replicas: replicas?,
            max_replicas_per_node,
            constraints,
            networks: container.networks,
            env: container.env,
            labels: container.labels,
            addresses,
            converge_timeout,
            max_task_failures: max_task_failures?,
            stop_signal: container.stop_signal,
            // Set from `[switch] stop_timeout` once that is read.
            stop_grace_period: None,
            init: container.init,
        })
    }

    /// A whole number from `min` to `max`.
    fn count(&mut self, n: &Spanned<i64>, key: &str, min: u32, max: u32) -> Option<u32> {
        match u32::try_from(*n.get_ref()) {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.bad(
                    n.span(),
                    key,
                    format!(
                        "{} is out of range: expected a number from {min} to {max}",
                        n.get_ref()
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, RuntimeConfig};
    use blue_green_docker::PublishMode;

    const GOOD: &str = r#"app = "web"
[runtime]
kind = "swarm"
image = "web:1"
container_port = 8080
published_ports = { blue = 8081, green = 8082 }
publish_mode = "host"
replicas = 3
max_replicas_per_node = 1
constraints = ["node.role==worker", "node.labels.zone != b"]
networks = ["web-net"]
addresses = ["10.0.0.11", "10.0.0.12"]
converge_timeout = "45s"
env = { MODE = "prod" }
[router]
kind = "none"
"#;

    fn errors(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        match parse(text, Path::new("bg.toml"), dir.path()) {
            Ok(_) => panic!("the config was accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_swarm_runtime_reads_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse(GOOD, Path::new("bg.toml"), dir.path()).unwrap();
        let RuntimeConfig::Swarm(c) = &config.runtime else {
            panic!("{:?}", config.runtime);
        };
        assert_eq!(c.image, "web:1");
        assert_eq!(
            (c.published_ports.blue, c.published_ports.green),
            (8081, 8082)
        );
        assert_eq!(c.publish_mode, PublishMode::Host);
        assert_eq!(c.replicas, 3);
        assert_eq!(c.max_replicas_per_node, Some(1));
        assert_eq!(c.constraints.len(), 2);
        assert_eq!(c.networks, ["web-net"]);
        assert_eq!(c.addresses, ["10.0.0.11", "10.0.0.12"]);
        assert_eq!(c.converge_timeout, std::time::Duration::from_secs(45));
        assert_eq!(c.max_task_failures, 3);
        assert_eq!(c.env["MODE"], "prod");
        assert_eq!(
            c.stop_grace_period,
            Some(config.engine.switch.stop_timeout),
            "the tasks' grace is [switch] stop_timeout"
        );
        assert_eq!(config.runtime.kind(), "swarm");
    }

    #[test]
    fn swarm_mistakes_name_their_key_and_line() {
        let same_port = GOOD.replace("green = 8082", "green = 8081");
        let e = errors(&same_port);
        assert!(
            e.contains("bg.toml line 6")
                && e.contains("runtime.published_ports.green")
                && e.contains("each color needs its own"),
            "{e}"
        );
        let e = errors(&GOOD.replace("replicas = 3", "replicas = 0"));
        assert!(
            e.contains("line 8") && e.contains("runtime.replicas") && e.contains("from 1 to 1000"),
            "{e}"
        );
        let e = errors(&GOOD.replace("\"node.role==worker\"", "\"node.role==worker; rm -rf /\""));
        assert!(
            e.contains("line 10") && e.contains("runtime.constraints"),
            "{e}"
        );
        let e = errors(&GOOD.replace("\"10.0.0.12\"", "\"10.0.0.12:80\""));
        assert!(
            e.contains("line 12")
                && e.contains("runtime.addresses")
                && e.contains("without a port"),
            "{e}"
        );
        let e = errors(&GOOD.replace("\"host\"", "\"mesh\""));
        assert!(
            e.contains("line 7") && e.contains("runtime.publish_mode"),
            "{e}"
        );
        let e = errors(&GOOD.replace("published_ports = { blue = 8081, green = 8082 }\n", ""));
        assert!(
            e.contains("runtime.published_ports") && e.contains("needs"),
            "{e}"
        );
    }

    #[test]
    fn keys_of_other_kinds_and_endpoints_are_refused_for_swarm() {
        let e = errors(&GOOD.replace("replicas = 3", "replicas = 3\nrestart_policy = \"always\""));
        assert!(
            e.contains("runtime.restart_policy") && e.contains("only applies to kind = \"docker\""),
            "{e}"
        );
        let e = errors(&GOOD.replace(
            "[router]",
            "[endpoints]\nblue = \"127.0.0.1:8081\"\ngreen = \"127.0.0.1:8082\"\n[router]",
        ));
        assert!(e.contains("does not take [endpoints]"), "{e}");
        let docker = GOOD
            .replace("kind = \"swarm\"", "kind = \"docker\"")
            .replace("publish_mode = \"host\"\n", "");
        let e = errors(&docker);
        assert!(
            e.contains("runtime.published_ports") && e.contains("only applies to kind = \"swarm\""),
            "{e}"
        );
        let e = errors(&GOOD.replace("[router]", "[health]\nkind = \"docker\"\n[router]"));
        assert!(e.contains("health.kind") && e.contains("swarm"), "{e}");
    }
}
