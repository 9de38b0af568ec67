//! The small deploy tool of docs/embedding.md: blue-green-core's engine over a process runtime
//! (examples/embedding/runtime.rs), the HTTP probe, a private nginx and an observer.
//!
//! `cargo run -p blue-green-router --example embedding` deploys v1 and v2, refuses a release
//! that answers 503, rolls back, and takes everything down. The same binary is the app it
//! deploys (`embedding serve`): it answers its color on `/` and `/health`, or 503 for a
//! release whose id starts with `bad`. `cargo test -p blue-green-router --example embedding`
//! runs its tests with the library's fakes.

#[path = "embedding/runtime.rs"]
mod runtime;

use std::time::Duration;

use blue_green_core::{
    AppName, CancellationToken, DownTarget, EngineConfig, Error, Event, FileStore, HttpProbe,
    HttpProbeConfig, IfLive, Release,
};
use blue_green_router::nginx::PrivateNginx;
use blue_green_router::{NginxRouter, NginxVerify};
use runtime::ProcessRuntime;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Prints one line per step, as a deploy tool of one's own would.
fn observer(event: &Event) {
    match event {
        Event::CommandStarted { command, .. } => println!("{command}"),
        Event::StepFinished {
            step,
            color,
            elapsed_ms,
        } => {
            let color = color.map(|c| c.to_string()).unwrap_or_default();
            println!("  ok   {step} {color} ({elapsed_ms} ms)");
        }
        Event::StepFailed { step, error, .. } => println!("  FAIL {step}: {error}"),
        Event::InstanceStarted {
            color,
            release,
            restarted,
            ..
        } => {
            let how = if *restarted { "restarted" } else { "started" };
            println!("  {how} {release} in {color}");
        }
        Event::Routed { color, endpoint } => println!("  live: {color} at {endpoint}"),
        Event::Warning { message } => println!("  warning: {message}"),
        _ => {}
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GETs `url`: its status code and body.
async fn get(url: &str) -> Result<(u16, String)> {
    let response = reqwest::get(url).await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The app: answers its color on every path, or 503 for a `bad…` release.
fn serve() -> Result<()> {
    use std::io::{Read, Write};
    let color = std::env::var(blue_green_core::COLOR_ENV)?;
    let bad = std::env::var(blue_green_core::RELEASE_ENV)?.starts_with("bad");
    let status = ["200 OK", "503 Service Unavailable"][usize::from(bad)];
    let listener = std::net::TcpListener::bind(format!("127.0.0.1:{}", std::env::var("PORT")?))?;
    for stream in listener.incoming() {
        let mut stream = stream?;
        let _ = stream.read(&mut [0u8; 1024]);
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{color}",
            color.len()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let dir = std::env::temp_dir().join(format!("blue-green-embedding-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let nginx = PrivateNginx::new(&dir, "app", free_port()?);
    let master = nginx.start(Duration::from_secs(10)).await?;
    let result = tool(&nginx).await;
    master.stop(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn tool(nginx: &PrivateNginx) -> Result<()> {
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let runtime = ProcessRuntime::new(exe, vec!["serve".into()], [free_port()?, free_port()?]);
    let probe = HttpProbe::new(HttpProbeConfig::default()); // GET /health, 2xx
    let router = NginxRouter::new(
        nginx
            .router_config()
            .with_verify(NginxVerify::new(nginx.url("/"))),
    )?;
    let store = FileStore::new(nginx.prefix().join("state"));
    let mut config = EngineConfig::new(AppName::new("app")?);
    config.readiness.interval = Duration::from_millis(100);
    config.readiness.deadline = Duration::from_secs(3);
    config.switch.drain = Duration::from_millis(200);
    let engine = blue_green_core::Engine::new(config, runtime, probe, router, store)
        .with_observer(std::sync::Arc::new(observer));
    let go = CancellationToken::new();

    engine.deploy(Release::new("v1")?, &go).await?;
    let report = engine.deploy(Release::new("v2")?, &go).await?;
    assert_eq!(
        get(&nginx.url("/")).await?,
        (200, report.live.color.to_string())
    );

    match engine.deploy(Release::new("bad-v3")?, &go).await {
        Err(Error::NotReady { detail, .. }) => println!("refused bad-v3: {}", detail.reason()),
        other => return Err(format!("bad-v3 should have been refused: {other:?}").into()),
    }
    assert_eq!(get(&nginx.url("/")).await?.1, report.live.color.to_string());

    let back = engine.rollback(&go).await?;
    assert_eq!(back.live.release.id.as_str(), "v1");
    assert_eq!(get(&nginx.url("/")).await?.1, back.live.color.to_string());
    println!("rolled back to v1 in {}", back.live.color);

    let status = engine.status_with(&blue_green_core::NoopObserver).await?;
    println!(
        "status: live {:?}, router at {:?}",
        status.live, status.router_target
    );
    engine.down(DownTarget::All, IfLive::TakeDown).await?;
    for record in engine.history().await? {
        println!(
            "history: {} {} {}",
            record.command,
            record.release.unwrap_or_default(),
            record.outcome
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use blue_green_core::testing::{FakeCall, FakeWorld};
    use blue_green_core::{AppName, CancellationToken, Color, EngineConfig, Release};

    fn config() -> EngineConfig {
        EngineConfig::new(AppName::new("app").unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deploy_goes_to_the_idle_color() {
        let world = FakeWorld::new();
        world.seed_live(Color::Blue, "v1");
        let engine = world.engine(config());
        let report = engine
            .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.live.color, Color::Green);
        assert_eq!(world.router_target(), Some(report.live.endpoint));
        assert!(world.violations().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_switch_leaves_the_live_color_serving() {
        let world = FakeWorld::new();
        world.seed_live(Color::Blue, "v1");
        world.fail_nth(FakeCall::RouteTo, 1);
        let engine = world.engine(config());
        assert!(engine
            .deploy(Release::new("v2").unwrap(), &CancellationToken::new())
            .await
            .is_err());
        assert_eq!(world.routed_instance().unwrap().instance.release, "v1");
        assert!(world.instances_of(Color::Green).is_empty());
    }
}
