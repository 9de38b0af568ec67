//! Docker test support: a reachable engine (or a loud panic), the demo app built as a static
//! binary, test images built from a local context (no registry is needed), and
//! [`DockerCleanup`], a drop guard that removes every container, network and image a test made.
//!
//! Every name a test makes starts with its [`DockerCleanup::prefix`] (`bg-test-<name>-<unique>`),
//! which is also a valid app and compose project name; the guard removes whatever carries it,
//! also when the test panics.
//!
//! ```no_run
//! # async fn demo() {
//! use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
//!
//! let cleanup = DockerCleanup::new("start-stop").await;
//! let image = demo_app_image(&cleanup).await;
//! // ... run containers named after cleanup.prefix() from `image` ...
//! # }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptions, ListNetworksOptions,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

/// A connected Docker client, or a panic that says the engine is not reachable and what to do.
/// Tests that need Docker must fail, never skip, on a machine without it.
pub async fn docker() -> Docker {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |e: &dyn std::fmt::Display| -> ! {
        panic!("Docker engine not reachable at {host}: {e}; start dockerd (these tests need a real Docker engine)")
    };
    let docker = Docker::connect_with_defaults().unwrap_or_else(|e| unreachable(&e));
    let docker =
        match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => unreachable(&e),
            Err(_) => unreachable(&"no answer within 10s"),
        };
    match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
        Ok(Ok(_)) => docker,
        Ok(Err(e)) => unreachable(&e),
        Err(_) => unreachable(&"no answer to ping within 10s"),
    }
}

/// The workspace root (the testkit lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit is inside the workspace")
        .to_path_buf()
}

/// The demo app (`examples/demo-app`) built as a statically linked release binary, so it runs
/// in a `FROM scratch` image. Built once per process, into `<target>/static` so that the normal
/// build's artifacts are not invalidated by the different RUSTFLAGS. Panics with cargo's output
/// if the build fails.
pub fn demo_app_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = workspace_root();
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("static");
        let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = std::process::Command::new(cargo)
            .args(["build", "--release", "-p", "demo-app", "--target", &triple])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cannot run cargo to build the static demo-app");
        assert!(
            output.status.success(),
            "building the static demo-app failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let binary = target_dir.join(&triple).join("release").join("demo-app");
        assert!(binary.is_file(), "cargo built no {}", binary.display());
        binary
    })
}

/// Builds an image tagged `tag` from a context of `files` (name, contents, mode) and a
/// Dockerfile text, through the Docker API (no registry, no docker CLI). Panics with the
/// builder's output on failure.
///
/// The build does not use the layer cache: tests run in parallel and each removes its own
/// images when it ends, and a build that picked up a cached layer of an image being removed
/// at that moment failed with "unknown parent image ID". These images are a `COPY` onto
/// `scratch`, so building them afresh costs next to nothing.
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    dockerfile: &str,
    files: &[(&str, &[u8], u32)],
) {
    let mut context = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        context
            .append_data(&mut header, name, data)
            .expect("writing the build context in memory");
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644);
    for (name, data, mode) in files {
        add(name, data, *mode);
    }
    let context = context.into_inner().expect("finishing the build context");

    let options = BuildImageOptionsBuilder::new()
        .t(tag)
        .nocache(true)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    let build = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream {
                        log.push_str(&line);
                    }
                    if let Some(detail) = info.error_detail {
                        return Err(detail.message.unwrap_or_default());
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(120), build).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("building test image {tag} failed: {e}\n{log}"),
        Err(_) => panic!("building test image {tag} did not finish within 120s\n{log}"),
    }
}

/// Builds `<prefix>-demo:latest`: the demo app in an empty image, from
/// `examples/demo-app/Dockerfile` (with its HEALTHCHECK).
pub async fn demo_app_image(cleanup: &DockerCleanup) -> String {
    demo_app_image_with_env(cleanup, "demo", &[]).await
}

/// Builds `<prefix>-<name>:latest`: the demo app image with `env` baked in (`ENV` lines), for
/// releases that behave differently, for example `CRASH_ON_START=1` or `NEVER_HEALTHY=1`.
pub async fn demo_app_image_with_env(
    cleanup: &DockerCleanup,
    name: &str,
    env: &[(&str, &str)],
) -> String {
    let binary = tokio::task::spawn_blocking(|| demo_app_binary().to_path_buf())
        .await
        .expect("building the demo app");
    let data = std::fs::read(&binary).expect("reading the static demo-app");
    let mut dockerfile =
        std::fs::read_to_string(workspace_root().join("examples/demo-app/Dockerfile"))
            .expect("reading examples/demo-app/Dockerfile");
    for (key, value) in env {
        dockerfile.push_str(&format!("ENV {key}={value}\n"));
    }
    let tag = format!("{}-{name}:latest", cleanup.prefix());
    build_image(
        cleanup.docker(),
        &tag,
        &dockerfile,
        &[("demo-app", &data, 0o755)],
    )
    .await;
    tag
}

/// Builds `<prefix>-nohealth:latest`: the demo app without a HEALTHCHECK.
pub async fn demo_app_image_without_healthcheck(cleanup: &DockerCleanup) -> String {
    let binary = tokio::task::spawn_blocking(|| demo_app_binary().to_path_buf())
        .await
        .expect("building the demo app");
    let data = std::fs::read(&binary).expect("reading the static demo-app");
    let tag = format!("{}-nohealth:latest", cleanup.prefix());
    let dockerfile =
        "FROM scratch\nCOPY demo-app /demo-app\nEXPOSE 8080\nENTRYPOINT [\"/demo-app\"]\n";
    build_image(
        cleanup.docker(),
        &tag,
        dockerfile,
        &[("demo-app", &data, 0o755)],
    )
    .await;
    tag
}

/// Removes, on drop, every container (and its anonymous volumes), network and image whose
/// name or compose project starts with [`prefix`](DockerCleanup::prefix), also when the test
/// panics. Create it first in a test, and name everything after its prefix.
#[derive(Debug)]
pub struct DockerCleanup {
    docker: Docker,
    prefix: String,
}

impl DockerCleanup {
    /// A guard with a unique prefix `bg-test-<name>-<unique>`; `name` is a short test name of
    /// `a-z`, `0-9` and `-`. Panics if Docker is not reachable.
    pub async fn new(name: &str) -> DockerCleanup {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "test name `{name}` must be a-z, 0-9 and -"
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let unique = format!(
            "{:x}{:x}{}",
            std::process::id() % 0xffff,
            nanos % 0xfff,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        DockerCleanup {
            docker: docker().await,
            prefix: format!("bg-test-{name}-{unique}"),
        }
    }

    /// The prefix of everything this test makes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Removes everything with the prefix now (the drop does it again, which is harmless).
    pub async fn clean(&self) -> Vec<String> {
        clean(&self.docker, &self.prefix).await
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside a runtime: clean up on a thread of its own.
        let docker = self.docker.clone();
        let prefix = self.prefix.clone();
        let failures = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the Docker cleanup");
            runtime.block_on(clean(&docker, &prefix))
        })
        .join()
        .unwrap_or_else(|_| vec!["the cleanup thread panicked".into()]);
        if !failures.is_empty() {
            eprintln!(
                "DockerCleanup {}: could not remove: {}",
                self.prefix,
                failures.join("; ")
            );
        }
    }
}

/// Removes containers, then networks, then images with `prefix`; returns what it could not.
async fn clean(docker: &Docker, prefix: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let limit = Duration::from_secs(60);

    let options = ListContainersOptionsBuilder::new().all(true).build();
    let containers = match tokio::time::timeout(limit, docker.list_containers(Some(options))).await
    {
        Ok(Ok(c)) => c,
        other => {
            failures.push(format!("listing containers: {other:?}"));
            Vec::new()
        }
    };
    for container in containers {
        let by_name = container
            .names
            .iter()
            .flatten()
            .any(|n| n.trim_start_matches('/').starts_with(prefix));
        let labels = container.labels.unwrap_or_default();
        let by_label = ["com.docker.compose.project", "blue-green.app"]
            .iter()
            .any(|l| labels.get(*l).is_some_and(|v| v.starts_with(prefix)));
        if !(by_name || by_label) {
            continue;
        }
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match tokio::time::timeout(limit, docker.remove_container(&id, Some(options))).await {
            Ok(Ok(())) => {}
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => {}
            other => failures.push(format!("container {id}: {other:?}")),
        }
    }

    match tokio::time::timeout(limit, docker.list_networks(None::<ListNetworksOptions>)).await {
        Ok(Ok(networks)) => {
            for network in networks {
                let Some(name) = network.name else { continue };
                if !name.starts_with(prefix) {
                    continue;
                }
                match tokio::time::timeout(limit, docker.remove_network(&name)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    })) => {}
                    other => failures.push(format!("network {name}: {other:?}")),
                }
            }
        }
        other => failures.push(format!("listing networks: {other:?}")),
    }

    match tokio::time::timeout(limit, docker.list_images(None::<ListImagesOptions>)).await {
        Ok(Ok(images)) => {
            for image in images {
                for tag in image.repo_tags.iter().filter(|t| t.starts_with(prefix)) {
                    let options = RemoveImageOptionsBuilder::new().force(true).build();
                    match tokio::time::timeout(limit, docker.remove_image(tag, Some(options), None))
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 404,
                            ..
                        })) => {}
                        other => failures.push(format!("image {tag}: {other:?}")),
                    }
                }
            }
        }
        other => failures.push(format!("listing images: {other:?}")),
    }
    failures
}

/// Labels of every container with `prefix`, keyed by container name: for tests that check
/// what is left.
pub async fn containers_with_prefix(
    docker: &Docker,
    prefix: &str,
) -> HashMap<String, HashMap<String, String>> {
    let options = ListContainersOptionsBuilder::new().all(true).build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .expect("listing containers");
    containers
        .into_iter()
        .filter_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_string();
            name.starts_with(prefix)
                .then(|| (name, c.labels.unwrap_or_default()))
        })
        .collect()
}

/// Names of the networks with `prefix` (compose makes `<project>_default`).
pub async fn networks_with_prefix(docker: &Docker, prefix: &str) -> Vec<String> {
    docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .expect("listing networks")
        .into_iter()
        .filter_map(|n| n.name)
        .filter(|name| name.starts_with(prefix))
        .collect()
}
