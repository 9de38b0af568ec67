//! TcpProbe and CommandProbe against real sockets on 127.0.0.1 and real processes.

use std::path::Path;
use std::time::{Duration, Instant};

use blue_green_core::{Color, CommandProbe, Endpoint, Health, HealthProbe, Instance, TcpProbe};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn instance(endpoint: Endpoint) -> Instance {
    Instance::new(Color::Green, "v7", "test", endpoint)
}

fn unhealthy_reason(health: Health) -> String {
    match health {
        Health::Unhealthy(reason) => reason,
        Health::Healthy => panic!("expected unhealthy, got healthy"),
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn tcp_probe_is_healthy_when_something_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = TcpProbe::new(Duration::from_secs(5));
    let health = probe
        .check(&instance(Endpoint::new("127.0.0.1", port)))
        .await;
    assert_eq!(health, Health::Healthy);
}

#[tokio::test]
async fn tcp_probe_reports_connection_refused() {
    let port = closed_port().await;
    let probe = TcpProbe::new(Duration::from_secs(5));
    let reason = unhealthy_reason(
        probe
            .check(&instance(Endpoint::new("127.0.0.1", port)))
            .await,
    );
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
}

#[tokio::test]
async fn tcp_probe_reports_a_timeout_when_the_listener_never_answers() {
    // A listener that never accepts: once its accept queue is full, the kernel drops new SYNs
    // and a connect hangs.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    let mut full = false;
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("filling the accept queue of {addr} failed: {e}"),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the accept queue of {addr} never filled up");

    let probe = TcpProbe::new(Duration::from_millis(500));
    let reason = unhealthy_reason(
        probe
            .check(&instance(Endpoint::new("127.0.0.1", addr.port())))
            .await,
    );
    assert!(reason.contains("timed out after 500ms"), "{reason}");
    drop(queued);
}

#[tokio::test]
async fn tcp_probe_names_a_host_that_does_not_resolve() {
    let probe = TcpProbe::new(Duration::from_secs(5));
    let reason = unhealthy_reason(
        probe
            .check(&instance(Endpoint::new("no-such-host.invalid", 80)))
            .await,
    );
    assert!(reason.contains("no-such-host.invalid:80"), "{reason}");
}

#[tokio::test]
async fn command_probe_exit_zero_is_healthy() {
    let probe = CommandProbe::new(argv(&["/bin/true"]), Duration::from_secs(10));
    let health = probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await;
    assert_eq!(health, Health::Healthy);
}

#[tokio::test]
async fn command_probe_reports_the_exit_code_and_the_start_of_stderr() {
    let probe = CommandProbe::new(
        argv(&["/bin/sh", "-c", "echo 'not ready: db down' >&2; exit 3"]),
        Duration::from_secs(10),
    );
    let reason = unhealthy_reason(probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await);
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(reason.contains("not ready: db down"), "{reason}");
    assert!(reason.contains("/bin/sh"), "{reason}");
}

#[tokio::test]
async fn command_probe_falls_back_to_stdout_and_cuts_long_output() {
    let probe = CommandProbe::new(
        argv(&[
            "/bin/sh",
            "-c",
            "printf 'x%.0s' $(seq 1 5000); echo; exit 1",
        ]),
        Duration::from_secs(10),
    );
    let reason = unhealthy_reason(probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await);
    assert!(reason.contains("exited with code 1"), "{reason}");
    assert!(reason.contains("xxxx"), "{reason}");
    assert!(
        reason.len() < 400,
        "the reason should carry only the start of the output: {reason}"
    );
}

#[tokio::test]
async fn command_probe_passes_color_release_and_endpoint() {
    let script = r#"test "$BLUE_GREEN_COLOR" = green && test "$BLUE_GREEN_RELEASE" = v7 && test "$BLUE_GREEN_ENDPOINT" = 127.0.0.1:8082"#;
    let probe = CommandProbe::new(argv(&["/bin/sh", "-c", script]), Duration::from_secs(10));
    let health = probe
        .check(&instance(Endpoint::new("127.0.0.1", 8082)))
        .await;
    assert_eq!(health, Health::Healthy);
    // The same check against another endpoint fails, so the variables really come from the
    // instance.
    let health = probe
        .check(&instance(Endpoint::new("127.0.0.1", 8081)))
        .await;
    assert!(!health.is_healthy());
}

#[tokio::test]
async fn command_probe_arguments_are_not_interpreted_by_a_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("marker");
    // Were this run through a shell, `;` would start a second command creating the marker.
    let probe = CommandProbe::new(
        vec![
            "/bin/echo".into(),
            format!("hello; touch {}", marker.display()),
        ],
        Duration::from_secs(10),
    );
    let health = probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await;
    assert_eq!(health, Health::Healthy);
    assert!(!marker.exists());
}

#[tokio::test]
async fn command_probe_names_a_program_that_does_not_exist() {
    let probe = CommandProbe::new(
        argv(&["/nonexistent/check-app", "--quick"]),
        Duration::from_secs(10),
    );
    let reason = unhealthy_reason(probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await);
    assert!(reason.contains("/nonexistent/check-app"), "{reason}");
    assert!(reason.contains("no such program"), "{reason}");
}

#[tokio::test]
async fn command_probe_with_an_empty_argv_is_unhealthy() {
    let probe = CommandProbe::new(Vec::new(), Duration::from_secs(10));
    let reason = unhealthy_reason(probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await);
    assert!(reason.contains("no program"), "{reason}");
}

/// Whether `pid` is gone or a zombie (killed, waiting for a parent that may not reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the `(comm)` field, which may itself hold spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_until_dead(pid: u32, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    is_dead(pid)
}

fn read_pids(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the probe command did not write {}: {e}", path.display()));
    let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[tokio::test]
async fn command_probe_kills_the_command_and_what_it_started_at_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    // The shell starts a background sleep, writes both pids, and waits: a script whose `curl`
    // hangs looks like this.
    let probe = CommandProbe::new(
        vec![
            "/bin/sh".into(),
            "-c".into(),
            r#"sleep 30 & echo "$$ $!" > "$0.tmp" && mv "$0.tmp" "$0"; wait"#.into(),
            pids.display().to_string(),
        ],
        Duration::from_millis(1500),
    );
    let started = Instant::now();
    let reason = unhealthy_reason(probe.check(&instance(Endpoint::new("127.0.0.1", 1))).await);
    println!(
        "command probe with a 1.5s timeout returned after {:?}",
        started.elapsed()
    );
    assert!(reason.contains("timed out after 1.5s"), "{reason}");
    let (shell, sleeper) = read_pids(&pids);
    // The shell was our child: it must be reaped at once, not even a zombie.
    assert!(
        !Path::new(&format!("/proc/{shell}")).exists(),
        "the probe command (pid {shell}) was not reaped"
    );
    assert!(
        wait_until_dead(sleeper, Duration::from_secs(10)),
        "the process the probe command started (pid {sleeper}) is still running"
    );
}

#[tokio::test]
async fn a_cancelled_command_probe_kills_its_command() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    let probe = CommandProbe::new(
        vec![
            "/bin/sh".into(),
            "-c".into(),
            r#"sleep 30 & echo "$$ $!" > "$0.tmp" && mv "$0.tmp" "$0"; wait"#.into(),
            pids.display().to_string(),
        ],
        Duration::from_secs(60),
    );
    let target = instance(Endpoint::new("127.0.0.1", 1));
    let mut check = Box::pin(probe.check(&target));
    // Run the check until the command has started its background process, then drop it, as
    // the engine does when a deploy is cancelled.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            health = &mut check => panic!("the check finished early: {health:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if pids.exists() {
            break;
        }
        assert!(Instant::now() < deadline, "the probe command never started");
    }
    drop(check);
    let (shell, sleeper) = read_pids(&pids);
    assert!(
        wait_until_dead(shell, Duration::from_secs(10)),
        "the probe command (pid {shell}) survived the cancelled check"
    );
    assert!(
        wait_until_dead(sleeper, Duration::from_secs(10)),
        "the process the probe command started (pid {sleeper}) survived the cancelled check"
    );
}
