//! CaddyRouter against the real Caddy (Debian's package, started on loopback by the test in a
//! temporary directory, its admin API on a Unix socket or a loopback port) and real color
//! servers.
//!
//! Run with `--nocapture` to see the switch times, the request counts and what a switch does
//! to requests in flight and to an open WebSocket.

mod support;

use std::time::{Duration, Instant};

use blue_green_core::{Color, ComponentErrorKind, Endpoint, Router};
use blue_green_router::caddy::{CaddyAdmin, CaddyConfig, CaddyRouter};
use blue_green_router::ProxyVerify;
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::load::{Load, LoadConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{colors_through, free_port, percentile, wait_until, websocket_server, Process};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;

/// Where Debian's package puts Caddy.
const CADDY: &str = "/usr/bin/caddy";
const SWITCHES: usize = 50;
const ID: &str = "app_upstreams";

/// How the admin API listens.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AdminOn {
    Socket,
    Port,
}

/// A running Caddy: one server on a free loopback port whose only route is a reverse_proxy
/// handler with `@id` `app_upstreams`, first dialing `initial`; its home, config and autosave
/// in a temporary directory.
struct Caddy {
    dir: TempDir,
    process: Option<Process>,
    port: u16,
    admin: CaddyAdmin,
}

impl Caddy {
    async fn start(initial: &Endpoint, on: AdminOn) -> Result<Caddy, String> {
        if !std::path::Path::new(CADDY).exists() {
            return Err(format!(
                "Caddy not found at {CADDY}: install Debian's caddy (scripts/test does)"
            ));
        }
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("blue-green-caddy-")
                .tempdir()
                .map_err(|e| format!("cannot make a temporary directory for Caddy: {e}"))?;
            let port = free_port()?;
            let (admin, listen) = match on {
                AdminOn::Socket => {
                    let path = dir.path().join("admin.sock");
                    (
                        CaddyAdmin::Unix(path.clone()),
                        format!("unix/{}", path.display()),
                    )
                }
                AdminOn::Port => {
                    let admin_port = free_port()?;
                    (
                        CaddyAdmin::Tcp(Endpoint::new("127.0.0.1", admin_port)),
                        format!("127.0.0.1:{admin_port}"),
                    )
                }
            };
            let config = json!({
                "admin": { "listen": listen },
                "logging": { "logs": { "default": { "level": "WARN" } } },
                "apps": { "http": { "servers": { "web": {
                    "listen": [format!("127.0.0.1:{port}")],
                    "routes": [{ "handle": [{
                        "handler": "reverse_proxy",
                        "@id": ID,
                        "upstreams": [{ "dial": initial.to_string() }]
                    }]}]
                }}}}
            });
            std::fs::write(dir.path().join("caddy.json"), config.to_string())
                .map_err(|e| format!("cannot write caddy.json: {e}"))?;
            let mut caddy = Caddy {
                dir,
                process: None,
                port,
                admin,
            };
            match caddy.run(false).await {
                Ok(()) => return Ok(caddy),
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Starts Caddy from caddy.json, or with `--resume` from its last autosaved config.
    async fn run(&mut self, resume: bool) -> Result<(), String> {
        let dir = self.dir.path().to_path_buf();
        let config = dir.join("caddy.json");
        let config = config.to_str().ok_or("temporary path is not UTF-8")?;
        let mut args = vec!["run", "--config", config];
        if resume {
            args.push("--resume");
        }
        let env = [
            ("HOME", dir.as_path()),
            ("XDG_CONFIG_HOME", dir.as_path()),
            ("XDG_DATA_HOME", dir.as_path()),
        ];
        let mut process = Process::spawn("caddy", CADDY, &args, &dir, &env)?;
        let port = self.port;
        let api = self.admin.clone();
        wait_until(
            &mut process,
            Duration::from_secs(15),
            &dir.join("caddy.log"),
            || {
                let api = api.clone();
                async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                        && admin_get(&api, "/config/").await.is_some()
                }
            },
        )
        .await?;
        self.process = Some(process);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn router_config(&self) -> CaddyConfig {
        let mut config = CaddyConfig::new(self.admin.clone(), ID);
        config.verify = Some(ProxyVerify {
            expect_body: "{color} {release}".into(),
            interval: Duration::from_millis(5),
            ..ProxyVerify::new(self.url("/health"))
        });
        config
    }

    /// Caddy's whole running config.
    async fn config(&self) -> Value {
        admin_get(&self.admin, "/config/")
            .await
            .expect("Caddy's admin API answers")
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` on the admin API, as a person with curl would; `None` when it does not answer.
async fn admin_get(admin: &CaddyAdmin, path: &str) -> Option<Value> {
    let (client, base, host) = match admin {
        CaddyAdmin::Unix(socket) => (
            reqwest::Client::builder().unix_socket(socket.clone()),
            "http://localhost".to_string(),
            Some(""),
        ),
        CaddyAdmin::Tcp(endpoint) => (
            reqwest::Client::builder().no_proxy(),
            format!("http://{endpoint}"),
            None,
        ),
    };
    let client = client.timeout(Duration::from_secs(5)).build().ok()?;
    let mut request = client.get(format!("{base}{path}"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_switches_under_load_fail_no_request_and_verify_the_new_color() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let caddy = Caddy::start(&blue.endpoint(), AdminOn::Socket)
        .await
        .unwrap();
    let router = CaddyRouter::new(caddy.router_config()).unwrap();
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    assert_eq!(colors_through(&caddy.url("/"), 3).await, ["blue"; 3]);

    let load = Load::start(LoadConfig {
        slow_path: Some("/slow?ms=300".into()),
        ..LoadConfig::new(caddy.url(""))
    });
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "the load loop does not get going: {warm}");

    let (mut switched, mut verified) = (Vec::new(), Vec::new());
    let mut old_counted = 0;
    for switch in 0..SWITCHES {
        let (from, to) = if router.target().await.unwrap() == Some(blue.endpoint()) {
            (&blue, &green)
        } else {
            (&green, &blue)
        };
        let asked = Instant::now();
        let receipt = router
            .route_to(&to.endpoint())
            .await
            .unwrap_or_else(|e| panic!("switch {switch} to {}: {e}", to.color()));
        switched.push(asked.elapsed());
        router
            .verify(&to.instance(), &receipt)
            .await
            .unwrap_or_else(|e| panic!("switch {switch} to {}: {e}", to.color()));
        verified.push(asked.elapsed());

        assert_eq!(router.target().await.unwrap(), Some(to.endpoint()));
        let seen = colors_through(&caddy.url("/"), 5).await;
        assert!(
            seen.iter().all(|c| c == to.color().as_str()),
            "after switch {switch} to {}, new requests through Caddy answered {seen:?}",
            to.color()
        );
        if router.in_flight(&from.endpoint()).await.unwrap().is_some() {
            old_counted += 1;
        }
        // As the engine's drain would, give the old color's requests (300 ms at most) time.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before_end = load.snapshot().total;
    load.wait_for(before_end + 50, Duration::from_secs(20))
        .await;
    let report = load.stop().await;

    switched.sort();
    verified.sort();
    eprintln!(
        "{SWITCHES} switches through Caddy: route_to (admin API PATCH) median {:?}, max {:?}; route_to → verified through Caddy median {:?}, p90 {:?}, max {:?}; the replaced upstream was still counted after {old_counted} of {SWITCHES} switches",
        percentile(&switched, 0.5),
        switched[SWITCHES - 1],
        percentile(&verified, 0.5),
        percentile(&verified, 0.9),
        verified[SWITCHES - 1],
    );
    eprintln!("load through Caddy: {report}");
    if !report.retry_samples.is_empty() {
        eprintln!("retried: {:?}", report.retry_samples);
    }
    // A switch is a config reload, and Caddy (2.6 and later, on Linux) then listens on a new
    // socket (SO_REUSEPORT) and closes the old one: a connection the kernel had queued on the
    // old socket, not yet accepted by Caddy, is reset. Such a request never reached Caddy or
    // the app (safe to send again). Every request Caddy took must succeed: no 5xx, no
    // timeout, no cut body; resets stay rare.
    // Reset before an answer, on a kept-alive or a new connection, or while connecting.
    let resets = ["closed", "connect reset"]
        .iter()
        .map(|kind| report.errors.get(*kind).copied().unwrap_or(0))
        .sum::<u64>();
    eprintln!(
        "connections reset by Caddy's listener handover: {resets} failed requests of {} ({} new connections, {} kept-alive; {} kept-alive requests retried) in {SWITCHES} switches",
        report.total, report.new_connection, report.keep_alive, report.retried
    );
    assert_eq!(
        report.failed - resets,
        0,
        "requests that Caddy accepted failed during the switches: {report}"
    );
    assert!(
        resets * 100 <= report.total,
        "more than 1% of the requests were reset: {report}"
    );
    assert!(
        report.total >= 200,
        "too little traffic to mean anything: {report}"
    );
    for color in ["blue", "green"] {
        assert!(
            report.by_color.get(color).copied().unwrap_or(0) > 0,
            "no request reached {color}: {report}"
        );
    }
    assert_eq!(report.by_color.get("other"), None, "{report}");
}

#[tokio::test]
async fn a_switch_lets_requests_in_flight_finish_and_closes_open_websockets() {
    // Requests in flight: 1.5 s requests to blue at the moment of the switch.
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let caddy = Caddy::start(&blue.endpoint(), AdminOn::Socket)
        .await
        .unwrap();
    let router = CaddyRouter::new(caddy.router_config()).unwrap();
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = caddy.url("/slow?ms=1500");
            tokio::spawn(async move {
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.text().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status.as_u16(), body))
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(10);
    while router.in_flight(&blue.endpoint()).await.unwrap() != Some(3) {
        assert!(
            Instant::now() < until,
            "the slow requests never reached blue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    router.verify(&green.instance(), &receipt).await.unwrap();
    let counted_after = router.in_flight(&blue.endpoint()).await.unwrap();
    let mut finished = Vec::new();
    for request in requests {
        finished.push(request.await.unwrap());
    }
    eprintln!(
        "requests in flight at the switch: {finished:?}; Caddy's count for the replaced upstream right after the switch: {counted_after:?}"
    );
    for outcome in &finished {
        let (status, body) = outcome
            .as_ref()
            .expect("a request in flight survives the switch");
        assert_eq!(*status, 200);
        assert!(body.starts_with("blue v1"), "{body}");
    }
    assert_eq!(
        counted_after, None,
        "Caddy 2.6 forgets the replaced upstream's count at once (if this changed, in_flight can count the old color: update the caddy module's docs)"
    );
    assert_eq!(router.in_flight(&green.endpoint()).await.unwrap(), Some(0));

    // A WebSocket held open across a switch.
    let (ws_blue, blue_task) = websocket_server(Color::Blue).await;
    let (ws_green, green_task) = websocket_server(Color::Green).await;
    let mut config = caddy.router_config();
    config.verify = None;
    let router = CaddyRouter::new(config).unwrap();
    router.route_to(&ws_blue).await.unwrap();
    let ws_url = format!("ws://127.0.0.1:{}/ws", caddy.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    socket.send(Message::text("before")).await.unwrap();
    let echo = socket.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "blue: before");

    let switched = Instant::now();
    router.route_to(&ws_green).await.unwrap();
    let switch_took = switched.elapsed();
    // Keep talking on the old WebSocket until it ends, or for 3 s.
    let mut answered = 0;
    let ended = loop {
        if switched.elapsed() > Duration::from_secs(3) {
            break None;
        }
        if socket.send(Message::text("after")).await.is_err() {
            break Some(("send failed", switched.elapsed()));
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => answered += 1,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => {
                break Some(("closed", switched.elapsed()))
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) => break Some(("error", switched.elapsed())),
            Err(_) => break Some(("no answer", switched.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "a WebSocket open across a Caddy switch (the PATCH took {switch_took:?}): {} after the switch; {answered} messages answered after it",
        match ended {
            Some((how, at)) => format!("ended ({how}) {at:?}"),
            None => "still open 3 s".into(),
        }
    );
    let (_, at) = ended.expect(
        "Caddy 2.6 closes upgraded connections when a switch unloads the old config (if this changed, update the caddy module's docs)",
    );
    assert!(
        at < Duration::from_secs(1),
        "closed {at:?} after the switch"
    );
    // A new WebSocket reaches the new color.
    let (mut again, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    again.send(Message::text("again")).await.unwrap();
    let echo = again.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "green: again");
    blue_task.abort();
    green_task.abort();
}

#[tokio::test]
async fn a_tcp_admin_address_works_and_a_resumed_restart_keeps_the_switch() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let mut caddy = Caddy::start(&blue.endpoint(), AdminOn::Port).await.unwrap();
    let router = CaddyRouter::new(caddy.router_config()).unwrap();
    let check = router.check().await.unwrap();
    assert!(check.contains(&blue.endpoint().to_string()), "{check}");
    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    router.verify(&green.instance(), &receipt).await.unwrap();

    caddy.stop();
    caddy.run(true).await.unwrap();
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    assert_eq!(colors_through(&caddy.url("/"), 5).await, ["green"; 5]);

    // Started from the config file alone, Caddy is back on the file's upstream.
    caddy.stop();
    caddy.run(false).await.unwrap();
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
}

#[tokio::test]
async fn an_unknown_id_a_wrong_handler_and_a_stopped_caddy_are_named() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let mut caddy = Caddy::start(&blue.endpoint(), AdminOn::Socket)
        .await
        .unwrap();

    let mut config = caddy.router_config();
    config.upstream_id = "nope".into();
    let router = CaddyRouter::new(config).unwrap();
    let error = router.target().await.unwrap_err();
    assert!(error.message.contains("\"@id\": \"nope\""), "{error}");
    assert!(router.check().await.is_err());

    // An @id that is on something else than a reverse_proxy handler.
    let mut with_id = caddy.config().await;
    with_id["apps"]["http"]["servers"]["web"]["@id"] = json!("web_server");
    let CaddyAdmin::Unix(socket) = &caddy.admin else {
        unreachable!()
    };
    let client = reqwest::Client::builder()
        .unix_socket(socket.clone())
        .build()
        .unwrap();
    let loaded = client
        .post("http://localhost/load")
        .header("host", "")
        .header("content-type", "application/json")
        .body(with_id.to_string())
        .send()
        .await
        .unwrap();
    assert!(loaded.status().is_success(), "{:?}", loaded.text().await);
    let mut config = caddy.router_config();
    config.upstream_id = "web_server".into();
    let error = CaddyRouter::new(config).unwrap().check().await.unwrap_err();
    assert!(
        error.message.contains("not on a reverse_proxy handler"),
        "{error}"
    );

    let router = CaddyRouter::new(caddy.router_config()).unwrap();
    assert!(router.check().await.unwrap().contains("routes to"));
    caddy.stop();
    let error = router.target().await.unwrap_err();
    assert_eq!(error.kind, ComponentErrorKind::Unreachable, "{error}");
    assert!(error.message.contains("admin API"), "{error}");
}

#[tokio::test]
async fn injection_attempts_in_every_field_change_nothing_in_caddy() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let caddy = Caddy::start(&blue.endpoint(), AdminOn::Socket)
        .await
        .unwrap();
    let before = caddy.config().await;
    let evil = [
        "app_upstreams/../../config",
        "app_upstreams/upstreams",
        "app upstreams",
        "app_upstreams;x",
        "app_upstreams\nx",
        "app_upstreams?x=1",
        "",
    ];
    let good = caddy.router_config();
    for bad in evil {
        let mut config = good.clone();
        config.upstream_id = bad.into();
        let error = CaddyRouter::new(config).unwrap_err();
        assert_eq!(error.kind, ComponentErrorKind::Invalid, "{bad:?}: {error}");
        let error = format!("{bad}:2019").parse::<CaddyAdmin>().unwrap_err();
        assert_eq!(error.kind, ComponentErrorKind::Invalid, "{bad:?}: {error}");

        let router = CaddyRouter::new(good.clone()).unwrap();
        for endpoint in [
            Endpoint::new(bad, 8080),
            Endpoint::new(format!("127.0.0.1\"}},{{\"dial\":\"10.6.6.6:80{bad}"), 80),
        ] {
            let error = router.route_to(&endpoint).await.unwrap_err();
            assert_eq!(
                error.kind,
                ComponentErrorKind::Invalid,
                "{endpoint:?}: {error}"
            );
        }
    }
    assert_eq!(caddy.config().await, before, "Caddy's config is untouched");
    assert_eq!(colors_through(&caddy.url("/"), 3).await, ["blue"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_restarted_during_a_switch_resumes_the_new_color_losing_requests_only_while_down() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let mut caddy = Caddy::start(&blue.endpoint(), AdminOn::Socket)
        .await
        .unwrap();
    let router = std::sync::Arc::new(CaddyRouter::new(caddy.router_config()).unwrap());
    let load = Load::start(LoadConfig::new(caddy.url("")));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "no traffic through Caddy: {warm}");

    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    let before = load.snapshot();
    // Stopped right after the switch; the verification begins while Caddy is down.
    let restarting = Instant::now();
    caddy.stop();
    let verifying = {
        let router = router.clone();
        let instance = green.instance();
        tokio::spawn(async move { router.verify(&instance, &receipt).await })
    };
    // `caddy run --resume`: from the config it autosaved, with the switch in it.
    caddy.run(true).await.expect("Caddy starts again");
    let restart_took = restarting.elapsed();
    let verified = verifying.await.expect("the verification task");
    let up = load
        .wait_for(load.snapshot().total + 50, Duration::from_secs(20))
        .await;
    let lost_while_down = up.failed - before.failed;
    // The verification reads the handler through the admin API first: with nobody there it
    // fails at once as unreachable (the deploy's exit 4).
    let error = verified.expect_err("Caddy was down when the verification began");
    assert_eq!(error.kind, ComponentErrorKind::Unreachable, "{error}");

    // Resumed, Caddy routes to green, and the router reads green back (what the next
    // command's reconcile reads).
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    assert_eq!(colors_through(&caddy.url("/"), 5).await, ["green"; 5]);
    // The engine's answer to a failed verification, routing back, works once Caddy is up.
    let receipt = router.route_to(&blue.endpoint()).await.unwrap();
    router.verify(&blue.instance(), &receipt).await.unwrap();
    assert_eq!(colors_through(&caddy.url("/"), 5).await, ["blue"; 5]);
    let end = load.stop().await;
    eprintln!(
        "Caddy restarted during a switch ({restart_took:?} down): {lost_while_down} requests failed while it was down, {} otherwise; load: {end}",
        end.failed - lost_while_down
    );
    assert_eq!(
        before.failed, 0,
        "requests failed before the restart: {before}"
    );
    assert_eq!(
        end.failed - lost_while_down,
        0,
        "requests failed outside Caddy's restart: {end}"
    );
}
