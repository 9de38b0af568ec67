//! Reading a service's tasks: has the spec converged, is it failing, where does it run. No I/O.

use std::collections::BTreeSet;

use bollard::models::{Task, TaskState};

/// Where the tasks of one spec generation of a service stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Every wanted task runs (a task with a healthcheck only counts as running once healthy:
    /// swarm holds it in `starting` until then). The node ids they run on, sorted.
    Converged {
        /// The nodes running the tasks.
        nodes: Vec<String>,
    },
    /// Still on the way: how many run of how many, and what the others are doing.
    Waiting(String),
    /// Too many tasks of this spec failed or were rejected: swarm would go on replacing them,
    /// but the release is broken. The distinct errors, each with the nodes it happened on.
    Failing(String),
}

/// Where the tasks of generation `generation` stand, for a service that wants `replicas`
/// of them, giving up after `max_failures` failed or rejected tasks.
pub(crate) fn progress(
    tasks: &[Task],
    generation: u64,
    replicas: u64,
    max_failures: u32,
) -> Progress {
    let ours: Vec<&Task> = tasks
        .iter()
        .filter(|t| task_generation(t) == generation)
        .collect();
    let failed: Vec<&Task> = ours
        .iter()
        .copied()
        .filter(|t| {
            matches!(
                state(t),
                Some(TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED)
            )
        })
        .collect();
    if max_failures > 0 && failed.len() >= max_failures as usize {
        return Progress::Failing(format!(
            "{} tasks failed: {}",
            failed.len(),
            describe_errors(&failed)
        ));
    }
    let running: Vec<&Task> = ours
        .iter()
        .copied()
        .filter(|t| {
            t.desired_state == Some(TaskState::RUNNING) && state(t) == Some(TaskState::RUNNING)
        })
        .collect();
    if running.len() as u64 >= replicas {
        let nodes: BTreeSet<String> = running.iter().filter_map(|t| t.node_id.clone()).collect();
        return Progress::Converged {
            nodes: nodes.into_iter().collect(),
        };
    }
    let others: Vec<String> = ours
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter(|t| state(t) != Some(TaskState::RUNNING))
        .map(|t| describe(t))
        .collect();
    let mut waiting = format!("{} of {replicas} tasks running", running.len());
    if !others.is_empty() {
        waiting.push_str(&format!("; others: {}", others.join("; ")));
    }
    if !failed.is_empty() {
        waiting.push_str(&format!(
            "; {} failed so far: {}",
            failed.len(),
            describe_errors(&failed)
        ));
    }
    Progress::Waiting(waiting)
}

/// True when some task of `generation` runs now (a stopped service has none).
pub(crate) fn any_running(tasks: &[Task], generation: u64) -> bool {
    tasks.iter().any(|t| {
        task_generation(t) == generation
            && t.desired_state == Some(TaskState::RUNNING)
            && state(t) == Some(TaskState::RUNNING)
    })
}

/// True when no task of the service still runs or is on its way to running (after a scale to
/// 0 or a removal).
pub(crate) fn all_down(tasks: &[Task]) -> bool {
    tasks.iter().all(|t| {
        !matches!(
            state(t),
            Some(
                TaskState::NEW
                    | TaskState::ALLOCATED
                    | TaskState::PENDING
                    | TaskState::ASSIGNED
                    | TaskState::ACCEPTED
                    | TaskState::PREPARING
                    | TaskState::READY
                    | TaskState::STARTING
                    | TaskState::RUNNING
            )
        )
    })
}

fn task_generation(task: &Task) -> u64 {
    task.spec.as_ref().and_then(|s| s.force_update).unwrap_or(0)
}

fn state(task: &Task) -> Option<TaskState> {
    task.status.as_ref().and_then(|s| s.state)
}

/// `state on node: error` of one task.
fn describe(task: &Task) -> String {
    let state = state(task).map_or("unknown".to_string(), |s| s.to_string());
    let node = task.node_id.as_deref().unwrap_or("no node yet");
    match error_of(task) {
        Some(error) => format!("{state} on {node}: {error}"),
        None => format!("{state} on {node}"),
    }
}

/// The task's error, or its status message when it has no error.
fn error_of(task: &Task) -> Option<String> {
    let status = task.status.as_ref()?;
    status
        .err
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| status.message.clone().filter(|m| !m.is_empty()))
}

/// The distinct errors of `failed`, each with how often and on which nodes: a release that
/// fails the same way on every node says so once.
fn describe_errors(failed: &[&Task]) -> String {
    let mut errors: Vec<(String, usize, BTreeSet<String>)> = Vec::new();
    for task in failed {
        let error = error_of(task).unwrap_or_else(|| "no error given".into());
        let node = task.node_id.clone().unwrap_or_else(|| "no node".into());
        match errors.iter_mut().find(|(e, _, _)| *e == error) {
            Some((_, n, nodes)) => {
                *n += 1;
                nodes.insert(node);
            }
            None => errors.push((error, 1, BTreeSet::from([node]))),
        }
    }
    errors
        .into_iter()
        .map(|(error, n, nodes)| {
            let nodes: Vec<String> = nodes.into_iter().collect();
            format!("\"{error}\" ({n}x on node {})", nodes.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{TaskSpec, TaskStatus};

    fn task(generation: u64, node: &str, desired: TaskState, now: TaskState, err: &str) -> Task {
        Task {
            node_id: Some(node.into()),
            desired_state: Some(desired),
            spec: Some(TaskSpec {
                force_update: Some(generation),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(now),
                err: (!err.is_empty()).then(|| err.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    use TaskState::{FAILED, PENDING, REJECTED, RUNNING, SHUTDOWN, STARTING};

    #[test]
    fn converges_when_every_task_of_the_spec_runs() {
        let tasks = [
            task(2, "n3", RUNNING, RUNNING, ""),
            task(2, "n1", RUNNING, RUNNING, ""),
            task(2, "n2", RUNNING, RUNNING, ""),
            // The previous generation's task, shut down: not counted.
            task(1, "n1", SHUTDOWN, SHUTDOWN, ""),
        ];
        assert_eq!(
            progress(&tasks, 2, 3, 3),
            Progress::Converged {
                nodes: vec!["n1".into(), "n2".into(), "n3".into()]
            }
        );
        assert!(any_running(&tasks, 2));
        assert!(!any_running(&tasks, 1));
        assert!(!all_down(&tasks));
    }

    #[test]
    fn running_tasks_of_an_older_spec_do_not_count() {
        let tasks = [
            task(1, "n1", RUNNING, RUNNING, ""),
            task(1, "n2", RUNNING, RUNNING, ""),
            task(2, "n3", RUNNING, STARTING, ""),
        ];
        let Progress::Waiting(why) = progress(&tasks, 2, 2, 3) else {
            panic!("{:?}", progress(&tasks, 2, 2, 3));
        };
        assert!(why.starts_with("0 of 2 tasks running"), "{why}");
        assert!(why.contains("starting on n3"), "{why}");
    }

    #[test]
    fn tasks_that_keep_failing_give_up_with_their_errors_once_each() {
        let crash = "task: non-zero exit (1)";
        let tasks = [
            task(5, "n1", SHUTDOWN, FAILED, crash),
            task(5, "n2", SHUTDOWN, FAILED, crash),
            task(5, "n2", SHUTDOWN, REJECTED, "No such image: web:9"),
            task(5, "n3", RUNNING, RUNNING, ""),
        ];
        let Progress::Failing(why) = progress(&tasks, 5, 3, 3) else {
            panic!("{:?}", progress(&tasks, 5, 3, 3));
        };
        assert_eq!(
            why,
            "3 tasks failed: \"task: non-zero exit (1)\" (2x on node n1, n2); \"No such image: web:9\" (1x on node n2)"
        );
        // Below the limit the failures are reported while waiting.
        let Progress::Waiting(why) = progress(&tasks[..2], 5, 3, 3) else {
            panic!("below the limit it waits");
        };
        assert!(why.contains("2 failed so far"), "{why}");
    }

    #[test]
    fn a_task_no_node_can_take_says_why_while_waiting() {
        let tasks = [
            task(1, "n1", RUNNING, RUNNING, ""),
            Task {
                node_id: None,
                ..task(
                    1,
                    "",
                    RUNNING,
                    PENDING,
                    "no suitable node (max replicas per node limit exceed)",
                )
            },
        ];
        let Progress::Waiting(why) = progress(&tasks, 1, 2, 3) else {
            panic!("it waits");
        };
        assert_eq!(
            why,
            "1 of 2 tasks running; others: pending on no node yet: no suitable node (max replicas per node limit exceed)"
        );
    }

    #[test]
    fn a_scaled_down_service_is_all_down_once_its_tasks_shut_down() {
        let tasks = [
            task(3, "n1", SHUTDOWN, SHUTDOWN, ""),
            task(3, "n2", SHUTDOWN, FAILED, "x"),
        ];
        assert!(all_down(&tasks));
        assert!(all_down(&[]));
        assert!(!all_down(&[task(3, "n1", SHUTDOWN, RUNNING, "")]));
    }
}
