//! Turns a checked [`Config`] into the engine's components: a runtime, a probe, a router and a
//! state store, as trait objects. No deploy logic lives here.

use blue_green_core::{
    CommandProbe, Engine, FileStore, HealthProbe, HttpProbe, NginxRouter, NoneRouter, Router,
    Runtime, TcpProbe,
};

use crate::config::{Config, HealthConfig, RouterConfig, RuntimeConfig};
use crate::failure::Failure;

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
}

impl Components {
    /// Connects to what the config names (Docker is pinged here, so an unreachable daemon fails
    /// before anything is touched) and builds every component.
    // PENDING(docker crate): the allow goes with the stub below.
    #[allow(unreachable_code, unused_variables)]
    pub async fn build(config: &Config) -> Result<Components, Failure> {
        let timeout = config.engine.readiness.timeout;
        let runtime: Box<dyn Runtime> = match &config.runtime {
            // PENDING(docker crate): DockerRuntime::connect / ComposeRuntime::new once on main.
            RuntimeConfig::Docker(_) | RuntimeConfig::Compose(_) => {
                return Err(Failure::Unreachable(format!(
                    "the {} runtime is not available in this build yet",
                    config.runtime.kind()
                )))
            }
        };
        let probe: Box<dyn HealthProbe> = match &config.health {
            HealthConfig::Http(c) => Box::new(HttpProbe::new(c.clone())),
            HealthConfig::Tcp => Box::new(TcpProbe::new(timeout)),
            HealthConfig::Command(argv) => Box::new(CommandProbe::new(argv.clone(), timeout)),
            HealthConfig::Docker | HealthConfig::Exec(_) => {
                // PENDING(docker crate): ContainerHealthProbe / ExecProbe once on main.
                return Err(Failure::Unreachable(
                    "health kinds docker and exec are not available in this build yet".into(),
                ));
            }
        };
        let router: Box<dyn Router> = match &config.router {
            RouterConfig::Nginx(c) => {
                Box::new(NginxRouter::new(c.as_ref().clone()).map_err(Failure::Component)?)
            }
            RouterConfig::None { target_file } => Box::new(NoneRouter::new(target_file.clone())),
        };
        Ok(Components {
            runtime,
            probe,
            router,
            store: FileStore::new(config.state_dir.clone()),
        })
    }

    /// The engine over these components.
    pub fn engine(self, config: &Config) -> CliEngine {
        Engine::new(
            config.engine.clone(),
            self.runtime,
            self.probe,
            self.router,
            self.store,
        )
    }
}
