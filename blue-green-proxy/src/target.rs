//! Targets (upstream endpoints) and what the proxy counts for each: requests in flight as
//! [`InFlight`] guards, the drain wait, and the cut at the drain deadline.
//!
//! A cut is a new generation of the target: a request knows it was cut by comparing the
//! generation it started in with the target's (one atomic load, so every request and every
//! body frame can ask). What a request waits on is closed by the cut itself: its upstream
//! connection (the pool aborts them all), and an upgraded connection's copy, which watches a
//! token. No request registers a waiter of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use blue_green_core::Endpoint;
use hyper::header::HeaderValue;
use hyper::http::uri::Authority;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::upstream::Pool;

/// One upstream endpoint and its counters. Lives as long as the proxy (a handful per app), so
/// its counters survive switches back and forth.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) endpoint: Endpoint,
    /// `host:port` as a `Host` header, for a client that sent none.
    pub(crate) host_header: HeaderValue,
    /// What a split's sticky cookie names this target by: a digest of the endpoint, the same
    /// in every proxy and after a restart, that does not show the address to clients.
    pub(crate) sticky_id: String,
    in_flight: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    responses: AtomicU64,
    error_responses: AtomicU64,
    cut: AtomicU64,
    /// Woken when `in_flight` drops to zero.
    idle: Notify,
    /// Cancelled by [`Target::cut`], for upgraded connections (whose copy waits on it: their
    /// upstream connection is no longer the pool's); replaced at each cut, under this lock with
    /// the generation, so that a target routed to again starts clean.
    cancel: Mutex<CancellationToken>,
    /// Its keep-alive connections, and the generation (the number of cuts so far).
    pub(crate) pool: Pool,
}

impl Target {
    fn new(endpoint: Endpoint) -> Result<Target, Error> {
        let invalid = |e: &dyn std::fmt::Display| {
            Error::Invalid(format!("`{endpoint}` cannot be an upstream address: {e}"))
        };
        let authority: Authority = endpoint.to_string().parse().map_err(|e| invalid(&e))?;
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| invalid(&e))?;
        let sticky_id = sticky_id(&endpoint);
        Ok(Target {
            endpoint,
            host_header,
            sticky_id,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            error_responses: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            idle: Notify::new(),
            cancel: Mutex::new(CancellationToken::new()),
            pool: Pool::default(),
        })
    }

    fn cancel(&self) -> MutexGuard<'_, CancellationToken> {
        // A poisoned lock only means a panic elsewhere while holding a token clone; the token
        // itself is still whole.
        self.cancel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new request (or upgraded connection) to this target; the count drops when the
    /// guard does.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            target: self.clone(),
            generation: self.pool.generation(),
            cut: false,
        }
    }

    /// Requests and upgraded connections open now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight, or `within` has passed; returns what is left then.
    /// Wakes the moment the last guard drops, with no polling.
    pub(crate) async fn wait_idle(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a drop in between still wakes us.
            notified.as_mut().enable();
            let left = self.in_flight();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight();
            }
        }
    }

    /// Closes every request and upgraded connection open to this target now, waits (up to
    /// `within`) for them to be gone, and returns how many were closed.
    pub(crate) async fn cut(&self, within: Duration) -> u64 {
        let before = self.cut.load(Ordering::Acquire);
        let old = {
            let mut cancel = self.cancel();
            // The new generation first: whoever reads the old token after this sees the cut.
            self.pool.cut();
            std::mem::replace(&mut *cancel, CancellationToken::new())
        };
        old.cancel();
        self.wait_idle(within).await;
        self.cut.load(Ordering::Acquire) - before
    }

    /// The counters, for status.
    pub(crate) fn stats(&self) -> TargetStats {
        TargetStats {
            endpoint: self.endpoint.to_string(),
            in_flight: self.in_flight(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            responses: self.responses.load(Ordering::Relaxed),
            error_responses: self.error_responses.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
        }
    }
}

/// The 16 hex digits of FNV-1a (64 bits) over `host:port`: stable (no per-process seed), so a
/// cookie keeps naming the same target after a restart; not a secret, only not the address.
fn sticky_id(endpoint: &Endpoint) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint.to_string().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// One request or upgraded connection counted in its target's in-flight count. Dropping it
/// (however the request ends: done, failed, cancelled by the client, cut) takes it out, so no
/// path can leak a count.
#[derive(Debug)]
pub(crate) struct InFlight {
    target: Arc<Target>,
    /// The target's generation when the request started: a cut since makes it differ.
    generation: u64,
    cut: bool,
}

impl InFlight {
    /// Whether the target was cut since this request started.
    pub(crate) fn is_cut(&self) -> bool {
        self.target.pool.generation() != self.generation
    }

    /// The generation this request started in.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A token cancelled when this request is cut (already cancelled if it was), for what
    /// must wait on a cut rather than ask for it.
    pub(crate) fn cut_token(&self) -> CancellationToken {
        let cancel = self.target.cancel();
        if self.is_cut() {
            let cut = CancellationToken::new();
            cut.cancel();
            cut
        } else {
            cancel.clone()
        }
    }

    /// The target this request goes to.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Marks this request as closed by a cut (counted when the guard drops).
    pub(crate) fn mark_cut(&mut self) {
        self.cut = true;
    }

    /// Counts a failure of this request (no answer from the upstream, a broken body).
    pub(crate) fn mark_error(&self) {
        self.target.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the response sent to the client for this request: `status` came from the
    /// upstream or is the proxy's own `502`/`504` for it, and a `5xx` is an error response
    /// (what the watch after a switch compares).
    pub(crate) fn answered(&self, status: StatusCode) {
        self.target.responses.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.target.error_responses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a response that is not the target's doing (the `503` of a cut at the drain
    /// deadline): a response, but no error of the target.
    pub(crate) fn answered_for_proxy(&self) {
        self.target.responses.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.cut {
            self.target.cut.fetch_add(1, Ordering::AcqRel);
        }
        if self.target.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.target.idle.notify_waiters();
        }
    }
}

/// Counters of one target, as the control API and [`ProxyHandle::status`](crate::ProxyHandle::status)
/// report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStats {
    /// The endpoint, `host:port`.
    pub endpoint: String,
    /// Requests and upgraded connections open now.
    pub in_flight: u64,
    /// Requests (and upgrades) sent to it since the proxy started.
    pub requests: u64,
    /// Requests that failed at the proxy: no answer from the upstream, a broken body.
    pub errors: u64,
    /// Responses sent to clients for requests routed here (the upstream's, and the proxy's
    /// own `502`/`504`/cut for them). Absent from a proxy older than this field: 0.
    #[serde(default)]
    pub responses: u64,
    /// Those of [`TargetStats::responses`] that were errors: a `5xx` from the upstream, or the
    /// proxy's own `502`/`504` for it.
    #[serde(default)]
    pub error_responses: u64,
    /// Requests and upgraded connections closed by a cut at a drain deadline.
    pub cut: u64,
}

/// Every target the proxy has routed to, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    by_endpoint: Mutex<HashMap<Endpoint, Arc<Target>>>,
}

impl Targets {
    fn map(&self) -> MutexGuard<'_, HashMap<Endpoint, Arc<Target>>> {
        self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target for `endpoint`, made on first use.
    pub(crate) fn get_or_add(&self, endpoint: &Endpoint) -> Result<Arc<Target>, Error> {
        let mut map = self.map();
        if let Some(t) = map.get(endpoint) {
            return Ok(t.clone());
        }
        let target = Arc::new(Target::new(endpoint.clone())?);
        map.insert(endpoint.clone(), target.clone());
        Ok(target)
    }

    /// The target for `endpoint`, if the proxy ever routed to it.
    pub(crate) fn get(&self, endpoint: &Endpoint) -> Option<Arc<Target>> {
        self.map().get(endpoint).cloned()
    }

    /// Every target.
    pub(crate) fn all(&self) -> Vec<Arc<Target>> {
        self.map().values().cloned().collect()
    }

    /// Every target's counters, sorted by endpoint.
    pub(crate) fn stats(&self) -> Vec<TargetStats> {
        let mut all: Vec<TargetStats> = self.map().values().map(|t| t.stats()).collect();
        all.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Arc<Target> {
        Arc::new(Target::new(Endpoint::new("127.0.0.1", 9)).unwrap())
    }

    #[tokio::test]
    async fn guards_count_in_flight_and_drop_takes_them_out() {
        let t = target();
        let a = t.enter();
        let b = t.enter();
        assert_eq!(t.in_flight(), 2);
        drop(a);
        assert_eq!(t.in_flight(), 1);
        drop(b);
        assert_eq!(t.stats().in_flight, 0);
        assert_eq!(t.stats().requests, 2);
    }

    #[test]
    fn sticky_ids_are_stable_and_tell_endpoints_apart() {
        let a = sticky_id(&Endpoint::new("127.0.0.1", 8081));
        assert_eq!(a, sticky_id(&Endpoint::new("127.0.0.1", 8081)));
        assert_ne!(a, sticky_id(&Endpoint::new("127.0.0.1", 8082)));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("8081"));
    }

    #[test]
    fn responses_count_5xx_as_errors_and_a_cut_as_neither() {
        let t = target();
        let g = t.enter();
        g.answered(StatusCode::OK);
        g.answered(StatusCode::NOT_FOUND);
        g.answered(StatusCode::INTERNAL_SERVER_ERROR);
        g.answered(StatusCode::BAD_GATEWAY);
        g.answered_for_proxy();
        let stats = t.stats();
        assert_eq!((stats.responses, stats.error_responses), (5, 2));
    }

    #[tokio::test]
    async fn wait_idle_wakes_when_the_last_guard_drops() {
        let t = target();
        let g = t.enter();
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.wait_idle(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g);
        let left = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter woke")
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn wait_idle_returns_what_is_left_at_its_deadline() {
        let t = target();
        let _g = t.enter();
        assert_eq!(t.wait_idle(Duration::from_millis(20)).await, 1);
    }

    #[tokio::test]
    async fn cut_cancels_the_open_guards_and_counts_them_but_not_later_ones() {
        let t = target();
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut g = t.enter();
            let token = g.cut_token();
            held.push(tokio::spawn(async move {
                token.cancelled().await;
                assert!(g.is_cut());
                g.mark_cut();
            }));
        }
        let unwatched = t.enter();
        assert!(!unwatched.is_cut());
        let cut = {
            let t = t.clone();
            tokio::spawn(async move { t.cut(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        assert!(unwatched.is_cut(), "a request that only asks sees the cut");
        assert!(
            unwatched.cut_token().is_cancelled(),
            "and its token is cancelled"
        );
        drop(unwatched);
        assert_eq!(cut.await.unwrap(), 3);
        assert_eq!(t.in_flight(), 0);
        let later = t.enter();
        assert!(!later.is_cut(), "a new request starts clean");
        assert!(!later.cut_token().is_cancelled());
        assert_eq!(t.stats().cut, 3);
    }
}
