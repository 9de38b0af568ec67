//! Docker-native probes: [`ContainerHealthProbe`] reads the status of the image's
//! `HEALTHCHECK`; [`ExecProbe`] runs a command inside the container. Each does one attempt;
//! the engine's readiness policy decides how often and how long.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::{Health, HealthProbe, Instance, InstanceState};
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::HealthStatusEnum;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::compose::{LABEL_COMPOSE_PROJECT, LABEL_COMPOSE_SERVICE};
use crate::container;
use crate::error::Error;
use crate::{ComposeRuntime, DockerRuntime};

/// How long one probe may take unless set otherwise.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most output kept from an exec, for the reason of a failed check.
const MAX_EXEC_OUTPUT: usize = 2048;

/// How a probe finds the container of an [`Instance`].
#[derive(Debug, Clone)]
enum Target {
    /// The instance id is the container id ([`DockerRuntime`]).
    Container,
    /// The instance id is a compose project; the container is its `service`
    /// ([`ComposeRuntime`]).
    ComposeService(String),
}

#[derive(Debug, Clone)]
struct Locator {
    docker: Docker,
    target: Target,
}

impl Locator {
    /// The container id for `instance`, or why there is none.
    async fn container(&self, instance: &Instance, limit: Duration) -> Result<String, String> {
        match &self.target {
            Target::Container => Ok(instance.id.clone()),
            Target::ComposeService(service) => {
                let filters = HashMap::from([(
                    "label",
                    vec![
                        format!("{LABEL_COMPOSE_PROJECT}={}", instance.id),
                        format!("{LABEL_COMPOSE_SERVICE}={service}"),
                    ],
                )]);
                let options = ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build();
                let found = tokio::time::timeout(limit, self.docker.list_containers(Some(options)))
                    .await
                    .map_err(|_| {
                        format!(
                            "listing containers did not answer within {}s",
                            limit.as_secs_f64()
                        )
                    })?
                    .map_err(|e| format!("cannot list containers: {e}"))?;
                found.into_iter().find_map(|c| c.id).ok_or_else(|| {
                    format!(
                        "compose project {} has no container for service {service}",
                        instance.id
                    )
                })
            }
        }
    }
}

/// Healthy when Docker reports the container's `HEALTHCHECK` as `healthy`. `starting` and
/// `unhealthy` are unhealthy with the check's last output; an image without a `HEALTHCHECK`
/// is unhealthy with a reason that says so (use another probe for it).
///
/// ```no_run
/// # fn demo(runtime: &blue_green_docker::DockerRuntime) {
/// use blue_green_docker::ContainerHealthProbe;
/// let probe = ContainerHealthProbe::for_docker(runtime);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ContainerHealthProbe {
    locator: Locator,
    timeout: Duration,
}

impl ContainerHealthProbe {
    /// A probe for the containers of a [`DockerRuntime`].
    pub fn for_docker(runtime: &DockerRuntime) -> Self {
        ContainerHealthProbe {
            locator: Locator {
                docker: runtime.docker().clone(),
                target: Target::Container,
            },
            timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }

    /// A probe for the service container of a [`ComposeRuntime`]'s projects.
    pub fn for_compose(runtime: &ComposeRuntime) -> Self {
        ContainerHealthProbe {
            locator: Locator {
                docker: runtime.docker().clone(),
                target: Target::ComposeService(runtime.service().to_string()),
            },
            timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }

    /// The same probe with another limit for one check (default 5s).
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }
}

#[async_trait]
impl HealthProbe for ContainerHealthProbe {
    async fn check(&self, instance: &Instance) -> Health {
        let id = match self.locator.container(instance, self.timeout).await {
            Ok(id) => id,
            Err(reason) => return Health::Unhealthy(reason),
        };
        let inspect = match container::inspect(&self.locator.docker, &id, self.timeout).await {
            Ok(Some(inspect)) => inspect,
            Ok(None) => return Health::Unhealthy(format!("container {id} does not exist")),
            Err(e) => return Health::Unhealthy(e.to_string()),
        };
        let state = container::state_of(&inspect);
        if state != InstanceState::Running {
            return Health::Unhealthy(format!("container {id} is not running: {state}"));
        }
        let health = inspect.state.as_ref().and_then(|s| s.health.as_ref());
        let last_output = health
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .and_then(|result| result.output.as_deref())
            .map(|out| out.trim().to_string())
            .filter(|out| !out.is_empty());
        match health.and_then(|h| h.status) {
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::STARTING) => Health::Unhealthy(format!(
                "health check is starting: it has not passed yet{}",
                last_output.map(|o| format!(" (last output: {o})")).unwrap_or_default()
            )),
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy(format!(
                "health check reports unhealthy{}",
                last_output.map(|o| format!(": {o}")).unwrap_or_default()
            )),
            Some(HealthStatusEnum::NONE) | Some(HealthStatusEnum::EMPTY) | None => {
                Health::Unhealthy(format!(
                    "container {id} has no HEALTHCHECK: add one to the image (or the compose service), or use an http, tcp or exec probe"
                ))
            }
        }
    }
}

/// Runs a command inside the container through the exec API (argv, never a shell); exit code
/// 0 is healthy, anything else unhealthy with the code and the command's output.
///
/// Reasons name only the program (`argv[0]`), as [`blue_green_core::CommandProbe`] does: its
/// arguments may hold a token, and reasons go to the terminal, the `-v` log, the NDJSON events
/// and the history.
///
/// The image must contain the program (a `FROM scratch` image has no shell or curl: use the
/// app's own binary, as the demo app's `--check` does). Docker has no call to kill an exec, so
/// a command that outlives the timeout is reported unhealthy and left to finish on its own:
/// keep the command short and give it its own time limit where it can take one.
///
/// ```no_run
/// # fn demo(runtime: &blue_green_docker::DockerRuntime) -> Result<(), blue_green_docker::Error> {
/// use std::time::Duration;
/// use blue_green_docker::ExecProbe;
/// let probe = ExecProbe::for_docker(
///     runtime,
///     vec!["/demo-app".into(), "--check".into()],
///     Duration::from_secs(3),
/// )?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ExecProbe {
    locator: Locator,
    argv: Vec<String>,
    timeout: Duration,
}

impl ExecProbe {
    /// A probe that runs `argv` (program first) in the containers of a [`DockerRuntime`] and
    /// gives up after `timeout`. An empty `argv` is refused.
    pub fn for_docker(
        runtime: &DockerRuntime,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        Self::new(
            Locator {
                docker: runtime.docker().clone(),
                target: Target::Container,
            },
            argv,
            timeout,
        )
    }

    /// A probe that runs `argv` in the service container of a [`ComposeRuntime`]'s projects.
    pub fn for_compose(
        runtime: &ComposeRuntime,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        Self::new(
            Locator {
                docker: runtime.docker().clone(),
                target: Target::ComposeService(runtime.service().to_string()),
            },
            argv,
            timeout,
        )
    }

    fn new(locator: Locator, argv: Vec<String>, timeout: Duration) -> Result<Self, Error> {
        if !matches!(argv.first(), Some(program) if !program.is_empty()) {
            return Err(Error::Invalid(
                "the exec probe needs a command: give its argv, program first, for example [\"/app\", \"--check\"]".into(),
            ));
        }
        Ok(ExecProbe {
            locator,
            argv,
            timeout,
        })
    }

    /// The command run in the container.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The program, the only part of the command that reasons show.
    fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    async fn run(&self, id: &str) -> Result<(i64, String), String> {
        let docker = &self.locator.docker;
        let exec = docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(self.argv.clone()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("cannot create the exec in container {id}: {e}"))?;
        let mut output = String::new();
        match docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| format!("cannot start `{}` in container {id}: {e}", self.program()))?
        {
            StartExecResults::Attached {
                output: mut stream, ..
            } => {
                while let Some(chunk) = stream.next().await {
                    let chunk =
                        chunk.map_err(|e| format!("reading the exec output failed: {e}"))?;
                    if output.len() < MAX_EXEC_OUTPUT {
                        output.push_str(&chunk.to_string());
                    }
                }
            }
            StartExecResults::Detached => {}
        }
        let inspect = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| format!("cannot read the exit code of the exec: {e}"))?;
        let code = inspect
            .exit_code
            .ok_or_else(|| "Docker reported no exit code for the exec".to_string())?;
        Ok((code, output))
    }
}

#[async_trait]
impl HealthProbe for ExecProbe {
    async fn check(&self, instance: &Instance) -> Health {
        let command = self.program();
        let attempt = async {
            let id = self.locator.container(instance, self.timeout).await?;
            self.run(&id).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((0, _))) => Health::Healthy,
            Ok(Ok((code, output))) => {
                let output: String = output.trim().chars().take(500).collect();
                Health::Unhealthy(if output.is_empty() {
                    format!("`{command}` exited with code {code}")
                } else {
                    format!("`{command}` exited with code {code}: {output}")
                })
            }
            Ok(Err(reason)) => Health::Unhealthy(reason),
            Err(_) => Health::Unhealthy(format!(
                "`{command}` did not finish within {}s",
                self.timeout.as_secs_f64()
            )),
        }
    }
}
