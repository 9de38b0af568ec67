//! What both runtimes read from a container: its state, its published port, its environment,
//! its log tail.

use std::time::Duration;

use blue_green_core::InstanceState;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::TryStreamExt;

use crate::client::{call, is_status};
use crate::error::Error;

/// Inspects a container; `None` when the daemon has no such container.
pub(crate) async fn inspect(
    docker: &Docker,
    id: &str,
    limit: Duration,
) -> Result<Option<ContainerInspectResponse>, Error> {
    match call(
        || format!("to inspect container {id}"),
        limit,
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await
    {
        Ok(inspect) => Ok(Some(inspect)),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The runtime state of an inspected container.
pub(crate) fn state_of(inspect: &ContainerInspectResponse) -> InstanceState {
    let Some(state) = &inspect.state else {
        return InstanceState::Exited {
            code: None,
            reason: Some("Docker reported no state for the container".into()),
        };
    };
    let running = state.running.unwrap_or(false);
    let restarting = state.restarting.unwrap_or(false);
    if running && !restarting {
        return InstanceState::Running;
    }
    let code = state.exit_code;
    let error = state.error.clone().filter(|e| !e.is_empty());
    let reason = if state.oom_killed.unwrap_or(false) {
        Some("killed: out of memory".to_string())
    } else if restarting {
        Some("restarting after an exit (restart policy)".to_string())
    } else if let Some(error) = error {
        Some(error)
    } else {
        match state.status {
            Some(ContainerStateStatusEnum::CREATED) => Some("created but never started".into()),
            Some(ContainerStateStatusEnum::DEAD) => Some("dead (Docker could not stop it)".into()),
            Some(ContainerStateStatusEnum::PAUSED) => Some("paused".into()),
            _ => None,
        }
    };
    let code = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => None,
        _ => code,
    };
    InstanceState::Exited { code, reason }
}

/// The host port Docker published for `container_port/tcp`, if the container has one now (a
/// stopped container has none).
pub(crate) fn published_port(
    inspect: &ContainerInspectResponse,
    container_port: u16,
) -> Option<u16> {
    let ports = inspect.network_settings.as_ref()?.ports.as_ref()?;
    let bindings = ports.get(&format!("{container_port}/tcp"))?.as_ref()?;
    bindings
        .iter()
        .filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
        .find(|port| *port != 0)
}

/// The value of `name` in the container's environment.
pub(crate) fn env_value(inspect: &ContainerInspectResponse, name: &str) -> Option<String> {
    let env = inspect.config.as_ref()?.env.as_ref()?;
    env.iter().find_map(|kv| {
        let (key, value) = kv.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// The value of a label of the container.
pub(crate) fn label(inspect: &ContainerInspectResponse, name: &str) -> Option<String> {
    inspect.config.as_ref()?.labels.as_ref()?.get(name).cloned()
}

/// The last `lines` lines of stdout and stderr, interleaved as Docker stored them.
pub(crate) async fn log_tail(
    docker: &Docker,
    id: &str,
    lines: usize,
    limit: Duration,
) -> Result<Vec<String>, Error> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let chunks = call(
        || format!("to read the logs of container {id}"),
        limit,
        docker.logs(id, Some(options)).try_collect::<Vec<_>>(),
    )
    .await;
    let chunks = match chunks {
        Ok(chunks) => chunks,
        Err(e) if is_status(&e, 404) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text: String = chunks.iter().map(|chunk| chunk.to_string()).collect();
    let mut all: Vec<String> = text.lines().map(str::to_string).collect();
    let skip = all.len().saturating_sub(lines);
    Ok(all.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    fn with_state(state: ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn states_map_running_exited_and_oom() {
        let running = with_state(ContainerState {
            running: Some(true),
            status: Some(ContainerStateStatusEnum::RUNNING),
            ..Default::default()
        });
        assert_eq!(state_of(&running), InstanceState::Running);

        let exited = with_state(ContainerState {
            running: Some(false),
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(1),
            ..Default::default()
        });
        assert_eq!(
            state_of(&exited),
            InstanceState::Exited {
                code: Some(1),
                reason: None
            }
        );

        let oom = with_state(ContainerState {
            running: Some(false),
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            oom_killed: Some(true),
            ..Default::default()
        });
        assert_eq!(
            state_of(&oom),
            InstanceState::Exited {
                code: Some(137),
                reason: Some("killed: out of memory".into())
            }
        );

        let created = with_state(ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            exit_code: Some(0),
            ..Default::default()
        });
        assert!(matches!(
            state_of(&created),
            InstanceState::Exited { code: None, .. }
        ));
    }
}
