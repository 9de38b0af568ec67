//! An unreachable Docker daemon is an error that says so and what to do. Its own test binary,
//! because it changes DOCKER_HOST for the process.

mod common;

use blue_green_core::{AppName, ComponentError, ComponentErrorKind};
use blue_green_docker::DockerRuntime;
use common::demo_config;

#[tokio::test]
async fn an_unreachable_daemon_is_reported_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-docker.sock");
    std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display()));
    let config = demo_config("web:latest", &[]);
    let error = DockerRuntime::connect(AppName::new("web").unwrap(), config)
        .await
        .expect_err("nothing listens on that socket");
    let message = error.to_string();
    println!("{message}");
    assert!(
        message.contains("cannot reach the Docker daemon"),
        "{message}"
    );
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("start dockerd"), "{message}");
    let component: ComponentError = error.into();
    assert_eq!(component.kind, ComponentErrorKind::Unreachable);
}
