//! What the tests through blue-green's own proxy (`proxy_cycle`, `gradual_shift_proxy`)
//! share: the `blue-green` binary run in a directory, a `blue-green proxy run` process, and
//! an app config of the demo image behind it. Included with `#[path]` (not through
//! `common/mod.rs`) so that the tests without a proxy do not carry these helpers unused.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// `blue-green` to run in `dir`, with none of the environment that would point it
/// elsewhere; killed if the test ends first.
pub fn command(dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"));
    cmd.current_dir(dir)
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove("BLUE_GREEN_PROXY_CONTROL")
        .env_remove("BLUE_GREEN_TEST_PAUSE_AT")
        .kill_on_drop(true);
    cmd
}

/// Runs `blue-green args` in `dir` (see [`command`]) to its end.
pub async fn blue_green(dir: &Path, args: &[&str]) -> Output {
    command(dir)
        .args(args)
        .output()
        .await
        .expect("run blue-green")
}

/// Runs a command that must succeed; returns its stdout and prints its stderr.
pub async fn ok(dir: &Path, args: &[&str]) -> String {
    let started = Instant::now();
    succeeded(blue_green(dir, args).await, args, started)
}

/// [`ok`] with `cmd` (a [`command`] the caller added to, such as `DOCKER_HOST`).
// Only the tests against a private Docker daemon (docker_daemon_restart) use it.
#[allow(dead_code)]
pub async fn ok_with(mut cmd: tokio::process::Command, args: &[&str]) -> String {
    let started = Instant::now();
    let out = cmd.args(args).output().await.expect("run blue-green");
    succeeded(out, args, started)
}

/// Prints what `blue-green args`, started at `started`, said; its stdout if it succeeded.
fn succeeded(out: Output, args: &[&str], started: Instant) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "$ blue-green {} ({} ms)\n{stderr}",
        args.join(" "),
        started.elapsed().as_millis()
    );
    assert!(
        out.status.success(),
        "`blue-green {}` failed ({}):\n{stderr}",
        args.join(" "),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The trimmed body of a `GET url`, or `no answer: <why>`.
pub async fn through_proxy(url: &str) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    match client.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
        Err(e) => format!("no answer: {e}"),
    }
}

/// Starts `blue-green proxy run` on `listen` with the control socket (`proxy.sock`) and
/// state file in `dir`, and waits (at most 20 s) until its control socket answers.
pub async fn start_proxy(dir: &Path, listen: &str) -> tokio::process::Child {
    let socket = dir.join("proxy.sock");
    let mut proxy = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(["proxy", "run", "--listen", listen, "--control"])
        .arg(&socket)
        .arg("--state")
        .arg(dir.join("proxy.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start blue-green proxy run");
    let began = Instant::now();
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the proxy answers on its control socket"
        );
        assert!(
            proxy.try_wait().expect("proxy state").is_none(),
            "the proxy exited at start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy
}

/// Writes `dir/blue-green.toml`: `app` of `image` on the docker runtime with a quick HTTP
/// readiness, behind the proxy of [`start_proxy`] in `dir` listening on `listen`, and a
/// `[switch]` table with a 5 s drain; `extra` follows it (more `[switch]` keys first, then
/// more tables). Returns the control socket's path.
pub fn write_proxy_config(
    dir: &Path,
    app: &str,
    image: &str,
    listen: &str,
    extra: &str,
) -> PathBuf {
    write_proxy_config_with_runtime(dir, app, image, listen, "", extra)
}

/// [`write_proxy_config`] with `runtime` (more `[runtime]` keys, each on a line) added to the
/// `[runtime]` table.
pub fn write_proxy_config_with_runtime(
    dir: &Path,
    app: &str,
    image: &str,
    listen: &str,
    runtime: &str,
    extra: &str,
) -> PathBuf {
    let socket = dir.join("proxy.sock");
    let config = format!(
        r#"app = "{app}"

[runtime]
kind = "docker"
image = "{image}"
container_port = 8080
{runtime}
[health]
kind = "http"
path = "/health"
expect_body = "{{color}} {{release}}"
interval = "100ms"
deadline = "20s"

[router]
kind = "proxy"
control = "{socket}"
verify_url = "http://{listen}/health"

[switch]
drain = "5s"
stop_timeout = "5s"
keep_previous = "stopped"
{extra}"#,
        socket = socket.display(),
    );
    std::fs::write(dir.join("blue-green.toml"), config).expect("write config");
    socket
}
