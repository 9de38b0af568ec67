//! The load: N clients sending a fixed mix of requests through nginx and recording every
//! answer, until told to stop.
//!
//! The mix is deterministic per client (a counter, not a random draw), so two runs of the same
//! length send the same kinds of requests: in every ten, one slow `GET /slow?ms=…`, one slow
//! `POST /slow?ms=…` with a body, three `POST /slow?ms=0` with a body and five `GET /health`.
//! Every other request goes over a kept-alive connection, the others over a fresh one.
//!
//! A kept-alive connection can be closed by nginx just as a client sends the next request on it
//! (a reload retires the old workers, which close their idle connections): the client sees the
//! connection closed, or reset, before any answer. No server has seen such a request, and
//! browsers and curl send it again once on a new connection; so do the kept-alive requests
//! here, counted as `retried` and failed only if the second try fails too. The rule is the test
//! kit's ([`blue_green_testkit::load::closed_before_answer`]), shared with its load loop.
//!
//! Slow POSTs matter: nginx passes a failed GET on to the next server by itself, but never a
//! POST that it has already sent, so a POST in flight when its server dies is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blue_green_testkit::load;
use serde::Serialize;

/// What the clients send and how fast.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the load balancer, for example `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Server-side delay of a slow request.
    pub slow: Duration,
    /// Bytes in each POST body.
    pub post_bytes: usize,
    /// Pause of each client between two requests.
    pub pause: Duration,
    /// Timeout of one request (a request that times out counts as failed).
    pub request_timeout: Duration,
}

/// The kind of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// `GET /health`.
    Get,
    /// `POST /slow?ms=0` with a body.
    Post,
    /// `GET /slow?ms=…`.
    SlowGet,
    /// `POST /slow?ms=…` with a body.
    SlowPost,
}

impl RequestKind {
    /// True for POSTs, slow or not.
    pub fn is_post(self) -> bool {
        matches!(self, RequestKind::Post | RequestKind::SlowPost)
    }

    /// True for slow requests, GET or POST.
    pub fn is_slow(self) -> bool {
        matches!(self, RequestKind::SlowGet | RequestKind::SlowPost)
    }
}

/// One request and what came back.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When it was sent, relative to the start of the load.
    pub sent_at: Duration,
    /// How long until the whole answer was read.
    pub latency: Duration,
    /// What was sent.
    pub kind: RequestKind,
    /// Whether it went over a kept-alive connection.
    pub keep_alive: bool,
    /// `Ok(status)` for an answer, `Err(reason)` for a transport error or timeout.
    pub outcome: Result<u16, String>,
    /// The kept-alive connection was closed before any answer, and the request was sent again
    /// on a new connection; `outcome` is the second try's.
    pub retried: bool,
}

impl Sample {
    /// True for a transport error, a timeout or a status outside 2xx.
    pub fn failed(&self) -> bool {
        !matches!(self.outcome, Ok(status) if (200..300).contains(&status))
    }
}

/// Load that is running; [`RunningLoad::stop`] ends it and hands back every sample.
pub struct RunningLoad {
    started: Instant,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl RunningLoad {
    /// Starts `config.clients` clients. Fails only if an HTTP client cannot be built.
    pub fn start(config: &LoadConfig) -> Result<RunningLoad, String> {
        let keep_alive = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(config.clients)
            .build()
            .map_err(|e| format!("could not build the load's HTTP client: {e}"))?;
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("could not build the load's HTTP client: {e}"))?;
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let body = "x".repeat(config.post_bytes);
        let clients = (0..config.clients)
            .map(|id| {
                let client = Client {
                    id,
                    keep_alive: keep_alive.clone(),
                    fresh: fresh.clone(),
                    config: config.clone(),
                    body: body.clone(),
                    started,
                    stop: stop.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Ok(RunningLoad {
            started,
            stop,
            clients,
        })
    }

    /// Time since the load started; samples' `sent_at` are on the same clock.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks every client to stop after its current request and collects all samples, sorted by
    /// the time they were sent.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut samples = Vec::new();
        for client in self.clients {
            match client.await {
                Ok(mut s) => samples.append(&mut s),
                // A client task cannot panic short of a bug; its samples are lost, say so.
                Err(e) => eprintln!("warning: a load client ended abnormally: {e}"),
            }
        }
        samples.sort_by_key(|s| s.sent_at);
        samples
    }
}

struct Client {
    id: usize,
    keep_alive: reqwest::Client,
    fresh: reqwest::Client,
    config: LoadConfig,
    body: String,
    started: Instant,
    stop: Arc<AtomicBool>,
}

impl Client {
    async fn run(self) -> Vec<Sample> {
        let mut samples = Vec::new();
        // Clients start at different points of the mix so that the kinds interleave.
        let mut n = self.id;
        while !self.stop.load(Ordering::SeqCst) {
            samples.push(self.one(n).await);
            n += 1;
            tokio::time::sleep(self.config.pause).await;
        }
        samples
    }

    async fn one(&self, n: usize) -> Sample {
        let kind = match n % 10 {
            0 => RequestKind::SlowGet,
            5 => RequestKind::SlowPost,
            1 | 4 | 7 => RequestKind::Post,
            _ => RequestKind::Get,
        };
        let keep_alive = n % 2 == 0;
        let client = if keep_alive {
            &self.keep_alive
        } else {
            &self.fresh
        };
        let sent = Instant::now();
        let sent_at = sent.duration_since(self.started);
        let mut outcome = self.send(client, kind).await;
        let mut retried = false;
        if keep_alive && matches!(&outcome, Err(failed) if failed.closed_before_answer) {
            retried = true;
            outcome = self.send(&self.fresh, kind).await;
        }
        let outcome = outcome.map_err(|failed| failed.reason);
        Sample {
            sent_at,
            latency: sent.elapsed(),
            kind,
            keep_alive,
            outcome,
            retried,
        }
    }

    async fn send(&self, client: &reqwest::Client, kind: RequestKind) -> Result<u16, Failed> {
        let base = &self.config.base_url;
        let slow_ms = self.config.slow.as_millis();
        let request = match kind {
            RequestKind::Get => client.get(format!("{base}/health")),
            RequestKind::Post => client
                .post(format!("{base}/slow?ms=0"))
                .body(self.body.clone()),
            RequestKind::SlowGet => client.get(format!("{base}/slow?ms={slow_ms}")),
            RequestKind::SlowPost => client
                .post(format!("{base}/slow?ms={slow_ms}"))
                .body(self.body.clone()),
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // The answer counts only once its body has arrived in full.
                match response.bytes().await {
                    Ok(_) => Ok(status),
                    Err(e) => Err(Failed {
                        reason: load::describe(&e),
                        closed_before_answer: false,
                    }),
                }
            }
            Err(e) => Err(Failed {
                reason: load::describe(&e),
                closed_before_answer: load::closed_before_answer(&e),
            }),
        }
    }
}

/// A request that got no answer.
struct Failed {
    /// The error and its causes.
    reason: String,
    /// Closed or reset before any answer: sent again once if it went over a kept-alive
    /// connection.
    closed_before_answer: bool,
}
