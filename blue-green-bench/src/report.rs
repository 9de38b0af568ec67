//! Figures from the samples and the deploys, as tables for a person and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::Sample;

/// What the load saw during one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadSummary {
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed (transport error, timeout or non-2xx).
    pub failed: usize,
    /// Of which POST requests (slow or not).
    pub failed_post: usize,
    /// Of which slow requests (GET or POST).
    pub failed_slow: usize,
    /// POST requests sent (slow or not).
    pub post: usize,
    /// Slow requests sent (GET or POST).
    pub slow: usize,
    /// Requests over fresh connections.
    pub fresh_connections: usize,
    /// Kept-alive requests whose connection was closed before any answer and that were sent
    /// again on a new connection (failed only if that failed too).
    pub retried: usize,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Highest latency, milliseconds.
    pub max_ms: f64,
    /// Failure reasons and how often each was seen (status code or transport error), each
    /// with the kind of connection it went over.
    pub failure_reasons: BTreeMap<String, usize>,
}

impl LoadSummary {
    /// Sums up `samples`.
    pub fn from_samples(samples: &[Sample]) -> LoadSummary {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort();
        let mut failure_reasons = BTreeMap::new();
        for s in samples.iter().filter(|s| s.failed()) {
            // Which kind of connection it went over: a reset of a kept-alive connection at a
            // reload is not the same fault as a fresh connection refused.
            let over = if s.keep_alive {
                "kept-alive connection"
            } else {
                "fresh connection"
            };
            let reason = match &s.outcome {
                Ok(status) => format!("{over}: HTTP {status}"),
                Err(e) => format!("{over}: {e}"),
            };
            *failure_reasons.entry(reason).or_insert(0) += 1;
        }
        let count = |f: &dyn Fn(&Sample) -> bool| samples.iter().filter(|s| f(s)).count();
        LoadSummary {
            requests: samples.len(),
            failed: count(&|s| s.failed()),
            failed_post: count(&|s| s.failed() && s.kind.is_post()),
            failed_slow: count(&|s| s.failed() && s.kind.is_slow()),
            post: count(&|s| s.kind.is_post()),
            slow: count(&|s| s.kind.is_slow()),
            fresh_connections: count(&|s| !s.keep_alive),
            retried: count(&|s| s.retried),
            p50_ms: percentile_ms(&latencies, 50.0),
            p99_ms: percentile_ms(&latencies, 99.0),
            max_ms: latencies.last().map_or(0.0, |d| ms(*d)),
            failure_reasons,
        }
    }
}

/// The nearest-rank percentile of sorted latencies, in milliseconds; 0 for no samples.
pub fn percentile_ms(sorted: &[Duration], pct: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    ms(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values`; 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The timings of one deploy. Fields a way of deploying does not have are `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployFigures {
    /// Release deployed.
    pub release: String,
    /// Whether it succeeded (exit code 0, or the script's "found").
    pub ok: bool,
    /// Exit code of the deploy command, where there is one.
    pub exit_code: Option<i32>,
    /// Wall time from spawning the command to its exit, milliseconds.
    pub wall_ms: u64,
    /// The app's own start to ready (start + ready steps), milliseconds.
    pub ready_ms: Option<u64>,
    /// Ready to verified (switch + verify steps), milliseconds.
    pub switch_ms: Option<u64>,
    /// Drain step, milliseconds.
    pub drain_ms: Option<u64>,
    /// Stopping the old color, milliseconds.
    pub stop_ms: Option<u64>,
    /// Wall time minus the app's start-to-ready minus the configured drain, milliseconds.
    pub overhead_ms: Option<i64>,
    /// Peak resident memory of the deploy command and the children it waited for, KiB (from
    /// `wait4`'s rusage), which also counts the bench's own memory when it spawned the command
    /// (see [`crate::child::Finished::max_rss_kib`]).
    pub peak_rss_kib: Option<u64>,
    /// Peak resident memory of the deploy command alone, KiB (its `VmHWM`).
    pub own_peak_rss_kib: Option<u64>,
    /// Requests that failed while this deploy ran.
    pub failed_requests: usize,
    /// What the command said when it failed.
    pub error: Option<String>,
    /// Every step's time, milliseconds (for the deploy command).
    pub steps_ms: BTreeMap<String, u64>,
    /// From spawning the deploy command to its first event, milliseconds: process start,
    /// config, connecting to Docker.
    pub first_event_ms: Option<u64>,
}

/// One way of deploying, measured.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Name shown in the tables.
    pub name: String,
    /// How it deploys, in one line.
    pub method: String,
    /// The load.
    pub load: LoadSummary,
    /// Each deploy.
    pub deploys: Vec<DeployFigures>,
    /// What the run left growing, sampled along it (blue-green phases only).
    pub resources: Vec<crate::resources::ResourceSample>,
    /// How long `blue-green history` took at the end of the phase, milliseconds.
    pub history_ms: Option<u64>,
}

impl PhaseReport {
    /// Deploys that succeeded.
    pub fn succeeded(&self) -> usize {
        self.deploys.iter().filter(|d| d.ok).count()
    }

    /// Median wall time of the deploys, milliseconds.
    pub fn median_wall_ms(&self) -> f64 {
        median(
            &self
                .deploys
                .iter()
                .map(|d| d.wall_ms as f64)
                .collect::<Vec<_>>(),
        )
    }

    /// Median of a per-deploy figure over the deploys that have it.
    pub fn median_of(&self, f: impl Fn(&DeployFigures) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.deploys.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    /// The tables for a person.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let l = &self.load;
        let _ = writeln!(out, "== {} ==", self.name);
        let _ = writeln!(out, "{}", self.method);
        let _ = writeln!(
            out,
            "requests {}  failed {}  (POST {} of {}, slow {} of {}, fresh connections {}, retried after a closed keep-alive connection {})",
            l.requests,
            l.failed,
            l.failed_post,
            l.post,
            l.failed_slow,
            l.slow,
            l.fresh_connections,
            l.retried
        );
        let _ = writeln!(
            out,
            "latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
        for (reason, n) in &l.failure_reasons {
            let _ = writeln!(out, "  {n:>6} x {reason}");
        }
        let _ = writeln!(
            out,
            "{:>3} {:<6} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6}",
            "#",
            "release",
            "ok",
            "wall",
            "ready",
            "switch",
            "drain",
            "stop",
            "overhead",
            "rss",
            "failed"
        );
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        for (i, d) in self.deploys.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>3} {:<6} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6}",
                i + 1,
                d.release,
                if d.ok { "yes" } else { "NO" },
                d.wall_ms,
                opt(d.ready_ms),
                opt(d.switch_ms),
                opt(d.drain_ms),
                opt(d.stop_ms),
                d.overhead_ms.map_or("-".to_string(), |v| v.to_string()),
                d.peak_rss_kib
                    .map_or("-".to_string(), |k| format!("{:.1}M", k as f64 / 1024.0)),
                d.failed_requests,
            );
        }
        let med = |f: &dyn Fn(&DeployFigures) -> Option<f64>| {
            self.median_of(f)
                .map_or("-".to_string(), |v| format!("{v:.0}"))
        };
        let _ = writeln!(
            out,
            "{:>3} {:<6} {:>4} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6}",
            "med",
            "",
            format!("{}/{}", self.succeeded(), self.deploys.len()),
            self.median_wall_ms(),
            med(&|d| d.ready_ms.map(|v| v as f64)),
            med(&|d| d.switch_ms.map(|v| v as f64)),
            med(&|d| d.drain_ms.map(|v| v as f64)),
            med(&|d| d.stop_ms.map(|v| v as f64)),
            med(&|d| d.overhead_ms.map(|v| v as f64)),
            self.deploys
                .iter()
                .filter_map(|d| d.peak_rss_kib)
                .max()
                .map_or("-".to_string(), |k| format!("{:.1}M", k as f64 / 1024.0)),
            "",
        );
        out.push_str("    (times in ms; rss row 'med' shows the highest peak)\n");
        let step =
            |name: &'static str| move |d: &DeployFigures| d.steps_ms.get(name).map(|v| *v as f64);
        if let (Some(verify), Some(switch), Some(stop)) = (
            self.median_of(step("verify")),
            self.median_of(step("switch")),
            self.median_of(step("stop")),
        ) {
            // Everything but the app's start, the drain, the switch, the verification and the
            // stop: process start, config, lock, reconcile, clear, record.
            let rest = self.median_of(|d| {
                let accounted: u64 = ["start", "ready", "drain", "switch", "verify", "stop"]
                    .iter()
                    .filter_map(|s| d.steps_ms.get(*s))
                    .sum();
                d.ok.then_some(d.wall_ms as f64 - accounted as f64)
            });
            let _ = writeln!(
                out,
                "overhead, medians: verify through the router {verify:.0} ms, switch {switch:.0} ms, stop {stop:.0} ms, everything else (process start, config, lock, reconcile, clear, record) {:.0} ms",
                rest.unwrap_or(0.0)
            );
        }
        let highest =
            |f: &dyn Fn(&DeployFigures) -> Option<u64>| self.deploys.iter().filter_map(f).max();
        if let (Some(own), Some(tree)) = (
            highest(&|d| d.own_peak_rss_kib),
            highest(&|d| d.peak_rss_kib),
        ) {
            let _ = writeln!(
                out,
                "peak memory of the deploy command: {:.1} MB itself, {:.1} MB by wait4 (with the commands it ran, and the bench's own memory at the spawn, which Linux counts)",
                own as f64 / 1024.0,
                tree as f64 / 1024.0
            );
        }
        if !self.resources.is_empty() {
            out.push_str(&crate::resources::render(
                &self.name,
                &self.resources,
                self.history_ms,
            ));
        }
        out
    }
}

/// Both phases side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The machine and the settings.
    pub setup: BTreeMap<String, String>,
    /// blue-green with nginx, blue-green with its own proxy, then the baseline (any may be
    /// missing if it was skipped).
    pub phases: Vec<PhaseReport>,
}

impl Comparison {
    /// Tables of every phase and, with two phases, the ratios.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.setup {
            let _ = writeln!(out, "{k}: {v}");
        }
        out.push('\n');
        for phase in &self.phases {
            out.push_str(&phase.render());
            out.push('\n');
        }
        let ours = self.phases.iter().find(|p| p.name == "blue-green");
        let base = self.phases.iter().find(|p| p.name == "shell-script way");
        if let (Some(ours), Some(base)) = (ours, base) {
            let _ = writeln!(out, "== {} vs {} ==", ours.name, base.name);
            let _ = writeln!(
                out,
                "failed requests: {} vs {} ({})",
                ours.load.failed,
                base.load.failed,
                ratio(ours.load.failed as f64, base.load.failed as f64)
            );
            let _ = writeln!(
                out,
                "failure rate:    {:.4}% vs {:.4}%",
                rate(ours.load.failed, ours.load.requests),
                rate(base.load.failed, base.load.requests)
            );
            let _ = writeln!(
                out,
                "median wall time per deploy: {:.0} ms vs {:.0} ms ({})",
                ours.median_wall_ms(),
                base.median_wall_ms(),
                ratio(ours.median_wall_ms(), base.median_wall_ms())
            );
            let _ = writeln!(
                out,
                "deploys succeeded: {}/{} vs {}/{}",
                ours.succeeded(),
                ours.deploys.len(),
                base.succeeded(),
                base.deploys.len()
            );
        }
        out
    }
}

fn rate(failed: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        failed as f64 * 100.0 / total as f64
    }
}

fn ratio(ours: f64, base: f64) -> String {
    if base == 0.0 {
        "ratio undefined: the baseline is 0".to_string()
    } else {
        format!("ratio {:.3}", ours / base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::RequestKind;

    fn sample(ms: u64, kind: RequestKind, outcome: Result<u16, String>) -> Sample {
        Sample {
            sent_at: Duration::ZERO,
            latency: Duration::from_millis(ms),
            kind,
            keep_alive: ms % 2 == 0,
            outcome,
            retried: false,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 50.0), 50.0);
        assert_eq!(percentile_ms(&sorted, 99.0), 99.0);
        assert_eq!(percentile_ms(&sorted, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
        assert_eq!(percentile_ms(&sorted[..1], 99.0), 1.0);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn summary_counts_non_2xx_and_transport_errors_as_failed() {
        let samples = vec![
            sample(1, RequestKind::Get, Ok(200)),
            sample(2, RequestKind::Post, Ok(502)),
            sample(3, RequestKind::SlowGet, Err("connection reset".into())),
            sample(4, RequestKind::Post, Ok(201)),
            sample(1, RequestKind::SlowPost, Ok(200)),
        ];
        let s = LoadSummary::from_samples(&samples);
        assert_eq!(s.requests, 5);
        assert_eq!(s.failed, 2);
        assert_eq!(s.failed_post, 1);
        assert_eq!(s.failed_slow, 1);
        assert_eq!(s.post, 3);
        assert_eq!(s.slow, 2);
        assert_eq!(
            s.failure_reasons.get("kept-alive connection: HTTP 502"),
            Some(&1)
        );
        assert_eq!(
            s.failure_reasons.get("fresh connection: connection reset"),
            Some(&1)
        );
        assert_eq!(s.max_ms, 4.0);
    }
}
