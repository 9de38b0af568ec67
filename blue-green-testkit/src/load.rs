//! [`Load`]: steady HTTP traffic through a URL (usually nginx) while a test switches colors,
//! counting every request: answered, failed (and why), and which color answered.
//!
//! Half the clients keep their connections alive between requests, the other half open a new
//! connection for every request, so both ways a real client talks are covered. Each client
//! sends, in turn, plain `GET`s, a `POST` with a body now and then, and a slow `GET` now and
//! then. A request fails when it gets no answer (connect error, reset, timeout) or a status
//! outside 2xx. The loop ends at [`Load::stop`], when dropped, or when its time or request
//! budget runs out.
//!
//! A kept-alive connection can be closed by the server just as the client sends the next
//! request on it (nginx closes its idle connections when a reload retires a worker). Browsers
//! and curl then send the request again once on a new connection, and so do the keep-alive
//! clients here: such a request counts in [`LoadReport::retried`], and as failed only if the
//! second try fails too. Clients that open a new connection per request never retry.
//!
//! ```no_run
//! # async fn demo(url: String) {
//! use blue_green_testkit::load::{Load, LoadConfig};
//!
//! let load = Load::start(LoadConfig::new(url));
//! // ... switch colors ...
//! let report = load.stop().await;
//! assert_eq!(report.failed, 0, "{report}");
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How many failure examples a report keeps.
const SAMPLES: usize = 10;

/// What traffic to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL, for example `http://127.0.0.1:8080`; the paths below are appended.
    pub base_url: String,
    /// Concurrent clients (at least 1). Even-numbered ones keep connections alive, odd-numbered
    /// ones open a new connection for each request.
    pub clients: usize,
    /// Path of the plain `GET`s.
    pub get_path: String,
    /// Path of the `POST`s, or `None` for no `POST`s.
    pub post_path: Option<String>,
    /// Every how many requests a client sends a `POST` (0: never).
    pub post_every: u32,
    /// Path of the slow `GET`s, for example `/slow?ms=300`, or `None` for none.
    pub slow_path: Option<String>,
    /// Every how many requests a client sends a slow `GET` (0: never).
    pub slow_every: u32,
    /// Pause between two requests of one client.
    pub pause: Duration,
    /// A request without an answer after this long fails as a timeout.
    pub request_timeout: Duration,
    /// The loop stops by itself after this long.
    pub max_duration: Duration,
    /// The loop stops by itself after this many requests in all.
    pub max_requests: u64,
}

impl LoadConfig {
    /// Four clients on `base_url`: `GET /health`, every 5th request a `POST /echo` with a
    /// small body, every 7th a `GET /slow?ms=200`, 5 ms apart; 10 s request timeout; at most
    /// 10 minutes and 10 million requests.
    pub fn new(base_url: impl Into<String>) -> Self {
        LoadConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            clients: 4,
            get_path: "/health".into(),
            post_path: Some("/echo".into()),
            post_every: 5,
            slow_path: Some("/slow?ms=200".into()),
            slow_every: 7,
            pause: Duration::from_millis(5),
            request_timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(600),
            max_requests: 10_000_000,
        }
    }
}

/// The counts so far (or at the end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent and finished (answered or failed).
    pub total: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Failures by kind: `status 502`, `connect`, `timeout`, `closed`, `body`, `other`.
    pub errors: BTreeMap<String, u64>,
    /// Answered requests by the color their body names (`blue`, `green`, or `other`).
    pub by_color: BTreeMap<String, u64>,
    /// Requests sent by the clients that keep their connections alive.
    pub keep_alive: u64,
    /// Requests that opened a new connection each.
    pub new_connection: u64,
    /// Requests of keep-alive clients whose connection was closed before any answer, and
    /// that were sent again once on a new connection (counted once in `total`).
    pub retried: u64,
    /// Up to 10 failures, described in full, for the test's message.
    pub samples: Vec<String>,
    /// Up to 10 retried requests, with the error of their first try.
    pub retry_samples: Vec<String>,
    /// How long the loop ran.
    pub elapsed: Duration,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1?} ({} kept-alive, {} new connections): {} ok, {} failed, {} retried after a closed keep-alive connection; by color {:?}",
            self.total,
            self.elapsed,
            self.keep_alive,
            self.new_connection,
            self.ok,
            self.failed,
            self.retried,
            self.by_color
        )?;
        if !self.errors.is_empty() {
            write!(
                f,
                "; errors {:?}; examples: {:?}",
                self.errors, self.samples
            )?;
        }
        Ok(())
    }
}

/// A running load loop. Stops on [`Load::stop`] or drop.
#[derive(Debug)]
pub struct Load {
    counts: Arc<Mutex<LoadReport>>,
    started: Instant,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts the clients. Must be called inside a tokio runtime.
    pub fn start(config: LoadConfig) -> Load {
        let counts = Arc::new(Mutex::new(LoadReport::default()));
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let config = Arc::new(config);
        let mut tasks = JoinSet::new();
        for index in 0..config.clients.max(1) {
            tasks.spawn(client(
                index,
                config.clone(),
                counts.clone(),
                cancel.clone(),
                started,
            ));
        }
        Load {
            counts,
            started,
            cancel,
            tasks,
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LoadReport {
        let mut report = lock(&self.counts).clone();
        report.elapsed = self.started.elapsed();
        report
    }

    /// Waits until at least `requests` requests have finished, or `deadline` passes; returns
    /// the counts then. Use it to make sure traffic flows before acting.
    pub async fn wait_for(&self, requests: u64, deadline: Duration) -> LoadReport {
        let until = Instant::now() + deadline;
        loop {
            let report = self.snapshot();
            if report.total >= requests || Instant::now() >= until {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the clients after their current request and returns the final counts.
    pub async fn stop(mut self) -> LoadReport {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
    }
}

fn lock(counts: &Mutex<LoadReport>) -> std::sync::MutexGuard<'_, LoadReport> {
    // A panicking client cannot leave the counts half-updated: every update is one block.
    counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn client(
    index: usize,
    config: Arc<LoadConfig>,
    counts: Arc<Mutex<LoadReport>>,
    cancel: CancellationToken,
    started: Instant,
) {
    let keep_alive = index % 2 == 0;
    let mut builder = reqwest::Client::builder().no_proxy();
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let http = match builder.build() {
        Ok(http) => http,
        Err(error) => {
            let mut counts = lock(&counts);
            counts.total += 1;
            counts.failed += 1;
            *counts.errors.entry("client".into()).or_default() += 1;
            counts
                .samples
                .push(format!("could not build an HTTP client: {error}"));
            return;
        }
    };
    let every = |n: u32, i: u64| n > 0 && i % u64::from(n) == u64::from(n) - 1;
    let mut sent: u64 = 0;
    while !cancel.is_cancelled() && started.elapsed() < config.max_duration {
        {
            let counts = lock(&counts);
            if counts.total >= config.max_requests {
                return;
            }
        }
        // Offset the clients so that their POSTs and slow requests do not line up.
        let turn = sent + index as u64;
        let (request, what) = match (&config.post_path, &config.slow_path) {
            (Some(path), _) if every(config.post_every, turn) => {
                let body = format!("client {index} request {sent}");
                (
                    http.post(format!("{}{path}", config.base_url)).body(body),
                    format!("POST {path}"),
                )
            }
            (_, Some(path)) if every(config.slow_every, turn) => (
                http.get(format!("{}{path}", config.base_url)),
                format!("GET {path}"),
            ),
            _ => (
                http.get(format!("{}{}", config.base_url, config.get_path)),
                format!("GET {}", config.get_path),
            ),
        };
        let again = if keep_alive {
            request.try_clone()
        } else {
            None
        };
        let attempts = async {
            let first = one_request(request, config.request_timeout).await;
            match (first, again) {
                (Err(failure), Some(again)) if failure.closed_before_answer => {
                    let second = one_request(again, config.request_timeout).await;
                    (second, Some(failure.detail))
                }
                (first, _) => (first, None),
            }
        };
        let (outcome, retried) = tokio::select! {
            outcome = attempts => outcome,
            // Stopping mid-request is not a failure of the server: do not count it.
            _ = cancel.cancelled() => return,
        };
        sent += 1;
        {
            let mut counts = lock(&counts);
            counts.total += 1;
            if keep_alive {
                counts.keep_alive += 1;
            } else {
                counts.new_connection += 1;
            }
            if let Some(first_error) = retried {
                counts.retried += 1;
                if counts.retry_samples.len() < SAMPLES {
                    let at = started.elapsed();
                    counts.retry_samples.push(format!(
                        "{what} by client {index} at {at:.2?}: {first_error}"
                    ));
                }
            }
            match outcome {
                Ok(color) => {
                    counts.ok += 1;
                    *counts.by_color.entry(color).or_default() += 1;
                }
                Err(Failure { kind, detail, .. }) => {
                    counts.failed += 1;
                    *counts.errors.entry(kind).or_default() += 1;
                    if counts.samples.len() < SAMPLES {
                        let at = started.elapsed();
                        counts
                            .samples
                            .push(format!("{what} by client {index} at {at:.2?}: {detail}"));
                    }
                }
            }
        }
        if !config.pause.is_zero() {
            tokio::time::sleep(config.pause).await;
        }
    }
}

/// Why a request failed.
struct Failure {
    /// `status 502`, `connect`, `timeout`, `closed`, `body`, `other`.
    kind: String,
    /// The full description, with the error chain.
    detail: String,
    /// The connection closed (or was reset) before any answer came: safe to send again.
    closed_before_answer: bool,
}

/// Sends one request; the color that answered, or why it failed.
async fn one_request(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<String, Failure> {
    let timed_out = || Failure {
        kind: "timeout".into(),
        detail: format!("no answer within {timeout:?}"),
        closed_before_answer: false,
    };
    let until = tokio::time::Instant::now() + timeout;
    let response = match tokio::time::timeout_at(until, request.send()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(error)) => {
            let (kind, detail) = classify(&error);
            let closed_before_answer = kind == "closed";
            return Err(Failure {
                kind,
                detail,
                closed_before_answer,
            });
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let body = match tokio::time::timeout_at(until, response.bytes()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(error)) => {
            let (_, detail) = classify(&error);
            return Err(Failure {
                kind: "body".into(),
                detail,
                closed_before_answer: false,
            });
        }
        Ok(Ok(body)) => body,
    };
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(Failure {
            kind: format!("status {}", status.as_u16()),
            detail: text.chars().take(200).collect(),
            closed_before_answer: false,
        });
    }
    let color = text
        .split_whitespace()
        .find(|word| *word == "blue" || *word == "green")
        .unwrap_or("other");
    Ok(color.to_string())
}

/// A failure's kind and its full description (with the error chain).
fn classify(error: &reqwest::Error) -> (String, String) {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        // Reset while connecting: the server took the connection into a listening socket's
        // queue and closed that socket before accepting it (Caddy's listener handover). Still a
        // failure; told apart from a refused connection.
        if describe(error).contains("onnection reset") {
            "connect reset"
        } else {
            "connect"
        }
    } else if closed_before_answer(error) {
        "closed"
    } else {
        "other"
    };
    (kind.to_string(), describe(error))
}

/// True when `error`, from sending a request (not from reading its body), says the
/// connection was closed or reset before any answer came and not while connecting: on a
/// kept-alive connection, the server closing it as idle while the request was on its way. No
/// server has answered such a request, and browsers and curl send it again once on a new
/// connection; the test kit's load and `blue-green-bench` do the same.
pub fn closed_before_answer(error: &reqwest::Error) -> bool {
    if error.is_timeout() || error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains("closed before message completed") || text.contains("onnection reset") {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The error and its causes on one line: reqwest's top-level message alone ("error sending
/// request") says nothing about what went wrong.
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::one_shot::{Close, OneShot};

    /// The error a client gets from a server that closes without answering.
    async fn error_from_close(close: Close) -> reqwest::Error {
        let server = OneShot::start(b"", close).await;
        let error = reqwest::Client::new()
            .get(format!("http://{}/", server.addr()))
            .send()
            .await
            .expect_err("the server closed without answering");
        server.finish().await;
        error
    }

    #[tokio::test]
    async fn a_reset_before_the_answer_may_be_sent_again() {
        let error = error_from_close(Close::Reset).await;
        assert!(
            describe(&error).contains("onnection reset"),
            "{}",
            describe(&error)
        );
        assert!(closed_before_answer(&error), "{}", describe(&error));
        assert_eq!(classify(&error).0, "closed");
    }

    #[tokio::test]
    async fn a_close_before_the_answer_may_be_sent_again() {
        let error = error_from_close(Close::Clean).await;
        assert!(closed_before_answer(&error), "{}", describe(&error));
        assert!(
            describe(&error).contains("closed before message completed"),
            "{}",
            describe(&error)
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_again() {
        // Bound, never listened on: connecting is refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let error = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens");
        drop(socket);
        assert!(!closed_before_answer(&error), "{}", describe(&error));
        assert_eq!(classify(&error).0, "connect");
    }
}
