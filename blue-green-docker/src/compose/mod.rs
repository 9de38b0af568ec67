//! [`ComposeRuntime`]: an app's releases as compose projects, one per color, as in the blog
//! setup (`docker-compose -p app-blue -f docker-compose.blue.yml up -d`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::process::{self, Command, Keep, RunError};
use blue_green_core::{
    AppName, Color, ComponentError, Endpoint, Instance, InstanceState, Release, Runtime,
};
use bollard::models::{ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;

use crate::client::{self, call};
use crate::config::{ComposeConfig, ComposeFiles, PerColor};
use crate::container;
use crate::docker::DEFAULT_API_TIMEOUT;
use crate::error::Error;

mod program;
mod release;
mod stderr;

pub use program::{detect, ComposeProgram};

/// The label compose puts on a project's containers, naming the project.
pub const LABEL_COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The label compose puts on a project's containers, naming the service.
pub const LABEL_COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// The label compose puts on a container of `compose run` (`True`) and on the others (`False`).
pub const LABEL_COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";

/// How long one compose command (`up -d`, `port`) may take unless set otherwise; stops and
/// downs get their grace period on top.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// How many lines of compose's stderr go into an error.
const STDERR_LINES: usize = 20;

/// How long a compose command that overran has between SIGTERM and SIGKILL: compose (and the
/// plugin `docker compose` runs) can cancel what it was doing.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs an app's releases as compose projects, one per color.
///
/// - The project of a color is the config's template with `{app}` and `{color}` filled in
///   (default `{app}-{color}`); it must be a valid compose project name (`[a-z0-9][a-z0-9_-]*`).
/// - A color's file is its own (the blog's layout: `docker-compose.blue.yml` and
///   `docker-compose.green.yml`) or one shared file that uses `${BLUE_GREEN_COLOR}`.
/// - Every compose command runs with argv (never a shell), in its own process group
///   ([`blue_green_core::process`]): at its timeout, or when the call is dropped, the whole
///   group is stopped, the compose plugin that `docker compose` starts included.
/// - Every compose command gets, besides the configured environment, `BLUE_GREEN_COLOR`,
///   `BLUE_GREEN_RELEASE` (the release id, for example as an image tag:
///   `image: web:${BLUE_GREEN_RELEASE}`) and, when the release has an artifact,
///   `BLUE_GREEN_IMAGE` (`image: ${BLUE_GREEN_IMAGE}`), for interpolation in the file.
/// - State, logs and the release of a running project are read through the Docker API by
///   compose's own labels ([`LABEL_COMPOSE_PROJECT`], [`LABEL_COMPOSE_SERVICE`]), never by
///   parsing `ps`. The release shown by [`list`](Runtime::list) is the service container's
///   `BLUE_GREEN_RELEASE` environment variable, so pass it through in the file
///   (`environment: [BLUE_GREEN_COLOR, BLUE_GREEN_RELEASE]`).
/// - The endpoint is the config's, or what `compose port SERVICE PORT` answers.
///
/// An [`Instance`]'s id is the project name. `remove` is `down` (containers and the project's
/// networks; named volumes are kept).
#[derive(Debug, Clone)]
pub struct ComposeRuntime {
    docker: Docker,
    app: AppName,
    config: ComposeConfig,
    program: ComposeProgram,
    projects: PerColor<String>,
    files: PerColor<PathBuf>,
    api_timeout: Duration,
    command_timeout: Duration,
}

impl ComposeRuntime {
    /// Checks the config (project names, files), finds the compose program (per
    /// [`ComposeTool`](crate::ComposeTool)) and connects to the Docker daemon, which it reads state from.
    pub async fn new(app: AppName, config: ComposeConfig) -> Result<ComposeRuntime, Error> {
        let projects = PerColor {
            blue: project_name(&config.project, &app, Color::Blue)?,
            green: project_name(&config.project, &app, Color::Green)?,
        };
        if projects.blue == projects.green {
            return Err(Error::Invalid(format!(
                "the compose project template `{}` gives both colors the same project `{}`: put `{{color}}` in it",
                config.project, projects.blue
            )));
        }
        if config.service.is_empty() {
            return Err(Error::Invalid(
                "the compose runtime needs `service`: the service that answers on the endpoint"
                    .into(),
            ));
        }
        if config.endpoints.is_none() && config.container_port.is_none() {
            return Err(Error::Invalid(
                "the compose runtime needs either `endpoints` for both colors or `container_port` (to ask `compose port` where the service is published)".into(),
            ));
        }
        let cwd = std::env::current_dir()
            .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?;
        let absolute = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd.join(p)
            }
        };
        let files = match &config.files {
            ComposeFiles::PerColor(files) => PerColor {
                blue: absolute(&files.blue),
                green: absolute(&files.green),
            },
            ComposeFiles::Shared(file) => PerColor {
                blue: absolute(file),
                green: absolute(file),
            },
        };
        for file in [&files.blue, &files.green] {
            if tokio::fs::metadata(file).await.is_err() {
                return Err(Error::Invalid(format!(
                    "compose file {} does not exist: check `files`/`file` in [runtime]",
                    file.display()
                )));
            }
        }
        let program = detect(config.tool, None).await?;
        let docker = client::connect(DEFAULT_API_TIMEOUT).await?;
        Ok(ComposeRuntime {
            docker,
            app,
            config,
            program,
            projects,
            files,
            api_timeout: DEFAULT_API_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        })
    }

    /// The same runtime with another limit for compose commands (default 180s).
    pub fn with_command_timeout(mut self, limit: Duration) -> Self {
        self.command_timeout = limit;
        self
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The service that answers on the endpoint.
    pub fn service(&self) -> &str {
        &self.config.service
    }

    /// The compose program in use.
    pub fn program(&self) -> &ComposeProgram {
        &self.program
    }

    /// The compose project of `color`.
    pub fn project(&self, color: Color) -> &str {
        self.projects.get(color)
    }

    /// The app.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// Runs `compose config ARGS` (`--services`, or nothing for the whole resolved file) for
    /// `color` the way `start` runs compose: the same file, project, working directory and
    /// environment, with stand-in values for the release and image variables. Lets `validate`
    /// check the service and the published ports before anything is started.
    pub async fn config_output(&self, color: Color, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["config"];
        all.extend_from_slice(args);
        let mut env = Vec::new();
        for (key, value) in [
            ("BLUE_GREEN_RELEASE", "validate"),
            ("BLUE_GREEN_IMAGE", "blue-green-validate:latest"),
        ] {
            if !self.config.env.contains_key(key) {
                env.push((key, value.to_string()));
            }
        }
        self.run(color, &all, &env, self.command_timeout).await
    }

    /// The compose file `color` runs from (absolute).
    pub fn file(&self, color: Color) -> &Path {
        self.files.get(color)
    }

    fn color_of_project(&self, project: &str) -> Option<Color> {
        Color::ALL
            .into_iter()
            .find(|c| self.projects.get(*c) == project)
    }

    /// The compose command line for `color` with `args`, and its environment.
    fn command(&self, color: Color, args: &[&str], env: &[(&str, String)]) -> (Command, String) {
        let (program, pre) = self.program.argv0();
        let file = self.files.get(color);
        let project = self.projects.get(color);
        let mut command = Command::new(program)
            .args(pre)
            .arg("-p")
            .arg(project)
            .arg("-f")
            .arg(file)
            .args(args)
            .envs(&self.config.env)
            .env("BLUE_GREEN_COLOR", color.as_str())
            .envs(env.iter().map(|(key, value)| (key, value)))
            .kill_grace(KILL_GRACE)
            // Compose reports the error it stopped at last, after its progress lines.
            .output_limit(process::DEFAULT_OUTPUT_LIMIT, Keep::End);
        let dir = self
            .config
            .working_dir
            .clone()
            .or_else(|| file.parent().map(Path::to_path_buf));
        if let Some(dir) = dir {
            command = command.current_dir(dir);
        }
        let shown = format!(
            "{} -p {project} -f {} {}",
            self.program.display(),
            file.display(),
            args.join(" ")
        );
        (command, shown)
    }

    /// Runs a compose command; its stdout on success, an error with its stderr otherwise.
    ///
    /// The command runs in its own process group: at the timeout, or when this future is
    /// dropped (a cancelled deploy), the whole group is stopped, including the `docker-compose`
    /// plugin that `docker compose` runs as its child, so that nothing goes on creating
    /// containers after the engine has cleared the slot.
    async fn run(
        &self,
        color: Color,
        args: &[&str],
        env: &[(&str, String)],
        limit: Duration,
    ) -> Result<String, Error> {
        let (command, shown) = self.command(color, args, env);
        tracing::debug!(command = %shown, "running compose");
        let output = match command.run(limit).await {
            Ok(output) => output,
            Err(RunError::TimedOut { .. }) => {
                return Err(Error::Timeout {
                    what: format!("`{shown}`"),
                    timeout: limit,
                })
            }
            Err(error) if !error.started() => {
                return Err(Error::ComposeMissing {
                    program: self.program.display().into(),
                    source: program::start_failure(error),
                })
            }
            Err(error) => {
                return Err(Error::ComposeFailed {
                    command: shown,
                    status: "not waited for".into(),
                    stderr: error.to_string(),
                })
            }
        };
        if output.status.success() {
            return Ok(output.stdout.text().into_owned());
        }
        let stderr = output.stderr.text();
        let cause = stderr::what_failed(&stderr, STDERR_LINES);
        Err(Error::ComposeFailed {
            command: shown,
            status: output.status.to_string(),
            stderr: if cause.is_empty() {
                "(compose printed nothing on stderr)".into()
            } else {
                cause
            },
        })
    }

    /// The containers of `project`'s service, running ones first.
    async fn service_containers(
        &self,
        project: &str,
    ) -> Result<Vec<ContainerInspectResponse>, Error> {
        let summaries = self
            .list_project(
                project,
                Some(format!("{LABEL_COMPOSE_SERVICE}={}", self.config.service)),
            )
            .await?;
        let mut found = Vec::new();
        // A one-off container (`compose run`: a release command) is not the service's.
        let one_off = |s: &ContainerSummary| {
            s.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_COMPOSE_ONEOFF))
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        for id in summaries
            .into_iter()
            .filter(|s| !one_off(s))
            .filter_map(|s| s.id)
        {
            if let Some(inspect) = container::inspect(&self.docker, &id, self.api_timeout).await? {
                found.push(inspect);
            }
        }
        found.sort_by_key(|c| container::state_of(c) != InstanceState::Running);
        Ok(found)
    }

    /// Whether any container (of any service) belongs to `project`.
    async fn project_exists(&self, project: &str) -> Result<bool, Error> {
        Ok(!self.list_project(project, None).await?.is_empty())
    }

    /// The containers of compose project `project`, running or not, optionally narrowed by one
    /// more label filter (`key=value`).
    async fn list_project(
        &self,
        project: &str,
        label: Option<String>,
    ) -> Result<Vec<ContainerSummary>, Error> {
        let mut labels = vec![format!("{LABEL_COMPOSE_PROJECT}={project}")];
        labels.extend(label);
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        call(
            || format!("to list the containers of compose project {project}"),
            self.api_timeout,
            self.docker.list_containers(Some(options)),
        )
        .await
    }

    /// Environment for commands on an existing instance: its color and release, and the image
    /// its service runs (so `${BLUE_GREEN_IMAGE}` interpolates as it did at `up`).
    async fn env_of(&self, instance: &Instance) -> Vec<(&'static str, String)> {
        let mut env = vec![("BLUE_GREEN_RELEASE", instance.release.clone())];
        if let Ok(containers) = self.service_containers(&instance.id).await {
            if let Some(image) = containers
                .first()
                .and_then(|c| c.config.as_ref())
                .and_then(|c| c.image.clone())
            {
                env.push(("BLUE_GREEN_IMAGE", image));
            }
        }
        env
    }

    /// Where the service of `color` answers: the configured endpoint, or `compose port`.
    async fn endpoint(&self, color: Color, env: &[(&str, String)]) -> Result<Endpoint, Error> {
        if let Some(endpoints) = &self.config.endpoints {
            return Ok(endpoints.get(color).clone());
        }
        let port = self.config.container_port.unwrap_or_default().to_string();
        let out = self
            .run(
                color,
                &["port", &self.config.service, &port],
                env,
                self.command_timeout,
            )
            .await;
        // A service that exited has no published port: port 0, and `state` says why.
        let out = match out {
            Ok(out) => out,
            Err(Error::ComposeFailed { .. }) => String::new(),
            Err(e) => return Err(e),
        };
        Ok(parse_port_output(&out).unwrap_or_else(|| Endpoint::new("127.0.0.1", 0)))
    }

    async fn instance_of(
        &self,
        color: Color,
        release: String,
        env: &[(&str, String)],
    ) -> Result<Instance, Error> {
        Ok(Instance::new(
            color,
            release,
            self.projects.get(color).clone(),
            self.endpoint(color, env).await?,
        ))
    }

    async fn start_inner(&self, color: Color, release: &Release) -> Result<Instance, Error> {
        let mut env = vec![("BLUE_GREEN_RELEASE", release.id.to_string())];
        if let Some(image) = &release.artifact {
            env.push(("BLUE_GREEN_IMAGE", image.to_string()));
        }
        let project = self.projects.get(color);
        let up = async {
            self.run(color, &["up", "-d"], &env, self.command_timeout)
                .await
                .map_err(|e| naming_the_image(e, release))?;
            if self.service_containers(project).await?.is_empty() {
                return Err(Error::ServiceMissing {
                    project: project.clone(),
                    service: self.config.service.clone(),
                    file: self.files.get(color).display().to_string(),
                });
            }
            self.instance_of(color, release.id.to_string(), &env).await
        };
        match up.await {
            Ok(instance) => Ok(instance),
            Err(error) => {
                // Leave the slot empty, as it was: the engine never learns of a project whose
                // start failed, so nobody else would take it down.
                let down = self
                    .run(
                        color,
                        &["down", "--timeout", "10"],
                        &env,
                        self.command_timeout + Duration::from_secs(10),
                    )
                    .await;
                if let Err(down) = down {
                    tracing::warn!(project, error = %down, "could not take down a project whose start failed");
                }
                Err(error)
            }
        }
    }

    async fn stop_inner(&self, instance: &Instance, grace: Duration) -> Result<(), Error> {
        let Some(color) = self.color_of_project(&instance.id) else {
            return Ok(());
        };
        let containers = self.list_project(&instance.id, None).await?;
        if containers.is_empty() {
            return Ok(());
        }
        let running: Vec<String> = containers
            .into_iter()
            .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
            .filter_map(|c| c.id)
            .collect();
        let seconds = (grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).to_string();
        let env = self.env_of(instance).await;
        // Ends when the project's running containers have died, as the docker runtime's stop
        // does; `compose stop`, if still waiting for Docker then, is killed, and Docker
        // finishes the teardown on its own.
        let stop = async {
            self.run(
                color,
                &["stop", "--timeout", &seconds],
                &env,
                self.command_timeout + grace,
            )
            .await
            .map(|_| ())
        };
        container::stop_until_exit(&self.docker, &running, stop).await
    }

    async fn restart_inner(&self, instance: &Instance) -> Result<Instance, Error> {
        let color = self.color_of_project(&instance.id).ok_or_else(|| {
            Error::Invalid(format!(
                "{} is not a compose project of app {}",
                instance.id, self.app
            ))
        })?;
        let env = self.env_of(instance).await;
        self.run(color, &["start"], &env, self.command_timeout)
            .await?;
        self.instance_of(color, instance.release.clone(), &env)
            .await
    }

    async fn remove_inner(&self, instance: &Instance) -> Result<(), Error> {
        let Some(color) = self.color_of_project(&instance.id) else {
            return Ok(());
        };
        if !self.project_exists(&instance.id).await? {
            return Ok(());
        }
        let env = self.env_of(instance).await;
        // Containers are stopped already when the engine removes; a short timeout keeps a
        // leftover from holding the deploy.
        self.run(
            color,
            &["down", "--timeout", "10"],
            &env,
            self.command_timeout + Duration::from_secs(10),
        )
        .await
        .map(|_| ())
    }

    async fn list_inner(&self) -> Result<Vec<Instance>, Error> {
        let mut instances = Vec::new();
        for color in Color::ALL {
            let project = self.projects.get(color);
            let containers = self.service_containers(project).await?;
            let Some(service) = containers.first() else {
                if self.project_exists(project).await? {
                    tracing::warn!(project, service = %self.config.service, "compose project has no container for the service");
                }
                continue;
            };
            let release = container::env_value(service, "BLUE_GREEN_RELEASE").unwrap_or_default();
            let mut env = vec![("BLUE_GREEN_RELEASE", release.clone())];
            if let Some(image) = service.config.as_ref().and_then(|c| c.image.clone()) {
                env.push(("BLUE_GREEN_IMAGE", image));
            }
            let endpoint = if container::state_of(service) == InstanceState::Running {
                self.endpoint(color, &env).await?
            } else {
                match &self.config.endpoints {
                    Some(endpoints) => endpoints.get(color).clone(),
                    None => Endpoint::new("127.0.0.1", 0),
                }
            };
            instances.push(Instance::new(color, release, project.clone(), endpoint));
        }
        Ok(instances)
    }
}

#[async_trait]
impl Runtime for ComposeRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        Ok(self.start_inner(color, release).await?)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        let containers = self.service_containers(&instance.id).await?;
        Ok(containers
            .first()
            .map(container::state_of)
            .unwrap_or(InstanceState::Missing))
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
        let containers = self.service_containers(&instance.id).await?;
        let Some(id) = containers.first().and_then(|c| c.id.clone()) else {
            return Ok(Vec::new());
        };
        Ok(container::log_tail(&self.docker, &id, lines, self.api_timeout).await?)
    }
}

/// Fills in the project template and checks the result is a valid compose project name.
pub fn project_name(template: &str, app: &AppName, color: Color) -> Result<String, Error> {
    let template = if template.is_empty() {
        "{app}-{color}"
    } else {
        template
    };
    let name = template
        .replace("{app}", app.as_str())
        .replace("{color}", color.as_str());
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(Error::Invalid(format!(
            "compose project name `{name}` (from the template `{template}`) is not valid: use a-z, 0-9, `_` and `-`, starting with a letter or digit; only {{app}} and {{color}} are filled in"
        )));
    }
    Ok(name)
}

/// Parses `compose port` output (`0.0.0.0:49153`, `[::]:49153`); a wildcard host becomes
/// loopback.
fn parse_port_output(out: &str) -> Option<Endpoint> {
    out.lines().find_map(|line| {
        let endpoint: Endpoint = line.trim().parse().ok()?;
        let host = match endpoint.host.as_str() {
            "0.0.0.0" | "" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            other => other.to_string(),
        };
        Some(Endpoint::new(host, endpoint.port))
    })
}

/// A failed `up` names the release's image when compose's own lines do not (compose v2 reports a
/// failed pull by the registry's URL only), so the user sees which image could not be had.
fn naming_the_image(error: Error, release: &Release) -> Error {
    match (error, release.artifact.as_ref().map(|a| a.to_string())) {
        (
            Error::ComposeFailed {
                command,
                status,
                stderr,
            },
            Some(image),
        ) if !stderr.contains(&image) => Error::ComposeFailed {
            command,
            status,
            stderr: format!("{stderr}\n(the release's image is {image})"),
        },
        (error, _) => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_filled_in_and_checked() {
        let app = AppName::new("study-pot").unwrap();
        assert_eq!(
            project_name("{app}-{color}", &app, Color::Green).unwrap(),
            "study-pot-green"
        );
        assert_eq!(
            project_name("", &app, Color::Blue).unwrap(),
            "study-pot-blue"
        );
        assert_eq!(
            project_name("sp_{color}", &app, Color::Blue).unwrap(),
            "sp_blue"
        );
        for bad in [
            "{app} {color}",
            "{app}/{color}",
            "-{color}",
            "{APP}-{color}",
            "{app};rm",
        ] {
            assert!(
                project_name(bad, &app, Color::Blue).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn port_output_is_parsed() {
        assert_eq!(
            parse_port_output("0.0.0.0:49153\n"),
            Some(Endpoint::new("127.0.0.1", 49153))
        );
        assert_eq!(
            parse_port_output("127.0.0.1:8081\n[::]:8081\n"),
            Some(Endpoint::new("127.0.0.1", 8081))
        );
        assert_eq!(parse_port_output("\n"), None);
    }
}
