//! The process group a [`Command`](super::Command) leads: signalled as a whole, killed when a
//! run is dropped, and listed for [`kill_all_running`].

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::process::Child;

/// Kills the process group of every [`Command`](super::Command) of this process that is still
/// running.
///
/// Dropping a run's future does this for that run; this is for a program about to end without
/// dropping its futures (`std::process::exit` after a second Ctrl-C), whose commands would
/// otherwise outlive it: in their own process groups, they do not get the terminal's Ctrl-C.
pub fn kill_all_running() {
    #[cfg(unix)]
    {
        let groups = match RUNNING.lock() {
            Ok(groups) => groups.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for leader in groups {
            signal_group(leader, Signal::Kill);
        }
    }
}

/// The leaders (= process group ids) of the commands running now, for [`kill_all_running`].
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The signals a group gets: TERM at the timeout, KILL after the grace or on drop.
#[derive(Debug, Clone, Copy)]
pub(super) enum Signal {
    Term,
    Kill,
}

/// The process group a command leads. Until the leader is reaped, dropping this kills the
/// group (a run that was cancelled half-way).
#[derive(Debug)]
pub(super) struct Group {
    leader: Option<i32>,
}

impl Group {
    pub(super) fn of(child: &Child) -> Self {
        let leader = child.id().and_then(|pid| i32::try_from(pid).ok());
        if let Some(leader) = leader {
            registry(|running| running.insert(leader));
        }
        Group { leader }
    }

    pub(super) fn signal(&self, signal: Signal) {
        if let Some(leader) = self.leader {
            signal_group(leader, signal);
        }
    }

    /// Kills the group (after a normal exit: what the reaped leader left in it) and stops
    /// guarding it.
    pub(super) fn kill_leftovers(&mut self) {
        if let Some(leader) = self.leader.take() {
            // The group id stays reserved while any member lives, and Linux hands out pids in
            // a cycle: a group that is gone is not someone else's a moment later.
            signal_group(leader, Signal::Kill);
            registry(|running| running.remove(&leader));
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

/// Changes the list of running groups (a panic elsewhere does not make it unusable).
fn registry<T>(change: impl FnOnce(&mut BTreeSet<i32>) -> T) -> T {
    match RUNNING.lock() {
        Ok(mut running) => change(&mut running),
        Err(poisoned) => change(&mut poisoned.into_inner()),
    }
}

#[cfg(unix)]
fn signal_group(leader: i32, signal: Signal) {
    use rustix::process::{kill_process_group, Pid, Signal as S};
    let Some(pid) = Pid::from_raw(leader) else {
        return;
    };
    let signal = match signal {
        Signal::Term => S::TERM,
        Signal::Kill => S::KILL,
    };
    // ESRCH (the group is gone already) is the common, expected case.
    let _ = kill_process_group(pid, signal);
}

#[cfg(not(unix))]
fn signal_group(_leader: i32, _signal: Signal) {
    // No process groups: the leader is killed through tokio's `kill_on_drop` and `start_kill`.
}
