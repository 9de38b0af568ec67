//! The engine, nginx router and HTTP probe set up the same way for the end-to-end tests.

use std::time::Duration;

use blue_green_core::{
    AppName, DeployReport, EngineConfig, HttpProbe, HttpProbeConfig, KeepPrevious, ReadinessPolicy,
    Step, SwitchPolicy,
};
use blue_green_router::NginxRouter;
use blue_green_testkit::nginx::NginxHarness;

/// Probes `/health` directly and expects `{color} {release}`.
pub fn probe() -> HttpProbe {
    HttpProbe::new(HttpProbeConfig {
        path: "/health".into(),
        expect_body: Some("{color} {release}".into()),
        timeout: Duration::from_secs(2),
        ..Default::default()
    })
}

/// Routes through the test's nginx and verifies the switch through it.
pub fn router(nginx: &NginxHarness) -> NginxRouter {
    NginxRouter::new(nginx.router_config()).expect("nginx router config")
}

/// Quick readiness, a drain longer than the slowest request of the load, old color stopped.
pub fn engine_config(app: AppName) -> EngineConfig {
    let mut config = EngineConfig::new(app);
    config.readiness = ReadinessPolicy {
        initial_delay: Duration::ZERO,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        healthy_threshold: 2,
        deadline: Duration::from_secs(30),
    };
    config.switch = SwitchPolicy {
        // Longer than the slowest request, so requests nginx still sends to the old color
        // finish before it is stopped.
        drain: Duration::from_secs(1),
        stop_timeout: Duration::from_secs(10),
        keep_previous: KeepPrevious::Stopped,
        ..SwitchPolicy::default()
    };
    config
}

/// Milliseconds of `steps` in a report (summed), or `-` when none ran.
fn ms(report: &DeployReport, steps: &[Step]) -> String {
    let total: Option<u64> = report
        .steps
        .iter()
        .filter(|t| steps.contains(&t.step))
        .map(|t| t.ms)
        .reduce(|a, b| a + b);
    total.map_or("-".into(), |ms| ms.to_string())
}

/// The header of [`timing_row`]'s table.
pub const TIMING_HEADER: &str =
    "release  live    start  ready  switch   drain   stop  total   (ms; switch = switch + verify; total = every step)";

/// One deploy's step timings as a table row.
pub fn timing_row(label: &str, report: &DeployReport) -> String {
    format!(
        "{label:<8} {:<6} {:>6} {:>6} {:>7} {:>7} {:>6} {:>6}",
        report.live.color.as_str(),
        ms(report, &[Step::Start]),
        ms(report, &[Step::Ready]),
        ms(report, &[Step::Switch, Step::Verify]),
        ms(report, &[Step::Drain]),
        ms(report, &[Step::Stop]),
        report.steps.iter().map(|t| t.ms).sum::<u64>(),
    )
}

/// A loopback endpoint where nothing listens: nginx's upstream before the first deploy.
pub fn nowhere() -> blue_green_core::Endpoint {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    blue_green_core::Endpoint::new("127.0.0.1", port)
}

/// Six clients through `base_url`: `GET /health`, every 4th request a slow `POST` (300 ms),
/// every 3rd a slow `GET` (400 ms).
pub fn load_config(base_url: String) -> blue_green_testkit::load::LoadConfig {
    blue_green_testkit::load::LoadConfig {
        clients: 6,
        get_path: "/health".into(),
        post_path: Some("/slow?ms=300".into()),
        post_every: 4,
        slow_path: Some("/slow?ms=400".into()),
        slow_every: 3,
        pause: Duration::from_millis(5),
        ..blue_green_testkit::load::LoadConfig::new(base_url)
    }
}

/// Starts [`load_config`]'s load through `nginx` and waits until 50 requests have gone through
/// without a failure (the traffic every deploy test runs under).
pub async fn warm_load(nginx: &NginxHarness) -> blue_green_testkit::load::Load {
    let load = blue_green_testkit::load::Load::start(load_config(nginx.url("")));
    let warm = load.wait_for(50, Duration::from_secs(20)).await;
    assert!(
        warm.total >= 50 && warm.failed == 0,
        "traffic before the deploys: {warm}"
    );
    load
}
