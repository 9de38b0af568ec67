//! A process runtime: one local process per color (docs/embedding.md). It needs nothing but
//! `std` and `blue-green-core`: a thread per child waits for its exit, and `stop` sends TERM,
//! then KILL after the grace, through the `kill` program (argv only, no shell).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use blue_green_core::{
    instance_env, Color, ComponentError, Endpoint, Instance, InstanceState, Release, Runtime,
};

/// One child's exit, as its waiting thread saw it, and who waits for it.
#[derive(Default)]
struct Exit {
    status: Option<ExitStatus>,
    waiters: Vec<Waker>,
}

/// A child's exit, shared between its waiting thread and the runtime.
type SharedExit = Arc<Mutex<Exit>>;

/// A future that ends when the child has exited.
struct Exited(SharedExit);

impl Future for Exited {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut exit = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if exit.status.is_some() {
            return Poll::Ready(());
        }
        exit.waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

/// Runs `program args…` once per color, with `PORT` and the blue-green env set.
pub struct ProcessRuntime {
    program: String,
    args: Vec<String>,
    ports: [u16; 2],
    children: Mutex<HashMap<String, (Instance, SharedExit)>>,
}

impl ProcessRuntime {
    /// Blue listens on `ports[0]`, green on `ports[1]`.
    pub fn new(program: impl Into<String>, args: Vec<String>, ports: [u16; 2]) -> Self {
        let children = Mutex::new(HashMap::new());
        let program = program.into();
        ProcessRuntime {
            program,
            args,
            ports,
            children,
        }
    }

    fn exit_of(&self, instance: &Instance) -> Option<SharedExit> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.get(&instance.id).map(|(_, exit)| exit.clone())
    }
}

/// Sends `signal` to `pid` with the `kill` program.
fn signal(pid: &str, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, pid])
        .stderr(Stdio::null())
        .status();
}

#[blue_green_core::async_trait]
impl Runtime for ProcessRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        let port = self.ports[usize::from(color == Color::Green)];
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(instance_env(color, release))
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| {
                ComponentError::unreachable(format!("cannot run {}: {e}", self.program))
                    .with_source(e)
            })?;
        let pid = child.id().to_string();
        let exit = Arc::new(Mutex::new(Exit::default()));
        let watched = exit.clone();
        std::thread::spawn(move || {
            let status = child.wait().ok();
            let mut exit = watched.lock().unwrap_or_else(|p| p.into_inner());
            exit.status = status.or_else(|| Some(ExitStatus::default()));
            exit.waiters.drain(..).for_each(Waker::wake);
        });
        let id = format!("{color}-{pid}");
        let endpoint = Endpoint::new("127.0.0.1", port);
        let instance =
            Instance::new(color, release.id.to_string(), &id, endpoint).with_meta("pid", pid);
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.insert(id, (instance.clone(), exit));
        Ok(instance)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        let Some(exit) = self.exit_of(instance) else {
            return Ok(InstanceState::Missing); // not ours, or removed
        };
        let status = exit.lock().unwrap_or_else(|p| p.into_inner()).status;
        Ok(match status {
            None => InstanceState::Running,
            Some(status) => InstanceState::Exited {
                code: status.code().map(i64::from),
                reason: None,
            },
        })
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError> {
        let Some(exit) = self.exit_of(instance) else {
            return Ok(()); // already gone: not an error
        };
        let pid = instance.meta.get("pid").cloned().unwrap_or_default();
        let watched = exit.clone();
        // The waiting happens on a thread of its own, so the async runtime never blocks.
        std::thread::spawn(move || {
            let exited = || {
                watched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .status
                    .is_some()
            };
            if !exited() {
                signal(&pid, "-TERM");
                std::thread::sleep(grace);
                if !exited() {
                    signal(&pid, "-KILL");
                }
            }
        });
        Exited(exit).await;
        Ok(())
    }

    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        if self.state(instance).await?.is_running() {
            return Ok(instance.clone());
        }
        self.remove(instance).await?;
        // A new process: a new pid, so a new id. The engine takes the returned instance.
        self.start(instance.color, &Release::new(instance.release.as_str())?)
            .await
    }

    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        self.stop(instance, Duration::ZERO).await?;
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.remove(&instance.id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
        // What this process started, running or not. A runtime that must survive a restart of
        // the tool would read its children back from the saved pids in `Instance::meta`.
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        Ok(children
            .values()
            .map(|(instance, _)| instance.clone())
            .collect())
    }
}
