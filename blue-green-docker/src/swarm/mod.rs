//! [`SwarmRuntime`]: an app's releases as Docker Swarm services named `{app}-{color}`.
//!
//! A color is one replicated service: N tasks spread over the swarm's nodes, the labels that
//! [`list`](Runtime::list) finds it by, the same environment a container gets, and the color's
//! published port. `start` creates the service (or updates a leftover one) and returns once
//! every task of that spec runs; a release whose tasks keep failing fails `start` at once with
//! the tasks' errors. The engine then probes the color's endpoint as for any runtime.

mod spec;
mod tasks;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::{
    AppName, Color, ComponentError, Endpoint, Instance, InstanceState, Release, Runtime,
};
use bollard::models::{LocalNodeState, Service, ServiceSpec, Task};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use bollard::Docker;

use crate::client::{self, call, is_status};
use crate::config::SwarmConfig;
use crate::container;
use crate::docker::{DEFAULT_API_TIMEOUT, LABEL_COLOR, LABEL_RELEASE};
use crate::error::Error;

use spec::{generation_of, replicas_of, rescaled, service_spec};
use tasks::{Nodes, Progress};

/// Instance meta key: the addresses (`host:port`) the color answers on, comma-separated, for
/// routers that can list several servers.
pub const META_UPSTREAM: &str = "upstream";

/// Instance meta key: the nodes (ids) the color's tasks ran on when it became ready.
pub const META_NODES: &str = "nodes";

/// How often `start`, `stop` and `restart` look at the tasks while they wait.
const POLL: Duration = Duration::from_millis(250);

/// How long the same tasks must keep running before a new spec counts as converged.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs an app's releases as swarm services named `{app}-{color}`, through a manager node's
/// Docker API.
///
/// An [`Instance`]'s id is the service id. Its endpoint is the first of
/// [`SwarmConfig::addresses`] (or the manager's address) at the color's published port; all
/// the addresses are in the instance's [`META_UPSTREAM`] meta.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use blue_green_core::{AppName, Color, Release, Runtime};
/// use blue_green_docker::{PerColor, PublishMode, SwarmConfig, SwarmRuntime};
///
/// let config = SwarmConfig {
///     image: "web:1".into(),
///     container_port: 8080,
///     published_ports: PerColor { blue: 8081, green: 8082 },
///     publish_mode: PublishMode::Ingress,
///     replicas: 3,
///     max_replicas_per_node: None,
///     constraints: vec![],
///     networks: vec![],
///     env: Default::default(),
///     labels: Default::default(),
///     addresses: vec!["10.0.0.11".into(), "10.0.0.12".into()],
///     converge_timeout: Duration::from_secs(120),
///     max_task_failures: 3,
///     stop_signal: None,
///     stop_grace_period: Some(Duration::from_secs(30)),
///     init: false,
/// };
/// let runtime = SwarmRuntime::connect(AppName::new("web")?, config).await?;
/// let instance = runtime.start(Color::Blue, &Release::new("v1")?).await?;
/// println!("web-blue answers on {}", instance.endpoint);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SwarmRuntime {
    docker: Docker,
    app: AppName,
    config: SwarmConfig,
    /// The first of the configured addresses, or the manager's own.
    endpoint_host: String,
    /// Every address the color answers on.
    addresses: Vec<String>,
    api_timeout: Duration,
}

impl SwarmRuntime {
    /// Connects to the Docker daemon through `DOCKER_HOST` or the default socket and checks
    /// that it is a manager of an active swarm ([`Error::NotSwarmManager`] if not).
    pub async fn connect(app: AppName, config: SwarmConfig) -> Result<SwarmRuntime, Error> {
        validate(&config)?;
        let docker = client::connect(DEFAULT_API_TIMEOUT).await?;
        SwarmRuntime::with_docker(app, config, docker).await
    }

    /// The same as [`connect`](Self::connect) over a client the caller made (another socket,
    /// a TLS connection).
    pub async fn with_docker(
        app: AppName,
        config: SwarmConfig,
        docker: Docker,
    ) -> Result<SwarmRuntime, Error> {
        validate(&config)?;
        let manager_address = manager_address(&docker, DEFAULT_API_TIMEOUT).await?;
        let addresses = if config.addresses.is_empty() {
            vec![manager_address]
        } else {
            config.addresses.clone()
        };
        Ok(SwarmRuntime {
            docker,
            app,
            config,
            endpoint_host: addresses[0].clone(),
            addresses,
            api_timeout: DEFAULT_API_TIMEOUT,
        })
    }

    /// The same runtime with another limit for each Docker API call (default 30s).
    pub fn with_api_timeout(mut self, limit: Duration) -> Self {
        self.api_timeout = limit;
        self
    }

    /// The Docker client (of the manager node).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The addresses a color's published port is reached on (the configured ones, or the
    /// manager's); the first is every instance's endpoint host.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The service name for `color`: `{app}-{color}`.
    pub fn service_name(&self, color: Color) -> String {
        format!("{}-{}", self.app, color)
    }

    /// The nodes of the swarm that are not ready (down, disconnected), each as
    /// `address (id)`, for a report that names a lost node.
    pub async fn unready_nodes(&self) -> Result<Vec<String>, Error> {
        Ok(self.nodes().await?.lost())
    }

    fn image_for<'a>(&'a self, release: &'a Release) -> &'a str {
        release.artifact.as_deref().unwrap_or(&self.config.image)
    }

    fn endpoint(&self, color: Color) -> Endpoint {
        Endpoint::new(
            self.endpoint_host.clone(),
            *self.config.published_ports.get(color),
        )
    }

    fn instance(&self, color: Color, release: &str, id: &str) -> Instance {
        let port = *self.config.published_ports.get(color);
        let upstream: Vec<String> = self
            .addresses
            .iter()
            .map(|a| Endpoint::new(a.clone(), port).to_string())
            .collect();
        Instance::new(color, release, id, self.endpoint(color))
            .with_meta(META_UPSTREAM, upstream.join(","))
    }

    /// The instance a listed service is, from its labels.
    fn instance_from(&self, service: &Service) -> Result<Instance, Error> {
        let id = service.id.as_deref().ok_or_else(|| Error::Unexpected {
            what: "a service list".into(),
            missing: "the service id".into(),
        })?;
        let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
        let label = |name: &str| labels.and_then(|l| l.get(name)).cloned();
        let color = label(LABEL_COLOR)
            .and_then(|c| c.parse::<Color>().ok())
            .ok_or_else(|| Error::Unexpected {
                what: format!("the inspect of service {id}"),
                missing: format!("a valid `{LABEL_COLOR}` label"),
            })?;
        let release = label(LABEL_RELEASE).unwrap_or_default();
        Ok(self.instance(color, &release, id))
    }

    /// The service, or `None` when the swarm has no such service.
    async fn inspect(&self, id: &str) -> Result<Option<Service>, Error> {
        match call(
            || format!("to inspect service {id}"),
            self.api_timeout,
            self.docker
                .inspect_service(id, None::<InspectServiceOptions>),
        )
        .await
        {
            Ok(service) => Ok(Some(service)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The swarm's nodes as the manager sees them now.
    async fn nodes(&self) -> Result<Nodes, Error> {
        let nodes = call(
            || "to list the swarm's nodes".into(),
            self.api_timeout,
            self.docker.list_nodes(None::<ListNodesOptions>),
        )
        .await?;
        Ok(Nodes::new(&nodes))
    }

    async fn tasks(&self, service: &str) -> Result<Vec<Task>, Error> {
        let filters = HashMap::from([("service", vec![service.to_string()])]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        call(
            || format!("to list the tasks of service {service}"),
            self.api_timeout,
            self.docker.list_tasks(Some(options)),
        )
        .await
    }

    /// Updates service `id` at `version` to `spec`.
    async fn update(&self, id: &str, version: u64, spec: ServiceSpec) -> Result<(), Error> {
        let version = i32::try_from(version).unwrap_or(i32::MAX);
        let options = UpdateServiceOptionsBuilder::new().version(version).build();
        call(
            || format!("to update service {id}"),
            self.api_timeout,
            self.docker.update_service(id, spec, options, None),
        )
        .await
        .map(|_| ())
    }

    /// Waits until every task of `generation` runs; fails at once when they keep failing,
    /// and at `converge_timeout` with what the tasks were doing.
    async fn converge(&self, id: &str, name: &str, generation: u64) -> Result<Vec<String>, Error> {
        let deadline = tokio::time::Instant::now() + self.config.converge_timeout;
        let replicas = u64::from(self.config.replicas);
        // The running tasks first seen converged, and when.
        let mut first_seen: Option<(Vec<String>, tokio::time::Instant)> = None;
        let mut waiting;
        loop {
            let tasks = self.tasks(id).await?;
            let nodes = self.nodes().await?;
            match tasks::progress(
                &tasks,
                &nodes,
                generation,
                replicas,
                self.config.max_task_failures,
            ) {
                Progress::Converged { nodes, tasks } => {
                    // Swarm reports a task whose container it stopped as unhealthy as running
                    // for a moment before it completes: the same tasks must still run a while
                    // later.
                    let now = tokio::time::Instant::now();
                    match &first_seen {
                        Some((seen, at)) if *seen == tasks && now - *at >= SETTLE => {
                            return Ok(nodes)
                        }
                        Some((seen, _)) if *seen == tasks => {}
                        _ => first_seen = Some((tasks, now)),
                    }
                    waiting = format!(
                        "all {replicas} tasks running, but not yet for {}s in a row",
                        SETTLE.as_secs_f64()
                    );
                }
                Progress::Failing(errors) => {
                    return Err(Error::TasksFailing {
                        service: name.to_string(),
                        errors,
                    })
                }
                Progress::Waiting(why) => {
                    first_seen = None;
                    waiting = why;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NotConverged {
                    service: name.to_string(),
                    timeout: self.config.converge_timeout,
                    waiting,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no task of service `id` runs, up to `limit`.
    async fn wait_down(&self, id: &str, limit: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let tasks = match self.tasks(id).await {
                Ok(tasks) => tasks,
                // The service is gone, and its tasks with it.
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) => return Err(e),
            };
            if tasks::all_down(&tasks, &self.nodes().await?) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for the tasks of service {id} to stop"),
                    timeout: limit,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn start_inner(&self, color: Color, release: &Release) -> Result<Instance, Error> {
        let image = self.image_for(release).to_string();
        let name = self.service_name(color);
        // A leftover service of this name is updated in place, with a new generation.
        let existing = self.inspect(&name).await?;
        let (id, generation) = match existing {
            Some(service) => {
                let id = service_id(&service)?;
                let generation = service.spec.as_ref().map_or(0, generation_of) + 1;
                let spec = service_spec(
                    &self.config,
                    &self.app,
                    &name,
                    color,
                    release,
                    &image,
                    generation,
                );
                self.update(&id, service_version(&service), spec).await?;
                (id, generation)
            }
            None => {
                let spec = service_spec(&self.config, &self.app, &name, color, release, &image, 0);
                let created = call(
                    || format!("to create service {name} from image {image}"),
                    self.api_timeout,
                    self.docker.create_service(spec, None),
                )
                .await?;
                let id = created.id.ok_or_else(|| Error::Unexpected {
                    what: format!("the creation of service {name}"),
                    missing: "the service id".into(),
                })?;
                (id, 0)
            }
        };
        let nodes = self.converge(&id, &name, generation).await?;
        Ok(self
            .instance(color, &release.id, &id)
            .with_meta(META_NODES, nodes.join(",")))
    }

    async fn stop_inner(&self, instance: &Instance, grace: Duration) -> Result<(), Error> {
        let Some(service) = self.inspect(&instance.id).await? else {
            return Ok(());
        };
        let Some(spec) = service.spec.clone() else {
            return Ok(());
        };
        if replicas_of(&spec) > 0 {
            let generation = generation_of(&spec) + 1;
            let stopped = rescaled(spec, 0, generation, Some(spec::nanos(grace)));
            self.update(&instance.id, service_version(&service), stopped)
                .await?;
        }
        self.wait_down(&instance.id, grace + self.api_timeout).await
    }

    async fn restart_inner(&self, instance: &Instance) -> Result<Instance, Error> {
        let service = self
            .inspect(&instance.id)
            .await?
            .ok_or_else(|| Error::ServiceGone {
                service: instance.id.clone(),
            })?;
        let mut instance = self.instance_from(&service)?;
        let spec = service.spec.clone().unwrap_or_default();
        let generation = if replicas_of(&spec) == 0 {
            let generation = generation_of(&spec) + 1;
            let running = rescaled(spec, self.config.replicas, generation, None);
            self.update(&instance.id, service_version(&service), running)
                .await?;
            generation
        } else {
            generation_of(&spec)
        };
        let name = self.service_name(instance.color);
        let nodes = self.converge(&instance.id, &name, generation).await?;
        instance = instance.with_meta(META_NODES, nodes.join(","));
        Ok(instance)
    }

    async fn state_inner(&self, instance: &Instance) -> Result<InstanceState, Error> {
        let Some(service) = self.inspect(&instance.id).await? else {
            return Ok(InstanceState::Missing);
        };
        let spec = service.spec.clone().unwrap_or_default();
        let release = spec.labels.as_ref().and_then(|l| l.get(LABEL_RELEASE));
        if release.map(String::as_str) != Some(instance.release.as_str()) {
            // The slot holds another release now.
            return Ok(InstanceState::Missing);
        }
        if replicas_of(&spec) == 0 {
            return Ok(InstanceState::Exited {
                code: None,
                reason: Some("scaled to 0 tasks (stopped)".into()),
            });
        }
        let generation = generation_of(&spec);
        let tasks = self.tasks(&instance.id).await?;
        let nodes = self.nodes().await?;
        if tasks::any_running(&tasks, &nodes, generation) {
            return Ok(InstanceState::Running);
        }
        Ok(
            match tasks::progress(
                &tasks,
                &nodes,
                generation,
                replicas_of(&spec),
                self.config.max_task_failures,
            ) {
                Progress::Failing(errors) => InstanceState::Exited {
                    code: None,
                    reason: Some(errors),
                },
                // Tasks on their way count as running: readiness is the probe's business.
                _ => InstanceState::Running,
            },
        )
    }

    async fn remove_inner(&self, instance: &Instance) -> Result<(), Error> {
        match call(
            || format!("to remove service {} ({})", instance.id, instance.color),
            self.api_timeout,
            self.docker.delete_service(&instance.id),
        )
        .await
        {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(e),
        }
        // The published port is free for the color's next service once its tasks are gone.
        self.wait_down(&instance.id, self.api_timeout).await
    }

    async fn list_inner(&self) -> Result<Vec<Instance>, Error> {
        let filters = container::app_filter(&self.app);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        let services = call(
            || format!("to list the services of app {}", self.app),
            self.api_timeout,
            self.docker.list_services(Some(options)),
        )
        .await?;
        let mut instances = Vec::new();
        for service in &services {
            match self.instance_from(service) {
                Ok(instance) => instances.push(instance),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a service with broken labels")
                }
            }
        }
        instances.sort_by_key(|i| i.color);
        Ok(instances)
    }

    async fn logs_inner(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, Error> {
        container::log_report(
            || format!("to read the logs of service {}", instance.id),
            self.api_timeout,
            self.docker
                .service_logs(&instance.id, Some(container::log_options(lines))),
            lines,
        )
        .await
    }
}

#[async_trait]
impl Runtime for SwarmRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        Ok(self.start_inner(color, release).await?)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        Ok(self.state_inner(instance).await?)
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError> {
        Ok(self.stop_inner(instance, grace).await?)
    }

    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        Ok(self.restart_inner(instance).await?)
    }

    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        Ok(self.remove_inner(instance).await?)
    }

    async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
        Ok(self.list_inner().await?)
    }

    async fn logs(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, ComponentError> {
        Ok(self.logs_inner(instance, lines).await?)
    }
}

/// The address of the manager node `docker` talks to, or [`Error::NotSwarmManager`] when the
/// daemon is not a manager of an active swarm. `validate` and `connect` ask it.
pub async fn manager_address(docker: &Docker, limit: Duration) -> Result<String, Error> {
    let info = call(
        || "to read the Docker daemon's swarm state".into(),
        limit,
        docker.info(),
    )
    .await?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
    let manager = state == LocalNodeState::ACTIVE && swarm.control_available == Some(true);
    let address = swarm.node_addr.filter(|a| !a.is_empty());
    match address {
        Some(address) if manager => Ok(address),
        address => Err(Error::NotSwarmManager {
            // A node of a swarm is named by its swarm address, any other daemon by where the
            // client looked.
            host: address.unwrap_or_else(client::docker_host),
            state: if state == LocalNodeState::ACTIVE {
                "a worker, not a manager".into()
            } else {
                format!("not in a swarm (state: {})", describe_state(state))
            },
        }),
    }
}

fn describe_state(state: LocalNodeState) -> String {
    match state {
        LocalNodeState::EMPTY => "inactive".into(),
        other => other.to_string(),
    }
}

fn service_id(service: &Service) -> Result<String, Error> {
    service.id.clone().ok_or_else(|| Error::Unexpected {
        what: "a service inspect".into(),
        missing: "the service id".into(),
    })
}

fn service_version(service: &Service) -> u64 {
    service.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

/// Checks what the swarm would refuse late, so the user hears it before anything starts.
fn validate(config: &SwarmConfig) -> Result<(), Error> {
    if config.image.trim().is_empty() {
        return Err(Error::Invalid(
            "the swarm runtime needs an image: set `image` in [runtime] or pass --image".into(),
        ));
    }
    if config.container_port == 0 {
        return Err(Error::Invalid(
            "`container_port` must be the port the app listens on inside the container (1-65535)"
                .into(),
        ));
    }
    let ports = &config.published_ports;
    if ports.blue == 0 || ports.green == 0 || ports.blue == ports.green {
        return Err(Error::Invalid(format!(
            "the swarm runtime needs two different published ports, one per color (blue {}, green {}): both colors run during a switch",
            ports.blue, ports.green
        )));
    }
    if config.replicas == 0 {
        return Err(Error::Invalid(
            "`replicas` must be at least 1: a color with no task cannot serve".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spec::tests::config;
    use super::*;

    #[test]
    fn settings_swarm_would_refuse_late_are_refused_first() {
        assert!(validate(&config()).is_ok());
        let mut same = config();
        same.published_ports.green = 18081;
        let error = validate(&same).unwrap_err().to_string();
        assert!(error.contains("two different published ports"), "{error}");
        let mut none = config();
        none.replicas = 0;
        assert!(validate(&none)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        let mut port = config();
        port.container_port = 0;
        assert!(validate(&port).is_err());
    }

    #[test]
    fn instances_answer_on_the_first_address_and_list_them_all() {
        let runtime = SwarmRuntime {
            docker: Docker::connect_with_defaults().unwrap(),
            app: AppName::new("web").unwrap(),
            config: config(),
            endpoint_host: "10.1.0.11".into(),
            addresses: vec!["10.1.0.11".into(), "10.1.0.12".into()],
            api_timeout: DEFAULT_API_TIMEOUT,
        };
        let instance = runtime.instance(Color::Green, "v2", "svc1");
        assert_eq!(instance.endpoint, Endpoint::new("10.1.0.11", 18082));
        assert_eq!(
            instance.meta[META_UPSTREAM],
            "10.1.0.11:18082,10.1.0.12:18082"
        );
        assert_eq!(runtime.service_name(Color::Blue), "web-blue");
    }
}
