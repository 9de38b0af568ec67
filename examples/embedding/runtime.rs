//! A process runtime: one local process per color (docs/embedding.md). It needs nothing but
//! `std` and `blue-green-core`, whose `process::Command::spawn` runs each process in its own
//! process group (argv only, no shell), reaps it, and stops it with TERM, then KILL after the
//! grace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::process::{Command, Service};
use blue_green_core::{
    instance_env, Color, ComponentError, Endpoint, Instance, InstanceState, Release, Runtime,
};

/// Runs `program args…` once per color, with `PORT` and the blue-green env set.
pub struct ProcessRuntime {
    program: String,
    args: Vec<String>,
    ports: [u16; 2],
    children: Mutex<HashMap<String, (Instance, Arc<Service>)>>,
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

    fn service_of(&self, instance: &Instance) -> Option<Arc<Service>> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children
            .get(&instance.id)
            .map(|(_, service)| service.clone())
    }
}

#[blue_green_core::async_trait]
impl Runtime for ProcessRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        let port = self.ports[usize::from(color == Color::Green)];
        let service = Command::new(&self.program)
            .args(&self.args)
            .envs(instance_env(color, release))
            .env("PORT", port.to_string())
            .spawn()
            .await?; // a program that cannot start is `Unreachable`, naming it
        let pid = service.id().to_string();
        let id = format!("{color}-{pid}");
        let endpoint = Endpoint::new("127.0.0.1", port);
        let instance =
            Instance::new(color, release.id.to_string(), &id, endpoint).with_meta("pid", pid);
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.insert(id, (instance.clone(), Arc::new(service)));
        Ok(instance)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        let Some(service) = self.service_of(instance) else {
            return Ok(InstanceState::Missing); // not ours, or removed
        };
        Ok(match service.exit_status() {
            None => InstanceState::Running,
            Some(status) => InstanceState::Exited {
                code: status.code().map(i64::from),
                reason: None,
            },
        })
    }

    async fn stop(&self, instance: &Instance, grace: Duration) -> Result<(), ComponentError> {
        if let Some(service) = self.service_of(instance) {
            service.stop(grace).await; // awaits the exit: never blocks a thread
        }
        Ok(()) // already gone: not an error
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
