//! Bad input: malformed requests, oversized headers, slowloris clients and broken control
//! requests each get their error, and the traffic of other clients is untouched.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blue_green_core::{Endpoint, Router};
use blue_green_proxy::{Proxy, ProxyConfig, ProxyRouter};
use common::{control_raw, fresh_get, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A client that keeps sending requests while a test misbehaves elsewhere, and counts failures.
struct Bystander {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Bystander {
    fn start(addr: std::net::SocketAddr) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match fresh_get(addr, "/", "web").await {
                        Ok((200, b)) if b == "blue\n" => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Bystander {
            stop,
            ok,
            failed,
            task,
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let (ok, failed) = (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        assert!(ok > 0, "the other client was served");
        assert_eq!(
            failed, 0,
            "the other client's requests all succeeded ({ok} did)"
        );
    }
}

async fn setup(config: ProxyConfig) -> (Proxy, Upstream) {
    let blue = Upstream::start("blue").await;
    let proxy = Proxy::start(config).await.unwrap();
    proxy
        .router("web")
        .route_to(&blue.endpoint())
        .await
        .unwrap();
    (proxy, blue)
}

/// Sends raw bytes, then reads what comes back until the proxy closes (or 10 s).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_and_oversized_headers_get_400_and_431() {
    let (proxy, _blue) = setup(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])).await;
    let addr = proxy.local_addrs()[0];
    let other = Bystander::start(addr);

    let answer = raw(addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: web\r\nContent-Length: nope\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    other.finish().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn slowloris_clients_are_disconnected_after_the_header_timeout() {
    let mut config = ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]);
    config.limits.header_read_timeout = Duration::from_millis(500);
    let (proxy, _blue) = setup(config).await;
    let addr = proxy.local_addrs()[0];
    let other = Bystander::start(addr);

    // Connects and sends nothing.
    let began = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the proxy closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let silent_after = began.elapsed();

    // Sends a request head one byte at a time, 50 ms apart, for ever.
    let began = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: web\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for b in head.iter() {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if began.elapsed() > Duration::from_secs(10) {
            break;
        }
        // A closed connection shows as a read of 0 (or an error) once the proxy gives up.
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            let _ = n;
            closed = true;
            break;
        }
    }
    assert!(closed, "the byte-at-a-time client was disconnected");
    println!(
        "header timeout 500 ms: silent client closed after {silent_after:?}, slow client after {:?}",
        began.elapsed()
    );
    assert!(began.elapsed() < Duration::from_secs(5));

    other.finish().await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn broken_control_requests_get_an_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let (proxy, blue) = setup(
        ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
            .with_control(&socket)
            .with_state_file(dir.path().join("proxy.json")),
    )
    .await;
    let other = Bystander::start(proxy.local_addrs()[0]);
    let state_before = std::fs::read(dir.path().join("proxy.json")).unwrap();
    let green = Endpoint::new("127.0.0.1", 9);

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "PUT",
            "/v1/target",
            b"{not json".to_vec(),
            400,
            "not what this request takes",
        ),
        (
            "PUT",
            "/v1/target",
            br#"{"app":"web","target":"127.0.0.1:9","extra":1}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "PUT",
            "/v1/target",
            br#"{"app":"web","target":"nowhere"}"#.to_vec(),
            400,
            "not an endpoint",
        ),
        (
            "PUT",
            "/v1/target",
            br#"{"app":"Web App","target":"127.0.0.1:9"}"#.to_vec(),
            400,
            "not a valid app name",
        ),
        (
            "PUT",
            "/v1/target",
            br#"{"app":"web","target":"127.0.0.1:9","hosts":["a b"]}"#.to_vec(),
            400,
            "not a host name",
        ),
        (
            "PUT",
            "/v1/target",
            br#"{"app":"web","target":"127.0.0.1:9","expect":"127.0.0.1:1"}"#.to_vec(),
            409,
            "someone else changed it",
        ),
        (
            "PUT",
            "/v1/target",
            br#"{"app":"web","target":"127.0.0.1:9","expect":null}"#.to_vec(),
            409,
            "but it is",
        ),
        ("PUT", "/v1/target", vec![b' '; 100 * 1024], 400, "at most"),
        (
            "POST",
            "/v1/maintenance",
            br#"{"on":"yes"}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/v1/drain",
            br#"{"endpoint":"127.0.0.1:9"}"#.to_vec(),
            400,
            "missing field",
        ),
        ("GET", "/v1/nothing", vec![], 404, "no such control request"),
        ("DELETE", "/v1/status", vec![], 405, "not allowed"),
    ];
    for (method, path, body, status, says) in cases {
        let (got, text) = control_raw(&socket, method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(
            text.contains("\"error\"") && text.contains(says),
            "{method} {path}: {text}"
        );
    }
    let router = ProxyRouter::new(&socket, "web");
    assert_eq!(
        router.target().await.unwrap(),
        Some(blue.endpoint()),
        "nothing changed"
    );
    assert_eq!(
        router.control().status().await.unwrap().mode,
        blue_green_proxy::Mode::Serving
    );
    assert_eq!(
        std::fs::read(dir.path().join("proxy.json")).unwrap(),
        state_before
    );
    assert_ne!(router.target().await.unwrap(), Some(green));

    other.finish().await;
    proxy.shutdown().await;
}
