//! Running blue-green's own proxy inside your program, with no socket: the engine switches and
//! drains through [`Proxy::router`], an in-process [`Router`].
//!
//! Each release runs as a tiny in-process HTTP server (one per color) answering
//! `"<color> <release>"`, 250 ms late on `/slow`. While clients send requests through the proxy
//! without pause (quick ones and slow ones), the example deploys v1, v2 and v3 and prints every
//! step; each drain ends the moment the old color's last slow request is done (`drained … left 0`),
//! not after a fixed wait. At the end it prints the requests sent and failed (0).
//!
//! Run it with `cargo run -p blue-green-proxy --example embedded_proxy`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::{
    AppName, CancellationToken, Color, ComponentError, Endpoint, Engine, EngineConfig, Event,
    FileStore, Instance, InstanceState, KeepPrevious, Release, Runtime, TcpProbe,
};
use blue_green_proxy::{Proxy, ProxyConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Runs each release as an HTTP server task on a free loopback port.
#[derive(Default)]
struct TaskRuntime {
    servers: Mutex<HashMap<String, (Instance, JoinHandle<()>)>>,
}

impl TaskRuntime {
    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instance, JoinHandle<()>)>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn serve(listener: TcpListener, who: Arc<String>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let who = who.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let who = who.clone();
                async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{who}\n")))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[async_trait]
impl Runtime for TaskRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ComponentError::failed(format!("cannot listen: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| ComponentError::failed(e.to_string()))?
            .port();
        let instance = Instance::new(
            color,
            release.id.to_string(),
            format!("{color}-{}", release.id),
            Endpoint::new("127.0.0.1", port),
        );
        let task = tokio::spawn(serve(listener, Arc::new(format!("{color} {}", release.id))));
        self.servers()
            .insert(instance.id.clone(), (instance.clone(), task));
        Ok(instance)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        Ok(match self.servers().get(&instance.id) {
            Some((_, task)) if !task.is_finished() => InstanceState::Running,
            Some(_) => InstanceState::Exited {
                code: Some(0),
                reason: None,
            },
            None => InstanceState::Missing,
        })
    }

    async fn stop(&self, instance: &Instance, _grace: Duration) -> Result<(), ComponentError> {
        if let Some((_, task)) = self.servers().get(&instance.id) {
            task.abort();
        }
        Ok(())
    }

    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        self.remove(instance).await?;
        self.start(instance.color, &Release::new(instance.release.clone())?)
            .await
    }

    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        if let Some((_, task)) = self.servers().remove(&instance.id) {
            task.abort();
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
        Ok(self.servers().values().map(|(i, _)| i.clone()).collect())
    }

    async fn logs(&self, _: &Instance, _: usize) -> Result<Vec<String>, ComponentError> {
        Ok(Vec::new())
    }
}

fn print_event(event: &Event) {
    match event {
        Event::CommandStarted {
            command, release, ..
        } => {
            println!("== {command} {}", release.as_deref().unwrap_or(""))
        }
        Event::StepFinished {
            step,
            color,
            elapsed_ms,
        } => println!(
            "   {:<9} {:<5} {elapsed_ms} ms",
            step.as_str(),
            color.map_or("", |c| c.as_str())
        ),
        Event::Routed { color, endpoint } => println!("   routed to {color} at {endpoint}"),
        Event::Drained {
            endpoint,
            elapsed_ms,
            left,
            cut,
            ..
        } => println!(
            "   drained {endpoint} in {elapsed_ms} ms, left {}, cut {}",
            left.map_or("?".into(), |n| n.to_string()),
            cut.map_or("-".into(), |n| n.to_string())
        ),
        _ => {}
    }
}

/// One request through the proxy on a fresh connection; `true` when it got `200`.
async fn get(addr: std::net::SocketAddr, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let req = match Request::get(path)
        .header("host", "example.local")
        .body(Empty::<Bytes>::new())
    {
        Ok(req) => req,
        Err(_) => return false,
    };
    match sender.send_request(req).await {
        Ok(res) => res.status() == 200 && res.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state_dir = tempfile::tempdir()?;
    // The proxy, in this process: no control socket, routes kept in a state file.
    let proxy = Proxy::start(
        ProxyConfig::new(["127.0.0.1:0".parse()?])
            .with_state_file(state_dir.path().join("proxy.json")),
    )
    .await?;
    let addr = proxy.local_addrs()[0];
    println!("proxy on {addr}");

    let mut config = EngineConfig::new(AppName::new("example")?);
    config.readiness.interval = Duration::from_millis(50);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(5);
    config.switch.keep_previous = KeepPrevious::Removed;
    let engine = Engine::new(
        config,
        TaskRuntime::default(),
        TcpProbe::new(Duration::from_secs(1)),
        proxy.router("example"),
        FileStore::new(state_dir.path()),
    )
    .with_observer(Arc::new(print_event));

    let go = CancellationToken::new();
    engine.deploy(Release::new("v1")?, &go).await?;

    // Clients that never pause: quick requests and 250 ms ones, all counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = ["/", "/slow", "/slow"]
        .into_iter()
        .map(|path| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !get(addr, path).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    engine.deploy(Release::new("v2")?, &go).await?;
    engine.deploy(Release::new("v3")?, &go).await?;

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let status = proxy.handle().status();
    println!(
        "requests through the proxy: {} sent, {} failed; app example -> {}",
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        status.apps[0].target.as_deref().unwrap_or("nothing")
    );
    proxy.shutdown().await;
    if failed.load(Ordering::Relaxed) > 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}
