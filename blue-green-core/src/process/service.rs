//! A command that keeps running: [`Command::spawn`] and the [`Service`] it returns.
//!
//! A runtime that runs one local process per color (docs/embedding.md) needs what
//! [`Command::run`] gives a short command (argv only, its own process group, reaped, killed
//! with its group) without the run to the end: a handle that says whether the process still
//! runs and stops it with SIGTERM, then SIGKILL after a grace. Written once here so that such a
//! runtime is a few lines over this, not its own reaper threads and signals.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::group::{Group, Signal};
use super::{Command, RunError};

/// A running [`Command`] started with [`Command::spawn`]: one long-lived process (a server) in
/// its own process group, with stdin closed and stdout and stderr inherited.
///
/// A task of the tokio runtime reaps it the moment it exits, and kills what it left in its
/// group. Dropping the `Service` kills the whole group with SIGKILL: a handle that is gone
/// leaves nothing running (call [`stop`](Service::stop) first for a graceful end).
#[derive(Debug)]
pub struct Service {
    pid: u32,
    group: Arc<Mutex<Group>>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Command {
    /// Starts the command and returns at once with its [`Service`]; the command's
    /// [`kill_grace`](Command::kill_grace) and output limit do not apply (see
    /// [`Service::stop`]). Must be called within a tokio runtime, which reaps the process.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), blue_green_core::process::RunError> {
    /// use std::time::Duration;
    /// use blue_green_core::process::Command;
    ///
    /// let server = Command::new("my-app").env("PORT", "8081").spawn().await?;
    /// assert!(server.exit_status().is_none()); // running (or not yet seen to exit)
    /// let status = server.stop(Duration::from_secs(10)).await; // TERM, then KILL after 10 s
    /// # Ok(()) }
    /// ```
    pub async fn spawn(&self) -> Result<Service, RunError> {
        // kill_on_drop: should the reaping task be dropped (its runtime shut down), the leader
        // dies too.
        let mut command = self.tokio_command();
        command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(source) => return Err(self.start_error(source).await),
        };
        let pid = child.id().unwrap_or_default();
        let group = Arc::new(Mutex::new(Group::of(&child)));
        let (tx, exit) = watch::channel(None);
        let reaped = group.clone();
        let program = self.program_text();
        tokio::spawn(async move {
            let status = child.wait().await.unwrap_or_else(|e| {
                // Only another reaper of our own child could cause this; it is gone either way.
                tracing::warn!(program, error = %e, "could not wait for a service; taking it as exited");
                ExitStatus::default()
            });
            // The leader is reaped: what it left in its group goes with it, now, before its
            // group id can be handed to anyone else.
            lock(&reaped).kill_leftovers();
            let _ = tx.send(Some(status));
        });
        Ok(Service { pid, group, exit })
    }
}

impl Service {
    /// Its process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// How it exited, or `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits until it has exited and been reaped.
    pub async fn exited(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => *status,
            // The reaper is gone without a word: its runtime shut down and killed the process.
            Err(_) => None,
        };
        status.unwrap_or_default()
    }

    /// Stops it: SIGTERM to its group, then SIGKILL if it has not exited after `grace` (at
    /// once for a zero grace). Returns how it exited; at once if it already had.
    pub async fn stop(&self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        if !grace.is_zero() {
            lock(&self.group).signal(Signal::Term);
            if let Ok(status) = tokio::time::timeout(grace, self.exited()).await {
                return status;
            }
        }
        lock(&self.group).signal(Signal::Kill);
        self.exited().await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        lock(&self.group).kill_leftovers();
    }
}

fn lock(group: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
    group
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
