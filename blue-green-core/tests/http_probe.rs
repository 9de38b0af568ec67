//! HttpProbe against a real HTTP server on loopback: each way of being unhealthy gives its own
//! reason, and `{color}`/`{release}` let a probe prove which color it reached.

use std::time::{Duration, Instant};

use blue_green_core::{
    Color, Endpoint, Health, HealthProbe, HttpProbe, HttpProbeConfig, Instance, StatusMatch,
};
use blue_green_testkit::color_server::ColorServer;

fn probe(path: &str, expect_body: Option<&str>) -> HttpProbe {
    HttpProbe::new(HttpProbeConfig {
        path: path.into(),
        expect_body: expect_body.map(str::to_string),
        timeout: Duration::from_secs(5),
        ..HttpProbeConfig::default()
    })
}

fn unhealthy(health: Health) -> String {
    match health {
        Health::Unhealthy(reason) => reason,
        Health::Healthy => panic!("expected an unhealthy answer"),
    }
}

#[tokio::test]
async fn healthy_when_the_body_names_the_probed_color_and_release() {
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let health = probe("/health", Some("{color} {release}"))
        .check(&green.instance())
        .await;
    assert_eq!(health, Health::Healthy);
    assert!(green.served() >= 1);
}

#[tokio::test]
async fn reaching_the_other_color_is_a_body_mismatch_that_quotes_the_body() {
    // The instance says green, but its endpoint answers blue: the probe must notice.
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let mut claimed = blue.instance();
    claimed.color = Color::Green;
    let reason = unhealthy(probe("/health", Some("{color}")).check(&claimed).await);
    assert!(
        reason.contains("body does not contain `green`"),
        "reason: {reason}"
    );
    assert!(reason.contains("blue v1"), "reason: {reason}");
    assert!(reason.contains(&blue.url("/health")), "reason: {reason}");
}

#[tokio::test]
async fn a_wrong_status_names_the_status_the_expectation_and_the_body() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let reason = unhealthy(
        probe("/status?code=503", None)
            .check(&blue.instance())
            .await,
    );
    assert!(
        reason.contains("status 503, expected 200: blue v1"),
        "reason: {reason}"
    );

    // Lists and ranges accept what they list.
    for expect_status in [
        StatusMatch::List(vec![200, 204]),
        StatusMatch::Range { from: 200, to: 299 },
    ] {
        let probe = HttpProbe::new(HttpProbeConfig {
            path: "/status?code=204".into(),
            expect_status: expect_status.clone(),
            ..HttpProbeConfig::default()
        });
        assert_eq!(
            probe.check(&blue.instance()).await,
            Health::Healthy,
            "{expect_status:?}"
        );
    }
    let range = HttpProbe::new(HttpProbeConfig {
        path: "/status?code=302".into(),
        expect_status: StatusMatch::Range { from: 200, to: 299 },
        ..HttpProbeConfig::default()
    });
    let reason = unhealthy(range.check(&blue.instance()).await);
    assert!(
        reason.contains("status 302, expected 200-299"),
        "reason: {reason}"
    );
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_a_timeout() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let probe = HttpProbe::new(HttpProbeConfig {
        path: "/slow?ms=10000".into(),
        timeout: Duration::from_millis(300),
        ..HttpProbeConfig::default()
    });
    let started = Instant::now();
    let reason = unhealthy(probe.check(&blue.instance()).await);
    let took = started.elapsed();
    assert_eq!(
        reason,
        format!("GET {}: timed out after 300ms", blue.url("/slow?ms=10000"))
    );
    // Not a timing measurement: the server would have taken 10s, the probe must not wait for it.
    assert!(took < Duration::from_secs(8), "the probe waited {took:?}");
    eprintln!("slow server: probe gave up after {took:?}");
}

#[tokio::test]
async fn nothing_listening_is_connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let instance = Instance::new(Color::Blue, "v1", "gone", Endpoint::new("127.0.0.1", port));
    let reason = unhealthy(probe("/health", None).check(&instance).await);
    assert_eq!(
        reason,
        format!("GET http://127.0.0.1:{port}/health: connection refused")
    );
}

#[tokio::test]
async fn the_host_header_and_other_headers_are_sent() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let probe = HttpProbe::new(HttpProbeConfig {
        path: "/headers".into(),
        host_header: Some("app.example".into()),
        headers: vec![("X-Probe".into(), "blue-green".into())],
        expect_body: Some("host: app.example\nx-probe: blue-green".into()),
        ..HttpProbeConfig::default()
    });
    assert_eq!(probe.check(&blue.instance()).await, Health::Healthy);

    let head = HttpProbe::new(HttpProbeConfig {
        method: "HEAD".into(),
        ..HttpProbeConfig::default()
    });
    assert_eq!(head.check(&blue.instance()).await, Health::Healthy);
}

#[tokio::test]
async fn one_probe_checks_many_times_and_both_colors() {
    let blue = ColorServer::start(Color::Blue, "v1").await.unwrap();
    let green = ColorServer::start(Color::Green, "v2").await.unwrap();
    let probe = probe("/health", Some("{color} {release}"));
    for _ in 0..20 {
        assert_eq!(probe.check(&blue.instance()).await, Health::Healthy);
        assert_eq!(probe.check(&green.instance()).await, Health::Healthy);
    }
    assert_eq!(blue.served(), 20);
    assert_eq!(green.served(), 20);
}

/// How a fake server ends each connection after reading the request.
#[derive(Clone, Copy)]
enum Hangup {
    /// Closes it (FIN) without a word.
    Close,
    /// Resets it (RST).
    Reset,
}

/// A server on loopback that reads each request and hangs up without answering; stops when
/// dropped.
struct HangupServer {
    endpoint: Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl HangupServer {
    async fn start(how: Hangup) -> HangupServer {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if let Hangup::Reset = how {
                    stream.set_zero_linger().unwrap();
                }
                drop(stream);
            }
        });
        HangupServer {
            endpoint: Endpoint::new("127.0.0.1", port),
            task,
        }
    }

    fn instance(&self) -> Instance {
        Instance::new(Color::Blue, "v1", "hangup", self.endpoint.clone())
    }
}

impl Drop for HangupServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_server_that_closes_without_answering_gets_a_short_reason() {
    let server = HangupServer::start(Hangup::Close).await;
    let reason = unhealthy(probe("/health", None).check(&server.instance()).await);
    assert_eq!(
        reason,
        format!(
            "GET http://{}/health: connection closed before an answer",
            server.endpoint
        )
    );
}

#[tokio::test]
async fn a_server_that_resets_the_connection_gets_a_short_reason() {
    let server = HangupServer::start(Hangup::Reset).await;
    let reason = unhealthy(probe("/health", None).check(&server.instance()).await);
    assert_eq!(
        reason,
        format!(
            "GET http://{}/health: connection reset by peer",
            server.endpoint
        )
    );
}
