//! The proxy serving real traffic on loopback: routing by host, forwarding headers, bodies,
//! event streams, upgrades, HTTP/2 cleartext, pause/resume/maintenance and upstream failures.

mod common;

use std::time::Duration;

use blue_green_core::Endpoint;
use blue_green_proxy::{Expect, Mode, Proxy, ProxyConfig, ProxyHandle, TargetChange};
use bytes::Bytes;
use common::{fresh_get, pooled_client, wait_for, Session, Upstream};
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn proxy_with(config: ProxyConfig) -> Proxy {
    Proxy::start(config).await.expect("the proxy starts")
}

fn loopback() -> ProxyConfig {
    ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
}

async fn route(h: &ProxyHandle, app: &str, to: &Upstream, hosts: Option<Vec<String>>) {
    h.set_target(
        app,
        TargetChange {
            target: to.endpoint(),
            expect: Expect::Anything,
            hosts,
        },
    )
    .await
    .expect("the switch is taken");
}

#[tokio::test]
async fn requests_are_routed_by_host_with_a_default_app() {
    let blue = Upstream::start("blue").await;
    let shop = Upstream::start("shop").await;
    let proxy = proxy_with(loopback()).await;
    let h = proxy.handle();
    let addr = proxy.local_addrs()[0];

    let (status, body) = fresh_get(addr, "/", "any.example").await.unwrap();
    assert_eq!(status, 404, "no app yet: {body}");
    assert!(body.contains("no app serves host any.example"), "{body}");

    route(&h, "web", &blue, None).await;
    route(&h, "shop", &shop, Some(vec!["Shop.Example".into()])).await;
    assert_eq!(
        fresh_get(addr, "/", "shop.example:8080").await.unwrap().1,
        "shop\n"
    );
    assert_eq!(
        fresh_get(addr, "/", "other.example").await.unwrap().1,
        "blue\n"
    );

    let status = h.status();
    assert_eq!(status.apps.len(), 2);
    assert_eq!(status.apps[0].app, "shop", "apps are listed by name");
    assert_eq!(status.apps[0].hosts, vec!["shop.example".to_string()]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_are_set_and_client_ones_replaced() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    route(&proxy.handle(), "web", &blue, None).await;
    let client = pooled_client();
    let req = Request::get(format!("http://{}/headers", proxy.local_addrs()[0]))
        .header(HOST, "web.example")
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains("x-forwarded-host: web.example\n"), "{body}");
    assert!(body.contains("host: web.example\n"), "{body}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_large_upload_streams_through_and_echoes_back() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    route(&proxy.handle(), "web", &blue, None).await;
    let client = pooled_client();
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let req = Request::post(format!("http://{}/echo", proxy.local_addrs()[0]))
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..5], b"blue\n");
    assert_eq!(&body[5..], &payload[..]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_event_stream_and_an_upgraded_session_pass_through_and_count_in_flight() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    let h = proxy.handle();
    route(&h, "web", &blue, None).await;
    let addr = proxy.local_addrs()[0];

    let client = pooled_client();
    let res = client
        .request(
            Request::get(format!("http://{addr}/sse"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    for _ in 0..3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        let data = frame.into_data().unwrap();
        assert!(data.starts_with(b"data: blue "), "{data:?}");
    }

    let mut session = Session::open(addr, "web").await.unwrap();
    session.echo(b"hello through the proxy").await.unwrap();
    assert_eq!(
        h.in_flight(&blue.endpoint()),
        2,
        "the stream and the session are in flight"
    );
    drop(session);
    drop(body);
    assert!(
        wait_for(Duration::from_secs(5), || h.in_flight(&blue.endpoint())
            == 0)
        .await,
        "closing both takes them out of the count"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    route(&proxy.handle(), "web", &blue, None).await;
    let stream = tokio::net::TcpStream::connect(proxy.local_addrs()[0])
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("http://web.example/headers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with("blue\n") && body.contains("host: web.example"),
            "{body}"
        );
    }
    proxy.shutdown().await;
}

/// Writes `parts` to a new connection to `proxy`, 50 ms apart, so that the proxy may see the
/// first part alone; then reads until `enough` says so or the connection ends.
async fn in_pieces(proxy: &Proxy, parts: &[&[u8]], enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.local_addrs()[0])
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stream.write_all(part).await.unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !enough(&got) {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within 10 s");
    got
}

#[tokio::test]
async fn the_protocol_is_told_from_the_first_bytes_even_when_they_come_in_pieces() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    route(&proxy.handle(), "web", &blue, None).await;

    // HTTP/1 requests in pieces, one a POST: it starts with the same byte as HTTP/2's preface.
    for parts in [
        [
            &b"P"[..],
            b"OST /headers HTTP/1.1\r\nHost: web.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        ],
        [
            b"GET /hea",
            b"ders HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n",
        ],
    ] {
        let answer = in_pieces(&proxy, &parts, |_| false).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("blue\n"),
            "{answer}"
        );
    }

    // HTTP/2 with prior knowledge, its preface in two pieces: the proxy's first frame is its
    // SETTINGS (type 4), not an HTTP/1 error.
    let answer = in_pieces(
        &proxy,
        &[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"],
        |got| got.len() >= 9,
    )
    .await;
    assert!(
        answer.len() >= 9 && answer[3] == 4,
        "not an HTTP/2 SETTINGS frame: {:?}",
        String::from_utf8_lossy(&answer)
    );

    proxy.shutdown().await;
}

#[tokio::test]
async fn pause_holds_requests_until_resume_and_maintenance_answers_503_but_health_stays_200() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    let h = proxy.handle();
    route(&h, "web", &blue, None).await;
    let addr = proxy.local_addrs()[0];

    h.set_mode(Mode::Paused).await.unwrap();
    let held: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { fresh_get(addr, "/", "web").await }))
        .collect();
    assert!(
        wait_for(Duration::from_secs(5), || h.status().queued == 5).await,
        "five requests are held"
    );
    assert_eq!(
        fresh_get(addr, "/_blue-green/health", "web").await.unwrap(),
        (200, "ok\n".into())
    );
    assert!(held.iter().all(|t| !t.is_finished()));
    h.set_mode(Mode::Serving).await.unwrap();
    for t in held {
        assert_eq!(t.await.unwrap().unwrap(), (200, "blue\n".to_string()));
    }

    h.set_mode(Mode::Maintenance).await.unwrap();
    let (status, page) = fresh_get(addr, "/", "web").await.unwrap();
    assert_eq!(status, 503);
    assert!(page.contains("maintenance"), "{page}");
    assert_eq!(
        fresh_get(addr, "/_blue-green/health", "web")
            .await
            .unwrap()
            .0,
        200
    );
    h.set_mode(Mode::Serving).await.unwrap();
    assert_eq!(fresh_get(addr, "/", "web").await.unwrap().0, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_paused_request_gets_503_after_the_bounded_wait() {
    let blue = Upstream::start("blue").await;
    let mut config = loopback();
    config.pause.max_wait = Duration::from_millis(200);
    let proxy = proxy_with(config).await;
    let h = proxy.handle();
    route(&h, "web", &blue, None).await;
    h.set_mode(Mode::Paused).await.unwrap();
    let (status, body) = fresh_get(proxy.local_addrs()[0], "/", "web").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("paused for longer than 0.2s"), "{body}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_get_502_and_504_and_count_as_errors() {
    let blue = Upstream::start("blue").await;
    let mut config = loopback();
    config.limits.upstream_response_timeout = Duration::from_millis(300);
    let proxy = proxy_with(config).await;
    let h = proxy.handle();
    let addr = proxy.local_addrs()[0];

    let (status, body) = fresh_get(addr, "/", "web").await.unwrap();
    assert_eq!(status, 404, "{body}");

    route(&h, "web", &blue, None).await;
    let (status, body) = fresh_get(addr, "/slow?ms=2000", "web").await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("sent no response within 0.3s"), "{body}");

    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = Endpoint::new("127.0.0.1", closed.local_addr().unwrap().port());
    drop(closed);
    h.set_target(
        "web",
        TargetChange {
            target: dead.clone(),
            expect: Expect::Target(blue.endpoint()),
            hosts: None,
        },
    )
    .await
    .unwrap();
    let (status, body) = fresh_get(addr, "/", "web").await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("could not connect to the upstream {dead}")),
        "{body}"
    );
    let stats = h.status().targets;
    let of = |e: &Endpoint| {
        stats
            .iter()
            .find(|t| t.endpoint == e.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(of(&blue.endpoint()).errors, 1);
    assert_eq!(of(&dead).errors, 1);
    assert_eq!(of(&dead).in_flight, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_app_without_target_answers_503() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    let h = proxy.handle();
    let e = h
        .set_target(
            "web",
            TargetChange {
                target: blue.endpoint(),
                expect: Expect::Target(Endpoint::new("127.0.0.1", 1)),
                hosts: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("expected its target to be 127.0.0.1:1, but it is no target"),
        "{e}"
    );
    assert!(
        h.status().apps.is_empty(),
        "a refused change changes nothing"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_waiting_for_its_upstream_is_cut_at_once_and_the_target_serves_again() {
    let blue = Upstream::start("blue").await;
    let proxy = proxy_with(loopback()).await;
    let h = proxy.handle();
    let addr = proxy.local_addrs()[0];
    route(&h, "web", &blue, None).await;
    // A kept-alive connection in the pool as well as the waiting one: the cut closes both.
    let (status, _) = fresh_get(addr, "/", "web").await.unwrap();
    assert_eq!(status, 200);

    let waiting = tokio::spawn(async move {
        let began = std::time::Instant::now();
        (
            fresh_get(addr, "/slow?ms=20000", "web").await,
            began.elapsed(),
        )
    });
    let blue_stats = || {
        h.status()
            .targets
            .into_iter()
            .find(|t| t.endpoint == blue.endpoint().to_string())
            .expect("the proxy counts blue")
    };
    let in_flight = || blue_stats().in_flight;
    assert!(
        wait_for(Duration::from_secs(5), || in_flight() == 1).await,
        "the slow request is in flight"
    );
    assert_eq!(h.cut(&blue.endpoint()).await, 1, "the cut counts it");
    let (answer, took) = waiting.await.unwrap();
    let (status, body) = answer.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cut at the drain deadline"), "{body}");
    assert!(
        took < Duration::from_secs(10),
        "answered at the cut, not by the upstream ({took:?})"
    );
    let stats = blue_stats();
    assert_eq!((stats.cut, stats.errors, stats.in_flight), (1, 0, 0));

    // A response whose body waits for the upstream's next bytes: the cut ends it too.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender
        .send_request(
            Request::get("/stall")
                .header(HOST, "web")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "blue\n");
    let rest = tokio::spawn(async move {
        let began = std::time::Instant::now();
        (body.frame().await.map(|f| f.map(|_| ())), began.elapsed())
    });
    assert!(
        wait_for(Duration::from_secs(5), || in_flight() == 1).await,
        "the stalled response is in flight"
    );
    assert_eq!(h.cut(&blue.endpoint()).await, 1, "the cut counts it");
    let (end, took) = rest.await.unwrap();
    assert!(
        matches!(end, Some(Err(_))),
        "the client sees the body broken off, not ended: {end:?}"
    );
    assert!(took < Duration::from_secs(10), "at the cut ({took:?})");

    // Routed to again (a switch back), the target serves on new connections.
    for _ in 0..3 {
        let (status, body) = fresh_get(addr, "/", "web").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "blue\n"));
    }
    proxy.shutdown().await;
}
