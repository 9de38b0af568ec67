//! The words a failed deploy says (issue 14): an error after compose started a project never
//! claims that nothing was started, and names the app once. Needs Docker and a compose
//! program; builds the demo app image locally (no registry).

use std::path::Path;
use std::process::Output;

use blue_green_cli::test_hooks::PAUSE_ENV;
use blue_green_testkit::docker::{containers_with_prefix, demo_app_image, DockerCleanup};

async fn blue_green(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(assert_cmd::cargo::cargo_bin("blue-green"))
        .args(args)
        .current_dir(dir)
        .env_remove("BLUE_GREEN_CONFIG")
        .env_remove(PAUSE_ENV)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run blue-green")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compose_file_without_the_service_fails_as_something_started_not_as_a_usage_error() {
    let cleanup = DockerCleanup::new("nc-svc").await;
    let image = demo_app_image(&cleanup).await;
    let app = cleanup.prefix().to_string();
    let dir = tempfile::Builder::new()
        .prefix("bg-newcomer-")
        .tempdir()
        .expect("temp dir");
    let (blue, green) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            "services:\n  shop:\n    image: \"{image}\"\n    environment:\n      - BLUE_GREEN_COLOR\n      - BLUE_GREEN_RELEASE\n"
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("blue-green.toml"),
        format!(
            "app = \"{app}\"\n\n[runtime]\nkind = \"compose\"\nfile = \"docker-compose.yml\"\nservice = \"web\"\n\n[endpoints]\nblue = \"127.0.0.1:{blue}\"\ngreen = \"127.0.0.1:{green}\"\n\n[health]\nkind = \"tcp\"\ndeadline = \"5s\"\n\n[router]\nkind = \"none\"\n"
        ),
    )
    .expect("write");
    let out = blue_green(dir.path(), &["deploy", "--release", "v1"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no container for service `web`")
            && stderr.contains("taken down again"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("nothing was started"),
        "compose started a project, the message must not deny it:\n{stderr}"
    );
    for line in stderr.lines() {
        assert!(
            line.matches(&format!("{app}:")).count() <= 1,
            "the app is named twice: {line}"
        );
    }
    let left = containers_with_prefix(cleanup.docker(), &app).await;
    assert!(left.is_empty(), "containers left: {left:?}");
}

/// An old color that ignores SIGTERM is killed after the grace period: the deploy says so, and
/// so does the history; a first deploy (nothing stopped) says nothing of it.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_color_killed_after_the_grace_period_is_a_warning_in_output_and_history() {
    let cleanup = DockerCleanup::new("nc-kill").await;
    let image = blue_green_testkit::docker::demo_app_image_with_env(
        &cleanup,
        "deaf",
        &[("IGNORE_SIGTERM", "1")],
    )
    .await;
    let app = cleanup.prefix().to_string();
    let dir = tempfile::Builder::new()
        .prefix("bg-newcomer-")
        .tempdir()
        .expect("temp dir");
    let (blue, green) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("blue-green.toml"),
        format!(
            "app = \"{app}\"\n\n[runtime]\nkind = \"docker\"\nimage = \"{image}\"\ncontainer_port = 8080\n\n[endpoints]\nblue = \"127.0.0.1:{blue}\"\ngreen = \"127.0.0.1:{green}\"\n\n[health]\nkind = \"tcp\"\ndeadline = \"20s\"\n\n[router]\nkind = \"none\"\n\n[switch]\nstop_timeout = \"1s\"\nkeep_previous = \"stopped\"\n"
        ),
    )
    .expect("write");
    let first = blue_green(dir.path(), &["deploy", "--release", "v1"]).await;
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(!stderr.contains("whole grace period"), "{stderr}");
    let second = blue_green(dir.path(), &["deploy", "--release", "v2"]).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("took the whole grace period (1s)"),
        "the deploy should say the old color was killed:\n{stderr}"
    );
    assert!(
        stderr.contains("init: true"),
        "the warning should say what to do:\n{stderr}"
    );
    // Said once, on stderr only.
    assert_eq!(
        stderr.matches("took the whole grace period").count(),
        1,
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(!stdout.contains("grace period"), "{stdout}");
    let history = blue_green(dir.path(), &["history"]).await;
    let stdout = String::from_utf8_lossy(&history.stdout);
    assert!(history.status.success(), "{stdout}");
    assert_eq!(
        stdout.matches("took the whole grace period").count(),
        1,
        "history should keep the warning of the second deploy only:\n{stdout}"
    );
    let down = blue_green(dir.path(), &["down", "--force"]).await;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

fn toml_list(argv: &[String]) -> String {
    let items: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// `[endpoints]` names the container's port, compose publishes another: the probes are
/// refused, and the failure names the port compose publishes.
#[tokio::test(flavor = "multi_thread")]
async fn probes_refused_on_an_unpublished_port_name_the_published_one() {
    let cleanup = DockerCleanup::new("nc-port").await;
    let image = demo_app_image(&cleanup).await;
    let app = cleanup.prefix().to_string();
    let dir = tempfile::Builder::new()
        .prefix("bg-newcomer-")
        .tempdir()
        .expect("temp dir");
    let (published, wrong, green) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            "services:\n  shop:\n    image: \"{image}\"\n    environment:\n      - BLUE_GREEN_COLOR\n      - BLUE_GREEN_RELEASE\n    ports:\n      - \"127.0.0.1:{published}:8080\"\n"
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("blue-green.toml"),
        format!(
            "app = \"{app}\"\n\n[runtime]\nkind = \"compose\"\nfile = \"docker-compose.yml\"\nservice = \"shop\"\n\n[endpoints]\nblue = \"127.0.0.1:{wrong}\"\ngreen = \"127.0.0.1:{green}\"\n\n[health]\nkind = \"tcp\"\ndeadline = \"3s\"\n\n[router]\nkind = \"none\"\n"
        ),
    )
    .expect("write");
    let out = blue_green(dir.path(), &["deploy", "--release", "v1"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("were refused")
            && stderr.contains(&format!("publishes port {published} (container port 8080)")),
        "the failure should name the published port {published}:\n{stderr}"
    );
    let left = containers_with_prefix(cleanup.docker(), &app).await;
    assert!(left.is_empty(), "containers left: {left:?}");
}

/// A first deploy through an nginx that never loads `upstream_file`: verification fails, and
/// the failure says plainly that nginx does not serve the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_verify_says_nginx_does_not_serve_the_upstream_file() {
    use blue_green_core::Endpoint;
    use blue_green_testkit::nginx::NginxHarness;

    let cleanup = DockerCleanup::new("nc-verify").await;
    let image = demo_app_image(&cleanup).await;
    let app = cleanup.prefix().to_string();
    let nowhere = Endpoint::new("127.0.0.1", free_port());
    let nginx = NginxHarness::start("shop", &nowhere)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("bg-newcomer-")
        .tempdir()
        .expect("temp dir");
    // The config names a file of its own; nginx includes the harness's.
    let ours = dir.path().join("upstream.conf");
    std::fs::write(
        dir.path().join("blue-green.toml"),
        format!(
            "app = \"{app}\"\n\n[runtime]\nkind = \"docker\"\nimage = \"{image}\"\ncontainer_port = 8080\n\n[health]\nkind = \"http\"\npath = \"/health\"\ndeadline = \"10s\"\n\n[router]\nkind = \"nginx\"\nupstream = \"shop\"\nupstream_file = \"{}\"\ntest_command = {}\nreload_command = {}\nverify_url = \"{}\"\nverify_deadline = \"2s\"\n\n[switch]\nstop_timeout = \"1s\"\n",
            ours.display(),
            toml_list(&nginx.test_command()),
            toml_list(&nginx.reload_command()),
            nginx.url("/health"),
        ),
    )
    .expect("write");
    let out = blue_green(dir.path(), &["deploy", "--release", "v1"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("exit {:?}\n{stderr}", out.status.code());
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the cause: nginx is not serving")
            && stderr.contains("nginx does not load")
            && stderr.contains(&ours.display().to_string()),
        "the failure should say nginx does not serve the upstream file:\n{stderr}"
    );
    let first = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("");
    assert_eq!(
        first.matches(&format!("{app}:")).count(),
        1,
        "the app is named once: {first}"
    );
    // The next status neither calls it interrupted nor marks as LIVE a color that nginx
    // never serves.
    let status = blue_green(dir.path(), &["status"]).await;
    let stdout = String::from_utf8_lossy(&status.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&status.stderr));
    assert!(status.status.success(), "{stdout}");
    assert!(
        stdout.contains("a failed `deploy`") && !stdout.contains("interrupted"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("LIVE") && stdout.contains("live     none that nginx serves"),
        "{stdout}"
    );
    let _ = blue_green(dir.path(), &["down", "--force"]).await;
}
