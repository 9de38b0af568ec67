//! Connecting to the Docker daemon and calling it with a time limit.

use std::future::Future;
use std::time::Duration;

use bollard::Docker;

use crate::error::Error;

/// Where the client connects: `DOCKER_HOST`, or the platform's default socket.
pub(crate) fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// Connects through `DOCKER_HOST` or the default socket, negotiates the API version (so an
/// older daemon such as API 1.41 is spoken to in its own version) and pings it.
pub(crate) async fn connect(limit: Duration) -> Result<Docker, Error> {
    let docker = Docker::connect_with_defaults().map_err(|source| Error::Unreachable {
        host: docker_host(),
        source,
    })?;
    let docker = call(
        || "negotiating the API version with the Docker daemon".into(),
        limit,
        docker.negotiate_version(),
    )
    .await?;
    call(|| "pinging the Docker daemon".into(), limit, docker.ping()).await?;
    Ok(docker)
}

/// Runs one Docker API call with a time limit; `what` names it for the error ("to stop
/// container web-blue").
pub(crate) async fn call<T>(
    what: impl FnOnce() -> String,
    limit: Duration,
    call: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::from_bollard(what(), source)),
        Err(_) => Err(Error::Timeout {
            what: what(),
            timeout: limit,
        }),
    }
}

/// True when `error` is the daemon answering `status` (404 for "no such container").
pub(crate) fn is_status(error: &Error, status: u16) -> bool {
    error.status() == Some(status)
}
