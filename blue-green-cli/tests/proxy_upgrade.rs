//! Replacing the `blue-green proxy run` process under load (`--take-over`): the new process
//! takes the listening sockets from the old one over its control socket, and the old one
//! finishes what it has in flight and exits 0. Real processes on loopback, no Docker: the
//! upstreams are the testkit's color server and a small event-stream server of this file.
//! Every process is killed on drop, also when a test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blue_green_core::Color;
use blue_green_proxy::control::SetTarget;
use blue_green_proxy::ControlClient;
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::load::{Load, LoadConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Events the stream sends, 100 ms apart: it stays open across a replacement.
const EVENTS: u32 = 30;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `blue-green --json proxy run` with the test's flags (and `extra`), its stderr in `log`.
fn proxy(dir: &Path, listen: &str, log: &str, extra: &[&str]) -> tokio::process::Child {
    let log = std::fs::File::create(dir.join(log)).expect("log file");
    tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(["--json", "proxy", "run", "--listen", listen, "--control"])
        .arg(dir.join("proxy.sock"))
        .arg("--state")
        .arg(dir.join("proxy.json"))
        .args(["--grace", "8s"])
        .args(extra)
        .env_remove("BLUE_GREEN_PROXY_CONTROL")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start blue-green proxy run")
}

/// Waits until `child` exits (at most `within`); its output.
async fn exited(child: tokio::process::Child, within: Duration, what: &str) -> Output {
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit within {within:?}"))
        .expect("wait for the proxy")
}

/// The `result` line of a `--json` command's stdout.
fn result_line(out: &Output) -> Value {
    first_result(&String::from_utf8_lossy(&out.stdout))
}

/// The first `result` line of `--json` output.
fn first_result(stdout: &str) -> Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("a result line in {stdout:?}"))
}

async fn wait_for_socket(socket: &Path, child: &mut tokio::process::Child, log: &Path) {
    let began = Instant::now();
    while ControlClient::new(socket).status().await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the proxy answered on its control socket; see {}",
            log.display()
        );
        assert!(
            child.try_wait().expect("proxy state").is_none(),
            "the proxy exited at start; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upstream that answers every request with an event stream of [`EVENTS`] events, 100 ms
/// apart, then ends it. Stops when dropped.
struct EventServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventServer {
    async fn start() -> EventServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut streams = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                streams.spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                              connection: close\r\ntransfer-encoding: chunked\r\n\r\n",
                        )
                        .await;
                    for n in 1..=EVENTS {
                        let event = format!("data: {n}\n\n");
                        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                        if stream.write_all(chunk.as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        EventServer { addr, task }
    }
}

/// Reads one event stream through the proxy to its end; the events' numbers and when it ended.
async fn read_events(base: String) -> Result<(Vec<u32>, Instant), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let mut res = client
        .get(format!("{base}/events"))
        .header("host", "events.test")
        .send()
        .await
        .map_err(|e| format!("the stream did not start: {e}"))?;
    if res.status() != 200 {
        return Err(format!("the stream got status {}", res.status()));
    }
    let mut text = String::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break,
            Err(e) => return Err(format!("the stream broke after {text:?}: {e}")),
        }
    }
    let events = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|n| n.parse().ok())
        .collect();
    Ok((events, Instant::now()))
}

fn set(app: &str, target: &str, hosts: Option<Vec<String>>) -> SetTarget {
    SetTarget {
        app: app.into(),
        target: target.into(),
        expect: None,
        hosts,
    }
}

/// A first proxy in `dir` on a free port, answering on its control socket, with app `web`
/// routed to a new blue color server: the proxy, its listen address and blue.
async fn first_proxy(dir: &Path, log: &str) -> (tokio::process::Child, String, ColorServer) {
    let listen = format!("127.0.0.1:{}", free_port());
    let blue = ColorServer::start(Color::Blue, "v1").await.expect("blue");
    let mut child = proxy(dir, &listen, log, &[]);
    let socket = dir.join("proxy.sock");
    wait_for_socket(&socket, &mut child, &dir.join(log)).await;
    ControlClient::new(&socket)
        .set_target(&set("web", &blue.endpoint().to_string(), None))
        .await
        .expect("route web");
    (child, listen, blue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_proxy_five_times_under_load_loses_no_request() {
    let dir = tempfile::Builder::new()
        .prefix("bg-proxy-upgrade-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path();
    let socket = d.join("proxy.sock");
    let events = EventServer::start().await;
    let (mut current, listen, blue) = first_proxy(d, "proxy-0.log").await;
    let base = format!("http://{listen}");
    let control = ControlClient::new(&socket);
    control
        .set_target(&set(
            "events",
            &events.addr.to_string(),
            Some(vec!["events.test".into()]),
        ))
        .await
        .expect("route events");
    let routes = control.status().await.expect("status").apps;

    let mut load_config = LoadConfig::new(base.clone());
    load_config.slow_path = Some("/slow?ms=300".into());
    load_config.slow_every = 4;
    let load = Load::start(load_config);
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "traffic flows through the proxy: {warm}");

    // The control socket, asked all along: status, and a change now and then (a change that
    // meets a handover is refused with 503 and sent again by the client).
    let stop = CancellationToken::new();
    let control_failures = Arc::new(AtomicU64::new(0));
    let control_calls = Arc::new(AtomicU64::new(0));
    let asker = {
        let (stop, failures, calls) = (
            stop.clone(),
            control_failures.clone(),
            control_calls.clone(),
        );
        let control = ControlClient::new(&socket);
        let change = set("web", &blue.endpoint().to_string(), None);
        tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let result = if n % 3 == 0 {
                    control.set_target(&change).await.map(|_| ())
                } else {
                    control.status().await.map(|_| ())
                };
                n += 1;
                calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = result {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        })
    };

    // An event stream opened on the first process, held across the first replacement.
    let stream = tokio::spawn(read_events(base.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut first_exit = None;
    for round in 1..=5 {
        let log = format!("proxy-{round}.log");
        let began = Instant::now();
        let next = proxy(d, &listen, &log, &["--take-over"]);
        let out = exited(
            current,
            Duration::from_secs(30),
            &format!("proxy {}", round - 1),
        )
        .await;
        let ended = Instant::now();
        first_exit.get_or_insert(ended);
        let took = log_text(d, &log)
            .lines()
            .find(|l| l.contains("took over"))
            .and_then(|l| l.split(" in ").nth(1))
            .and_then(|l| l.split(';').next())
            .unwrap_or("(no log line)")
            .to_string();
        eprintln!(
            "round {round}: the new process took over {took}; the old one exited {} ms after the take-over began",
            ended.duration_since(began).as_millis()
        );
        assert!(
            out.status.success(),
            "the old proxy {} exited 0 after the take-over: {}; see {}",
            round - 1,
            out.status,
            d.join(format!("proxy-{}.log", round - 1)).display()
        );
        let result = result_line(&out);
        assert_eq!(result["handed_over"], true, "{result}");
        assert_eq!(
            result["closed_at_grace"], 0,
            "the old proxy finished everything in flight before its grace: {result}"
        );
        current = next;
        assert!(
            current.try_wait().expect("proxy state").is_none(),
            "the new proxy {round} serves; see {}",
            d.join(&log).display()
        );
        let status = ControlClient::new(&socket).status().await.expect("status");
        assert_eq!(status.apps, routes, "proxy {round} serves the same routes");
        // Traffic goes on through the new process before the next round.
        let before = load.snapshot().ok;
        let moved = load
            .wait_for(load.snapshot().total + 20, Duration::from_secs(10))
            .await;
        assert!(
            moved.ok >= before + 20,
            "requests answered after round {round}: {moved}"
        );
    }

    let (events_seen, stream_end) = stream
        .await
        .expect("stream task")
        .expect("the event stream ran to its end across the replacement");
    stop.cancel();
    let control_errors = asker.await.expect("asker");
    let report = load.stop().await;
    eprintln!("load across 5 replacements: {report}");
    eprintln!(
        "control calls: {} ({} failed)",
        control_calls.load(Ordering::Relaxed),
        control_failures.load(Ordering::Relaxed)
    );
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(
        report.retried, 0,
        "no kept-alive connection was closed under a request: {report}"
    );
    assert!(
        report.keep_alive > 0 && report.new_connection > 0,
        "{report}"
    );
    assert_eq!(
        events_seen,
        (1..=EVENTS).collect::<Vec<_>>(),
        "every event of the stream, in order"
    );
    assert!(
        first_exit.expect("a first exit") >= stream_end,
        "the first process exited only after the event stream it carried had ended"
    );
    assert!(
        control_errors.is_empty(),
        "the control socket answered throughout: {control_errors:?}"
    );
    assert!(socket.exists(), "the control socket is still there");
    let saved = std::fs::read_to_string(d.join("proxy.json")).expect("state file");
    assert!(saved.contains(&events.addr.to_string()), "{saved}");
}

/// `proxy run --take-over` with `dir/proxy.sock`; its output.
async fn take_over(dir: &Path, listen: &str, log: &str) -> Output {
    let child = proxy(dir, listen, log, &["--take-over"]);
    exited(child, Duration::from_secs(20), "the take-over").await
}

fn log_text(dir: &Path, log: &str) -> String {
    std::fs::read_to_string(dir.join(log)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_with_no_proxy_running_fails_naming_the_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = take_over(dir.path(), "127.0.0.1:0", "take-over.log").await;
    let stderr = log_text(dir.path(), "take-over.log");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let socket: PathBuf = dir.path().join("proxy.sock");
    assert!(
        stderr.contains(&socket.display().to_string()) && stderr.contains("no proxy answers"),
        "{stderr}"
    );
    assert!(
        !socket.exists(),
        "a failed take-over leaves no socket behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_take_over_during_one_is_refused_and_changes_wait_for_the_handover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let socket = d.join("proxy.sock");
    let (mut old, listen, blue) = first_proxy(d, "old.log").await;
    let control = ControlClient::new(&socket);

    // A take-over that has begun and stalls: the handover request, answered 101, and nothing
    // after it.
    let mut stalled = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /v1/handover HTTP/1.1\r\nhost: proxy\r\nconnection: upgrade\r\n\
              upgrade: blue-green-handover\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .expect("ask for a handover");
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stalled.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "the proxy answered the handover request");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let out = take_over(d, &listen, "second.log").await;
    let stderr = log_text(d, "second.log");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("another take-over of this proxy is under way")
            && stderr.contains(&socket.display().to_string()),
        "{stderr}"
    );

    // A change meanwhile is refused with a reason, not lost: the client gives up after its
    // timeout with the proxy's own words.
    let change = ControlClient::new(&socket)
        .with_timeout(Duration::from_millis(400))
        .set_target(&set("web", "127.0.0.1:9", None))
        .await
        .expect_err("no change during a handover");
    assert!(
        change
            .to_string()
            .contains("being replaced by a new process"),
        "{change}"
    );
    assert!(
        std::fs::read_to_string(d.join("proxy.json"))
            .expect("state")
            .contains(&blue.endpoint().to_string()),
        "the refused change did not reach the state file"
    );

    // The stalled take-over goes away: the old proxy takes changes again and serves on, and a
    // take-over with other --listen addresses is refused before anything moves (exit 2).
    drop(stalled);
    let began = Instant::now();
    loop {
        match control
            .set_target(&set("web", &blue.endpoint().to_string(), None))
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                began.elapsed() < Duration::from_secs(10),
                "the old proxy takes changes again once the stalled take-over is gone: {e}"
            ),
        }
    }
    let out = take_over(d, "127.0.0.1:1", "wrong-listen.log").await;
    let stderr = log_text(d, "wrong-listen.log");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--listen 127.0.0.1:1") && stderr.contains(&listen),
        "{stderr}"
    );
    // A paused proxy is not taken over: the requests it holds would wait in the old process.
    control.pause().await.expect("pause");
    let out = take_over(d, &listen, "paused.log").await;
    let stderr = log_text(d, "paused.log");
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("blue-green proxy resume"), "{stderr}");
    control
        .resume()
        .await
        .expect("resume, as the old proxy takes changes again");
    assert!(
        old.try_wait().expect("old state").is_none(),
        "the old proxy serves on"
    );
    let answer = reqwest::get(format!("http://{listen}/"))
        .await
        .expect("through the old proxy")
        .text()
        .await
        .expect("body");
    assert!(answer.starts_with("blue v1"), "{answer}");
}

/// Kills a process this test caused to start but did not spawn itself (the successor a
/// SIGUSR2 starts), when dropped.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The `MAINPID` of the next systemd notification on `socket`.
async fn next_main_pid(socket: &tokio::net::UnixDatagram) -> i32 {
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf))
        .await
        .expect("a systemd notification within 20s")
        .expect("receive a notification");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.lines().any(|l| l == "READY=1"), "{text:?}");
    text.lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("MAINPID in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_starts_a_successor_that_takes_over_and_tells_systemd_its_pid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let socket = d.join("proxy.sock");
    let notify = tokio::net::UnixDatagram::bind(d.join("notify.sock")).expect("notify socket");
    let listen = format!("127.0.0.1:{}", free_port());
    let blue = ColorServer::start(Color::Blue, "v1").await.expect("blue");
    let log = std::fs::File::create(d.join("proxy.log")).expect("log file");
    // A file, not a pipe: the successor inherits it and outlives the old process.
    let stdout = std::fs::File::create(d.join("proxy.out")).expect("stdout file");
    let mut old = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(["--json", "proxy", "run", "--listen", &listen, "--control"])
        .arg(&socket)
        .arg("--state")
        .arg(d.join("proxy.json"))
        .env("NOTIFY_SOCKET", d.join("notify.sock"))
        .env_remove("BLUE_GREEN_PROXY_CONTROL")
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start blue-green proxy run");
    let old_pid = i32::try_from(old.id().expect("pid")).expect("pid fits");
    assert_eq!(next_main_pid(&notify).await, old_pid, "ready, main pid");
    wait_for_socket(&socket, &mut old, &d.join("proxy.log")).await;
    ControlClient::new(&socket)
        .set_target(&set("web", &blue.endpoint().to_string(), None))
        .await
        .expect("route web");
    let load = Load::start(LoadConfig::new(format!("http://{listen}")));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(warm.total >= 50, "traffic flows through the proxy: {warm}");

    // What `systemctl reload` does with `ExecReload=/bin/kill -USR2 $MAINPID`.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(old_pid).expect("a pid"),
        rustix::process::Signal::USR2,
    )
    .expect("send SIGUSR2");
    let successor = next_main_pid(&notify).await;
    let _successor = KillOnDrop(Some(successor));
    assert_ne!(successor, old_pid, "the successor is another process");
    let status = tokio::time::timeout(Duration::from_secs(30), old.wait())
        .await
        .expect("the old proxy exited within 30s")
        .expect("wait for the old proxy");
    assert!(
        status.success(),
        "the old proxy exited 0: {status}; see {}",
        d.join("proxy.log").display()
    );
    let stdout = std::fs::read_to_string(d.join("proxy.out")).expect("stdout");
    assert_eq!(first_result(&stdout)["handed_over"], true, "{stdout}");
    let moved = load
        .wait_for(load.snapshot().total + 50, Duration::from_secs(20))
        .await;
    let report = load.stop().await;
    eprintln!("load across a SIGUSR2 replacement: {report}");
    assert!(moved.total >= warm.total + 50, "{moved}");
    assert_eq!(report.failed, 0, "{report}");
    let status = ControlClient::new(&socket).status().await.expect("status");
    assert_eq!(
        status.apps[0].target.as_deref(),
        Some(blue.endpoint().to_string().as_str()),
        "the successor serves the same route"
    );
    let logged = log_text(d, "proxy.log");
    assert!(
        logged.contains(&format!("(pid {successor}) to take over")),
        "{logged}"
    );
}
