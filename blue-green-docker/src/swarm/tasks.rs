//! Reading a service's tasks: has the spec converged, is it failing, where does it run. No I/O.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{Node, NodeState, Task, TaskState};

/// What the manager knows of the swarm's nodes, to read tasks by: a task on a node that is not
/// ready keeps the state it last reported (swarm cannot hear from it), so it neither runs nor
/// holds anything up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nodes {
    /// Node id to its address.
    addresses: HashMap<String, String>,
    /// The ids of nodes that are not ready (down, disconnected, unknown).
    unready: BTreeSet<String>,
}

impl Nodes {
    /// From the manager's node list.
    pub(crate) fn new(nodes: &[Node]) -> Nodes {
        let mut known = Nodes::default();
        for node in nodes {
            let Some(id) = node.id.clone() else { continue };
            let status = node.status.as_ref();
            if let Some(address) = status.and_then(|s| s.addr.clone()) {
                known.addresses.insert(id.clone(), address);
            }
            if status.and_then(|s| s.state) != Some(NodeState::READY) {
                known.unready.insert(id);
            }
        }
        known
    }

    /// The nodes that are not ready, as `address (id)`.
    pub(crate) fn lost(&self) -> Vec<String> {
        self.unready.iter().map(|id| self.name(id)).collect()
    }

    fn is_lost(&self, task: &Task) -> bool {
        task.node_id
            .as_ref()
            .is_some_and(|id| self.unready.contains(id))
    }

    /// `address (id)` of a node, or its id alone.
    fn name(&self, id: &str) -> String {
        match self.addresses.get(id) {
            Some(address) => format!("{address} ({id})"),
            None => id.to_string(),
        }
    }
}

/// Where the tasks of one spec generation of a service stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Every wanted task runs (a task with a healthcheck only counts as running once healthy:
    /// swarm holds it in `starting` until then). The node ids they run on, sorted.
    Converged {
        /// The nodes running the tasks.
        nodes: Vec<String>,
        /// The running tasks' ids, sorted: the same set seen twice a while apart is settled.
        tasks: Vec<String>,
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
    nodes: &Nodes,
    generation: u64,
    replicas: u64,
    max_failures: u32,
) -> Progress {
    let ours: Vec<&Task> = tasks
        .iter()
        .filter(|t| task_generation(t) == generation)
        .collect();
    let lost: Vec<&Task> = ours.iter().copied().filter(|t| nodes.is_lost(t)).collect();
    let ours: Vec<&Task> = ours.into_iter().filter(|t| !nodes.is_lost(t)).collect();
    let failed: Vec<&Task> = ours
        .iter()
        .copied()
        .filter(|t| {
            // A replicated service's task never completes on purpose: one that did exited by
            // itself (swarm stops an unhealthy container, and an app that exits 0 on SIGTERM
            // then looks complete).
            matches!(
                state(t),
                Some(
                    TaskState::FAILED
                        | TaskState::REJECTED
                        | TaskState::ORPHANED
                        | TaskState::COMPLETE
                )
            )
        })
        .collect();
    if max_failures > 0 && failed.len() >= max_failures as usize {
        return Progress::Failing(format!(
            "{} tasks failed: {}",
            failed.len(),
            describe_errors(&failed, nodes)
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
        let ids: BTreeSet<String> = running.iter().filter_map(|t| t.id.clone()).collect();
        return Progress::Converged {
            nodes: nodes.into_iter().collect(),
            tasks: ids.into_iter().collect(),
        };
    }
    let others: Vec<String> = ours
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter(|t| state(t) != Some(TaskState::RUNNING))
        .map(|t| describe(t, nodes))
        .collect();
    let mut waiting = format!("{} of {replicas} tasks running", running.len());
    if !others.is_empty() {
        waiting.push_str(&format!("; others: {}", others.join("; ")));
    }
    if !lost.is_empty() {
        let names: BTreeSet<String> = lost
            .iter()
            .filter_map(|t| t.node_id.as_deref())
            .map(|id| nodes.name(id))
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        waiting.push_str(&format!(
            "; {} on lost nodes (not ready): {}",
            lost.len(),
            names.join(", ")
        ));
    }
    if !failed.is_empty() {
        waiting.push_str(&format!(
            "; {} failed so far: {}",
            failed.len(),
            describe_errors(&failed, nodes)
        ));
    }
    Progress::Waiting(waiting)
}

/// True when some task of `generation` runs now on a ready node (a stopped service has none).
pub(crate) fn any_running(tasks: &[Task], nodes: &Nodes, generation: u64) -> bool {
    tasks.iter().any(|t| {
        task_generation(t) == generation
            && !nodes.is_lost(t)
            && t.desired_state == Some(TaskState::RUNNING)
            && state(t) == Some(TaskState::RUNNING)
    })
}

/// True when no task of the service still runs or is on its way to running on a ready node
/// (after a scale to 0 or a removal).
pub(crate) fn all_down(tasks: &[Task], nodes: &Nodes) -> bool {
    tasks.iter().all(|t| {
        nodes.is_lost(t)
            || !matches!(
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
fn describe(task: &Task, nodes: &Nodes) -> String {
    let state = state(task).map_or("unknown".to_string(), |s| s.to_string());
    let node = task
        .node_id
        .as_deref()
        .map_or("no node yet".to_string(), |id| nodes.name(id));
    match error_of(task) {
        Some(error) => format!("{state} on {node}: {error}"),
        None => format!("{state} on {node}"),
    }
}

/// The task's error, or its status message when it has no error.
fn error_of(task: &Task) -> Option<String> {
    let status = task.status.as_ref()?;
    if let Some(error) = status.err.clone().filter(|e| !e.is_empty()) {
        return Some(error);
    }
    if status.state == Some(TaskState::COMPLETE) {
        return Some(
            "its container exited with code 0 by itself (or was stopped by swarm as unhealthy)"
                .into(),
        );
    }
    status.message.clone().filter(|m| !m.is_empty())
}

/// The distinct errors of `failed`, each with how often and on which nodes: a release that
/// fails the same way on every node says so once.
fn describe_errors(failed: &[&Task], nodes: &Nodes) -> String {
    let mut errors: Vec<(String, usize, BTreeSet<String>)> = Vec::new();
    for task in failed {
        let error = error_of(task).unwrap_or_else(|| "no error given".into());
        let node = task
            .node_id
            .as_deref()
            .map_or("no node".to_string(), |id| nodes.name(id));
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
    use bollard::models::{NodeStatus, TaskSpec, TaskStatus};

    fn ready() -> Nodes {
        Nodes::default()
    }

    fn task(generation: u64, node: &str, desired: TaskState, now: TaskState, err: &str) -> Task {
        Task {
            id: Some(format!("t-{node}-{generation}-{now}")),
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

    use TaskState::{COMPLETE, FAILED, PENDING, REJECTED, RUNNING, SHUTDOWN, STARTING};

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
            progress(&tasks, &ready(), 2, 3, 3),
            Progress::Converged {
                nodes: vec!["n1".into(), "n2".into(), "n3".into()],
                tasks: vec![
                    "t-n1-2-running".into(),
                    "t-n2-2-running".into(),
                    "t-n3-2-running".into()
                ],
            }
        );
        assert!(any_running(&tasks, &ready(), 2));
        assert!(!any_running(&tasks, &ready(), 1));
        assert!(!all_down(&tasks, &ready()));
    }

    #[test]
    fn running_tasks_of_an_older_spec_do_not_count() {
        let tasks = [
            task(1, "n1", RUNNING, RUNNING, ""),
            task(1, "n2", RUNNING, RUNNING, ""),
            task(2, "n3", RUNNING, STARTING, ""),
        ];
        let Progress::Waiting(why) = progress(&tasks, &ready(), 2, 2, 3) else {
            panic!("{:?}", progress(&tasks, &ready(), 2, 2, 3));
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
        let Progress::Failing(why) = progress(&tasks, &ready(), 5, 3, 3) else {
            panic!("{:?}", progress(&tasks, &ready(), 5, 3, 3));
        };
        assert_eq!(
            why,
            "3 tasks failed: \"task: non-zero exit (1)\" (2x on node n1, n2); \"No such image: web:9\" (1x on node n2)"
        );
        // Below the limit the failures are reported while waiting.
        let Progress::Waiting(why) = progress(&tasks[..2], &ready(), 5, 3, 3) else {
            panic!("below the limit it waits");
        };
        assert!(why.contains("2 failed so far"), "{why}");
    }

    #[test]
    fn tasks_that_complete_by_themselves_count_as_failures() {
        let tasks = [
            task(1, "n1", RUNNING, RUNNING, ""),
            task(1, "n2", RUNNING, RUNNING, ""),
            task(1, "n3", SHUTDOWN, COMPLETE, ""),
            task(1, "n3", RUNNING, STARTING, ""),
        ];
        let Progress::Waiting(why) = progress(&tasks, &ready(), 1, 3, 3) else {
            panic!("{:?}", progress(&tasks, &ready(), 1, 3, 3));
        };
        assert!(
            why.contains("1 failed so far: \"its container exited with code 0 by itself"),
            "{why}"
        );
        // A task stopped by a scale-down is shut down, not complete: not a failure.
        let stopped = [task(1, "n1", SHUTDOWN, SHUTDOWN, "")];
        let Progress::Waiting(why) = progress(&stopped, &ready(), 1, 1, 1) else {
            panic!("a shut-down task is no failure");
        };
        assert_eq!(why, "0 of 1 tasks running");
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
        let Progress::Waiting(why) = progress(&tasks, &ready(), 1, 2, 3) else {
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
        assert!(all_down(&tasks, &ready()));
        assert!(all_down(&[], &ready()));
        assert!(!all_down(&[task(3, "n1", SHUTDOWN, RUNNING, "")], &ready()));
    }

    #[test]
    fn tasks_on_a_lost_node_neither_run_nor_hold_a_stop_up() {
        let node = |id: &str, address: &str, state: NodeState| Node {
            id: Some(id.into()),
            status: Some(NodeStatus {
                state: Some(state),
                addr: Some(address.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = Nodes::new(&[
            node("n1", "10.0.0.11", NodeState::READY),
            node("n2", "10.0.0.12", NodeState::READY),
            node("n3", "10.0.0.13", NodeState::DOWN),
        ]);
        // n3 last said "running" before it died.
        let tasks = [
            task(1, "n1", RUNNING, RUNNING, ""),
            task(1, "n2", RUNNING, RUNNING, ""),
            task(1, "n3", RUNNING, RUNNING, ""),
        ];
        let Progress::Waiting(why) = progress(&tasks, &nodes, 1, 3, 3) else {
            panic!("a task on a lost node does not count as running");
        };
        assert_eq!(
            why,
            "2 of 3 tasks running; 1 on lost nodes (not ready): 10.0.0.13 (n3)"
        );
        assert!(!any_running(&tasks[2..], &nodes, 1));
        assert_eq!(nodes.lost(), ["10.0.0.13 (n3)"]);
        let stopping = [task(1, "n3", SHUTDOWN, RUNNING, "")];
        assert!(
            all_down(&stopping, &nodes),
            "a dead node's task is not waited for"
        );
        assert!(!all_down(&stopping, &ready()));
    }
}
