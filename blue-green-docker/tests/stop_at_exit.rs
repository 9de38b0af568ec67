//! `DockerRuntime::stop` ends at the container's `die` event, without waiting for Docker to
//! answer the stop call (which it does only after taking the container's network and mounts
//! down), and waits for that answer when no such event comes. Against a fake daemon on a Unix
//! socket, so that the stop call's answer can be held back; its own test binary, because it
//! sets DOCKER_HOST for the process.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::{AppName, Color, Endpoint, Instance, Runtime};
use blue_green_docker::DockerRuntime;
use bytes::Bytes;
use common::demo_config;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, Notify};

const ID: &str = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// What the fake daemon does and saw.
#[derive(Default)]
struct Daemon {
    /// The container whose `die` it reports once the stop call has arrived.
    dies: Mutex<Option<String>>,
    /// It answers the stop call this long after receiving it; never when `None`.
    stop_answer: Mutex<Option<Duration>>,
    stop_received: Notify,
    stop_answered: AtomicBool,
    events_query: Mutex<Option<String>>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(text: &str) -> Body {
    Full::new(Bytes::from(text.to_string())).boxed()
}

async fn serve(daemon: Arc<Daemon>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let json = |text: &str| {
        Response::builder()
            .header("content-type", "application/json")
            .header("api-version", "1.41")
            .body(full(text))
            .unwrap()
    };
    if path.ends_with("/version") {
        return json(r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24"}"#);
    }
    if path.ends_with("/_ping") {
        return json("OK");
    }
    if path.ends_with("/events") {
        *daemon.events_query.lock().unwrap() = req.uri().query().map(str::to_string);
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let events = daemon.clone();
        tokio::spawn(async move {
            events.stop_received.notified().await;
            let dies = events.dies.lock().unwrap().clone();
            if let Some(id) = dies {
                let event = format!(
                    "{{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{{\"ID\":\"{id}\",\"Attributes\":{{\"exitCode\":\"0\"}}}},\"time\":1,\"timeNano\":1}}\n"
                );
                let _ = tx.send(Ok(Frame::data(Bytes::from(event)))).await;
            }
            // Held open, as Docker holds an event stream.
            tx.closed().await;
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap();
    }
    if path.ends_with(&format!("/containers/{ID}/stop")) {
        daemon.stop_received.notify_one();
        let answer = *daemon.stop_answer.lock().unwrap();
        match answer {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending::<()>().await,
        }
        daemon.stop_answered.store(true, Ordering::SeqCst);
        return Response::builder().status(204).body(full("")).unwrap();
    }
    Response::builder()
        .status(404)
        .body(full(r#"{"message":"not in this fake"}"#))
        .unwrap()
}

/// Starts the fake daemon on a socket in `dir` and points DOCKER_HOST at it.
fn start(dir: &std::path::Path) -> Arc<Daemon> {
    let socket = dir.join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    std::env::set_var("DOCKER_HOST", format!("unix://{}", socket.display()));
    let daemon = Arc::new(Daemon::default());
    let shared = daemon.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let daemon = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let daemon = daemon.clone();
                    async move { Ok::<_, Infallible>(serve(daemon, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    daemon
}

fn instance() -> Instance {
    Instance::new(Color::Blue, "v1", ID, Endpoint::new("127.0.0.1", 8080))
}

/// Stops the fake's container, which must end within 20 s (`ended` says how) and succeed.
async fn stop_blue(runtime: &DockerRuntime, ended: &str) {
    tokio::time::timeout(
        Duration::from_secs(20),
        runtime.stop(&instance(), Duration::from_secs(1)),
    )
    .await
    .expect(ended)
    .expect("the stop succeeded");
}

#[tokio::test]
async fn a_stop_ends_at_the_die_event_and_waits_for_the_call_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let runtime = DockerRuntime::connect(AppName::new("web").unwrap(), demo_config("web:1", &[]))
        .await
        .expect("connect to the fake daemon");

    // The daemon reports the container's death and never answers the stop call.
    *daemon.dies.lock().unwrap() = Some(ID.to_string());
    *daemon.stop_answer.lock().unwrap() = None;
    stop_blue(
        &runtime,
        "the stop ended at the die event, without the call's answer",
    )
    .await;
    assert!(!daemon.stop_answered.load(Ordering::SeqCst));
    let query = daemon
        .events_query
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_default();
    assert!(
        query.contains(ID) && query.contains("die"),
        "the events asked for are this container's deaths: {query}"
    );

    // Another container's death does not end it: the stop waits for the call's answer.
    *daemon.dies.lock().unwrap() = Some(format!("{}0", &ID[..ID.len() - 1]));
    *daemon.stop_answer.lock().unwrap() = Some(Duration::from_millis(300));
    daemon.stop_answered.store(false, Ordering::SeqCst);
    stop_blue(&runtime, "the stop ended with the call's answer").await;
    assert!(
        daemon.stop_answered.load(Ordering::SeqCst),
        "without this container's die event, the stop waited for Docker's answer"
    );
}
