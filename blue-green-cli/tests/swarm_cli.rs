//! The `blue-green` binary with `[runtime] kind = "swarm"` on a real two-node swarm that the
//! test builds on this machine (blue_green_testkit::swarm) and removes: `validate` refuses a
//! daemon that is not a swarm manager (exit 4) and passes on the manager; two deploys and a
//! status go through the config file, `DOCKER_HOST` and the swarm, and each color answers on
//! its published port on both nodes; once a node dies, `status` names it. The engine under load on three nodes is tested in
//! blue-green-docker's tests/swarm.rs; this test is about the CLI's wiring.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use blue_green_testkit::docker::{demo_app_image, DockerCleanup};
use blue_green_testkit::swarm::TestSwarm;
use serde_json::Value;

async fn blue_green(dir: &Path, docker_host: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(args)
        .current_dir(dir)
        .env_remove("BLUE_GREEN_CONFIG")
        .env("DOCKER_HOST", docker_host)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run blue-green")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn ok(dir: &Path, docker_host: &str, args: &[&str]) -> String {
    let out = blue_green(dir, docker_host, args).await;
    assert!(
        out.status.success(),
        "`blue-green {}` failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

async fn answer(client: &reqwest::Client, address: &str, port: u16) -> String {
    match client.get(format!("http://{address}:{port}/")).send().await {
        Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
        Err(e) => format!("no answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_validates_and_deploys_on_a_swarm_manager() {
    let cleanup = DockerCleanup::new("cli-swarm").await;
    let image = demo_app_image(&cleanup).await;
    let mut swarm = TestSwarm::start(2).await;
    swarm.load_image(cleanup.docker(), &image).await;
    let manager = format!("unix:///tmp/bg-swarm/{}/n1/sock", swarm.prefix());
    let addresses: Vec<String> = swarm
        .nodes()
        .iter()
        .map(|n| format!("{:?}", n.address))
        .collect();

    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        r#"app = "{app}"

[runtime]
kind = "swarm"
image = "{image}"
container_port = 8080
published_ports = {{ blue = 28281, green = 28282 }}
publish_mode = "host"
replicas = 2
max_replicas_per_node = 1
addresses = [{addresses}]
converge_timeout = "60s"

[health]
kind = "http"
path = "/health"
expect_body = "{{color}} {{release}}"
deadline = "30s"

[router]
kind = "none"
target_file = "target.txt"

[switch]
drain = "0s"
stop_timeout = "5s"
"#,
        app = cleanup.prefix(),
        addresses = addresses.join(", "),
    );
    std::fs::write(dir.path().join("blue-green.toml"), config).expect("write config");
    let d = dir.path();

    // The machine's own daemon is in no swarm: validate says so and exits 4.
    let out = blue_green(d, "unix:///var/run/docker.sock", &["validate"]).await;
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(said.contains("not in a swarm"), "{said}");

    // The manager passes, and every node is ready.
    let said = ok(d, &manager, &["validate"]).await;
    assert!(
        said.contains("swarm manager") && said.contains("every node of the swarm is ready"),
        "{said}"
    );

    ok(d, &manager, &["deploy", "--release", "v1"]).await;
    ok(d, &manager, &["deploy", "--release", "v2"]).await;
    let status = ok(d, &manager, &["--json", "status"]).await;
    let last: Value =
        serde_json::from_str(status.lines().last().expect("a result line")).expect("JSON");
    assert_eq!(last["status"]["live"], "green", "{status}");
    assert_eq!(
        last["status"]["deployment"]["release"]["id"], "v2",
        "{status}"
    );

    // Both nodes answer on green's port with the new release; blue was scaled to 0.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    for node in swarm.nodes() {
        assert_eq!(
            answer(&client, &node.address, 28282).await,
            "demo-app green v2",
            "node {}",
            node.index
        );
        assert!(
            answer(&client, &node.address, 28281)
                .await
                .starts_with("no answer"),
            "blue is stopped on node {}",
            node.index
        );
    }
    let target = std::fs::read_to_string(d.join("target.txt")).expect("the router's target");
    assert!(
        target.contains(&format!("{}:28282", swarm.node(1).address)),
        "{target}"
    );
    let said = ok(d, &manager, &["status"]).await;
    assert!(said.contains("swarm    every node is ready"), "{said}");

    // Node 2 dies: status names it once the manager has noticed, and still shows green live.
    let lost = swarm.node(2).address.clone();
    swarm.kill_node(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = ok(d, &manager, &["--json", "status"]).await;
        let last: Value =
            serde_json::from_str(status.lines().last().expect("a result line")).expect("JSON");
        assert_eq!(last["status"]["live"], "green", "{status}");
        let named = last["lost_nodes"].as_array().is_some_and(|l| {
            l.iter()
                .any(|n| n.as_str().is_some_and(|n| n.contains(&lost)))
        });
        if named {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never named the lost node {lost}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let said = ok(d, &manager, &["status"]).await;
    assert!(
        said.contains("swarm    nodes not ready: ") && said.contains(&lost),
        "{said}"
    );
}
