//! [`DockerRuntime`]: an app's releases as plain containers named `{app}-{color}`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::{
    AppName, Color, ComponentError, Endpoint, Instance, InstanceState, Release, Runtime,
};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::client::{self, call, is_status};
use crate::config::DockerConfig;
use crate::container;
use crate::error::Error;

/// Label naming the app a container belongs to.
pub const LABEL_APP: &str = "blue-green.app";
/// Label naming the color of a container.
pub const LABEL_COLOR: &str = "blue-green.color";
/// Label naming the release a container runs.
pub const LABEL_RELEASE: &str = "blue-green.release";
/// Label marking containers this crate manages; its value is `blue-green`.
pub const LABEL_MANAGED_BY: &str = "blue-green.managed-by";

/// How long one Docker API call may take, unless set with [`DockerRuntime::with_api_timeout`].
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);

/// How long pulling a missing image may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs an app's releases as containers named `{app}-{color}` over the Docker API.
///
/// Each container gets the labels [`LABEL_APP`], [`LABEL_COLOR`], [`LABEL_RELEASE`] and
/// [`LABEL_MANAGED_BY`] (so [`list`](Runtime::list) finds what an earlier run left), the
/// configured environment plus `BLUE_GREEN_COLOR` and `BLUE_GREEN_RELEASE`, and publishes
/// `container_port` either on the color's configured endpoint or on a free port of
/// `publish_host` that is read back from inspect. A release's artifact, when it has one, is the
/// image to run instead of the configured one.
///
/// An [`Instance`]'s id is the container id. When a container has no published port (it exited
/// before Docker published one, or it is stopped and the port was chosen by Docker), its
/// endpoint's port is 0: nothing answers there, and [`state`](Runtime::state) tells why.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use blue_green_core::{AppName, Color, Release, Runtime};
/// use blue_green_docker::{DockerConfig, DockerRuntime};
///
/// let config = DockerConfig {
///     image: "web:latest".into(),
///     container_port: 8080,
///     endpoints: None,
///     publish_host: "127.0.0.1".into(),
///     env: Default::default(),
///     networks: vec![],
///     restart_policy: None,
///     stop_signal: None,
///     labels: Default::default(),
///     init: false,
/// };
/// let runtime = DockerRuntime::connect(AppName::new("web")?, config).await?;
/// let instance = runtime.start(Color::Blue, &Release::new("v1")?).await?;
/// println!("web-blue answers on {}", instance.endpoint);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    app: AppName,
    config: DockerConfig,
    api_timeout: Duration,
}

impl DockerRuntime {
    /// Connects to the Docker daemon through `DOCKER_HOST` or the default socket, negotiates
    /// the API version and pings it. An unreachable daemon is an [`Error::Unreachable`] that
    /// says where it looked and what to do.
    pub async fn connect(app: AppName, config: DockerConfig) -> Result<DockerRuntime, Error> {
        validate(&config)?;
        let docker = client::connect(DEFAULT_API_TIMEOUT).await?;
        Ok(DockerRuntime {
            docker,
            app,
            config,
            api_timeout: DEFAULT_API_TIMEOUT,
        })
    }

    /// The same runtime with another limit for each Docker API call (default 30s). Stops
    /// wait for the grace period on top of it.
    pub fn with_api_timeout(mut self, limit: Duration) -> Self {
        self.api_timeout = limit;
        self
    }

    /// The Docker client, for probes and callers that need more of the API.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The app this runtime runs.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// How it runs containers.
    pub(crate) fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The limit of one Docker API call.
    pub(crate) fn api_timeout(&self) -> Duration {
        self.api_timeout
    }

    /// The container name for `color`: `{app}-{color}`.
    pub fn container_name(&self, color: Color) -> String {
        format!("{}-{}", self.app, color)
    }

    /// The image a release runs: its artifact, else the configured image.
    pub(crate) fn image_for<'a>(&'a self, release: &'a Release) -> &'a str {
        release.artifact.as_deref().unwrap_or(&self.config.image)
    }

    /// Whether `image` is on this machine, without pulling it: `validate` says so before a
    /// deploy would have to reach a registry.
    pub async fn image_present(&self, image: &str) -> Result<bool, Error> {
        match call(
            || format!("to inspect image {image}"),
            self.api_timeout,
            self.docker.inspect_image(image),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Makes sure `image` is on this machine, pulling it if it is not.
    pub(crate) async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        match call(
            || format!("to inspect image {image}"),
            self.api_timeout,
            self.docker.inspect_image(image),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(image, "image not found locally, pulling it");
        let (name, tag) = split_reference(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(name);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let pull = async {
            let mut progress = self.docker.create_image(Some(options.build()), None, None);
            while let Some(item) = progress.next().await {
                item?;
            }
            Ok::<(), bollard::errors::Error>(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => match Error::from_bollard(format!("to pull image {image}"), e) {
                unreachable @ Error::Unreachable { .. } => Err(unreachable),
                Error::Api { source, .. } => Err(Error::ImageNotFound {
                    image: image.to_string(),
                    reason: daemon_message(&source),
                }),
                other => Err(other),
            },
            Err(_) => Err(Error::ImageNotFound {
                image: image.to_string(),
                reason: format!("the pull did not finish within {}s", PULL_TIMEOUT.as_secs()),
            }),
        }
    }

    fn create_body(&self, color: Color, release: &Release, image: &str) -> ContainerCreateBody {
        let config = &self.config;
        let port_key = format!("{}/tcp", config.container_port);

        let env = container::env_list(&config.env, color, release);
        let labels = container::labels(&config.labels, &self.app, color, release);

        let binding = match &config.endpoints {
            Some(endpoints) => {
                let endpoint = endpoints.get(color);
                PortBinding {
                    host_ip: Some(endpoint.host.clone()),
                    host_port: Some(endpoint.port.to_string()),
                }
            }
            // An empty host port asks Docker for a free one.
            None => PortBinding {
                host_ip: Some(config.publish_host.clone()),
                host_port: Some(String::new()),
            },
        };

        let restart_policy = config.restart_policy.as_deref().map(|name| RestartPolicy {
            name: Some(restart_policy_name(name).unwrap_or(RestartPolicyNameEnum::NO)),
            maximum_retry_count: None,
        });

        // Before API 1.44 a container can be created on one network only; the others are
        // connected before it starts.
        let networking_config = config.networks.first().map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                EndpointSettings::default(),
            )])),
        });

        ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            stop_signal: config.stop_signal.clone(),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(port_key, Some(vec![binding]))])),
                restart_policy,
                network_mode: config.networks.first().cloned(),
                init: config.init.then_some(true),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }

    /// The instance an inspected container is: color and release from its labels, endpoint
    /// from the configured endpoints or the port Docker published.
    fn instance_from(&self, inspect: &ContainerInspectResponse) -> Result<Instance, Error> {
        let id = inspect.id.clone().ok_or_else(|| Error::Unexpected {
            what: "a container inspect".into(),
            missing: "the container id".into(),
        })?;
        let color = container::label(inspect, LABEL_COLOR)
            .and_then(|c| c.parse::<Color>().ok())
            .ok_or_else(|| Error::Unexpected {
                what: format!("the inspect of container {id}"),
                missing: format!("a valid `{LABEL_COLOR}` label"),
            })?;
        let release = container::label(inspect, LABEL_RELEASE)
            .or_else(|| container::env_value(inspect, "BLUE_GREEN_RELEASE"))
            .unwrap_or_default();
        Ok(Instance::new(
            color,
            release,
            id,
            self.endpoint_of(color, inspect),
        ))
    }

    fn endpoint_of(&self, color: Color, inspect: &ContainerInspectResponse) -> Endpoint {
        if let Some(endpoints) = &self.config.endpoints {
            return endpoints.get(color).clone();
        }
        let port = container::published_port(inspect, self.config.container_port).unwrap_or(0);
        Endpoint::new(reachable_host(&self.config.publish_host), port)
    }

    async fn inspect_required(&self, id: &str) -> Result<ContainerInspectResponse, Error> {
        container::inspect(&self.docker, id, self.api_timeout)
            .await?
            .ok_or_else(|| Error::Api {
                what: format!("to find container {id}"),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message: format!("no such container: {id} (was it removed by hand?)"),
                },
            })
    }

    /// Removes a container (killing it if it runs); one that is gone already is removed.
    pub(crate) async fn remove_by_id(&self, id: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match call(
            || format!("to remove container {id}"),
            self.api_timeout,
            self.docker.remove_container(id, Some(options)),
        )
        .await
        {
            Ok(()) => Ok(()),
            // Gone already, or being removed by someone else.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn start_inner(&self, color: Color, release: &Release) -> Result<Instance, Error> {
        let image = self.image_for(release).to_string();
        let name = self.container_name(color);
        self.ensure_image(&image).await?;
        self.check_port_free(color, &name).await?;

        let body = self.create_body(color, release, &image);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match call(
            || format!("to create container {name} from image {image}"),
            self.api_timeout,
            self.docker.create_container(Some(options), body),
        )
        .await
        {
            Ok(created) => created,
            Err(e) if is_status(&e, 409) => return Err(Error::NameTaken { container: name }),
            Err(e) => return Err(e),
        };
        let id = created.id;

        let started = async {
            let networks = self.config.networks.get(1..).unwrap_or_default();
            container::connect_networks(&self.docker, &id, &name, networks, self.api_timeout)
                .await?;
            call(
                || format!("to start container {name}"),
                self.api_timeout,
                self.docker
                    .start_container(&id, None::<StartContainerOptions>),
            )
            .await
        }
        .await;
        if let Err(e) = started {
            // Leave the slot empty, as it was: a container that never started is of no use.
            if let Err(cleanup) = self.remove_by_id(&id).await {
                tracing::warn!(container = %name, error = %cleanup, "could not remove a container that failed to start");
            }
            return Err(self.explain_start_failure(color, &name, e));
        }

        let inspect = self.inspect_required(&id).await?;
        self.instance_from(&inspect)
    }

    /// Refuses a fixed host port that another process holds, when the daemon runs on this
    /// machine. Docker finds this itself only when its userland proxy is on; without it the
    /// container would start and the other process would keep answering on the port.
    async fn check_port_free(&self, color: Color, name: &str) -> Result<(), Error> {
        let Some(endpoints) = &self.config.endpoints else {
            return Ok(());
        };
        if !client::docker_host().starts_with("unix://") {
            return Ok(());
        }
        let endpoint = endpoints.get(color);
        let Ok(ip) = endpoint.host.parse::<std::net::IpAddr>() else {
            return Ok(());
        };
        match tokio::net::TcpListener::bind((ip, endpoint.port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::PortInUse {
                container: name.to_string(),
                port: endpoint.port,
                message: format!("another process listens on {endpoint}"),
            }),
            // Bound and released at once; any other error is Docker's to report.
            _ => Ok(()),
        }
    }

    /// Turns "port is already allocated" and "address already in use" into
    /// [`Error::PortInUse`].
    fn explain_start_failure(&self, color: Color, name: &str, error: Error) -> Error {
        let Error::Api { source, .. } = &error else {
            return error;
        };
        let message = daemon_message(source);
        let port_taken = message.contains("port is already allocated")
            || message.contains("address already in use");
        if !port_taken {
            return error;
        }
        // Docker picks a free port itself when none is configured.
        let Some(port) = self.config.endpoints.as_ref().map(|e| e.get(color).port) else {
            return error;
        };
        Error::PortInUse {
            container: name.to_string(),
            port,
            message,
        }
    }

    async fn stop_inner(&self, instance: &Instance, grace: Duration) -> Result<(), Error> {
        // Docker's stop timeout is whole seconds: round up so the grace is never cut short.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let seconds = i32::try_from(seconds).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        let limit = self.api_timeout + Duration::from_secs(seconds as u64);
        let stop = async {
            match call(
                || format!("to stop container {} ({})", instance.id, instance.color),
                limit,
                self.docker.stop_container(&instance.id, Some(options)),
            )
            .await
            {
                Ok(()) => Ok(()),
                // 304: already stopped; 404: gone. Both are stopped.
                Err(e) if is_status(&e, 304) || is_status(&e, 404) => Ok(()),
                Err(e) => Err(e),
            }
        };
        container::stop_until_exit(&self.docker, std::slice::from_ref(&instance.id), stop).await
    }

    async fn restart_inner(&self, instance: &Instance) -> Result<Instance, Error> {
        match call(
            || {
                format!(
                    "to start container {} ({}) again",
                    instance.id, instance.color
                )
            },
            self.api_timeout,
            self.docker
                .start_container(&instance.id, None::<StartContainerOptions>),
        )
        .await
        {
            Ok(()) => {}
            Err(e) if is_status(&e, 304) => {}
            Err(e) => {
                return Err(self.explain_start_failure(
                    instance.color,
                    &self.container_name(instance.color),
                    e,
                ))
            }
        }
        let inspect = self.inspect_required(&instance.id).await?;
        self.instance_from(&inspect)
    }

    async fn list_inner(&self) -> Result<Vec<Instance>, Error> {
        let filters = container::app_filter(&self.app);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = call(
            || format!("to list the containers of app {}", self.app),
            self.api_timeout,
            self.docker.list_containers(Some(options)),
        )
        .await?;
        let mut instances = Vec::new();
        for summary in summaries {
            // A release command's one-off container is not an instance of a color.
            if crate::release::is_release_task(summary.labels.as_ref()) {
                continue;
            }
            let Some(id) = summary.id else { continue };
            // Gone between list and inspect: nothing to reconcile.
            let Some(inspect) = container::inspect(&self.docker, &id, self.api_timeout).await?
            else {
                continue;
            };
            match self.instance_from(&inspect) {
                Ok(instance) => instances.push(instance),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "skipping a container with broken labels")
                }
            }
        }
        instances.sort_by_key(|i| i.color);
        Ok(instances)
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        Ok(self.start_inner(color, release).await?)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        Ok(
            match container::inspect(&self.docker, &instance.id, self.api_timeout).await? {
                Some(inspect) => container::state_of(&inspect),
                None => InstanceState::Missing,
            },
        )
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError> {
        Ok(self.stop_inner(instance, grace).await?)
    }

    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        Ok(self.restart_inner(instance).await?)
    }

    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        Ok(self.remove_by_id(&instance.id).await?)
    }

    async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
        Ok(self.list_inner().await?)
    }

    async fn logs(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, ComponentError> {
        Ok(container::log_tail(&self.docker, &instance.id, lines, self.api_timeout).await?)
    }
}

/// Checks what Docker would refuse late, so the user hears it before anything starts.
fn validate(config: &DockerConfig) -> Result<(), Error> {
    if config.image.trim().is_empty() {
        return Err(Error::Invalid(
            "the Docker runtime needs an image: set `image` in [runtime] or pass --image".into(),
        ));
    }
    if config.container_port == 0 {
        return Err(Error::Invalid(
            "`container_port` must be the port the app listens on inside the container (1-65535)"
                .into(),
        ));
    }
    if let Some(name) = &config.restart_policy {
        if restart_policy_name(name).is_none() {
            return Err(Error::Invalid(format!(
                "restart policy `{name}` is not known: use `no`, `on-failure`, `unless-stopped` or `always`"
            )));
        }
    }
    Ok(())
}

fn restart_policy_name(name: &str) -> Option<RestartPolicyNameEnum> {
    match name {
        "no" => Some(RestartPolicyNameEnum::NO),
        "on-failure" => Some(RestartPolicyNameEnum::ON_FAILURE),
        "unless-stopped" => Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        "always" => Some(RestartPolicyNameEnum::ALWAYS),
        _ => None,
    }
}

/// Splits `name:tag` (the tag is after the last `:` that follows the last `/`); a digest
/// reference is passed whole.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], Some(&image[name_start + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// Where to reach a port published on `host`: a wildcard address is reached on loopback.
fn reachable_host(host: &str) -> String {
    match host {
        "" | "0.0.0.0" => "127.0.0.1".into(),
        "::" => "::1".into(),
        other => other.into(),
    }
}

/// The daemon's own words from an error.
pub(crate) fn daemon_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("web"), ("web", Some("latest")));
        assert_eq!(split_reference("web:1.2"), ("web", Some("1.2")));
        assert_eq!(
            split_reference("registry:5000/team/web"),
            ("registry:5000/team/web", Some("latest"))
        );
        assert_eq!(
            split_reference("registry:5000/web:v3"),
            ("registry:5000/web", Some("v3"))
        );
        assert_eq!(split_reference("web@sha256:abc"), ("web@sha256:abc", None));
    }

    #[test]
    fn restart_policies_are_checked() {
        assert!(restart_policy_name("unless-stopped").is_some());
        assert!(restart_policy_name("sometimes").is_none());
    }

    #[test]
    fn docker_port_conflicts_become_port_in_use() {
        let runtime = DockerRuntime {
            docker: Docker::connect_with_defaults().unwrap(),
            app: AppName::new("web").unwrap(),
            config: DockerConfig {
                image: "web:1".into(),
                container_port: 8080,
                endpoints: Some(crate::PerColor {
                    blue: Endpoint::new("127.0.0.1", 8081),
                    green: Endpoint::new("127.0.0.1", 8082),
                }),
                publish_host: "127.0.0.1".into(),
                env: Default::default(),
                networks: vec![],
                restart_policy: None,
                stop_signal: None,
                labels: Default::default(),
                init: false,
            },
            api_timeout: DEFAULT_API_TIMEOUT,
        };
        let refused = |message: &str| Error::Api {
            what: "to start container web-green".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: message.into(),
            },
        };
        let taken = runtime.explain_start_failure(
            Color::Green,
            "web-green",
            refused("driver failed programming external connectivity on endpoint web-green: Bind for 127.0.0.1:8082 failed: port is already allocated"),
        );
        assert!(
            matches!(taken, Error::PortInUse { port: 8082, .. }),
            "{taken}"
        );
        assert!(taken
            .to_string()
            .contains("host port 8082 is already in use"));

        let other = runtime.explain_start_failure(
            Color::Green,
            "web-green",
            refused("OCI runtime create failed"),
        );
        assert!(matches!(other, Error::Api { .. }), "{other}");
    }

    #[test]
    fn wildcard_publish_hosts_are_reached_on_loopback() {
        assert_eq!(reachable_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(reachable_host("10.0.0.5"), "10.0.0.5");
    }
}
