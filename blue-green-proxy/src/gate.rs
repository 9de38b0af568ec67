//! The gate in front of routing: serving, paused (hold new requests in a bounded queue for a
//! bounded time, release them in order on resume), or maintenance (answer `503`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::PauseLimits;

/// What the proxy does with new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Requests go to their app's target.
    Serving,
    /// New requests wait (bounded queue, bounded time) until resume, then go on in order.
    Paused,
    /// New requests get `503` with a short page.
    Maintenance,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Paused,
            2 => Mode::Maintenance,
            _ => Mode::Serving,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Mode::Serving => 0,
            Mode::Paused => 1,
            Mode::Maintenance => 2,
        }
    }
}

/// What the gate says about one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Route it.
    Go,
    /// Answer the maintenance page.
    Maintenance,
    /// Answer `503` with this reason (the pause queue was full, or the wait too long).
    Refused(String),
}

#[derive(Debug)]
pub(crate) struct Gate {
    /// The mode, read without a lock on every request.
    mode: AtomicU8,
    /// Requests held while paused, oldest first.
    queue: Mutex<VecDeque<oneshot::Sender<()>>>,
    limits: PauseLimits,
}

impl Gate {
    pub(crate) fn new(mode: Mode, limits: PauseLimits) -> Gate {
        Gate {
            mode: AtomicU8::new(mode.as_u8()),
            queue: Mutex::new(VecDeque::new()),
            limits,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// Requests waiting now.
    pub(crate) fn queued(&self) -> usize {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.retain(|tx| !tx.is_closed());
        queue.len()
    }

    /// Sets the mode. Leaving `Paused` releases the held requests, oldest first (into
    /// maintenance they then get its page).
    pub(crate) fn set(&self, mode: Mode) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.mode.store(mode.as_u8(), Ordering::Release);
        if mode != Mode::Paused {
            for tx in queue.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Decides what to do with a new request; while paused, holds it first.
    pub(crate) async fn admit(&self) -> Admit {
        let rx = match self.mode() {
            Mode::Serving => return Admit::Go,
            Mode::Maintenance => return Admit::Maintenance,
            Mode::Paused => {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                // Checked again under the lock: a resume in between must not strand us.
                match self.mode() {
                    Mode::Serving => return Admit::Go,
                    Mode::Maintenance => return Admit::Maintenance,
                    Mode::Paused => {}
                }
                queue.retain(|tx| !tx.is_closed());
                if queue.len() >= self.limits.max_queued {
                    return Admit::Refused(format!(
                        "the proxy is paused and already holds {} requests; try again shortly",
                        queue.len()
                    ));
                }
                let (tx, rx) = oneshot::channel();
                queue.push_back(tx);
                rx
            }
        };
        match tokio::time::timeout(self.limits.max_wait, rx).await {
            Ok(_) => match self.mode() {
                Mode::Maintenance => Admit::Maintenance,
                _ => Admit::Go,
            },
            Err(_) => Admit::Refused(format!(
                "the proxy has been paused for longer than {}; try again shortly",
                show(self.limits.max_wait)
            )),
        }
    }
}

fn show(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gate(max_queued: usize, max_wait_ms: u64) -> Arc<Gate> {
        Arc::new(Gate::new(
            Mode::Serving,
            PauseLimits {
                max_queued,
                max_wait: Duration::from_millis(max_wait_ms),
            },
        ))
    }

    #[tokio::test]
    async fn paused_requests_go_on_at_resume_and_the_queue_is_bounded() {
        let g = gate(2, 10_000);
        g.set(Mode::Paused);
        let a = tokio::spawn({
            let g = g.clone();
            async move { g.admit().await }
        });
        let b = tokio::spawn({
            let g = g.clone();
            async move { g.admit().await }
        });
        while g.queued() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(g.admit().await, Admit::Refused(m) if m.contains("holds 2")));
        g.set(Mode::Serving);
        assert_eq!(a.await.unwrap(), Admit::Go);
        assert_eq!(b.await.unwrap(), Admit::Go);
    }

    #[tokio::test]
    async fn a_paused_request_gets_503_after_the_wait_and_maintenance_gets_its_page() {
        let g = gate(10, 20);
        g.set(Mode::Paused);
        assert!(matches!(g.admit().await, Admit::Refused(m) if m.contains("paused for longer")));
        g.set(Mode::Maintenance);
        assert_eq!(g.admit().await, Admit::Maintenance);
        g.set(Mode::Serving);
        assert_eq!(g.admit().await, Admit::Go);
    }
}
