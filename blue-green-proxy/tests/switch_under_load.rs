//! Switches under load through the control socket: kept-alive and fresh connections, 4 KiB
//! POSTs, 300 ms requests, a server-sent-events stream and 20 upgraded (WebSocket) echo
//! sessions held across switches. No request may fail; held sessions keep working through the
//! drain and are closed only by the cut at its deadline, and every cut is counted.
//! The number of switches is `BG_PROXY_SWITCHES` (default 10).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::{Color, Instance, RouteReceipt, Router};
use blue_green_proxy::{Proxy, ProxyConfig, ProxyRouter};
use bytes::Bytes;
use common::{fresh_get, pooled_client, wait_for, Session, Upstream};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::time::Instant;

const DRAIN: Duration = Duration::from_millis(1000);

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    sent: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// Bumped just before each cut: a held session that closes without a bump since it
    /// connected was closed early.
    cut_generation: AtomicU64,
    /// Held sessions (event stream and upgrades) that were closed by a cut.
    closed_by_cut: AtomicU64,
    /// Successful echoes over all upgraded sessions.
    echoes: AtomicU64,
    /// Held sessions open now.
    held_open: AtomicU64,
}

impl Load {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
    fn check(&self, kind: &str, got: Result<(u16, String), String>, expect_tail: &str) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match got {
            Ok((200, body))
                if (body.starts_with("blue\n") || body.starts_with("green\n"))
                    && body.ends_with(expect_tail) => {}
            Ok((status, body)) => self.fail(format!("{kind}: {status} {body:?}")),
            Err(e) => self.fail(format!("{kind}: {e}")),
        }
    }
}

async fn pooled(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    req: Request<Full<Bytes>>,
) -> Result<(u16, String), String> {
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn start_load(addr: SocketAddr, load: &Arc<Load>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Kept-alive GETs.
    for _ in 0..2 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let client = pooled_client();
            while load.running() {
                let req = Request::get(format!("http://{addr}/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                load.check("kept-alive GET", pooled(&client, req).await, "\n");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // A fresh connection per request.
    for _ in 0..2 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            while load.running() {
                load.check("fresh GET", fresh_get(addr, "/", "web.example").await, "\n");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // 4 KiB POSTs, echoed.
    for n in 0..2 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let client = pooled_client();
            let payload: String = std::iter::repeat(char::from(b'a' + n)).take(4096).collect();
            while load.running() {
                let req = Request::post(format!("http://{addr}/echo"))
                    .body(Full::new(Bytes::from(payload.clone())))
                    .unwrap();
                load.check("4 KiB POST", pooled(&client, req).await, &payload);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // 300 ms requests, always some in flight.
    for _ in 0..4 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let client = pooled_client();
            while load.running() {
                let req = Request::get(format!("http://{addr}/slow?ms=300"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                load.check("300 ms GET", pooled(&client, req).await, "\n");
            }
        }));
    }
    // One event stream, held; reconnects after a cut.
    {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let client = pooled_client();
            while load.running() {
                let generation = load.cut_generation.load(Ordering::SeqCst);
                let req = Request::get(format!("http://{addr}/sse")).body(Full::new(Bytes::new())).unwrap();
                let mut body = match client.request(req).await {
                    Ok(res) if res.status() == 200 => res.into_body(),
                    Ok(res) => { load.fail(format!("event stream: {}", res.status())); continue; }
                    Err(e) => { load.fail(format!("event stream: {e}")); continue; }
                };
                load.held_open.fetch_add(1, Ordering::SeqCst);
                loop {
                    let frame = tokio::select! {
                        f = body.frame() => f,
                        _ = tokio::time::sleep(Duration::from_millis(50)), if !load.running() => break,
                    };
                    match frame {
                        Some(Ok(f)) if f.data_ref().is_some_and(|d| d.starts_with(b"data: ")) => {}
                        Some(Ok(_)) => {}
                        _ => {
                            if load.cut_generation.load(Ordering::SeqCst) > generation {
                                load.closed_by_cut.fetch_add(1, Ordering::SeqCst);
                            } else {
                                load.fail("event stream closed before a drain deadline".into());
                            }
                            break;
                        }
                    }
                }
                load.held_open.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    // 20 upgraded echo sessions, held; each reconnects after a cut.
    for n in 0..20u32 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            while load.running() {
                let generation = load.cut_generation.load(Ordering::SeqCst);
                let mut session = match Session::open(addr, "web.example").await {
                    Ok(s) => s,
                    Err(e) => {
                        load.fail(format!("session {n}: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                load.held_open.fetch_add(1, Ordering::SeqCst);
                let msg = format!("session {n} says hello");
                while load.running() {
                    match session.echo(msg.as_bytes()).await {
                        Ok(()) => {
                            load.echoes.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            if load.cut_generation.load(Ordering::SeqCst) > generation {
                                load.closed_by_cut.fetch_add(1, Ordering::SeqCst);
                            } else {
                                load.fail(format!(
                                    "session {n} closed before a drain deadline: {e}"
                                ));
                            }
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                load.held_open.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    tasks
}

fn instance(color: Color, up: &Upstream) -> Instance {
    Instance::new(color, "v1", up.name.clone(), up.endpoint())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_under_load_lose_nothing_and_cut_only_at_the_drain_deadline() {
    let switches: usize = std::env::var("BG_PROXY_SWITCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy = Proxy::start(
        ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
            .with_control(&socket)
            .with_state_file(dir.path().join("proxy.json")),
    )
    .await
    .unwrap();
    let addr = proxy.local_addrs()[0];
    let router = ProxyRouter::new(&socket, "web");
    let colors = [(Color::Blue, &blue), (Color::Green, &green)];
    let first = router.route_to(&blue.endpoint()).await.unwrap();
    router
        .verify(&instance(Color::Blue, &blue), &first)
        .await
        .unwrap();

    let load = Arc::new(Load::default());
    let tasks = start_load(addr, &load);
    let mut cut_total = 0;
    let mut switch_times = Vec::new();
    let mut drain_times = Vec::new();
    for i in 0..switches {
        // Every session closed by the last cut has noticed it, and all 21 are open again (on
        // the current target) before the switch.
        let settled = || {
            load.closed_by_cut.load(Ordering::SeqCst) == cut_total
                && load.held_open.load(Ordering::SeqCst) == 21
        };
        assert!(
            wait_for(Duration::from_secs(10), settled).await,
            "the 21 held sessions reconnected ({} open, {} of {cut_total} cuts noticed)",
            load.held_open.load(Ordering::SeqCst),
            load.closed_by_cut.load(Ordering::SeqCst),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, old) = colors[i % 2];
        let (new_color, new) = colors[(i + 1) % 2];
        let began = Instant::now();
        let receipt: RouteReceipt = router.route_to(&new.endpoint()).await.unwrap();
        router
            .verify(&instance(new_color, new), &receipt)
            .await
            .unwrap();
        switch_times.push(began.elapsed());

        let echoes_at_switch = load.echoes.load(Ordering::SeqCst);
        let drain_began = Instant::now();
        let left = router
            .wait_idle(&old.endpoint(), DRAIN)
            .await
            .unwrap()
            .unwrap();
        drain_times.push(drain_began.elapsed());
        assert!(
            drain_began.elapsed() >= DRAIN - Duration::from_millis(150),
            "held sessions keep the old target busy until the deadline"
        );
        assert!(
            left >= 21,
            "the 21 held sessions are still open at the deadline ({left})"
        );
        assert!(
            load.echoes.load(Ordering::SeqCst) > echoes_at_switch,
            "held sessions kept echoing through the drain"
        );
        load.cut_generation.fetch_add(1, Ordering::SeqCst);
        let cut = router.cut(&old.endpoint()).await.unwrap().unwrap();
        assert!(cut >= 21, "the cut closed the held sessions ({cut})");
        cut_total += cut;
    }
    // The sessions closed by the last cut notice it at their next echo (up to 50 ms later);
    // one that never does fails the count below.
    wait_for(Duration::from_secs(10), || {
        load.closed_by_cut.load(Ordering::SeqCst) >= cut_total
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    let sent = load.sent.load(Ordering::Relaxed);
    switch_times.sort();
    println!(
        "{switches} switches: {sent} requests, {} failed; {} echoes; cut {cut_total}, closed by cuts {}; switch median {:?}",
        failures.len(),
        load.echoes.load(Ordering::SeqCst),
        load.closed_by_cut.load(Ordering::SeqCst),
        switch_times[switch_times.len() / 2],
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert_eq!(
        load.closed_by_cut.load(Ordering::SeqCst),
        cut_total,
        "every session closed was counted by a cut, and nothing else was cut"
    );
    let status = router.control().status().await.unwrap();
    let errors: u64 = status.targets.iter().map(|t| t.errors).sum();
    assert_eq!(errors, 0, "the proxy counted no failed request: {status:?}");
    assert_eq!(status.targets.iter().map(|t| t.cut).sum::<u64>(), cut_total);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_ends_when_the_last_request_finishes_not_at_a_fixed_time() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy =
        Proxy::start(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]).with_control(&socket))
            .await
            .unwrap();
    let addr = proxy.local_addrs()[0];
    let router = ProxyRouter::new(&socket, "web");
    router.route_to(&blue.endpoint()).await.unwrap();

    // Five 300 ms requests, started 40 ms apart: the last ends about 460 ms after the first.
    let mut requests = Vec::new();
    for i in 0..5u64 {
        requests.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40 * i)).await;
            let got = fresh_get(addr, "/slow?ms=300", "web").await;
            (got, Instant::now())
        }));
    }
    let handle = proxy.handle();
    assert!(
        wait_for(Duration::from_secs(5), || handle
            .in_flight(&blue.endpoint())
            == 5)
        .await
    );
    router.route_to(&green.endpoint()).await.unwrap();
    let began = Instant::now();
    let left = router
        .wait_idle(&blue.endpoint(), Duration::from_secs(10))
        .await
        .unwrap();
    let drained = Instant::now();
    assert_eq!(left, Some(0));
    let mut last = began;
    for r in requests {
        let (got, done) = r.await.unwrap();
        assert_eq!(
            got.unwrap(),
            (200, "blue\n".to_string()),
            "bound to blue when it arrived"
        );
        last = last.max(done);
    }
    let after_last = drained.saturating_duration_since(last);
    let before_last = last.saturating_duration_since(drained);
    println!(
        "drain waited {:?}; it ended {:?} after the last request was answered (or {:?} before its client read the answer)",
        drained - began, after_last, before_last
    );
    assert!(
        drained - began < Duration::from_secs(10),
        "not the deadline"
    );
    // The waiter is woken by the last guard; anything near a poll interval would be a bug.
    assert!(
        after_last < Duration::from_millis(200),
        "the drain lagged {after_last:?}"
    );
    assert_eq!(fresh_get(addr, "/", "web").await.unwrap().1, "green\n");
    proxy.shutdown().await;
}
