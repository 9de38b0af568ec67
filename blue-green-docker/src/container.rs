//! What both runtimes read from a container: its state, its published port, its environment,
//! its log tail.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use blue_green_core::runtime::instance_env;
use blue_green_core::{AppName, Color, InstanceState, Release};
use bollard::container::LogOutput;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings, NetworkConnectRequest,
};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, LogsOptions, LogsOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::client::{call, is_status};
use crate::docker::{LABEL_APP, LABEL_COLOR, LABEL_MANAGED_BY, LABEL_RELEASE};
use crate::error::Error;

/// Connects container `id` (named `name` in errors) to each of `networks`. Docker attaches a
/// container to one network at creation; every other one is connected before it starts, so
/// that the app finds them all from its first instruction.
pub(crate) async fn connect_networks(
    docker: &Docker,
    id: &str,
    name: &str,
    networks: &[String],
    limit: Duration,
) -> Result<(), Error> {
    for network in networks {
        call(
            || format!("to connect container {name} to network {network}"),
            limit,
            docker.connect_network(
                network,
                NetworkConnectRequest {
                    container: id.to_string(),
                    endpoint_config: Some(EndpointSettings::default()),
                },
            ),
        )
        .await?;
    }
    Ok(())
}

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

/// Runs `stop`, a call that stops the containers `ids`, until it ends or until Docker reports
/// that the main process of each of them has died, whichever comes first.
///
/// Docker answers a stop only after it has also taken the container's network and mounts down:
/// here about 120 ms after the app has exited, most of a deploy's stop step. Nothing the
/// engine does next needs that done: the app's process is gone at the `die` event, and Docker
/// finishes its own bookkeeping whether anyone waits for it or not. Every later call on the
/// container (inspect, start, remove) waits for it inside the daemon, so nobody sees a
/// half-stopped container. What the stop call does before the process dies (the signal, the
/// grace, the kill) is still awaited, so an app that ignores SIGTERM is killed as before.
pub(crate) async fn stop_until_exit(
    docker: &Docker,
    ids: &[String],
    stop: impl Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    if ids.is_empty() {
        return stop.await;
    }
    first_of(all_died(docker, ids), stop).await
}

/// `stop`'s result, or `Ok` as soon as `died` resolves. `died` is polled first, so that its
/// subscription goes out before the stop request does.
async fn first_of(
    died: impl Future<Output = ()>,
    stop: impl Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    tokio::select! {
        biased;
        () = died => Ok(()),
        result = stop => result,
    }
}

/// Resolves once Docker has sent a `die` event for each of the containers `ids`. Never
/// resolves if the events cannot be read: it is only raced against a call that ends on its
/// own.
async fn all_died(docker: &Docker, ids: &[String]) {
    let filters = HashMap::from([
        ("type", vec!["container".to_string()]),
        ("container", ids.to_vec()),
        ("event", vec!["die".to_string()]),
    ]);
    let options = EventsOptionsBuilder::new().filters(&filters).build();
    let mut events = docker.events(Some(options));
    let mut alive: Vec<&str> = ids.iter().map(String::as_str).collect();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) if event.action.as_deref() == Some("die") => {
                let id = event.actor.as_ref().and_then(|a| a.id.as_deref());
                alive.retain(|a| Some(*a) != id);
                if alive.is_empty() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "could not follow the containers' events; waiting for the stop call alone");
                break;
            }
        }
    }
    std::future::pending().await
}

/// The value of [`LABEL_MANAGED_BY`] on what this crate runs.
pub(crate) const MANAGED_BY: &str = "blue-green";

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

/// The environment of an instance as Docker takes it (`KEY=VALUE`): the configured one, then
/// [`instance_env`] (which wins over a configured variable of the same name).
pub(crate) fn env_list(
    configured: &BTreeMap<String, String>,
    color: Color,
    release: &Release,
) -> Vec<String> {
    let own = instance_env(color, release);
    configured
        .iter()
        .filter(|(k, _)| !own.iter().any(|(name, _)| name == k))
        .map(|(k, v)| format!("{k}={v}"))
        .chain(own.iter().map(|(k, v)| format!("{k}={v}")))
        .collect()
}

/// The labels of an instance: the configured ones, then the app, color, release and
/// managed-by labels that `list` finds instances by.
pub(crate) fn labels(
    configured: &BTreeMap<String, String>,
    app: &AppName,
    color: Color,
    release: &Release,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = configured
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_APP.into(), app.to_string());
    labels.insert(LABEL_COLOR.into(), color.to_string());
    labels.insert(LABEL_RELEASE.into(), release.id.to_string());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

/// The label filter that finds what this crate runs for `app`.
pub(crate) fn app_filter(app: &AppName) -> HashMap<&'static str, Vec<String>> {
    HashMap::from([(
        "label",
        vec![
            format!("{LABEL_APP}={app}"),
            format!("{LABEL_MANAGED_BY}={MANAGED_BY}"),
        ],
    )])
}

/// How many of the newest log lines are read to make a report of at most `lines` lines: enough
/// to hold the whole output of an instance that has just failed to get ready.
const LOG_READ: usize = 5000;

/// At most `lines` lines of stdout and stderr, interleaved as Docker stored them, for a failure
/// report: the first lines after the start (where an app says what it listens on, or why it
/// cannot) as well as the last, with runs of alike lines (the app logging each probe) folded
/// into one.
pub(crate) async fn log_tail(
    docker: &Docker,
    id: &str,
    lines: usize,
    limit: Duration,
) -> Result<Vec<String>, Error> {
    log_report(
        || format!("to read the logs of container {id}"),
        limit,
        docker.logs(id, Some(log_options(lines))),
        lines,
    )
    .await
}

/// The options that read enough of a log for [`log_report`].
pub(crate) fn log_options(lines: usize) -> LogsOptions {
    LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&LOG_READ.max(lines).to_string())
        .build()
}

/// At most `lines` lines of a log stream (a container's or a service's), folded and cut by
/// [`head_and_tail`]; nothing when the daemon has no such object any more.
pub(crate) async fn log_report(
    what: impl FnOnce() -> String,
    limit: Duration,
    stream: impl Stream<Item = Result<LogOutput, bollard::errors::Error>>,
    lines: usize,
) -> Result<Vec<String>, Error> {
    let chunks = match call(what, limit, stream.try_collect::<Vec<_>>()).await {
        Ok(chunks) => chunks,
        Err(e) if is_status(&e, 404) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let text: String = chunks.iter().map(|chunk| chunk.to_string()).collect();
    Ok(head_and_tail(text.lines(), lines))
}

/// Folds runs of lines that differ only in their digits (times, counters, addresses) into the
/// first of them and a count, then keeps the first quarter of `lines` and the rest from the
/// end, with a line saying how many were left out between.
fn head_and_tail<'a>(all: impl Iterator<Item = &'a str>, lines: usize) -> Vec<String> {
    if lines == 0 {
        return Vec::new();
    }
    let shape = |l: &str| -> String {
        l.chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect()
    };
    let mut folded: Vec<(String, String, usize)> = Vec::new();
    for line in all {
        let s = shape(line);
        match folded.last_mut() {
            Some((_, last, n)) if *last == s => *n += 1,
            _ => folded.push((line.to_string(), s, 1)),
        }
    }
    let shown: Vec<String> = folded
        .into_iter()
        .map(|(line, _, n)| match n {
            1 => line,
            2 => format!("{line}  [and 1 more line like it]"),
            n => format!("{line}  [and {} more lines like it]", n - 1),
        })
        .collect();
    if shown.len() <= lines {
        return shown;
    }
    let head = (lines / 4).max(1);
    let tail = lines.saturating_sub(head + 1);
    let left_out = shown.len() - head - tail;
    let mut out: Vec<String> = shown[..head].to_vec();
    out.push(format!("[... {left_out} lines left out ...]"));
    out.extend_from_slice(&shown[shown.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> Error {
        Error::Timeout {
            what: "to stop container x".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_stop_ends_at_the_die_event_without_waiting_for_the_call() {
        let result = first_of(async {}, std::future::pending()).await;
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn a_stop_without_a_die_event_is_the_call_s_result() {
        let never = std::future::pending::<()>;
        assert!(first_of(never(), async { Ok(()) }).await.is_ok());
        let failed = first_of(never(), async { Err(timeout()) }).await;
        assert!(matches!(failed, Err(Error::Timeout { .. })), "{failed:?}");
    }

    #[test]
    fn log_reports_keep_the_start_and_fold_alike_lines() {
        let mut log = vec!["listening on 0.0.0.0:8080".to_string()];
        for i in 0..300 {
            log.push(format!("12:00:{:02} GET /health 200", i % 60));
        }
        for i in 0..40 {
            log.push(format!(
                "line {} of {}",
                char::from(b'a' + (i % 26) as u8),
                "x"
            ));
        }
        let out = head_and_tail(log.iter().map(String::as_str), 20);
        assert_eq!(out.len(), 20, "{out:#?}");
        assert_eq!(out[0], "listening on 0.0.0.0:8080");
        assert_eq!(
            out[1],
            "12:00:00 GET /health 200  [and 299 more lines like it]"
        );
        assert!(out[5].starts_with("[... "), "{out:#?}");
        assert_eq!(out[19], "line n of x");
        // Short logs are shown whole.
        let short = head_and_tail(["a", "b", "b", "c"].into_iter(), 20);
        assert_eq!(short, vec!["a", "b  [and 1 more line like it]", "c"]);
    }
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
