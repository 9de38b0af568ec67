//! `CommandHooks` running real programs: the environment a hook gets, its output and exit
//! status, and a hook that overruns its timeout. (In their own test binary: the process
//! runner's unit tests kill every command running in theirs.)

use std::time::Duration;

use blue_green_core::{
    AppName, Color, CommandHooks, Endpoint, HookCommand, HookContext, HookPoint, Hooks,
};

fn context() -> HookContext {
    let mut c = HookContext::new(AppName::new("web").unwrap(), Color::Green, "v2");
    c.endpoint = Some(Endpoint::new("127.0.0.1", 8082));
    c.previous_color = Some(Color::Blue);
    c.previous_release = Some("v1".into());
    c
}

fn hook(argv: &[&str], timeout: Duration) -> HookCommand {
    HookCommand::new(argv.iter().map(|a| a.to_string()).collect(), timeout).unwrap()
}

#[tokio::test]
async fn a_command_hook_gets_the_environment_and_reports_its_output_and_exit() {
    let script = "echo $BLUE_GREEN_APP $BLUE_GREEN_COLOR $BLUE_GREEN_RELEASE $BLUE_GREEN_ENDPOINT $BLUE_GREEN_PREVIOUS_COLOR $BLUE_GREEN_PREVIOUS_RELEASE; pwd; echo oops >&2; exit 3";
    let dir = std::env::temp_dir();
    let hooks = CommandHooks::new().with(
        HookPoint::PreSwitch,
        hook(&["sh", "-c", script], Duration::from_secs(10)).current_dir(&dir),
    );
    assert_eq!(hooks.timeout(HookPoint::PreDeploy), None);
    assert_eq!(
        hooks.timeout(HookPoint::PreSwitch),
        Some(Duration::from_secs(10))
    );
    let out = hooks.run(HookPoint::PreSwitch, &context()).await.unwrap();
    assert!(!out.success);
    assert_eq!(out.status, "exited with code 3");
    let cwd = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(
        out.output,
        format!(
            "web green v2 127.0.0.1:8082 blue v1\n{}\noops\n",
            cwd.display()
        )
    );
}

#[tokio::test]
async fn a_hook_that_overruns_is_killed_and_is_an_error() {
    let hooks = CommandHooks::new().with(
        HookPoint::PreDeploy,
        hook(&["sleep", "30"], Duration::from_millis(200)),
    );
    let began = std::time::Instant::now();
    let err = hooks
        .run(HookPoint::PreDeploy, &context())
        .await
        .unwrap_err();
    assert!(err.message.contains("pre_deploy hook"), "{err}");
    assert!(err.message.contains("did not finish"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_missing_hook_program_is_an_error_naming_it() {
    let hooks = CommandHooks::new().with(
        HookPoint::PostDeploy,
        hook(&["/nonexistent/notify"], Duration::from_secs(5)),
    );
    let err = hooks
        .run(HookPoint::PostDeploy, &context())
        .await
        .unwrap_err();
    assert!(err.message.contains("/nonexistent/notify"), "{err}");
    assert!(err.message.contains("post_deploy hook"), "{err}");
}
