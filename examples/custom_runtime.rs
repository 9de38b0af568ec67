//! Embedding the engine with your own components, no Docker needed.
//!
//! An embedder's deploy tool brings its own [`Runtime`]; here it runs each release as a tiny
//! in-process HTTP server on a free loopback port (one per color), answering `GET /health` with
//! `"<color> <release>"`. Beside it: a small HTTP [`HealthProbe`], and a [`Router`] that is a
//! real TCP proxy on loopback, which knows where it sends traffic and how many connections are
//! still open to each endpoint (so the engine drains exactly). State, history and the lock go
//! to a [`FileStore`] in a temporary directory.
//!
//! While a client sends requests through the proxy without pause, the example deploys v1 and
//! v2, tries a v3 that crashes at boot (the engine gives up at once and v2 keeps serving), rolls
//! back to v1, and prints every step, the status, the history and the failed request count.
//!
//! Run it with `cargo run -p blue-green-core --example custom_runtime`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::{
    AppName, CancellationToken, Color, ComponentError, Endpoint, Engine, EngineConfig, Event,
    FileStore, Health, HealthProbe, Instance, InstanceState, KeepPrevious, Release, RouteReceipt,
    Router, Runtime,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// --- the runtime: one in-process HTTP server per color --------------------------------------

struct Server {
    instance: Instance,
    task: Option<JoinHandle<()>>,
    exit_code: Option<i64>,
    log: Vec<String>,
}

/// Runs releases as in-process HTTP servers. A release whose id ends in `-broken` "crashes at
/// boot": it exits with code 1 right after it starts.
#[derive(Default)]
struct LocalRuntime {
    servers: Mutex<HashMap<String, Server>>,
}

impl LocalRuntime {
    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Server>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn serve(
        color: Color,
        release: &str,
        port: u16,
    ) -> Result<(JoinHandle<()>, u16), ComponentError> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
            ComponentError::failed(format!("cannot listen on 127.0.0.1:{port}: {e}"))
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| ComponentError::failed(e.to_string()))?
            .port();
        let body = format!("{color} {release}");
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    // One request per connection is all this toy server speaks.
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        Ok((task, port))
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    async fn start(&self, color: Color, release: &Release) -> Result<Instance, ComponentError> {
        let (task, port) = Self::serve(color, &release.id, 0).await?;
        let instance = Instance::new(
            color,
            release.id.to_string(),
            format!("local-{color}-{port}"),
            Endpoint::new("127.0.0.1", port),
        );
        let mut log = vec![format!("{} listening on {}", release.id, instance.endpoint)];
        let (task, exit_code) = if release.id.ends_with("-broken") {
            task.abort();
            log.push("panic: DATABASE_URL is not set".into());
            (None, Some(1))
        } else {
            (Some(task), None)
        };
        self.servers().insert(
            instance.id.clone(),
            Server {
                instance: instance.clone(),
                task,
                exit_code,
                log,
            },
        );
        Ok(instance)
    }

    async fn state(&self, instance: &Instance) -> Result<InstanceState, ComponentError> {
        Ok(match self.servers().get(&instance.id) {
            None => InstanceState::Missing,
            Some(s) if s.task.is_some() => InstanceState::Running,
            Some(s) => InstanceState::Exited {
                code: s.exit_code,
                reason: None,
            },
        })
    }

    async fn stop(&self, instance: &Instance, _grace: Duration) -> Result<(), ComponentError> {
        if let Some(s) = self.servers().get_mut(&instance.id) {
            if let Some(task) = s.task.take() {
                task.abort();
                s.exit_code = Some(0);
                s.log.push("stopped".into());
            }
        }
        Ok(())
    }

    async fn restart(&self, instance: &Instance) -> Result<Instance, ComponentError> {
        let (task, _) =
            Self::serve(instance.color, &instance.release, instance.endpoint.port).await?;
        let mut servers = self.servers();
        let s = servers.get_mut(&instance.id).ok_or_else(|| {
            ComponentError::failed(format!("no instance {} to restart", instance.id))
        })?;
        s.task = Some(task);
        s.exit_code = None;
        s.log.push("restarted".into());
        Ok(s.instance.clone())
    }

    async fn remove(&self, instance: &Instance) -> Result<(), ComponentError> {
        if let Some(mut s) = self.servers().remove(&instance.id) {
            if let Some(task) = s.task.take() {
                task.abort();
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, ComponentError> {
        Ok(self
            .servers()
            .values()
            .map(|s| s.instance.clone())
            .collect())
    }

    async fn logs(&self, instance: &Instance, lines: usize) -> Result<Vec<String>, ComponentError> {
        let servers = self.servers();
        let log = servers
            .get(&instance.id)
            .map(|s| s.log.clone())
            .unwrap_or_default();
        Ok(log[log.len().saturating_sub(lines)..].to_vec())
    }
}

// --- a probe: GET /health, expect 200 and the instance's color ------------------------------

async fn get_health(endpoint: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /health HTTP/1.1\r\nhost: example\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("unexpected answer: {reply:?}")),
    }
}

struct HealthEndpointProbe;

#[async_trait]
impl HealthProbe for HealthEndpointProbe {
    async fn check(&self, instance: &Instance) -> Health {
        match get_health(&instance.endpoint.to_string()).await {
            Ok(body) if body.starts_with(instance.color.as_str()) => Health::Healthy,
            Ok(body) => Health::Unhealthy(format!("answered {body:?}")),
            Err(e) => Health::Unhealthy(e),
        }
    }
}

// --- a router: a TCP proxy on loopback ------------------------------------------------------

/// Forwards every connection on its own port to the current target, and counts the open
/// connections per endpoint for the drain.
struct ProxyRouter {
    address: String,
    target: Arc<Mutex<Option<Endpoint>>>,
    open: Arc<Mutex<HashMap<Endpoint, u64>>>,
}

impl ProxyRouter {
    async fn start() -> std::io::Result<(Self, JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let target: Arc<Mutex<Option<Endpoint>>> = Arc::default();
        let open: Arc<Mutex<HashMap<Endpoint, u64>>> = Arc::default();
        let (t, o) = (target.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(to) = t.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                    continue; // routes nowhere yet: drop the connection
                };
                let open = o.clone();
                *open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(to.clone())
                    .or_default() += 1;
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(to.to_string()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    if let Some(n) = open.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&to) {
                        *n -= 1;
                    }
                });
            }
        });
        Ok((
            ProxyRouter {
                address,
                target,
                open,
            },
            task,
        ))
    }
}

#[async_trait]
impl Router for ProxyRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        Ok(self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(endpoint.clone());
        Ok(RouteReceipt::new())
    }

    async fn verify(&self, instance: &Instance, _: &RouteReceipt) -> Result<(), ComponentError> {
        let body = get_health(&self.address).await.map_err(|e| {
            ComponentError::failed(format!("the proxy at {} did not answer: {e}", self.address))
        })?;
        if body == format!("{} {}", instance.color, instance.release) {
            Ok(())
        } else {
            Err(ComponentError::failed(format!(
                "the proxy at {} answered {body:?}, not {}",
                self.address, instance.color
            )))
        }
    }

    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Some(open.get(endpoint).copied().unwrap_or(0)))
    }
}

// --- the embedder's tool ----------------------------------------------------------------------

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
        Event::StepFailed { step, error, .. } => {
            println!("   {:<9} FAILED: {error}", step.as_str())
        }
        Event::ProbeAttempt {
            attempt,
            healthy: false,
            reason,
            ..
        } => {
            println!(
                "   probe #{attempt}: {}",
                reason.as_deref().unwrap_or("unhealthy")
            )
        }
        Event::Routed { color, endpoint } => println!("   routed to {color} at {endpoint}"),
        Event::Warning { message } => println!("   warning: {message}"),
        Event::CommandFinished { ok, live, .. } => println!(
            "   -> {} (live: {})",
            if *ok { "ok" } else { "failed" },
            live.map_or("none", |c| c.as_str())
        ),
        _ => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state_dir = tempfile::tempdir()?;
    let (router, proxy_task) = ProxyRouter::start().await?;
    let proxy = router.address.clone();
    println!("proxy on {proxy}, state in {}", state_dir.path().display());

    let mut config = EngineConfig::new(AppName::new("example")?);
    config.readiness.interval = Duration::from_millis(100);
    config.readiness.deadline = Duration::from_secs(5);
    config.switch.drain = Duration::from_secs(2);
    config.switch.stop_timeout = Duration::from_secs(2);
    config.switch.keep_previous = KeepPrevious::Stopped;
    let engine = Engine::new(
        config,
        LocalRuntime::default(),
        HealthEndpointProbe,
        router,
        FileStore::new(state_dir.path()),
    )
    .with_observer(Arc::new(print_event));

    // A client that never pauses, counting what fails once something serves.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let serving = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, sent, failed, serving) =
            (stop.clone(), sent.clone(), failed.clone(), serving.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if serving.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if get_health(&proxy).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let go = CancellationToken::new();
    engine.deploy(Release::new("v1")?, &go).await?;
    serving.store(true, Ordering::Relaxed);
    engine.deploy(Release::new("v2")?, &go).await?;
    match engine.deploy(Release::new("v3-broken")?, &go).await {
        Ok(_) => return Err("the broken release should not have gone live".into()),
        Err(e) => println!("   (as expected: {e}; exit code {})", e.exit_class().code()),
    }
    let back = engine.rollback(&go).await?;
    println!(
        "   rolled back to {} {}",
        back.live.color, back.live.release.id
    );

    stop.store(true, Ordering::Relaxed);
    client.await?;
    proxy_task.abort();

    let status = engine.status().await?;
    println!(
        "== status: live {:?}, router at {:?}",
        status.live, status.router_target
    );
    for i in &status.instances {
        println!(
            "   {} {} {}{}",
            i.instance.color,
            i.instance.release,
            i.state,
            if i.live { " (live)" } else { "" }
        );
    }
    println!("== history");
    for r in engine.history().await? {
        let total: u64 = r.steps.iter().map(|s| s.ms).sum();
        println!(
            "   {:<8} {:<10} {:?} -> {:?}: {:?} in {total} ms",
            r.command.as_str(),
            r.release.unwrap_or_default(),
            r.from,
            r.to,
            r.outcome
        );
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("== {sent} requests through the proxy during the deploys, {failed} failed");
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}
