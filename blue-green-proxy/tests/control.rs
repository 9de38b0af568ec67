//! The control socket and the state file: mode 0600 and peers of other users refused, the
//! router's compare-and-set, routes that survive a restart and a SIGKILL, a corrupt state file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use blue_green_core::{Color, ComponentErrorKind, Instance, RouteReceipt, Router, Split};
use blue_green_proxy::{ControlClient, Mode, Proxy, ProxyConfig, ProxyRouter, VerifyRequest};
use common::{fresh_get, Upstream};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Set in a child process of this test binary: the socket to probe as another user.
const PEER_SOCKET: &str = "BG_PROXY_TEST_PEER_SOCKET";
/// Set in a child process of this test binary: run a proxy with this state file and control
/// socket (given in `BG_PROXY_TEST_CHILD_SOCKET`) until killed.
const CHILD_STATE: &str = "BG_PROXY_TEST_CHILD_STATE";
const CHILD_SOCKET: &str = "BG_PROXY_TEST_CHILD_SOCKET";

/// Not a test of its own: the entry point of the child processes the tests below start (as
/// another user, or as a proxy to SIGKILL). Without their variables it does nothing.
#[tokio::test]
async fn child_process_entry() {
    if let Ok(socket) = std::env::var(PEER_SOCKET) {
        match ControlClient::new(socket).status().await {
            Ok(status) => println!("PEER-ANSWER: Ok {status:?}"),
            Err(e) => println!("PEER-ANSWER: Err {e}"),
        }
    }
    if let (Ok(state), Ok(socket)) = (std::env::var(CHILD_STATE), std::env::var(CHILD_SOCKET)) {
        let proxy = Proxy::start(
            ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
                .with_control(socket)
                .with_state_file(state),
        )
        .await
        .unwrap();
        println!("CHILD-LISTENS: {}", proxy.local_addrs()[0]);
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
}

fn child(env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_process_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn as_nobody(socket: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_SOCKET, socket)
        .output()
        .await
        .expect("setpriv (util-linux) runs the peer as uid 65534; install util-linux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_socket_is_private_and_peers_of_other_users_are_refused() {
    assert!(
        rustix_uid_is_root(),
        "this test runs a peer as uid 65534 and must itself run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("proxy.sock");
    let blue = Upstream::start("blue").await;
    let proxy =
        Proxy::start(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_control(&socket))
            .await
            .unwrap();
    let router = ProxyRouter::new(&socket, "web");
    router.route_to(&blue.endpoint()).await.unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is created 0600");

    // As created, the file mode keeps the other user out.
    let answer = as_nobody(&socket).await;
    assert!(
        answer.contains("PEER-ANSWER: Err") && answer.contains("ermission denied"),
        "{answer}"
    );

    // Even if someone opens the mode up, the proxy checks the peer's uid.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let answer = as_nobody(&socket).await;
    assert!(
        answer.contains("HTTP 403") && answer.contains("the peer is uid 65534"),
        "{answer}"
    );

    // The owner still can, and traffic is untouched.
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    assert_eq!(
        fresh_get(proxy.local_addrs()[0], "/", "web")
            .await
            .unwrap()
            .0,
        200
    );
    proxy.shutdown().await;
    assert!(!socket.exists(), "shutdown removes the socket file");
}

fn rustix_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let config = ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_control(&socket);
    let first = Proxy::start(config.clone()).await.unwrap();
    let e = Proxy::start(config.clone()).await.unwrap_err().to_string();
    assert!(e.contains("another proxy is already listening"), "{e}");
    drop(first);
    // A socket file left behind by a killed proxy.
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
    drop(stale);
    let stale_config = ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
        .with_control(dir.path().join("stale.sock"));
    let second = Proxy::start(stale_config).await.unwrap();
    assert!(ControlClient::new(dir.path().join("stale.sock"))
        .status()
        .await
        .is_ok());
    second.shutdown().await;

    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let e = Proxy::start(
        ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_control(dir.path().join("file")),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a socket"), "{e}");
}

fn instance(color: Color, up: &Upstream) -> Instance {
    Instance::new(color, "v1", up.name.clone(), up.endpoint())
}

#[tokio::test]
async fn the_router_switches_by_compare_and_set_and_verifies_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy =
        Proxy::start(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_control(&socket))
            .await
            .unwrap();
    let addr = proxy.local_addrs()[0];
    // The app has a host name: the verify request sends it (the router's first host).
    let mut verify = VerifyRequest::new(&format!("http://{addr}/")).unwrap();
    verify.expect_body = Some("{color}".into());
    verify.timeout = Duration::from_millis(500);
    let router = ProxyRouter::new(&socket, "web")
        .with_hosts(vec!["web.example".into()])
        .with_verify(verify);

    assert_eq!(router.target().await.unwrap(), None);
    let receipt = router.route_to(&blue.endpoint()).await.unwrap();
    router
        .verify(&instance(Color::Blue, &blue), &receipt)
        .await
        .unwrap();
    assert_eq!(router.in_flight(&blue.endpoint()).await.unwrap(), Some(0));

    // Someone else switches the app behind the router's back: its next switch is refused.
    let other = ProxyRouter::new(&socket, "web");
    other.route_to(&green.endpoint()).await.unwrap();
    let e = router.route_to(&blue.endpoint()).await.unwrap_err();
    assert_eq!(e.kind, ComponentErrorKind::Failed);
    assert!(e.message.contains("someone else changed it"), "{e}");
    // Verify reads back: blue is not what the proxy routes to.
    let e = router
        .verify(&instance(Color::Blue, &blue), &RouteReceipt::new())
        .await
        .unwrap_err();
    assert!(e.message.contains("instead of"), "{e}");
    // Having read again, it switches.
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    router.route_to(&blue.endpoint()).await.unwrap();
    // A verify whose request is answered by the wrong color fails.
    let e = router
        .verify(&instance(Color::Green, &green), &RouteReceipt::new())
        .await
        .unwrap_err();
    assert!(e.message.contains("instead of"), "{e}");

    let down = ProxyRouter::new(dir.path().join("missing.sock"), "web");
    let e = down.target().await.unwrap_err();
    assert_eq!(e.kind, ComponentErrorKind::Unreachable);
    assert!(e.message.contains("missing.sock"), "{e}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn routes_and_mode_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("proxy.json");
    let blue = Upstream::start("blue").await;
    let config = ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_state_file(&state);
    let proxy = Proxy::start(config.clone()).await.unwrap();
    proxy
        .router("web")
        .route_to(&blue.endpoint())
        .await
        .unwrap();
    proxy.handle().set_mode(Mode::Maintenance).await.unwrap();
    proxy.shutdown().await;

    let again = Proxy::start(config).await.unwrap();
    assert_eq!(again.handle().target("web"), Some(blue.endpoint()));
    assert_eq!(again.handle().status().mode, Mode::Maintenance);
    again.shutdown().await;
}

/// Starts a child proxy with `env` (its state file and socket) and waits until it listens.
async fn start_child(env: &[(&str, &str)]) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut proc = child(env).spawn().unwrap();
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // The test harness prints its own text before ours on the same line.
            if let Some(addr) = line.split("CHILD-LISTENS: ").nth(1) {
                return addr.trim().parse::<std::net::SocketAddr>().unwrap();
            }
        }
        panic!("the child proxy exited before listening");
    })
    .await
    .expect("the child proxy starts");
    (proc, addr)
}

#[tokio::test]
async fn after_sigkill_mid_split_a_restarted_proxy_serves_the_same_split_and_preview() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("proxy.json");
    let socket = dir.path().join("proxy.sock");
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let env = [
        (CHILD_STATE, state.to_str().unwrap()),
        (CHILD_SOCKET, socket.to_str().unwrap()),
    ];
    let (mut first, _) = start_child(&env).await;
    let router = ProxyRouter::new(&socket, "web")
        .with_hosts(vec!["web.example".into()])
        .with_preview_host("preview.example");
    router.route_to(&blue.endpoint()).await.unwrap();
    router.preview(Some(&green.endpoint())).await.unwrap();
    let split = Split::new(blue.endpoint(), green.endpoint(), 40).unwrap();
    router.split(&split).await.unwrap();
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();

    let (mut second, addr) = start_child(&env).await;
    let again = ProxyRouter::new(&socket, "web");
    assert_eq!(again.current_split().await.unwrap(), Some(split));
    assert_eq!(again.target().await.unwrap(), Some(blue.endpoint()));
    assert_eq!(
        fresh_get(addr, "/", "preview.example").await.unwrap(),
        (200, "green\n".to_string())
    );
    let mut colors = std::collections::HashSet::new();
    for _ in 0..60 {
        colors.insert(fresh_get(addr, "/", "web.example").await.unwrap().1);
    }
    assert_eq!(colors.len(), 2, "the split serves both colors: {colors:?}");
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

#[tokio::test]
async fn after_sigkill_a_restarted_proxy_serves_the_same_targets_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("proxy.json");
    let socket = dir.path().join("proxy.sock");
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let env = [
        (CHILD_STATE, state.to_str().unwrap()),
        (CHILD_SOCKET, socket.to_str().unwrap()),
    ];

    let (mut first, addr) = start_child(&env).await;
    let router = ProxyRouter::new(&socket, "web");
    router.route_to(&blue.endpoint()).await.unwrap();
    router.route_to(&green.endpoint()).await.unwrap();
    assert_eq!(fresh_get(addr, "/", "web").await.unwrap().1, "green\n");
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();

    let (mut second, addr) = start_child(&env).await;
    // The very first request after the restart goes to green.
    assert_eq!(
        fresh_get(addr, "/", "web").await.unwrap(),
        (200, "green\n".to_string())
    );
    assert_eq!(
        ProxyRouter::new(&socket, "web").target().await.unwrap(),
        Some(green.endpoint())
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_state_file_is_an_error_naming_it_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("proxy.json");
    std::fs::write(&state, b"{\"version\":1,\"mode\":\"serving\",\"apps\":[{\"app\":\"web\",\"hosts\":[],\"target\":\"nowhere\"}]}").unwrap();
    let e =
        Proxy::start(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_state_file(&state))
            .await
            .unwrap_err()
            .to_string();
    assert!(
        e.contains(&state.display().to_string()) && e.contains("corrupt") && e.contains("nowhere"),
        "{e}"
    );
    std::fs::write(&state, b"garbage").unwrap();
    let e =
        Proxy::start(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_state_file(&state))
            .await
            .unwrap_err()
            .to_string();
    assert!(e.contains("corrupt"), "{e}");
    assert_eq!(std::fs::read(&state).unwrap(), b"garbage");
}
