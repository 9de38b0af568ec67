//! [`ReleaseCommand`]: a program run once, before the new color starts, in a one-off container
//! of the new release (Heroku's release phase, Dokku's predeploy): database migrations that
//! need the new release's code.
//!
//! It is a [`Hooks`] implementation with a hook at [`HookPoint::PreDeploy`] only, so the engine
//! runs it as that step: journaled, timed, its output in the `HookFinished` event, its outcome
//! in the history, and a failure fails the deploy before anything serving changed. Chain it
//! after the user's own hooks with [`blue_green_core::Chain`]: the user's `pre_deploy` hook (a
//! backup, a go/no-go check on the host) runs first, the release command last, right before the
//! new color starts, so that a migrated schema waits for its code as briefly as it can and a
//! failing check means nothing was migrated.
//!
//! - Docker runtime: a container of the image the new color will run (the release's artifact,
//!   else the configured image), with the color's environment and networks, the command as its
//!   argv (the image's entrypoint stays, as with `docker run IMAGE ARGS`), named
//!   `{app}-release` and labelled [`LABEL_ROLE`]` = release`.
//! - Compose runtime: `compose run --rm --no-deps -T SERVICE ARGV...` in the new color's
//!   project, with the file, environment and interpolation `up` would use, named
//!   `{project}-release`.
//!
//! Both get the `BLUE_GREEN_*` variables of the [`HookContext`]. The container is removed
//! afterwards in every case: after a success, a failure, a timeout (it is killed first), and
//! when the deploy is cancelled (the future is dropped: a guard removes it in the background).
//! A container left by a run that was killed outright is found by its name and label and
//! removed before the next run.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::hooks::{
    HookCommand, HookContext, HookOutput, HookPoint, Hooks, NoHooks, HOOK_OUTPUT_LIMIT,
};
use blue_green_core::{ComponentError, Release};
use bollard::models::NetworkingConfig;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    StartContainerOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use crate::client::{call, is_status};
use crate::compose::ComposeRuntime;
use crate::container;
use crate::docker::{DockerRuntime, LABEL_APP, LABEL_MANAGED_BY, LABEL_RELEASE};
use crate::error::Error;

/// Label marking a container that is not an instance of a color but a task of the app; its
/// value is [`ROLE_RELEASE`] for a release command's one-off container.
pub const LABEL_ROLE: &str = "blue-green.role";
/// The value of [`LABEL_ROLE`] on a release command's one-off container.
pub const ROLE_RELEASE: &str = "release";

/// How long, beyond the command's own timeout, killing and removing its container may take:
/// the engine's limit around the step is the sum, so it never cuts the cleanup short.
const CLEANUP_ALLOWANCE: Duration = Duration::from_secs(30);

/// How many of the last log lines of a one-off container are read; the text is then cut to
/// twice [`HOOK_OUTPUT_LIMIT`] (stdout and stderr interleaved, as much as a hook keeps of both).
const LOG_LINES: usize = 5000;

/// Whether a container's labels mark it as a release command's one-off container.
pub(crate) fn is_release_task(labels: Option<&HashMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(LABEL_ROLE))
        .is_some_and(|role| role == ROLE_RELEASE)
}

/// Where the one-off container runs.
#[derive(Debug, Clone)]
enum Runner {
    Docker(DockerRuntime),
    Compose(ComposeRuntime),
}

/// A release command: run once per deploy at [`HookPoint::PreDeploy`] in a one-off container of
/// the new release, removed afterwards. See the [module documentation](self).
///
/// ```no_run
/// # async fn demo(runtime: blue_green_docker::DockerRuntime) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use blue_green_core::{Chain, CommandHooks, HookCommand, Release};
/// use blue_green_docker::release::ReleaseCommand;
///
/// let release = Release::new("v2")?.with_artifact("web:2")?;
/// let migrate = HookCommand::new(vec!["./migrate".into(), "up".into()], Duration::from_secs(300))?;
/// let hooks = Chain::new(
///     CommandHooks::new(),
///     ReleaseCommand::docker(&runtime, migrate).for_release(&release),
/// );
/// // engine.with_hooks(Arc::new(hooks)).deploy(release, &cancel)
/// # let _ = Arc::new(hooks);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReleaseCommand {
    runner: Runner,
    command: HookCommand,
    /// The release the CLI is about to deploy, for its artifact (the hook context carries the
    /// release id only).
    release: Option<Release>,
}

impl ReleaseCommand {
    /// Runs `command` in a one-off container of the Docker runtime's new release. The
    /// command's working directory, if set, is ignored: the image's own applies.
    pub fn docker(runtime: &DockerRuntime, command: HookCommand) -> Self {
        ReleaseCommand {
            runner: Runner::Docker(runtime.clone()),
            command,
            release: None,
        }
    }

    /// Runs `command` with `compose run` in the new color's compose project.
    pub fn compose(runtime: &ComposeRuntime, command: HookCommand) -> Self {
        ReleaseCommand {
            runner: Runner::Compose(runtime.clone()),
            command,
            release: None,
        }
    }

    /// Tells the command which release a deploy brings up, so that it runs that release's
    /// artifact (`deploy --image`) rather than the configured image. Without it, or for
    /// another release, the configured image is used.
    pub fn for_release(mut self, release: &Release) -> Self {
        self.release = Some(release.clone());
        self
    }

    /// The command.
    pub fn command(&self) -> &HookCommand {
        &self.command
    }

    /// The release of `context` as the runtime starts it: with its artifact when it is the
    /// release given to [`for_release`](Self::for_release).
    fn release_of(&self, context: &HookContext) -> Result<Release, Error> {
        if let Some(release) = self
            .release
            .as_ref()
            .filter(|r| r.id.as_str() == context.release)
        {
            return Ok(release.clone());
        }
        Release::new(context.release.clone()).map_err(|e| Error::Invalid(e.message))
    }

    /// The argv as a person reads it: `./migrate up`.
    fn shown(&self) -> String {
        self.command.argv().join(" ")
    }

    async fn run_release(&self, context: &HookContext) -> Result<HookOutput, Error> {
        let release = self.release_of(context)?;
        match &self.runner {
            Runner::Docker(runtime) => {
                run_in_docker(runtime, &self.command, &release, context).await
            }
            Runner::Compose(runtime) => runtime.run_release(&self.command, &release, context).await,
        }
    }
}

#[async_trait]
impl Hooks for ReleaseCommand {
    fn timeout(&self, point: HookPoint) -> Option<Duration> {
        (point == HookPoint::PreDeploy).then(|| self.command.timeout() + CLEANUP_ALLOWANCE)
    }

    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<HookOutput, ComponentError> {
        if point != HookPoint::PreDeploy {
            return NoHooks.run(point, context).await;
        }
        self.run_release(context).await.map_err(|e| {
            let mut error = ComponentError::from(e);
            // A timeout says itself which command ran; other errors say it could not run.
            if !matches!(error.origin::<Error>(), Some(Error::ReleaseTimeout { .. })) {
                error.message = format!(
                    "could not run the release command `{}`: {}",
                    self.shown(),
                    error.message
                );
            }
            error
        })
    }
}

/// Removes a one-off container when dropped before [`Removal::now`] ran: the deploy was
/// cancelled (or its step's limit hit) while the command ran. Drop cannot wait, so the removal
/// runs as a task of its own; should the process exit first, the next run removes the
/// container by its name.
pub(crate) struct Removal {
    docker: Docker,
    limit: Duration,
    container: Option<String>,
}

impl Removal {
    /// A guard with nothing to remove yet.
    pub(crate) fn new(docker: &Docker, limit: Duration) -> Self {
        Removal {
            docker: docker.clone(),
            limit,
            container: None,
        }
    }

    /// From now on, `container` (an id or a name) is removed in every case.
    pub(crate) fn arm(&mut self, container: impl Into<String>) {
        self.container = Some(container.into());
    }

    /// Removes the container now (killing it if it runs), if there is one.
    pub(crate) async fn now(&mut self) -> Result<(), Error> {
        match self.container.take() {
            Some(container) => force_remove(&self.docker, &container, self.limit).await,
            None => Ok(()),
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        let Some(container) = self.container.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let docker = self.docker.clone();
        let limit = self.limit;
        handle.spawn(async move {
            if let Err(e) = force_remove(&docker, &container, limit).await {
                tracing::warn!(container, error = %e, "could not remove a release command's container after a cancel; the next deploy removes it");
            }
        });
    }
}

/// Kills and removes `container` with its anonymous volumes; a container that is gone (or
/// being removed already) is fine.
pub(crate) async fn force_remove(
    docker: &Docker,
    container: &str,
    limit: Duration,
) -> Result<(), Error> {
    let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match call(
        || format!("to remove the release command's container {container}"),
        limit,
        docker.remove_container(container, Some(options)),
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what an interrupted run left: the container named `name`, and any container with
/// the [`LABEL_ROLE`] label and the `scope` label (`key=value`: the app, or a compose project).
pub(crate) async fn remove_leftovers(
    docker: &Docker,
    name: &str,
    scope: String,
    limit: Duration,
) -> Result<(), Error> {
    force_remove(docker, name, limit).await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL_ROLE}={ROLE_RELEASE}"), scope])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let leftovers = call(
        || "to list the release command containers left over".to_string(),
        limit,
        docker.list_containers(Some(options)),
    )
    .await?;
    for id in leftovers.into_iter().filter_map(|c| c.id) {
        tracing::info!(container = %id, "removing a release command's container left by an interrupted run");
        force_remove(docker, &id, limit).await?;
    }
    Ok(())
}

/// The status of a release command that ran: "ran the release command `./migrate up` in a
/// one-off container of image `web:2`, which exited with code 3" (the engine writes it after
/// "the pre_deploy hook").
pub(crate) fn ran_status(command: &HookCommand, container_of: &str, ended: &str) -> String {
    format!(
        "ran the release command `{}` in a one-off container of {container_of}, which {ended}",
        command.argv().join(" ")
    )
}

/// The last `limit` bytes of `text` (on a character boundary), with a line saying that the
/// start was left out when it was.
pub(crate) fn keep_end(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... earlier output left out ...]\n{}", &text[start..])
}

/// Runs `command` once in a one-off container of `release` for the Docker runtime.
async fn run_in_docker(
    runtime: &DockerRuntime,
    command: &HookCommand,
    release: &Release,
    context: &HookContext,
) -> Result<HookOutput, Error> {
    let docker = runtime.docker();
    let limit = runtime.api_timeout();
    let image = runtime.image_for(release).to_string();
    let name = format!("{}-release", runtime.app());
    remove_leftovers(
        docker,
        &name,
        format!("{LABEL_APP}={}", runtime.app()),
        limit,
    )
    .await?;

    let mut removal = Removal::new(docker, limit);
    let removal_ref = &mut removal;
    let ran = tokio::time::timeout(command.timeout(), async {
        runtime.ensure_image(&image).await?;
        let body = one_off_body(runtime, command, release, context, &image);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let id = call(
            || format!("to create the release command's container {name} from image {image}"),
            limit,
            docker.create_container(Some(options), body),
        )
        .await?
        .id;
        removal_ref.arm(id.clone());
        let networks = runtime.config().networks.get(1..).unwrap_or_default();
        container::connect_networks(docker, &id, &name, networks, limit).await?;
        call(
            || format!("to start the release command's container {name}"),
            limit,
            docker.start_container(&id, None::<StartContainerOptions>),
        )
        .await?;
        let code = exit_code(docker, &id).await?;
        Ok::<_, Error>((id, code))
    })
    .await;

    let result = match ran {
        Ok(Ok((id, code))) => {
            let output = output_of(docker, &id, limit).await;
            output.map(|output| {
                HookOutput::new(
                    code == 0,
                    ran_status(
                        command,
                        &format!("image `{image}`"),
                        &format!("exited with code {code}"),
                    ),
                    output,
                )
            })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::ReleaseTimeout {
            command: command.argv().join(" "),
            container: format!("container {name} of image `{image}`"),
            timeout: command.timeout(),
        }),
    };
    let removed = removal.now().await;
    match (result, removed) {
        (Ok(outcome), Err(e)) => {
            // The command ran and its outcome stands; the next run removes the container.
            tracing::warn!(container = %name, error = %e, "could not remove the release command's container");
            Ok(outcome)
        }
        (result, _) => result,
    }
}

/// The container of a release command: the new color's image, environment, labels (with
/// [`LABEL_ROLE`], without a color: it is no instance), networks and init, no published port.
fn one_off_body(
    runtime: &DockerRuntime,
    command: &HookCommand,
    release: &Release,
    context: &HookContext,
    image: &str,
) -> ContainerCreateBody {
    let config = runtime.config();
    let hook_env = context.env();
    let mut env: Vec<String> = container::env_list(&config.env, context.color, release)
        .into_iter()
        .filter(|kv| {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !hook_env.iter().any(|(name, _)| *name == key)
        })
        .collect();
    env.extend(hook_env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut labels: HashMap<String, String> = config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_APP.into(), runtime.app().to_string());
    labels.insert(LABEL_RELEASE.into(), release.id.to_string());
    labels.insert(LABEL_MANAGED_BY.into(), container::MANAGED_BY.into());
    labels.insert(LABEL_ROLE.into(), ROLE_RELEASE.into());
    let networking_config = config.networks.first().map(|network| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.clone(),
            EndpointSettings::default(),
        )])),
    });
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(command.argv().to_vec()),
        env: Some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: config.networks.first().cloned(),
            init: config.init.then_some(true),
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
}

/// Waits until the container exits; its exit code.
async fn exit_code(docker: &Docker, id: &str) -> Result<i64, Error> {
    let mut wait = docker.wait_container(id, None);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(Error::from_bollard(
            format!("to wait for the release command's container {id}"),
            e,
        )),
        None => Err(Error::Unexpected {
            what: format!("the wait for container {id}"),
            missing: "an exit code".into(),
        }),
    }
}

/// What the one-off container printed, stdout and stderr interleaved, the end of it when it
/// printed a lot.
async fn output_of(docker: &Docker, id: &str, limit: Duration) -> Result<String, Error> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&LOG_LINES.to_string())
        .build();
    let chunks = call(
        || format!("to read the output of the release command's container {id}"),
        limit,
        docker.logs(id, Some(options)).try_collect::<Vec<_>>(),
    )
    .await?;
    let text: String = chunks.iter().map(|chunk| chunk.to_string()).collect();
    Ok(keep_end(&text, 2 * HOOK_OUTPUT_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_output_keeps_its_end_on_a_character_boundary() {
        assert_eq!(keep_end("short", 10), "short");
        let kept = keep_end("aaaaé-the end", 9);
        assert_eq!(kept, "[... earlier output left out ...]\n-the end");
    }

    #[test]
    fn release_tasks_are_told_by_their_label() {
        let task = HashMap::from([(LABEL_ROLE.to_string(), ROLE_RELEASE.to_string())]);
        assert!(is_release_task(Some(&task)));
        assert!(!is_release_task(Some(&HashMap::new())));
        assert!(!is_release_task(None));
    }
}
