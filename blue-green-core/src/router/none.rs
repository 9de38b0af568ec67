//! [`NoneRouter`]: for setups where something else routes; it only records the target.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::ComponentError;
use crate::model::Endpoint;
use crate::router::{RouteReceipt, Router};
use crate::state::atomic::write_atomic;

/// Records the target in a file (so that `target()` survives restarts) and routes nothing.
///
/// Use it when traffic is switched by something the engine does not drive — a cloud load
/// balancer updated by a later pipeline step, a service mesh, a person. The file holds one line,
/// `host:port`, written atomically; the engine treats it as the live target.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use blue_green_core::{Endpoint, NoneRouter, Router};
///
/// let router = NoneRouter::new(".blue-green/target");
/// router.route_to(&Endpoint::new("127.0.0.1", 8082)).await?;
/// assert_eq!(router.target().await?, Some(Endpoint::new("127.0.0.1", 8082)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NoneRouter {
    path: PathBuf,
}

impl NoneRouter {
    /// A router that records its target in `path` (its directory is created on the first
    /// `route_to`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        NoneRouter { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn io_error(doing: &str, path: &Path, e: io::Error) -> ComponentError {
    ComponentError::unreachable(format!(
        "cannot {doing} the recorded router target {}: {e}; check that its directory exists or can be created and is writable by this user",
        path.display()
    ))
    .with_source(e)
}

fn read_target(path: &Path) -> Result<Option<Endpoint>, ComponentError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", path, e)),
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<Endpoint>().map(Some).map_err(|e| {
        ComponentError::failed(format!(
            "{} does not hold a router target: {e}; write the live HOST:PORT into it, or delete it if nothing is live",
            path.display()
        ))
    })
}

fn write_target(path: &Path, endpoint: &Endpoint) -> Result<(), ComponentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", path, e))?;
    }
    write_atomic(path, format!("{endpoint}\n").as_bytes()).map_err(|e| io_error("write", path, e))
}

#[async_trait]
impl Router for NoneRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_target(&path))
            .await
            .map_err(|e| {
                ComponentError::failed(format!("reading the router target did not finish: {e}"))
            })?
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        let path = self.path.clone();
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || write_target(&path, &endpoint))
            .await
            .map_err(|e| {
                ComponentError::failed(format!("recording the router target did not finish: {e}"))
            })??;
        Ok(RouteReceipt::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ComponentErrorKind;

    #[tokio::test]
    async fn records_the_target_and_reads_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let router = NoneRouter::new(tmp.path().join("sub").join("target"));
        assert_eq!(router.target().await.unwrap(), None);
        for endpoint in [
            Endpoint::new("127.0.0.1", 8081),
            Endpoint::new("::1", 8082),
            Endpoint::new("app-green", 80),
        ] {
            router.route_to(&endpoint).await.unwrap();
            assert_eq!(router.target().await.unwrap(), Some(endpoint.clone()));
            // A new router on the same file (a later command) sees it too.
            let again = NoneRouter::new(router.path());
            assert_eq!(again.target().await.unwrap(), Some(endpoint));
        }
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["target"], "no temporary files are left");
    }

    #[tokio::test]
    async fn a_garbled_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("target");
        std::fs::write(&path, "not an endpoint").unwrap();
        let err = NoneRouter::new(&path).target().await.unwrap_err();
        assert_eq!(err.kind, ComponentErrorKind::Failed);
        assert!(err.message.contains(&path.display().to_string()), "{err}");
    }

    #[tokio::test]
    async fn an_unwritable_place_is_an_unreachable_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        // A regular file where the directory should be.
        let blocker = tmp.path().join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let router = NoneRouter::new(blocker.join("target"));
        let err = router
            .route_to(&Endpoint::new("127.0.0.1", 1))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ComponentErrorKind::Unreachable);
        assert!(err.message.contains("blocker"), "{err}");
    }
}
