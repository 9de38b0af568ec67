//! [`ColorServer`]: a small HTTP/1.1 server on `127.0.0.1` that answers with its color and
//! release, so a test can tell which color a request reached.
//!
//! Every answer's body starts with `{color} {release}` (for example `blue v1`) and carries an
//! `X-Color` header. Paths:
//!
//! - any `GET` (for example `/health`): `200`, body `blue v1\n`;
//! - `GET /slow?ms=300`: the same, after 300 ms;
//! - `GET /status?code=503`: the same body with status 503;
//! - `GET /headers`: the same, followed by the request's headers, one `name: value` a line;
//! - `POST` (any path): `200`, body `blue v1\n` followed by the request body (an echo).
//!
//! Keep-alive is on. The server stops when dropped (open connections are cut).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use blue_green_core::Color;
//! use blue_green_testkit::color_server::ColorServer;
//!
//! let blue = ColorServer::start(Color::Blue, "v1").await?;
//! println!("blue answers at {}", blue.endpoint()); // 127.0.0.1:PORT
//! let instance = blue.instance(); // for probes and routers
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blue_green_core::{Color, Endpoint, Instance};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Longest `/slow` wait honoured, so a typo cannot hang a test.
const MAX_SLOW: Duration = Duration::from_secs(30);

/// A running color server; stops on drop.
#[derive(Debug)]
pub struct ColorServer {
    addr: SocketAddr,
    color: Color,
    release: String,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ColorServer {
    /// Starts a server for `color` and `release` on a free port of 127.0.0.1. Must be called
    /// inside a tokio runtime.
    pub async fn start(color: Color, release: impl Into<String>) -> io::Result<ColorServer> {
        let release = release.into();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let who = Arc::new(format!("{color} {release}\n"));
        let task = tokio::spawn(serve(listener, color, who, served.clone()));
        Ok(ColorServer {
            addr,
            color,
            release,
            served,
            task,
        })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint, for routers.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr.ip().to_string(), self.addr.port())
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Its color.
    pub fn color(&self) -> Color {
        self.color
    }

    /// Its release.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// An [`Instance`] for it (id `color-server-PORT`), for probes and routers.
    pub fn instance(&self) -> Instance {
        Instance::new(
            self.color,
            self.release.clone(),
            format!("color-server-{}", self.addr.port()),
            self.endpoint(),
        )
    }

    /// How many requests it has answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for ColorServer {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, color: Color, who: Arc<String>, served: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let who = who.clone();
        let served = served.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let who = who.clone();
                let served = served.clone();
                async move {
                    let response = answer(request, color, &who).await;
                    served.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(response)
                }
            });
            // A client that goes away mid-request is its own business.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>, color: Color, who: &str) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.parse::<u64>().ok())
    };
    let mut status = StatusCode::OK;
    let mut body = who.as_bytes().to_vec();
    if path == "/slow" {
        let wait = Duration::from_millis(param("ms").unwrap_or(300)).min(MAX_SLOW);
        tokio::time::sleep(wait).await;
    }
    if path == "/status" {
        status = param("code")
            .and_then(|code| u16::try_from(code).ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
    }
    if path == "/headers" {
        for (name, value) in request.headers() {
            body.extend_from_slice(name.as_str().as_bytes());
            body.extend_from_slice(b": ");
            body.extend_from_slice(value.as_bytes());
            body.push(b'\n');
        }
    }
    if request.method() == Method::POST {
        match request.into_body().collect().await {
            Ok(collected) => body.extend_from_slice(&collected.to_bytes()),
            Err(_) => status = StatusCode::BAD_REQUEST,
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert("x-color", HeaderValue::from_static(color.as_str()));
    response
}
