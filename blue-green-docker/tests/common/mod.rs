//! Helpers shared by the Docker tests.
#![allow(dead_code)]

pub mod compose;
pub mod engine;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use blue_green_core::{Endpoint, Instance, InstanceState, Runtime};
use blue_green_docker::{DockerConfig, PerColor};

/// A Docker runtime config for the demo app image.
pub fn demo_config(image: &str, env: &[(&str, &str)]) -> DockerConfig {
    DockerConfig {
        image: image.to_string(),
        container_port: 8080,
        endpoints: None,
        publish_host: "127.0.0.1".into(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        networks: vec![],
        restart_policy: None,
        stop_signal: None,
        labels: BTreeMap::new(),
        init: false,
    }
}

/// Two loopback ports that were free a moment ago.
pub fn free_endpoints() -> PerColor<Endpoint> {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    PerColor {
        blue: Endpoint::new("127.0.0.1", port()),
        green: Endpoint::new("127.0.0.1", port()),
    }
}

/// GET `path` on `endpoint`: status and body, or the error as text.
pub async fn get(endpoint: &Endpoint, path: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{endpoint}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Waits until `/health` on the instance answers 200; returns the body. Panics with the last
/// answer after `deadline`.
pub async fn wait_healthy(instance: &Instance, deadline: Duration) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match get(&instance.endpoint, "/health").await {
            Ok((200, body)) => return body,
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} ({}) not healthy on {} within {deadline:?}; last answer: {last}",
        instance.id, instance.color, instance.endpoint
    );
}

/// Waits until the runtime reports a state matching `want`; returns it and the time it took.
pub async fn wait_state(
    runtime: &dyn Runtime,
    instance: &Instance,
    deadline: Duration,
    want: impl Fn(&InstanceState) -> bool,
) -> (InstanceState, Duration) {
    let start = Instant::now();
    loop {
        let state = runtime.state(instance).await.expect("state");
        if want(&state) {
            return (state, start.elapsed());
        }
        assert!(
            start.elapsed() < deadline,
            "{} did not reach the wanted state within {deadline:?}; it is {state}",
            instance.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
