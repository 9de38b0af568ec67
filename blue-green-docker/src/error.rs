//! [`Error`]: what the Docker and compose runtimes and the Docker-native probes report.

use std::time::Duration;

use blue_green_core::{ComponentError, ComponentErrorKind};

/// An error of this crate. Every message is a sentence that says what failed, on what, and
/// what to do; [`From<Error> for ComponentError`](ComponentError) picks the kind the engine
/// needs for its exit class and keeps this error as the component error's origin, so a caller
/// can match it: from an engine error `blue_green_core::Error::Step { source, .. }`,
/// `source.origin::<blue_green_docker::Error>()` gives, for example, `Error::PortInUse { port, .. }`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Docker daemon did not answer at all.
    #[error("cannot reach the Docker daemon at {host}: {source}; start dockerd (or Docker Desktop), or point DOCKER_HOST at a running engine")]
    Unreachable {
        /// Where we looked (`DOCKER_HOST` or the default socket).
        host: String,
        /// What the client said.
        #[source]
        source: bollard::errors::Error,
    },

    /// A call to the Docker daemon or a compose command did not finish in time.
    #[error("{what} did not finish within {}s; the Docker daemon may be overloaded or hung", .timeout.as_secs_f64())]
    Timeout {
        /// The call, for example "stopping container web-blue".
        what: String,
        /// The limit it hit.
        timeout: Duration,
    },

    /// The image is not on this machine and could not be pulled.
    #[error("image `{image}` was not found locally and pulling it failed: {reason}; build or load the image on this machine (docker build / docker load), or check the image name and the registry")]
    ImageNotFound {
        /// The image reference.
        image: String,
        /// The daemon's reason for the failed pull.
        reason: String,
    },

    /// The host port for a color is taken by another process.
    #[error("cannot start container {container}: host port {port} is already in use ({message}); stop whatever listens on port {port}, or configure another endpoint for this color")]
    PortInUse {
        /// The container that could not publish its port.
        container: String,
        /// The host port.
        port: u16,
        /// The daemon's message.
        message: String,
    },

    /// The slot's name is taken by a container this runtime did not expect.
    #[error("a container named {container} already exists; remove it (`docker rm -f {container}` or `blue-green down`) and deploy again")]
    NameTaken {
        /// The container name.
        container: String,
    },

    /// The daemon was reached and refused a call.
    #[error("Docker failed {what}: {source}")]
    Api {
        /// The call, for example "to create container web-blue".
        what: String,
        /// What the daemon said.
        #[source]
        source: bollard::errors::Error,
    },

    /// The daemon answered something this crate cannot use (a missing field).
    #[error("Docker answered {what} without {missing}; is this a Docker-compatible engine?")]
    Unexpected {
        /// The call.
        what: String,
        /// What was missing.
        missing: String,
    },

    /// A setting was refused before anything was touched.
    #[error("{0}")]
    Invalid(String),

    /// The compose program could not be found or run.
    #[error("cannot run `{program}`: {source}; install Docker Compose (the `docker compose` plugin or `docker-compose`) or set the compose tool in the config")]
    ComposeMissing {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// A compose command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    ComposeFailed {
        /// The command line, for the user to run again by hand.
        command: String,
        /// The exit status.
        status: String,
        /// The last lines compose printed on stderr.
        stderr: String,
    },

    /// `compose up` started a project that has no container of the configured service; the
    /// project was taken down again. A failure, not a usage error: something was started.
    #[error("compose project {project} started, but it has no container for service `{service}`; it was taken down again. Check `service` in [runtime] against the services in {file} (`blue-green validate` checks this before anything starts)")]
    ServiceMissing {
        /// The compose project.
        project: String,
        /// The configured service.
        service: String,
        /// The compose file.
        file: String,
    },
    /// The daemon is not a manager of an active swarm: the swarm runtime cannot create services.
    #[error("the Docker daemon at {host} is {state}; point DOCKER_HOST at a manager node of the swarm, or make this one a manager (`docker swarm init`)")]
    NotSwarmManager {
        /// Where we looked (`DOCKER_HOST` or the default socket).
        host: String,
        /// What the daemon is instead ("not in a swarm", "a worker").
        state: String,
    },

    /// The tasks of a color's new spec keep failing or being rejected; swarm would go on
    /// replacing them, so `start` gives up at once.
    #[error("the tasks of service {service} keep failing: {errors}; see `docker service ps --no-trunc {service}` and the release's logs")]
    TasksFailing {
        /// The service.
        service: String,
        /// The distinct task errors, with the nodes they happened on.
        errors: String,
    },

    /// Not every task of a color's new spec ran within the converge timeout.
    #[error("not every task of service {service} was running after {}s ({waiting}); check that enough nodes are ready and match the placement constraints, and that every node has the image", .timeout.as_secs_f64())]
    NotConverged {
        /// The service.
        service: String,
        /// The limit it hit.
        timeout: Duration,
        /// How many tasks ran and what the others were doing.
        waiting: String,
    },

    /// A release command did not finish within its timeout; its container was killed and
    /// removed.
    #[error("ran the release command `{command}` in {container}, which did not finish within {}s: it was killed and its container removed; make it finish sooner or raise `release_timeout` in [runtime]", .timeout.as_secs_f64())]
    ReleaseTimeout {
        /// The command, as a person reads it.
        command: String,
        /// Where it ran: "container web-release of image `web:2`".
        container: String,
        /// The limit it hit.
        timeout: Duration,
    },

    /// A color's service is gone (removed by hand?): it cannot be started again.
    #[error("service {service} no longer exists (was it removed by hand?); deploy again to start a new one")]
    ServiceGone {
        /// The service id.
        service: String,
    },
}

impl Error {
    /// Maps a bollard error from a call named `what`: connection failures become
    /// [`Error::Unreachable`], everything else [`Error::Api`].
    pub(crate) fn from_bollard(what: impl Into<String>, source: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match source {
            // The client's own limit (bollard's default of 120s), hit before ours.
            B::RequestTimeoutError => Error::Timeout {
                what: what.into(),
                timeout: Duration::from_secs(120),
            },
            B::SocketNotFoundError(_) | B::HyperLegacyError { .. } | B::IOError { .. } => {
                Error::Unreachable {
                    host: crate::client::docker_host(),
                    source,
                }
            }
            source => Error::Api {
                what: what.into(),
                source,
            },
        }
    }

    /// The HTTP status the daemon answered, if this is a daemon error.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Error::Api {
                source: bollard::errors::Error::DockerResponseServerError { status_code, .. },
                ..
            } => Some(*status_code),
            _ => None,
        }
    }
}

impl From<Error> for ComponentError {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::Unreachable { .. }
            | Error::ComposeMissing { .. }
            | Error::NotSwarmManager { .. } => ComponentErrorKind::Unreachable,
            Error::Timeout { .. } | Error::ReleaseTimeout { .. } => ComponentErrorKind::Timeout,
            Error::Invalid(_) => ComponentErrorKind::Invalid,
            Error::ImageNotFound { .. }
            | Error::PortInUse { .. }
            | Error::NameTaken { .. }
            | Error::Api { .. }
            | Error::Unexpected { .. }
            | Error::ComposeFailed { .. }
            | Error::ServiceMissing { .. }
            | Error::TasksFailing { .. }
            | Error::NotConverged { .. }
            | Error::ServiceGone { .. } => ComponentErrorKind::Failed,
        };
        // The message already carries the cause; the typed error is kept as the origin (not as
        // the source, which would print it twice in an error chain), so that a caller can match
        // it: `component_error.origin::<blue_green_docker::Error>()`.
        ComponentError::new(kind, error.to_string()).with_origin(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_daemon_maps_to_the_unreachable_kind() {
        let error = Error::from_bollard(
            "to ping",
            bollard::errors::Error::SocketNotFoundError("/nope.sock".into()),
        );
        assert!(error.to_string().contains("start dockerd"), "{error}");
        let component: ComponentError = error.into();
        assert_eq!(component.kind, ComponentErrorKind::Unreachable);
    }

    #[test]
    fn daemon_refusals_keep_their_status() {
        let error = Error::from_bollard(
            "to inspect container x",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such container: x".into(),
            },
        );
        assert_eq!(error.status(), Some(404));
        let component: ComponentError = error.into();
        assert_eq!(component.kind, ComponentErrorKind::Failed);
        assert!(component.message.contains("No such container"));
    }

    #[test]
    fn swarm_errors_map_to_the_kinds_the_engine_needs() {
        let not_manager: ComponentError = Error::NotSwarmManager {
            host: "unix:///var/run/docker.sock".into(),
            state: "a worker, not a manager".into(),
        }
        .into();
        assert_eq!(not_manager.kind, ComponentErrorKind::Unreachable);
        assert!(
            not_manager
                .message
                .contains("point DOCKER_HOST at a manager node"),
            "{}",
            not_manager.message
        );
        let failing: ComponentError = Error::TasksFailing {
            service: "web-green".into(),
            errors: "3 tasks failed: \"task: non-zero exit (1)\" (3x on node n2)".into(),
        }
        .into();
        assert_eq!(failing.kind, ComponentErrorKind::Failed);
        assert!(
            failing.message.contains("non-zero exit (1)")
                && failing
                    .message
                    .contains("docker service ps --no-trunc web-green"),
            "{}",
            failing.message
        );
        let slow: ComponentError = Error::NotConverged {
            service: "web-blue".into(),
            timeout: Duration::from_secs(20),
            waiting: "2 of 3 tasks running".into(),
        }
        .into();
        assert_eq!(slow.kind, ComponentErrorKind::Failed);
        assert!(
            slow.message.contains("after 20s (2 of 3 tasks running)"),
            "{}",
            slow.message
        );
    }

    #[test]
    fn a_port_conflict_stays_matchable_through_the_component_error() {
        let component: ComponentError = Error::PortInUse {
            container: "web-blue".into(),
            port: 8081,
            message: "address already in use".into(),
        }
        .into();
        assert!(
            matches!(
                component.origin::<Error>(),
                Some(Error::PortInUse { port: 8081, .. })
            ),
            "{component:?}"
        );
        assert!(std::error::Error::source(&component).is_none());
    }
}
