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
