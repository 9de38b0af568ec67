//! HaproxyRouter against the real HAProxy (Debian's package, started on loopback by the test
//! in a temporary directory, master-worker mode so that it can be reloaded) and real color
//! servers.
//!
//! Run with `--nocapture` to see the switch times and the request counts.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use blue_green_core::{Color, ComponentErrorKind, Endpoint, Router};
use blue_green_router::haproxy::{HaproxyConfig, HaproxyRouter};
use blue_green_router::ProxyVerify;
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::load::{Load, LoadConfig};
use rustix::process::Signal;
use support::{colors_through, free_port, percentile, wait_until, Process};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Debian's package puts HAProxy.
const HAPROXY: &str = "/usr/sbin/haproxy";
const SWITCHES: usize = 50;

/// A running HAProxy: backend `app` with servers `blue` (first at `initial`) and `green`
/// (disabled), a frontend on a free loopback port, an admin socket and a user-level socket,
/// and a server-state file that it loads at start.
struct Haproxy {
    dir: TempDir,
    process: Process,
    port: u16,
}

impl Haproxy {
    async fn start(initial: &Endpoint) -> Result<Haproxy, String> {
        if !std::path::Path::new(HAPROXY).exists() {
            return Err(format!(
                "HAProxy not found at {HAPROXY}: install Debian's haproxy (scripts/test does)"
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("blue-green-haproxy-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory for HAProxy: {e}"))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            write_config(&dir, port, initial)?;
            let config = dir.path().join("haproxy.cfg");
            let config = config.to_str().ok_or("temporary path is not UTF-8")?;
            let mut process = Process::spawn(
                "haproxy",
                HAPROXY,
                &["-W", "-db", "-f", config],
                dir.path(),
                &[],
            )?;
            let socket = dir.path().join("admin.sock");
            let log = dir.path().join("haproxy.log");
            let ready = wait_until(&mut process, Duration::from_secs(15), &log, || {
                let socket = socket.clone();
                async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                        && raw(&socket, "show info").await.contains("Pid:")
                }
            })
            .await;
            match ready {
                Ok(()) => return Ok(Haproxy { dir, process, port }),
                Err(e) if e.contains("Address already in use") || e.contains("cannot bind") => {
                    last = e
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("app.state")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The router's config: the admin socket, backend `app`, the state file, and verification
    /// of `{color} {release}` at /health through HAProxy.
    fn router_config(&self) -> HaproxyConfig {
        let mut config = HaproxyConfig::new(self.socket(), "app", "blue", "green");
        config.state_file = Some(self.state_file());
        config.verify = Some(ProxyVerify {
            expect_body: "{color} {release}".into(),
            interval: Duration::from_millis(5),
            ..ProxyVerify::new(self.url("/health"))
        });
        config
    }

    /// Sends one command on the admin socket, as a person with socat would.
    async fn command(&self, command: &str) -> String {
        raw(&self.socket(), command).await
    }

    /// `show servers state app` without the column that changes with time, for comparisons.
    async fn servers(&self) -> Vec<String> {
        self.command("show servers state app")
            .await
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" app "))
            .map(|l| {
                let mut fields: Vec<&str> = l.split_whitespace().collect();
                fields.remove(9); // srv_time_since_last_change
                fields.join(" ")
            })
            .collect()
    }

    /// A server's `srv_admin_state`.
    async fn admin_state(&self, server: &str) -> u32 {
        let state = self.command("show servers state app").await;
        let line = state
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(server))
            .unwrap_or_else(|| panic!("no server {server} in {state}"));
        line.split_whitespace().nth(6).unwrap().parse().unwrap()
    }

    /// Reloads HAProxy (SIGUSR2 to the master) and waits until a new worker answers. A
    /// master that has only just started may not handle the signal yet: it is sent again
    /// every 2 s until a new worker answers.
    async fn reload(&mut self) {
        let pid = |info: String| {
            info.lines()
                .find_map(|l| l.strip_prefix("Pid: "))
                .map(str::to_string)
        };
        let before = pid(self.command("show info").await).expect("show info has a Pid");
        let log = self.dir.path().join("haproxy.log");
        let socket = self.socket();
        let mut last = String::new();
        for _ in 0..8 {
            self.process.signal(Signal::USR2);
            let reloaded = wait_until(&mut self.process, Duration::from_secs(2), &log, || {
                let socket = socket.clone();
                let before = before.clone();
                async move { pid(raw(&socket, "show info").await).is_some_and(|now| now != before) }
            })
            .await;
            match reloaded {
                Ok(()) => return,
                // The master itself, not the word in its log ("Former worker ... exited").
                Err(e) if self.process.exited().is_some() => panic!("HAProxy died on reload: {e}"),
                Err(e) => last = e,
            }
        }
        panic!("HAProxy did not reload: {last}");
    }
}

/// One command on a runtime API socket; an empty string when it cannot connect.
async fn raw(socket: &std::path::Path, command: &str) -> String {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return String::new();
    };
    if stream
        .write_all(format!("{command}\n").as_bytes())
        .await
        .is_err()
    {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
}

fn write_config(dir: &TempDir, port: u16, initial: &Endpoint) -> Result<(), String> {
    let d = dir.path().display();
    // Servers by host name with `init-addr last`: HAProxy then takes a server's address from
    // the state file at start (with an IP literal it would keep the config's address).
    let config = format!(
        "# HAProxy for a blue-green test; everything lives in {d}
global
    stats socket {d}/admin.sock mode 600 level admin
    stats socket {d}/user.sock mode 600 level user
    nbthread 2

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file local

frontend web
    bind 127.0.0.1:{port}
    default_backend app

backend app
    server-state-file-name {d}/app.state
    default-server init-addr last,libc,none
    server blue localhost:{blue}
    server green localhost:1 disabled
",
        blue = initial.port
    );
    std::fs::write(dir.path().join("haproxy.cfg"), config)
        .map_err(|e| format!("cannot write haproxy.cfg: {e}"))
}

/// Waits until `in_flight(endpoint)` says `wanted`, and returns how long that took.
async fn wait_in_flight(router: &HaproxyRouter, endpoint: &Endpoint, wanted: u64) -> Duration {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(20) {
        last = router.in_flight(endpoint).await.unwrap();
        if last == Some(wanted) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("in_flight({endpoint}) never reached {wanted} (last: {last:?})");
}

const MAINT: u32 = 0x01;
const DRAIN: u32 = 0x08;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_switches_under_load_fail_no_request_and_verify_the_new_color() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = HaproxyRouter::new(haproxy.router_config()).unwrap();
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["blue"; 3]);

    let load = Load::start(LoadConfig {
        slow_path: Some("/slow?ms=300".into()),
        ..LoadConfig::new(haproxy.url(""))
    });
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "the load loop does not get going: {warm}");

    let (mut switched, mut verified, mut drained) = (Vec::new(), Vec::new(), Vec::new());
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
        let seen = colors_through(&haproxy.url("/"), 5).await;
        assert!(
            seen.iter().all(|c| c == to.color().as_str()),
            "after switch {switch} to {}, new requests through HAProxy answered {seen:?}",
            to.color()
        );
        // The engine's drain: the old color's requests end (300 ms at most), then its slot
        // goes to maintenance.
        drained.push(wait_in_flight(&router, &from.endpoint(), 0).await);
        let old = if from.color() == Color::Blue {
            "blue"
        } else {
            "green"
        };
        assert_eq!(
            haproxy.admin_state(old).await & MAINT,
            MAINT,
            "{old} is in maintenance once drained"
        );
    }
    let before_end = load.snapshot().total;
    load.wait_for(before_end + 50, Duration::from_secs(20))
        .await;
    let report = load.stop().await;

    switched.sort();
    verified.sort();
    drained.sort();
    eprintln!(
        "{SWITCHES} switches through HAProxy: route_to (runtime API) median {:?}, max {:?}; route_to → verified through HAProxy median {:?}, p90 {:?}, max {:?}; drain of the old color (in_flight → 0) median {:?}, max {:?}",
        percentile(&switched, 0.5),
        switched[SWITCHES - 1],
        percentile(&verified, 0.5),
        percentile(&verified, 0.9),
        verified[SWITCHES - 1],
        percentile(&drained, 0.5),
        drained[SWITCHES - 1],
    );
    eprintln!("load through HAProxy: {report}");
    assert_eq!(
        report.failed, 0,
        "requests failed during the switches: {report}"
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

/// Sends `n` GETs of `path` through HAProxy at once; returns their tasks.
fn slow_requests(
    haproxy: &Haproxy,
    path: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<String, String>>> {
    (0..n)
        .map(|_| {
            let url = haproxy.url(path);
            tokio::spawn(async move {
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.text().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(body)
                } else {
                    Err(format!("status {status}: {body}"))
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn in_flight_counts_the_old_colors_requests_until_they_end_then_the_slot_rests() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = HaproxyRouter::new(haproxy.router_config()).unwrap();

    let requests = slow_requests(&haproxy, "/slow?ms=1500", 3);
    wait_in_flight(&router, &blue.endpoint(), 3).await;
    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    router.verify(&green.instance(), &receipt).await.unwrap();

    // The old color still has its three requests; new ones go to green.
    assert_eq!(router.in_flight(&blue.endpoint()).await.unwrap(), Some(3));
    assert_eq!(
        haproxy.admin_state("blue").await & DRAIN,
        DRAIN,
        "blue drains"
    );
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["green"; 3]);
    assert_eq!(router.in_flight(&green.endpoint()).await.unwrap(), Some(0));

    let waited = wait_in_flight(&router, &blue.endpoint(), 0).await;
    eprintln!("the old color's 1.5 s requests ended {waited:?} after the switch was verified");
    for request in requests {
        assert!(request.await.unwrap().unwrap().starts_with("blue v1"));
    }
    assert_eq!(
        haproxy.admin_state("blue").await & MAINT,
        MAINT,
        "blue rests in maintenance"
    );
    // An endpoint HAProxy does not route to has nothing in flight through it.
    assert_eq!(
        router
            .in_flight(&Endpoint::new("127.0.0.1", 9))
            .await
            .unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn cut_closes_what_is_left_at_the_deadline_and_counts_it() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = HaproxyRouter::new(haproxy.router_config()).unwrap();

    let requests = slow_requests(&haproxy, "/slow?ms=20000", 2);
    wait_in_flight(&router, &blue.endpoint(), 2).await;
    router.route_to(&green.endpoint()).await.unwrap();

    // The live color is never cut.
    let live = router.cut(&green.endpoint()).await.unwrap_err();
    assert!(live.message.contains("live traffic"), "{live}");

    let asked = Instant::now();
    assert_eq!(router.cut(&blue.endpoint()).await.unwrap(), Some(2));
    for request in requests {
        let outcome = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .expect("a cut request ends at once")
            .unwrap();
        assert!(
            outcome.is_err(),
            "the cut request got an answer: {outcome:?}"
        );
    }
    eprintln!(
        "two 20 s requests cut and ended {:?} after cut()",
        asked.elapsed()
    );
    assert_eq!(router.in_flight(&blue.endpoint()).await.unwrap(), Some(0));
    assert_eq!(haproxy.admin_state("blue").await & MAINT, MAINT);
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["green"; 3]);
}

#[tokio::test]
async fn a_reload_after_a_switch_keeps_the_new_color_through_the_state_file() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let mut haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = HaproxyRouter::new(haproxy.router_config()).unwrap();

    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    router.verify(&green.instance(), &receipt).await.unwrap();
    wait_in_flight(&router, &blue.endpoint(), 0).await;
    let state = std::fs::read_to_string(haproxy.state_file()).unwrap();
    assert!(state.starts_with("1\n# be_id"), "{state}");

    haproxy.reload().await;
    assert_eq!(colors_through(&haproxy.url("/"), 10).await, ["green"; 10]);
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    assert_eq!(haproxy.admin_state("blue").await & MAINT, MAINT);

    // An address set at runtime comes back too (servers written by name, `init-addr last`).
    let answer = haproxy
        .command("set server app/blue addr 127.0.0.3 port 9")
        .await;
    assert!(answer.contains("changed from"), "{answer}");
    router.save_server_state().await.unwrap();
    haproxy.reload().await;
    let servers = haproxy.servers().await;
    assert!(
        servers
            .iter()
            .any(|l| l.contains(" blue 127.0.0.3 ") && l.contains(" 9 ")),
        "{servers:?}"
    );
    // And a switch back after the reload works as before.
    let receipt = router.route_to(&blue.endpoint()).await.unwrap();
    router.verify(&blue.instance(), &receipt).await.unwrap();
    assert_eq!(colors_through(&haproxy.url("/"), 5).await, ["blue"; 5]);
}

#[tokio::test]
async fn without_the_state_file_a_reload_sends_traffic_back_to_the_old_color() {
    // Why the state file matters: HAProxy alone forgets the switch.
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let mut haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let mut config = haproxy.router_config();
    config.state_file = None;
    let router = HaproxyRouter::new(config).unwrap();
    router.route_to(&green.endpoint()).await.unwrap();
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["green"; 3]);
    haproxy.reload().await;
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["blue"; 3]);
    assert!(!haproxy.state_file().exists());
}

#[tokio::test]
async fn weights_split_new_requests_and_a_switch_ends_the_split() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = HaproxyRouter::new(haproxy.router_config()).unwrap();
    router.route_to(&green.endpoint()).await.unwrap();
    router.route_to(&blue.endpoint()).await.unwrap();

    router.set_weights(1, 3).await.unwrap();
    let seen = colors_through(&haproxy.url("/"), 40).await;
    let greens = seen.iter().filter(|c| *c == "green").count();
    assert!((25..=35).contains(&greens), "3 of 4 to green: {seen:?}");
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));

    let receipt = router.route_to(&blue.endpoint()).await.unwrap();
    router.verify(&blue.instance(), &receipt).await.unwrap();
    assert_eq!(colors_through(&haproxy.url("/"), 10).await, ["blue"; 10]);
}

#[tokio::test]
async fn a_verification_that_never_sees_the_new_color_fails_with_what_it_saw() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let mut config = haproxy.router_config();
    config.verify = Some(ProxyVerify {
        expect_body: "{color} v9".into(),
        deadline: Duration::from_millis(300),
        ..ProxyVerify::new(haproxy.url("/health"))
    });
    let router = HaproxyRouter::new(config).unwrap();
    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    let error = router
        .verify(&green.instance(), &receipt)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ComponentErrorKind::Timeout, "{error}");
    assert!(error.message.contains("green v9"), "{error}");
    assert!(
        error.message.contains("green v2"),
        "quotes what it saw: {error}"
    );
}

#[tokio::test]
async fn a_missing_backend_or_server_or_a_read_only_socket_is_named() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();

    let mut config = haproxy.router_config();
    config.backend = "nope".into();
    let error = HaproxyRouter::new(config)
        .unwrap()
        .target()
        .await
        .unwrap_err();
    assert!(error.message.contains("no backend `nope`"), "{error}");

    let mut config = haproxy.router_config();
    config.servers.green = "nope".into();
    let error = HaproxyRouter::new(config)
        .unwrap()
        .target()
        .await
        .unwrap_err();
    assert!(error.message.contains("no server `nope`"), "{error}");
    assert!(
        error.message.contains("blue, green"),
        "lists what there is: {error}"
    );

    let check = HaproxyRouter::new(haproxy.router_config())
        .unwrap()
        .check()
        .await
        .unwrap();
    assert!(
        check.contains("level admin") && check.contains("`blue`"),
        "{check}"
    );

    let mut config = haproxy.router_config();
    config.socket = haproxy.dir.path().join("user.sock");
    let router = HaproxyRouter::new(config).unwrap();
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    let error = router.check().await.unwrap_err();
    assert!(error.message.contains("level `user`"), "{error}");
    let error = router.route_to(&green.endpoint()).await.unwrap_err();
    assert!(error.message.contains("level admin"), "{error}");
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["blue"; 3]);
}

#[tokio::test]
async fn injection_attempts_in_every_field_change_nothing_in_haproxy() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let before = haproxy.servers().await;
    let evil = [
        "app blue",
        "app;set server app/blue state maint",
        "app\nset server app/blue state maint",
        "app/blue",
        "blue state maint",
        "",
        "a\rb",
    ];
    let good = haproxy.router_config();
    for bad in evil {
        for field in ["backend", "blue", "green"] {
            let mut config = good.clone();
            match field {
                "backend" => config.backend = bad.into(),
                "blue" => config.servers.blue = bad.into(),
                _ => config.servers.green = bad.into(),
            }
            let error = HaproxyRouter::new(config).unwrap_err();
            assert_eq!(
                error.kind,
                ComponentErrorKind::Invalid,
                "{field} {bad:?}: {error}"
            );
        }
        let router = HaproxyRouter::new(good.clone()).unwrap();
        for endpoint in [
            Endpoint::new(bad, 8080),
            Endpoint::new(format!("127.0.0.1 {bad}"), 80),
        ] {
            let error = router.route_to(&endpoint).await.unwrap_err();
            assert_eq!(
                error.kind,
                ComponentErrorKind::Invalid,
                "{endpoint:?}: {error}"
            );
        }
    }
    assert_eq!(
        haproxy.servers().await,
        before,
        "HAProxy's servers are untouched"
    );
    assert_eq!(colors_through(&haproxy.url("/"), 3).await, ["blue"; 3]);
}

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `text` and returns the answer, or `None` when the WebSocket no longer answers.
async fn echo(socket: &mut WebSocket, text: &str) -> Option<String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    socket.send(Message::text(text)).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        Ok(Some(Ok(Message::Text(answer)))) => Some(answer.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn a_websocket_stays_on_the_old_color_through_the_drain_until_it_is_cut() {
    let (ws_blue, blue_task) = support::websocket_server(Color::Blue).await;
    let (ws_green, green_task) = support::websocket_server(Color::Green).await;
    let haproxy = Haproxy::start(&ws_blue).await.unwrap();
    let mut config = haproxy.router_config();
    config.verify = None;
    let router = HaproxyRouter::new(config).unwrap();
    let url = format!("ws://127.0.0.1:{}/ws", haproxy.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(
        echo(&mut socket, "before").await.as_deref(),
        Some("blue: before")
    );
    wait_in_flight(&router, &ws_blue, 1).await;

    router.route_to(&ws_green).await.unwrap();
    // The open WebSocket is a session of the draining slot: it goes on, and is counted.
    for _ in 0..5 {
        assert_eq!(
            echo(&mut socket, "during").await.as_deref(),
            Some("blue: during")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(router.in_flight(&ws_blue).await.unwrap(), Some(1));
    let (mut fresh, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    assert_eq!(echo(&mut fresh, "new").await.as_deref(), Some("green: new"));

    // At the drain deadline the engine cuts it.
    let asked = Instant::now();
    assert_eq!(router.cut(&ws_blue).await.unwrap(), Some(1));
    assert_eq!(
        echo(&mut socket, "after").await,
        None,
        "the cut WebSocket is closed"
    );
    eprintln!("a WebSocket open across an HAProxy switch kept answering on blue through the drain; cut() closed it within {:?}", asked.elapsed());
    assert_eq!(
        echo(&mut fresh, "still").await.as_deref(),
        Some("green: still")
    );
    blue_task.abort();
    green_task.abort();
}

#[tokio::test]
async fn a_split_sends_its_share_survives_a_reload_and_route_to_ends_it() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let mut haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = HaproxyRouter::new(haproxy.router_config()).unwrap();
    assert!(router.can_split());
    assert_eq!(router.current_split().await.unwrap(), None);

    let split = blue_green_core::Split::new(blue.endpoint(), green.endpoint(), 20).unwrap();
    router.split(&split).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), Some(split.clone()));
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    // HAProxy applies runtime changes at once: 400 new clients, weighted 161 to 40.
    let seen = colors_through(&haproxy.url("/"), 400).await;
    let greens = seen.iter().filter(|c| *c == "green").count();
    eprintln!("a 20% split through HAProxy: {greens} of 400 requests went to green");
    assert!((40..=120).contains(&greens), "{greens} of 400 to green");

    // A reload keeps the split (the state file), and the router reads it back.
    haproxy.reload().await;
    assert_eq!(router.current_split().await.unwrap(), Some(split));
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    let seen = colors_through(&haproxy.url("/"), 100).await;
    assert!(
        seen.iter().any(|c| c == "green") && seen.iter().any(|c| c == "blue"),
        "{seen:?}"
    );
    // A later step replaces the split.
    let half = blue_green_core::Split::new(blue.endpoint(), green.endpoint(), 50).unwrap();
    router.split(&half).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), Some(half));
    let seen = colors_through(&haproxy.url("/"), 100).await;
    let greens = seen.iter().filter(|c| *c == "green").count();
    assert!(
        (35..=65).contains(&greens),
        "{greens} of 100 to green at 50%"
    );

    // Responses are counted per slot, with the 5xx the server answered.
    let before = router.responses(&green.endpoint()).await.unwrap().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut sent_to_green = 0;
    while sent_to_green < 3 {
        let res = client
            .get(haproxy.url("/status?code=500"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 500);
        if res.text().await.unwrap().starts_with("green") {
            sent_to_green += 1;
        }
    }
    let after = router.responses(&green.endpoint()).await.unwrap().unwrap();
    assert_eq!(after.errors - before.errors, 3, "{before:?} -> {after:?}");
    assert!(after.total >= before.total + 3, "{before:?} -> {after:?}");

    // route_to ends the split: all new requests to green.
    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    router.verify(&green.instance(), &receipt).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), None);
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    assert_eq!(colors_through(&haproxy.url("/"), 20).await, ["green"; 20]);

    // A split from an endpoint HAProxy does not route to is refused, and changes nothing.
    let servers = haproxy.servers().await;
    let stale = blue_green_core::Split::new(blue.endpoint(), green.endpoint(), 50).unwrap();
    let error = router.split(&stale).await.unwrap_err();
    assert!(error.message.contains("does not route to"), "{error}");
    assert_eq!(haproxy.servers().await, servers);
}

#[tokio::test]
async fn responses_count_haproxys_own_503_for_a_server_that_refuses_connections() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let mut config = haproxy.router_config();
    config.verify = None;
    let router = HaproxyRouter::new(config).unwrap();
    // A port nothing listens on (bound, then closed).
    let gone = Endpoint::new("127.0.0.1", free_port().unwrap());
    router.route_to(&gone).await.unwrap();
    let before = router.responses(&gone).await.unwrap().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..3 {
        let res = client.get(haproxy.url("/")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 503);
    }
    let after = router.responses(&gone).await.unwrap().unwrap();
    assert_eq!(
        (after.total - before.total, after.errors - before.errors),
        (3, 3),
        "{before:?} -> {after:?}"
    );
}

impl Haproxy {
    /// Stops HAProxy (SIGTERM to its process group: a hard stop, as `systemctl restart` sends)
    /// and starts it again with the same config, port and state file; returns once it answers.
    async fn restart(&mut self) -> Result<(), String> {
        self.process.stop();
        let config = self.dir.path().join("haproxy.cfg");
        let config = config.to_str().ok_or("temporary path is not UTF-8")?;
        let mut process = Process::spawn(
            "haproxy",
            HAPROXY,
            &["-W", "-db", "-f", config],
            self.dir.path(),
            &[],
        )?;
        let socket = self.socket();
        let port = self.port;
        let log = self.dir.path().join("haproxy.log");
        wait_until(&mut process, Duration::from_secs(15), &log, || {
            let socket = socket.clone();
            async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                    && raw(&socket, "show info").await.contains("Pid:")
            }
        })
        .await?;
        self.process = process;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_restarted_during_a_switch_comes_back_on_the_new_color_losing_requests_only_while_down(
) {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let mut haproxy = Haproxy::start(&blue.endpoint()).await.unwrap();
    let router = std::sync::Arc::new(HaproxyRouter::new(haproxy.router_config()).unwrap());
    let load = Load::start(LoadConfig::new(haproxy.url("")));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "no traffic through HAProxy: {warm}");

    let receipt = router.route_to(&green.endpoint()).await.unwrap();
    let before = load.snapshot();
    // Stopped right after the switch; the verification begins while HAProxy is down.
    let restarting = Instant::now();
    haproxy.process.stop();
    let verifying = {
        let router = router.clone();
        let instance = green.instance();
        tokio::spawn(async move { router.verify(&instance, &receipt).await })
    };
    haproxy.restart().await.expect("HAProxy starts again");
    let restart_took = restarting.elapsed();
    let verified = verifying.await.expect("the verification task");
    let up = load
        .wait_for(load.snapshot().total + 50, Duration::from_secs(20))
        .await;
    let lost_while_down = up.failed - before.failed;
    // The verification asks HAProxy's admin socket first: with nobody there it fails at once
    // as unreachable (the deploy's exit 4), naming the socket.
    let error = verified.expect_err("HAProxy was down when the verification began");
    assert_eq!(error.kind, ComponentErrorKind::Unreachable, "{error}");
    assert!(error.message.contains("admin socket"), "{error}");

    // HAProxy loaded the state file: it routes to green, and the router reads green back
    // (what the next command's reconcile reads).
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    assert_eq!(colors_through(&haproxy.url("/"), 5).await, ["green"; 5]);
    // The engine's answer to a failed verification, routing back, works once HAProxy is up.
    let receipt = router.route_to(&blue.endpoint()).await.unwrap();
    router.verify(&blue.instance(), &receipt).await.unwrap();
    assert_eq!(colors_through(&haproxy.url("/"), 5).await, ["blue"; 5]);
    let end = load.stop().await;
    eprintln!(
        "HAProxy restarted during a switch ({restart_took:?} down): {lost_while_down} requests failed while it was down, {} otherwise; load: {end}",
        end.failed - lost_while_down
    );
    assert_eq!(
        before.failed, 0,
        "requests failed before the restart: {before}"
    );
    assert_eq!(
        end.failed - lost_while_down,
        0,
        "requests failed outside HAProxy's restart: {end}"
    );
}
