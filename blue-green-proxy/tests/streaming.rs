//! Bodies stream through the proxy with flat memory: a 1 GiB upload, generated as it is sent
//! (never held in a buffer), reaches an upstream that only counts its bytes, while the
//! proxy's resident memory stays flat; and an event stream's first event arrives while the
//! upstream still holds the stream open.
//!
//! The proxy runs in a child process (this test binary again, entered at
//! `child_process_entry`), so that its memory is measured apart from the client's and the
//! upstream's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use blue_green_core::Endpoint;
use blue_green_proxy::{Expect, Proxy, ProxyConfig, TargetChange};
use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The child's upstream, `host:port`.
const CHILD_TARGET: &str = "BG_PROXY_TEST_STREAM_TARGET";
/// Bytes uploaded.
const UPLOAD: u64 = 1 << 30;
/// Most the proxy's peak resident memory may grow over the upload.
const MAX_GROWTH_KIB: u64 = 64 * 1024;
/// One chunk of the generated upload; the same static bytes every time.
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Not a test of its own: the entry point of the child process that runs the proxy. Without
/// its variable it does nothing.
#[tokio::test]
async fn child_process_entry() {
    let Ok(target) = std::env::var(CHILD_TARGET) else {
        return;
    };
    let proxy = Proxy::start(ProxyConfig::new(["127.0.0.1:0".parse().unwrap()]))
        .await
        .unwrap();
    proxy
        .handle()
        .set_target(
            "web",
            TargetChange {
                target: target.parse::<Endpoint>().unwrap(),
                expect: Expect::Anything,
                hosts: None,
            },
        )
        .await
        .unwrap();
    println!("CHILD-LISTENS: {}", proxy.local_addrs()[0]);
    // The parent kills it when done; this only bounds a forgotten child.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// An upload body made as it is sent: `left` bytes in chunks of the same static buffer.
struct Generated {
    left: u64,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..n as usize],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// The upstream: `POST /count` reads the body frame by frame and answers how many bytes it
/// got; `GET /sse` sends one event, holds the stream open until `release`, then sends a
/// second and ends (setting `ended`).
struct Upstream {
    addr: SocketAddr,
    release: Arc<Notify>,
    ended: Arc<AtomicBool>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let ended = Arc::new(AtomicBool::new(false));
        let (r, e) = (release.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, e) = (r.clone(), e.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, r.clone(), e.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            release,
            ended,
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    release: Arc<Notify>,
    ended: Arc<AtomicBool>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    if req.uri().path() == "/sse" {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"data: 1\n\n")).await;
            let _ = tokio::time::timeout(Duration::from_secs(30), release.notified()).await;
            let _ = tx.send_data(Bytes::from_static(b"data: 2\n\n")).await;
            ended.store(true, Ordering::SeqCst);
        });
        let mut res = Response::new(body.boxed());
        res.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(res);
    }
    let mut body = req.into_body();
    let mut count = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => count += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    Ok(Response::new(
        Full::new(Bytes::from(count.to_string())).boxed(),
    ))
}

/// A process's resident memory figure (`VmRSS:` or `VmHWM:`), KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends `req` on a new connection to `addr`.
async fn send<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

#[tokio::test]
async fn a_1_gib_upload_streams_with_flat_memory_and_events_pass_unbuffered() {
    let upstream = Upstream::start().await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_TARGET, upstream.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints the test's name on the same line first.
            if let Some((_, addr)) = line.split_once("CHILD-LISTENS: ") {
                return addr.trim().parse().unwrap();
            }
        }
        panic!("the proxy child ended without listening");
    })
    .await
    .expect("the proxy child listens within 30s");

    // Warm up (the connection, the pool, the first buffers), then take the baseline.
    let warm = Request::post("/count")
        .header("host", "web")
        .body(Generated { left: 1 << 20 })
        .unwrap();
    let res = send(addr, warm).await;
    let counted = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(counted, (1u64 << 20).to_string());
    let before_rss = memory_kib(pid, "VmRSS:");
    let before_peak = memory_kib(pid, "VmHWM:");

    let upload = Request::post("/count")
        .header("host", "web")
        .body(Generated { left: UPLOAD })
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(300), async {
        let res = send(addr, upload).await;
        let status = res.status();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    })
    .await
    .expect("the 1 GiB upload went through within 300s");
    assert_eq!(res.0, 200);
    assert_eq!(
        res.1,
        UPLOAD.to_string(),
        "the upstream counted every byte sent"
    );
    let peak = memory_kib(pid, "VmHWM:");
    let growth = peak.saturating_sub(before_peak.max(before_rss));
    println!(
        "proxy memory: {before_rss} KiB resident before, peak {before_peak} KiB before and {peak} KiB after the 1 GiB upload (growth {growth} KiB)"
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "the proxy's peak resident memory grew by {growth} KiB over a 1 GiB upload (at most {MAX_GROWTH_KIB} KiB): the body was buffered"
    );

    // An event reaches the client while the upstream still holds its stream open.
    let res = send(
        addr,
        Request::get("/sse")
            .header("host", "web")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first event came through within 10s, before the stream ended")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"data: 1\n\n");
    assert!(
        !upstream.ended.load(Ordering::SeqCst),
        "the upstream's stream is still open"
    );
    upstream.release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the stream ended within 10s of its release")
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"data: 2\n\n");

    child.kill().await.unwrap();
}
