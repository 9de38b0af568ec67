//! [`Proxy::take_over`] in one process, for embedders and for the details a load test cannot
//! see: a kept-alive HTTP/1.1 connection left on the old proxy is told `Connection: close`, an
//! upgraded connection open on it goes on and holds its retirement, and new connections reach
//! the new proxy, which takes changes once the handover is done. The CLI test
//! `blue-green-cli/tests/proxy_upgrade.rs` replaces real processes under load.

mod common;

use std::time::{Duration, Instant};

use blue_green_proxy::{Expect, Proxy, ProxyConfig, TargetChange};
use bytes::Bytes;
use common::{fresh_get, Session, Upstream};
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

fn change(target: &Upstream) -> TargetChange {
    TargetChange {
        target: target.endpoint(),
        expect: Expect::Anything,
        hosts: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_moves_new_connections_and_the_old_proxy_retires_after_its_websocket() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let state = dir.path().join("proxy.json");
    let old = Proxy::start(
        ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
            .with_control(&socket)
            .with_state_file(&state),
    )
    .await
    .unwrap();
    let addr = old.local_addrs()[0];
    old.handle().set_target("web", change(&blue)).await.unwrap();

    // Opened on the old proxy: a WebSocket-style session and a kept-alive connection.
    let mut ws = Session::open(addr, "web.test").await.unwrap();
    ws.echo(b"before").await.unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        Request::get("/")
            .header(HOST, "web.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let first = kept.send_request(get()).await.unwrap();
    assert!(first.headers().get(CONNECTION).is_none(), "kept alive");
    first.into_body().collect().await.unwrap();

    let new = Proxy::take_over(
        ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
            .with_control(&socket)
            .with_state_file(&state),
    )
    .await
    .expect("the take-over");
    tokio::time::timeout(Duration::from_secs(5), old.handed_over())
        .await
        .expect("the old proxy knows it handed over");
    assert_eq!(new.local_addrs(), &[addr], "the same listening socket");
    assert_eq!(new.handle().target("web"), Some(blue.endpoint()));

    // The kept-alive connection is still the old proxy's: its next answer closes it.
    let last = kept.send_request(get()).await.unwrap();
    assert_eq!(
        last.headers().get(CONNECTION).map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "the old proxy tells a kept-alive client to move on"
    );
    let body = last.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"blue\n");

    // New connections reach the new proxy, which takes changes now.
    new.handle()
        .set_target("web", change(&green))
        .await
        .expect("the new proxy takes changes after the handover");
    assert_eq!(
        fresh_get(addr, "/", "web.test").await.unwrap(),
        (200, "green\n".to_string())
    );
    assert_eq!(old.handle().target("web"), Some(blue.endpoint()));

    // The old proxy retires, but not before the session it carries ends.
    let retire = tokio::spawn(old.retire(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.echo(b"still through the old proxy").await.unwrap();
    assert!(!retire.is_finished(), "the old proxy waits for its session");
    let closed = Instant::now();
    drop(ws);
    let left = tokio::time::timeout(Duration::from_secs(10), retire)
        .await
        .expect("the old proxy retired once its session ended")
        .unwrap();
    assert_eq!(left, 0, "nothing was cut");
    assert!(closed.elapsed() < Duration::from_secs(5));
    assert!(socket.exists(), "the control socket is the new proxy's now");
    new.shutdown().await;
}

#[tokio::test]
async fn a_take_over_needs_a_control_socket() {
    let e = Proxy::take_over(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--control"), "{e}");
}
