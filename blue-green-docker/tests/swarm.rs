//! The engine deploying the demo app as swarm services (SwarmRuntime) on a real three-node
//! swarm that the test builds on this machine (blue_green_testkit::swarm), switching a real
//! nginx, under load. One test, run in order, because the swarm takes a dozen seconds to form
//! and the last part kills one of its nodes:
//!
//! 1. a worker node is refused as the runtime's daemon (it cannot create services);
//! 2. eleven deploys of a 3-replica service, each spread over the 3 nodes, every node answering
//!    on the color's published port with the new release;
//! 3. a release that never becomes healthy on one node (node 3 holds a sick build under the
//!    same tag) fails the deploy with the tasks' errors and changes nothing serving;
//! 4. node 3's whole daemon (dockerd, containerd, shims, tasks) killed in the middle of a
//!    deploy: the deploy completes or restores, the runtime names the lost node, and once the
//!    node is back the next deploy succeeds on all three nodes;
//! 5. a rollback scales the previous color (kept stopped, at 0 tasks) back up on all nodes.
//!
//! Not one request through nginx may fail. The per-deploy step timings are printed.
//!
//! The machine's kernel has no IPVS, so swarm's ingress routing mesh cannot work here: the
//! services publish in `host` mode (each node with a task answers on the port), and nginx's
//! upstream is node 1's address, the instance's endpoint.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use blue_green_core::{AppName, CancellationToken, Engine, FileStore, Release};
use blue_green_docker::{PerColor, PublishMode, SwarmConfig, SwarmRuntime};
use blue_green_testkit::docker::{demo_app_image, demo_app_image_with_env, DockerCleanup};
use blue_green_testkit::nginx::NginxHarness;
use blue_green_testkit::swarm::TestSwarm;
use bollard::models::TaskState;
use bollard::query_parameters::{ListServicesOptions, ListTasksOptionsBuilder};
use bollard::Docker;
use common::engine::{self as setup, timing_row, TIMING_HEADER};

fn swarm_config(image: &str, addresses: Vec<String>, ports: (u16, u16)) -> SwarmConfig {
    SwarmConfig {
        image: image.to_string(),
        container_port: 8080,
        published_ports: PerColor {
            blue: ports.0,
            green: ports.1,
        },
        publish_mode: PublishMode::Host,
        replicas: 3,
        max_replicas_per_node: Some(1),
        constraints: vec![],
        networks: vec![],
        env: Default::default(),
        labels: Default::default(),
        addresses,
        converge_timeout: Duration::from_secs(15),
        max_task_failures: 3,
        stop_signal: None,
        stop_grace_period: Some(Duration::from_secs(10)),
        init: false,
    }
}

/// The nodes (ids) running a task of `service` now.
async fn running_nodes(manager: &Docker, service: &str) -> BTreeSet<String> {
    let filters = HashMap::from([("service", vec![service.to_string()])]);
    let options = ListTasksOptionsBuilder::new().filters(&filters).build();
    let tasks = manager
        .list_tasks(Some(options))
        .await
        .expect("listing tasks");
    tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
        .filter_map(|t| t.node_id.clone())
        .collect()
}

/// GET `http://{address}:{port}/` straight from a node, bypassing nginx.
async fn body_from(client: &reqwest::Client, address: &str, port: u16) -> String {
    match client
        .get(format!("http://{address}:{port}/health"))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(e) => format!("no answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_node_swarm_deploys_under_load_and_survives_a_sick_node_and_a_dead_worker() {
    let cleanup = DockerCleanup::new("swarm").await;
    let good = demo_app_image(&cleanup).await;
    let sick = demo_app_image_with_env(&cleanup, "sick", &[("NEVER_HEALTHY", "1")]).await;

    let started = Instant::now();
    let mut swarm = TestSwarm::start(3).await;
    println!(
        "swarm {} of 3 nodes formed in {} ms",
        swarm.prefix(),
        started.elapsed().as_millis()
    );
    swarm.load_image(cleanup.docker(), &good).await;
    let node1 = swarm.node(1).address.clone();
    let ports = (18081, 18082);
    let app = AppName::new(cleanup.prefix()).unwrap();

    // 1. A worker cannot run services: the runtime refuses it before anything starts.
    let refused = SwarmRuntime::with_docker(
        app.clone(),
        swarm_config(&good, vec![], ports),
        swarm.node(2).docker().clone(),
    )
    .await
    .expect_err("a worker node is not a manager");
    println!("worker refused: {refused}");
    assert!(
        matches!(refused, blue_green_docker::Error::NotSwarmManager { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("a worker, not a manager"));

    // With no addresses configured the endpoint is the manager's own address.
    let runtime = SwarmRuntime::with_docker(
        app.clone(),
        swarm_config(&good, vec![], ports),
        swarm.manager().clone(),
    )
    .await
    .unwrap();
    let manager = swarm.manager().clone();

    let nginx = NginxHarness::start("swarm", &setup::nowhere())
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
    let state_dir = tempfile::tempdir().unwrap();
    let config = setup::engine_config(app.clone());
    let engine = Engine::new(
        config.clone(),
        runtime.clone(),
        setup::probe(),
        setup::router(&nginx),
        FileStore::new(state_dir.path()),
    );
    let cancel = CancellationToken::new();
    let release = |id: &str, image: &str| {
        Release::new(id)
            .unwrap()
            .with_artifact(image.to_string())
            .unwrap()
    };
    let direct = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    // 2. Eleven deploys; from the second on under load.
    let first = engine
        .deploy(release("r0", &good), &cancel)
        .await
        .unwrap_or_else(|e| panic!("first deploy: {e}\nnginx: {}", nginx.error_log()));
    assert_eq!(first.live.endpoint.host, node1, "the manager's address");
    let load = setup::warm_load(&nginx).await;
    let mut rows = vec![timing_row("r0", &first)];
    let mut live = first.live.color;
    for i in 1..=10 {
        let id = format!("r{i}");
        let report = engine
            .deploy(release(&id, &good), &cancel)
            .await
            .unwrap_or_else(|e| panic!("deploy {id}: {e}\nload: {}", load.snapshot()));
        assert_eq!(
            report.live.color,
            live.other(),
            "each deploy goes to the idle color"
        );
        assert_eq!(report.live.release.id, id);
        live = report.live.color;
        rows.push(timing_row(&id, &report));
        let service = runtime.service_name(live);
        let nodes = running_nodes(&manager, &service).await;
        assert_eq!(
            nodes.len(),
            3,
            "{service} runs on 3 distinct nodes: {nodes:?}"
        );
        // Every node answers on the color's published port with the new release.
        let port = *PerColor {
            blue: ports.0,
            green: ports.1,
        }
        .get(live);
        for node in swarm.nodes() {
            let body = body_from(&direct, &node.address, port).await;
            assert_eq!(body.trim(), format!("{live} {id}"), "node {}", node.index);
        }
    }
    let after_good = load.snapshot();
    println!("load after 11 deploys: {after_good}");
    assert_eq!(after_good.failed, 0, "no request may fail: {after_good}");

    // 3. Node 3 holds a build that never gets healthy, under the tag nodes 1 and 2 run healthy.
    let mixed = format!("{}-mixed:latest", cleanup.prefix());
    swarm
        .load_image_on(cleanup.docker(), &good, &mixed, &[1, 2])
        .await;
    swarm
        .load_image_on(cleanup.docker(), &sick, &mixed, &[3])
        .await;
    let before = engine.status().await.unwrap();
    let t = Instant::now();
    let error = engine
        .deploy(release("mixed", &mixed), &cancel)
        .await
        .expect_err("a release unhealthy on one node must not go live");
    println!(
        "sick-on-one-node deploy failed after {} ms: {error}",
        t.elapsed().as_millis()
    );
    let message = format!("{error:#}");
    assert!(
        message.contains("keep failing") || message.contains("not every task"),
        "the report names the failing tasks: {message}"
    );
    let after = engine.status().await.unwrap();
    assert_eq!(after.live, before.live, "the live color kept serving");
    assert_eq!(
        after.deployment.as_ref().map(|d| d.release.id.as_str()),
        Some("r10")
    );
    let idle = runtime.service_name(live.other());
    let services = manager
        .list_services(None::<ListServicesOptions>)
        .await
        .unwrap();
    let idle_release = services
        .iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(idle.as_str()))
        .and_then(|s| {
            s.spec
                .as_ref()?
                .labels
                .as_ref()?
                .get("blue-green.release")
                .cloned()
        });
    assert_ne!(
        idle_release.as_deref(),
        Some("mixed"),
        "the failed release's service was removed"
    );
    assert_eq!(
        running_nodes(&manager, &runtime.service_name(live))
            .await
            .len(),
        3
    );

    // 4. Node 3 dies while the next deploy starts its tasks.
    let target = live.other();
    let target_service = runtime.service_name(target);
    let t = Instant::now();
    let (outcome, killed_at) = tokio::join!(engine.deploy(release("r11", &good), &cancel), async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let services = manager
                .list_services(None::<ListServicesOptions>)
                .await
                .unwrap();
            if services.iter().any(|s| {
                s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(target_service.as_str())
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the deploy never created {target_service}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        swarm.kill_node(3);
        t.elapsed().as_millis()
    });
    match &outcome {
        Ok(report) => {
            println!(
                "deploy with node 3 killed at {killed_at} ms completed on the remaining nodes"
            );
            rows.push(timing_row("r11", report));
            live = report.live.color;
        }
        Err(e) => println!(
            "deploy with node 3 killed at {killed_at} ms failed after {} ms and restored: {e}",
            t.elapsed().as_millis()
        ),
    }
    let status = engine.status().await.unwrap();
    assert_eq!(status.live, Some(live), "a live color serves");
    println!(
        "status after the node died: leftovers {:?}",
        status.leftovers
    );

    // The runtime names the lost node once the manager has noticed it.
    let lost = swarm.node(3).address.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let unready = loop {
        let unready = runtime.unready_nodes().await.unwrap();
        if unready.iter().any(|n| n.contains(&lost)) {
            break unready;
        }
        assert!(
            Instant::now() < deadline,
            "the manager never reported node 3 ({lost}) as lost: {unready:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("lost nodes reported: {unready:?}");

    // Node 3 comes back; the next deploy clears what the interrupted one left and succeeds on
    // all three nodes.
    swarm.restart_node(3).await;
    swarm.wait_for_ready_nodes(3, Duration::from_secs(60)).await;
    let before_r12 = engine.status().await.unwrap().deployment;
    let report = engine
        .deploy(release("r12", &good), &cancel)
        .await
        .unwrap_or_else(|e| panic!("deploy after node 3 came back: {e}"));
    rows.push(timing_row("r12", &report));
    assert_eq!(report.live.release.id, "r12");
    let nodes = running_nodes(&manager, &runtime.service_name(report.live.color)).await;
    assert_eq!(nodes.len(), 3, "r12 runs on all 3 nodes again: {nodes:?}");
    let status = engine.status().await.unwrap();
    assert!(
        status.leftovers.is_empty(),
        "the deploy after the lost node repaired what was left: {:?}",
        status.leftovers
    );

    // 5. Rollback to the color kept stopped (scaled to 0): the runtime scales it back up on
    //    every node, and the router goes back to it.
    let previous = report.live.color.other();
    let rolled = engine
        .rollback(&cancel)
        .await
        .unwrap_or_else(|e| panic!("rollback: {e}"));
    assert_eq!(rolled.live.color, previous);
    assert_eq!(
        Some(rolled.live.release.id.as_str()),
        before_r12.as_ref().map(|d| d.release.id.as_str()),
        "the release that was live before r12 is live again"
    );
    rows.push(timing_row("rollback", &rolled));
    let nodes = running_nodes(&manager, &runtime.service_name(previous)).await;
    assert_eq!(
        nodes.len(),
        3,
        "the rolled-back color runs on all 3 nodes: {nodes:?}"
    );

    let report = load.stop().await;
    println!("load during the swarm deploys: {report}");
    println!("{TIMING_HEADER}");
    for row in &rows {
        println!("{row}");
    }
    assert_eq!(report.failed, 0, "no request may fail: {report}");
    assert!(
        report.by_color.get("blue").copied().unwrap_or(0) > 0
            && report.by_color.get("green").copied().unwrap_or(0) > 0,
        "both colors answered: {report}"
    );
}
