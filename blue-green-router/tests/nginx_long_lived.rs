//! A server-sent-events stream open through a real nginx at a switch: what happens to it.
//! Measured, and printed with `--nocapture`: the stream goes on from the old color through
//! nginx's old worker after the switch, and ends when the old color stops.

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
