//! Test upstreams and clients for the proxy tests: small hyper servers on 127.0.0.1 that say
//! who they are, echo bodies, stream server-sent events and echo upgraded connections.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blue_green_core::Endpoint;
use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

type Body = BoxBody<Bytes, Infallible>;

/// A test upstream. Paths:
/// - `GET /` (any other GET): `200`, body `{name}\n`;
/// - `GET /slow?ms=N`: the same after N ms;
/// - `GET /status?code=N`: status N (a valid one, else 400), body `{name}\n`;
/// - `POST /echo`: `200`, body `{name}\n` followed by the request body;
/// - `GET /headers`: `{name}\n` then the request's headers, `name: value` a line;
/// - `GET /sse`: an event stream, `data: {name} N\n\n` every 50 ms, without end;
/// - `GET /stall`: `200`, the first line `{name}\n` of a body that then sends nothing for 60 s;
/// - `GET /ws` with `Upgrade: websocket`: `101`, then every byte is echoed back.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let who = Arc::new(name.to_string());
        let task = tokio::spawn({
            let served = served.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let who = who.clone();
                    let served = served.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            served.fetch_add(1, Ordering::Relaxed);
                            answer(who.clone(), req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await;
                    });
                }
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            served,
            task,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new("127.0.0.1", self.addr.port())
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

async fn answer(
    who: Arc<String>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if req.headers().contains_key(UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut res = Response::new(full(Bytes::new()));
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        res.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return Ok(res);
    }
    let res = match (req.method().as_str(), path.as_str()) {
        ("POST", _) => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut out = format!("{who}\n").into_bytes();
            out.extend_from_slice(&body);
            Response::new(full(out))
        }
        (_, "/status") => {
            let code = query
                .strip_prefix("code=")
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            let mut res = Response::new(full(format!("{who}\n")));
            *res.status_mut() = code;
            res
        }
        (_, "/slow") => {
            let ms: u64 = query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(300);
            tokio::time::sleep(Duration::from_millis(ms.min(30_000))).await;
            Response::new(full(format!("{who}\n")))
        }
        (_, "/headers") => {
            let mut out = format!("{who}\n");
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(full(out))
        }
        (_, "/stall") => {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                if tx.send_data(Bytes::from(format!("{who}\n"))).await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
            Response::new(body.boxed())
        }
        (_, "/sse") => {
            let mut res = Response::new(event_stream(who.clone()));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            res
        }
        _ => Response::new(full(format!("{who}\n"))),
    };
    Ok(res)
}

/// An endless event stream: one event every 50 ms, until the reader goes away.
fn event_stream(who: Arc<String>) -> Body {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            if tx
                .send_data(Bytes::from(format!("data: {who} {n}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    body.boxed()
}

/// A pooled keep-alive client (HTTP/1.1).
pub fn pooled_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// One request on a fresh connection; returns status and body.
pub async fn fresh_get(addr: SocketAddr, path: &str, host: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An upgraded (WebSocket-style) session through the proxy: after `101`, bytes are echoed.
pub struct Session {
    pub io: TokioIo<hyper::upgrade::Upgraded>,
}

impl Session {
    pub async fn open(addr: SocketAddr, host: &str) -> Result<Session, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        let req = Request::get("/ws")
            .header(HOST, host)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(format!("expected 101, got {}", res.status()));
        }
        let up = hyper::upgrade::on(res).await.map_err(|e| e.to_string())?;
        Ok(Session {
            io: TokioIo::new(up),
        })
    }

    /// Sends `msg` and reads it back. `Err` when the session was closed.
    pub async fn echo(&mut self, msg: &[u8]) -> Result<(), String> {
        self.io.write_all(msg).await.map_err(|e| e.to_string())?;
        let mut back = vec![0u8; msg.len()];
        self.io
            .read_exact(&mut back)
            .await
            .map_err(|e| e.to_string())?;
        if back != msg {
            return Err(format!(
                "echo mismatch: {:?}",
                String::from_utf8_lossy(&back)
            ));
        }
        Ok(())
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Sends one control request with any method, path and body; returns status and body.
pub async fn control_raw(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "proxy")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
