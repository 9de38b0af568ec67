//! The service spec of a color: what `docker service create` would be told. No I/O.

use std::time::Duration;

use blue_green_core::{AppName, Color, Release};
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use crate::config::{PublishMode, SwarmConfig};
use crate::container;

/// How long swarm waits before it replaces a failed task. Short, so that a release that keeps
/// failing shows it (and `start` gives up) within seconds rather than after swarm's default 5s
/// per attempt.
const RESTART_DELAY_NS: i64 = 1_000_000_000;

/// The spec of `color`'s service `name` running `release` from `image`. `generation` goes into
/// the task template's `ForceUpdate`: every start and restart uses a new one, so that the tasks
/// of this spec can be told from those of an earlier one.
pub(crate) fn service_spec(
    config: &SwarmConfig,
    app: &AppName,
    name: &str,
    color: Color,
    release: &Release,
    image: &str,
    generation: u64,
) -> ServiceSpec {
    let labels = container::labels(&config.labels, app, color, release);
    let placement = TaskSpecPlacement {
        constraints: (!config.constraints.is_empty()).then(|| config.constraints.clone()),
        max_replicas: config.max_replicas_per_node.map(i64::from),
        ..Default::default()
    };
    let networks = (!config.networks.is_empty()).then(|| {
        config
            .networks
            .iter()
            .map(|target| NetworkAttachmentConfig {
                target: Some(target.clone()),
                ..Default::default()
            })
            .collect()
    });
    let publish_mode = match config.publish_mode {
        PublishMode::Ingress => EndpointPortConfigPublishModeEnum::INGRESS,
        PublishMode::Host => EndpointPortConfigPublishModeEnum::HOST,
    };
    ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                labels: Some(labels),
                env: Some(container::env_list(&config.env, color, release)),
                stop_signal: config.stop_signal.clone(),
                stop_grace_period: config.stop_grace_period.map(nanos),
                init: config.init.then_some(true),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(RESTART_DELAY_NS),
                ..Default::default()
            }),
            placement: Some(placement),
            networks,
            force_update: Some(generation),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(config.replicas)),
            }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(config.container_port)),
                published_port: Some(i64::from(*config.published_ports.get(color))),
                publish_mode: Some(publish_mode),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A duration as swarm takes it: nanoseconds.
pub(crate) fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// The replicas a spec asks for (0 when it is scaled down or not replicated).
pub(crate) fn replicas_of(spec: &ServiceSpec) -> u64 {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .map_or(0, |r| r.max(0) as u64)
}

/// `spec` with `replicas` tasks and a new `generation`, and the stop grace period when given:
/// how a stop (0) and a restart (N) change a service.
pub(crate) fn rescaled(
    mut spec: ServiceSpec,
    replicas: u32,
    generation: u64,
    grace_ns: Option<i64>,
) -> ServiceSpec {
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(i64::from(replicas)),
        }),
        ..Default::default()
    });
    let template = spec.task_template.get_or_insert_with(Default::default);
    template.force_update = Some(generation);
    if let Some(grace) = grace_ns {
        template
            .container_spec
            .get_or_insert_with(Default::default)
            .stop_grace_period = Some(grace);
    }
    spec
}

/// The generation of a spec's task template (see [`service_spec`]).
pub(crate) fn generation_of(spec: &ServiceSpec) -> u64 {
    spec.task_template
        .as_ref()
        .and_then(|t| t.force_update)
        .unwrap_or(0)
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::docker::{LABEL_APP, LABEL_COLOR, LABEL_MANAGED_BY, LABEL_RELEASE};
    use crate::PerColor;

    /// A config with every setting used, for the swarm module's tests.
    pub(crate) fn config() -> SwarmConfig {
        SwarmConfig {
            image: "web:1".into(),
            container_port: 8080,
            published_ports: PerColor {
                blue: 18081,
                green: 18082,
            },
            publish_mode: PublishMode::Host,
            replicas: 3,
            max_replicas_per_node: Some(1),
            constraints: vec!["node.role==worker".into()],
            networks: vec!["web-net".into()],
            env: BTreeMap::from([
                ("MODE".into(), "prod".into()),
                ("BLUE_GREEN_COLOR".into(), "forged".into()),
            ]),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            addresses: vec![],
            converge_timeout: Duration::from_secs(60),
            max_task_failures: 3,
            stop_signal: Some("SIGINT".into()),
            stop_grace_period: Some(Duration::from_secs(7)),
            init: true,
        }
    }

    #[test]
    fn a_color_is_a_labelled_service_with_its_replicas_port_and_placement() {
        let app = AppName::new("web").unwrap();
        let release = Release::new("v7").unwrap();
        let spec = service_spec(
            &config(),
            &app,
            "web-green",
            Color::Green,
            &release,
            "web:7",
            4,
        );
        assert_eq!(spec.name.as_deref(), Some("web-green"));
        let labels = spec.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_APP], "web");
        assert_eq!(labels[LABEL_COLOR], "green");
        assert_eq!(labels[LABEL_RELEASE], "v7");
        assert_eq!(labels[LABEL_MANAGED_BY], "blue-green");
        assert_eq!(labels["team"], "a");
        assert_eq!(replicas_of(&spec), 3);
        assert_eq!(generation_of(&spec), 4);

        let template = spec.task_template.as_ref().unwrap();
        let container = template.container_spec.as_ref().unwrap();
        assert_eq!(container.image.as_deref(), Some("web:7"));
        assert_eq!(container.init, Some(true));
        assert_eq!(container.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(
            container.stop_grace_period,
            Some(7_000_000_000),
            "set at creation: swarm stops a task with its own spec's grace"
        );
        let env = container.env.as_ref().unwrap();
        assert_eq!(
            env,
            &[
                "MODE=prod".to_string(),
                "BLUE_GREEN_COLOR=green".into(),
                "BLUE_GREEN_RELEASE=v7".into()
            ],
            "the engine's own variables win over configured ones"
        );
        let placement = template.placement.as_ref().unwrap();
        assert_eq!(
            placement.constraints.as_deref(),
            Some(&["node.role==worker".to_string()][..])
        );
        assert_eq!(placement.max_replicas, Some(1));
        assert_eq!(
            template.networks.as_ref().unwrap()[0].target.as_deref(),
            Some("web-net")
        );

        let port = &spec.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.target_port, Some(8080));
        assert_eq!(port.published_port, Some(18082), "green's own port");
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
    }

    #[test]
    fn an_empty_placement_and_network_list_are_left_to_swarm() {
        let mut config = config();
        config.constraints.clear();
        config.networks.clear();
        config.max_replicas_per_node = None;
        config.publish_mode = PublishMode::Ingress;
        let spec = service_spec(
            &config,
            &AppName::new("web").unwrap(),
            "web-blue",
            Color::Blue,
            &Release::new("v1").unwrap(),
            "web:1",
            0,
        );
        let template = spec.task_template.as_ref().unwrap();
        assert_eq!(template.placement.as_ref().unwrap().constraints, None);
        assert_eq!(template.networks, None);
        let port = &spec.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(port.published_port, Some(18081));
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::INGRESS)
        );
    }

    #[test]
    fn stop_and_restart_rescale_with_a_new_generation() {
        let spec = service_spec(
            &config(),
            &AppName::new("web").unwrap(),
            "web-blue",
            Color::Blue,
            &Release::new("v1").unwrap(),
            "web:1",
            2,
        );
        let stopped = rescaled(spec.clone(), 0, 3, Some(5_000_000_000));
        assert_eq!(replicas_of(&stopped), 0);
        assert_eq!(generation_of(&stopped), 3);
        let container = stopped
            .task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap();
        assert_eq!(container.stop_grace_period, Some(5_000_000_000));
        assert_eq!(
            container.image.as_deref(),
            Some("web:1"),
            "the rest is kept"
        );
        let again = rescaled(stopped, 3, 4, None);
        assert_eq!(replicas_of(&again), 3);
        assert_eq!(generation_of(&again), 4);
    }
}
