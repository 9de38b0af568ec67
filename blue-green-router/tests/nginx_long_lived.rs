//! A server-sent-events stream and WebSockets open through a real nginx at a switch: what
//! happens to them. Measured, and printed with `--nocapture`: they go on from the old color
//! through nginx's old worker after the switch, and end when the old color stops. Also what
//! the router's count of open connections (the drain's report) sees, and misses.

mod support;

use std::time::{Duration, Instant};

use blue_green_core::{CancellationToken, Color, Endpoint, Router};
use blue_green_router::NginxRouter;
use blue_green_testkit::color_server::ColorServer;
use blue_green_testkit::nginx::NginxHarness;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An SSE server for `color` on a free loopback port: every connection gets
/// `data: COLOR N` every 50 ms until `stop` is cancelled, which closes every connection (the
/// old color stopping).
async fn sse_server(color: Color, stop: CancellationToken) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(_) => continue,
                },
                _ = stop.cancelled() => return,
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let _ = stream.read(&mut head).await;
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n";
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                for n in 0u64.. {
                    let event = format!("data: {color} {n}\n\n");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        written = stream.write_all(event.as_bytes()) => if written.is_err() { return },
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    Endpoint::new("127.0.0.1", port)
}

/// The next `data:` line of the stream, or `None` when it ended (or said nothing for 5 s).
async fn next_event(reader: &mut BufReader<TcpStream>) -> Option<String> {
    loop {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(_)) => {
                if let Some(data) = line.trim().strip_prefix("data: ") {
                    return Some(data.to_string());
                }
                if line.trim() == "0" {
                    // The last chunk of a chunked answer: nginx ended the stream.
                    return None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_open_at_the_switch_goes_on_from_the_old_color_until_it_stops() {
    let stop_blue = CancellationToken::new();
    let blue = sse_server(Color::Blue, stop_blue.clone()).await;
    let green = ColorServer::start(Color::Green, "v2")
        .await
        .expect("green server");
    let nginx = NginxHarness::start("bg-test-sse", &blue)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start (is nginx installed?): {e}"));
    let router = NginxRouter::new(nginx.router_config()).expect("router");

    let mut stream = TcpStream::connect(("127.0.0.1", nginx.port()))
        .await
        .expect("connect to nginx");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: sse\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("send");
    let mut reader = BufReader::new(stream);
    let first = next_event(&mut reader).await.expect("a first event");
    assert!(first.starts_with("blue"), "{first}");

    let switched = Instant::now();
    router
        .route_to(&green.endpoint())
        .await
        .expect("switch to green");
    assert_eq!(router.target().await.unwrap(), Some(green.endpoint()));
    // New requests go to green...
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let body = client
            .get(nginx.url("/health"))
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Ok(r) = body {
            if r.text().await.unwrap_or_default().contains("green") {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "nginx never sent new requests to green"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let switch_took = switched.elapsed();
    // ...while the open stream goes on from blue, through nginx's old worker.
    let green_seen = Instant::now();
    let mut after = 0;
    while green_seen.elapsed() < Duration::from_secs(2) {
        let event = next_event(&mut reader)
            .await
            .expect("the stream open at the switch goes on");
        assert!(event.starts_with("blue"), "{event}");
        after += 1;
    }
    assert!(after >= 10, "only {after} events after the switch");

    // The old color stops: the stream ends.
    let stopped = Instant::now();
    stop_blue.cancel();
    let mut late = 0;
    while next_event(&mut reader).await.is_some() {
        late += 1;
        assert!(late < 100, "the stream goes on after blue stopped");
    }
    let ended = stopped.elapsed();
    assert!(
        ended < Duration::from_secs(5),
        "the stream ended {ended:?} after blue stopped"
    );
    eprintln!(
        "SSE through nginx: the switch (reload, old workers stopped accepting) took {switch_took:?}; the open stream still delivered blue's events after new requests went to green ({after} read in the next 2 s, with those sent during the switch); it ended {ended:?} after blue stopped"
    );
}

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `text` and returns the answer, or `None` once the WebSocket no longer answers (closed,
/// or silent for 2 s).
async fn echo(socket: &mut WebSocket, text: &str) -> Option<String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    socket.send(Message::text(text)).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        Ok(Some(Ok(Message::Text(answer)))) => Some(answer.to_string()),
        _ => None,
    }
}

/// Waits until `router` counts `want` connections open to `endpoint`.
async fn wait_open(router: &NginxRouter, endpoint: &Endpoint, want: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let open = router.open_connections(endpoint).await.expect("count");
        if open == Some(want) {
            return;
        }
        assert!(
            Instant::now() < until,
            "nginx still has {open:?} connections open to {endpoint}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_open_at_the_switch_go_on_from_the_old_color_until_it_stops_and_are_counted() {
    const SESSIONS: usize = 20;
    let (ws_blue, blue_task) = support::websocket_server(Color::Blue).await;
    let (ws_green, green_task) = support::websocket_server(Color::Green).await;
    let nginx = NginxHarness::start("bg-test-ws", &ws_blue)
        .await
        .unwrap_or_else(|e| panic!("nginx did not start (is nginx installed?): {e}"));
    // The echo servers answer WebSockets only: no verification through `/health`.
    let mut config = nginx.router_config();
    config.verify = None;
    let router = NginxRouter::new(config).expect("router");
    let url = format!("ws://127.0.0.1:{}/ws", nginx.port());

    let mut sessions = Vec::new();
    for n in 0..SESSIONS {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebSocket {n} through nginx: {e}; its error log: {}",
                    nginx.error_log()
                )
            });
        assert_eq!(
            echo(&mut socket, "before").await.as_deref(),
            Some("blue: before")
        );
        sessions.push(socket);
    }
    // Nothing else goes to blue, so nginx holds exactly the upgraded connections.
    wait_open(&router, &ws_blue, SESSIONS as u64).await;

    let switched = Instant::now();
    router.route_to(&ws_green).await.expect("switch to green");
    // New WebSockets go to green once nginx's new worker takes them...
    let until = Instant::now() + Duration::from_secs(10);
    let mut fresh = loop {
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("a new WebSocket through nginx");
        if echo(&mut socket, "new").await.as_deref() == Some("green: new") {
            break socket;
        }
        assert!(
            Instant::now() < until,
            "nginx never sent new WebSockets to green"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let switch_took = switched.elapsed();
    // ...while every session open at the switch goes on with blue, through the old worker,
    // and the router counts them (the drain's report).
    let mut answered = 0;
    let talking = Instant::now();
    while talking.elapsed() < Duration::from_secs(2) {
        for (n, socket) in sessions.iter_mut().enumerate() {
            assert_eq!(
                echo(socket, "after").await.as_deref(),
                Some("blue: after"),
                "session {n} after the switch"
            );
            answered += 1;
        }
    }
    assert_eq!(
        router.open_connections(&ws_blue).await.expect("count"),
        Some(SESSIONS as u64)
    );
    assert_eq!(
        router.open_connections(&ws_green).await.expect("count"),
        Some(1)
    );

    // Blue stops (its server and every session it holds): the sessions end.
    let stopped = Instant::now();
    blue_task.abort();
    let mut ended = Vec::new();
    for (n, socket) in sessions.iter_mut().enumerate() {
        use futures_util::StreamExt;
        // The next thing a session sees is its end: a close, an error, or the stream's end.
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Err(_) => panic!("session {n} still open 5 s after blue stopped"),
            Ok(None) | Ok(Some(Err(_))) => {}
            Ok(Some(Ok(message))) if message.is_close() => {}
            Ok(Some(Ok(message))) => panic!("session {n} got {message:?} after blue stopped"),
        }
        ended.push(stopped.elapsed());
    }
    let last_ended = ended.iter().max().copied().unwrap_or_default();
    wait_open(&router, &ws_blue, 0).await;
    assert_eq!(
        echo(&mut fresh, "still").await.as_deref(),
        Some("green: still")
    );
    green_task.abort();
    eprintln!(
        "WebSockets through nginx: {SESSIONS} sessions open on blue at the switch (reload until a new WebSocket reached green: {switch_took:?}); all {SESSIONS} went on answering from blue through nginx's old worker ({answered} echoes in the next 2 s), counted open by the router ({SESSIONS}); blue stopped: every session ended within {last_ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_sending_its_body_has_no_connection_to_the_old_color_yet() {
    // Why nginx's count must not end a drain early: nginx reads a request's whole body before
    // it connects to the upstream, so a request on its way to blue has no connection yet.
    let blue = ColorServer::start(Color::Blue, "v1").await.expect("blue");
    let green = ColorServer::start(Color::Green, "v2").await.expect("green");
    let nginx = NginxHarness::start("bg-test-body", &blue.endpoint())
        .await
        .unwrap_or_else(|e| panic!("nginx did not start (is nginx installed?): {e}"));
    let router = NginxRouter::new(nginx.router_config()).expect("router");

    let stream = TcpStream::connect(("127.0.0.1", nginx.port()))
        .await
        .expect("connect to nginx");
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(b"POST /upload HTTP/1.1\r\nHost: body\r\nContent-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the head");
    // nginx says `100 Continue` when it begins reading the body: the request is in this
    // (soon old) worker from here on.
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .expect("an answer to Expect within 5 s")
        .expect("read");
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    reader
        .get_mut()
        .write_all(b"hello")
        .await
        .expect("half the body");

    let receipt = router.route_to(&green.endpoint()).await.expect("switch");
    let instance = blue_green_core::Instance::new(Color::Green, "v2", "green", green.endpoint());
    router.verify(&instance, &receipt).await.expect("verified");
    assert_eq!(
        router
            .open_connections(&blue.endpoint())
            .await
            .expect("count"),
        Some(0),
        "nginx has no connection to blue while it reads the body"
    );

    reader
        .get_mut()
        .write_all(b"world")
        .await
        .expect("the rest");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    // After the blank line that ended the `100 Continue`.
    let answer = answer.trim_start();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("blue v1\nhelloworld"),
        "the request went to blue after the count said 0: {answer}"
    );
}
