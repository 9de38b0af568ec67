//! Turns a checked [`Config`] into the engine's components: a runtime, a probe, a router and a
//! state store, as trait objects. No deploy logic lives here.

use std::sync::Arc;

use blue_green_core::{
    Chain, CommandProbe, Engine, FileStore, HealthProbe, Hooks, HttpProbe, NoneRouter, Release,
    Router, Runtime, TcpProbe,
};
use blue_green_docker::{
    ComposeRuntime, ContainerHealthProbe, DockerRuntime, ExecProbe, ReleaseCommand, SwarmRuntime,
};
use blue_green_router::caddy::CaddyRouter;
use blue_green_router::haproxy::HaproxyRouter;
use blue_green_router::NginxRouter;

use crate::config::{Config, HealthConfig, RouterConfig, RuntimeConfig};
use crate::failure::Failure;

/// A runtime before it is boxed: the Docker-native probes are built from it.
enum BuiltRuntime {
    Docker(DockerRuntime),
    Compose(ComposeRuntime),
    Swarm(SwarmRuntime),
}
use BuiltRuntime::{Compose, Docker, Swarm};

/// The engine as the CLI builds it.
pub type CliEngine = Engine<Box<dyn Runtime>, Box<dyn HealthProbe>, Box<dyn Router>, FileStore>;

/// The components of one app.
pub struct Components {
    /// Runs instances.
    pub runtime: Box<dyn Runtime>,
    /// Checks one instance once.
    pub probe: Box<dyn HealthProbe>,
    /// Routes live traffic.
    pub router: Box<dyn Router>,
    /// State, history and lock.
    pub store: FileStore,
    /// What was connected to, for `validate`.
    pub connected: String,
    /// The runtime as built, before it was boxed: `validate` asks it more than the trait does
    /// (the compose files' services and ports, whether the image is on the machine).
    pub concrete: ConcreteRuntime,
}

/// The runtime as built, for checks the [`Runtime`] trait does not offer.
#[derive(Clone)]
pub enum ConcreteRuntime {
    /// `kind = "docker"`.
    Docker(DockerRuntime),
    /// `kind = "compose"`.
    Compose(ComposeRuntime),
    /// `kind = "swarm"`.
    Swarm(SwarmRuntime),
}

impl Components {
    /// Connects to what the config names (Docker is pinged here, so an unreachable daemon fails
    /// before anything is touched) and builds every component.
    pub async fn build(config: &Config) -> Result<Components, Failure> {
        let timeout = config.engine.readiness.timeout;
        let runtime = match &config.runtime {
            RuntimeConfig::Docker(c) => Docker(
                DockerRuntime::connect(config.app.clone(), c.clone())
                    .await
                    .map_err(Failure::docker)?
                    .with_api_timeout(config.engine.timeouts.runtime),
            ),
            RuntimeConfig::Compose(c) => Compose(
                ComposeRuntime::new(config.app.clone(), c.clone())
                    .await
                    .map_err(Failure::docker)?
                    .with_command_timeout(config.engine.timeouts.start),
            ),
            RuntimeConfig::Swarm(c) => Swarm(
                SwarmRuntime::connect(config.app.clone(), c.clone())
                    .await
                    .map_err(Failure::docker)?
                    .with_api_timeout(config.engine.timeouts.runtime),
            ),
        };
        let probe: Box<dyn HealthProbe> = match (&config.health, &runtime) {
            (HealthConfig::Http(c), _) => Box::new(HttpProbe::new(c.clone())),
            (HealthConfig::Tcp, _) => Box::new(TcpProbe::new(timeout)),
            (HealthConfig::Command(argv), _) => Box::new(CommandProbe::new(argv.clone(), timeout)),
            (HealthConfig::Docker, Docker(r)) => {
                Box::new(ContainerHealthProbe::for_docker(r).with_timeout(timeout))
            }
            (HealthConfig::Docker, Compose(r)) => {
                Box::new(ContainerHealthProbe::for_compose(r).with_timeout(timeout))
            }
            (HealthConfig::Exec(argv), Docker(r)) => {
                Box::new(ExecProbe::for_docker(r, argv.clone(), timeout).map_err(Failure::docker)?)
            }
            (HealthConfig::Exec(argv), Compose(r)) => {
                Box::new(ExecProbe::for_compose(r, argv.clone(), timeout).map_err(Failure::docker)?)
            }
            // The config check refuses these for swarm, with the key and line.
            (HealthConfig::Docker | HealthConfig::Exec(_), Swarm(_)) => {
                return Err(Failure::Usage(
                    "health kinds \"docker\" and \"exec\" do not apply to kind = \"swarm\"".into(),
                ))
            }
        };
        let (runtime, connected, concrete): (Box<dyn Runtime>, String, ConcreteRuntime) =
            match runtime {
                Docker(r) => (
                    Box::new(r.clone()),
                    "Docker answers".to_string(),
                    ConcreteRuntime::Docker(r),
                ),
                Compose(r) => {
                    let program = r.program().display();
                    (
                        Box::new(r.clone()),
                        format!("Docker answers; compose program: `{program}`"),
                        ConcreteRuntime::Compose(r),
                    )
                }
                Swarm(r) => {
                    let connected = format!(
                        "Docker answers and is a swarm manager; the colors answer on {}",
                        r.addresses().join(", ")
                    );
                    (Box::new(r.clone()), connected, ConcreteRuntime::Swarm(r))
                }
            };
        let router: Box<dyn Router> = match &config.router {
            RouterConfig::Nginx(c) => Box::new(
                NginxRouter::new(c.as_ref().clone()).map_err(|e| Failure::Component(e.into()))?,
            ),
            RouterConfig::Haproxy(c) => {
                Box::new(HaproxyRouter::new(c.as_ref().clone()).map_err(Failure::Component)?)
            }
            RouterConfig::Caddy(c) => {
                Box::new(CaddyRouter::new(c.as_ref().clone()).map_err(Failure::Component)?)
            }
            RouterConfig::None { target_file } => Box::new(NoneRouter::new(target_file.clone())),
            RouterConfig::Proxy(p) => Box::new(p.router(&config.app)),
        };
        Ok(Components {
            runtime,
            probe,
            router,
            store: FileStore::new(config.state_dir.clone()),
            connected,
            concrete,
        })
    }

    /// The engine over these components, for a deploy of `release` when there is one: the
    /// release command runs in that release's image (`--image`), which the engine's hook
    /// context does not carry.
    pub fn engine_for(self, config: &Config, release: Option<&Release>) -> CliEngine {
        let hooks = hooks(config, &self.concrete, release);
        Engine::new(
            config.engine.clone(),
            self.runtime,
            self.probe,
            self.router,
            self.store,
        )
        .with_hooks(hooks)
    }
}

/// The `[hooks]`, followed at `pre_deploy` by the release command when there is one: the
/// user's hook (a backup, a go/no-go check) first, so that a failing check means nothing was
/// migrated; the migration last, right before the new color starts.
fn hooks(config: &Config, runtime: &ConcreteRuntime, release: Option<&Release>) -> Arc<dyn Hooks> {
    let hooks = config.hooks.clone();
    let Some(command) = &config.release_command else {
        return Arc::new(hooks);
    };
    let task = match runtime {
        ConcreteRuntime::Docker(r) => ReleaseCommand::docker(r, command.clone()),
        ConcreteRuntime::Compose(r) => ReleaseCommand::compose(r, command.clone()),
        // The config check refuses `release_command` for swarm, with the key and line.
        ConcreteRuntime::Swarm(_) => return Arc::new(hooks),
    };
    let task = match release {
        Some(release) => task.for_release(release),
        None => task,
    };
    Arc::new(Chain::new(hooks, task))
}
