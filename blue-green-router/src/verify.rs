//! [`ProxyVerify`]: after a switch, requests through the proxy's public URL must answer for the
//! new instance, a few times in a row, before the switch counts as done.
//!
//! Each attempt is one [`HttpProbe`] check on a new connection (so that a kept-alive
//! connection to an old backend cannot answer it), aimed at the proxy instead of the instance:
//! the expected body has the new instance's `{color}` and `{release}` filled in.

use std::time::Duration;

use blue_green_core::{
    ComponentError, Endpoint, Health, HealthProbe, HttpProbe, HttpProbeConfig, Instance,
    StatusMatch,
};
use tokio::time::Instant;

/// The longest a single attempt may take, when the deadline allows more.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a router checks, after a switch, that requests through the proxy reach the new
/// instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyVerify {
    /// A plain `http://` URL through the proxy, for example `http://127.0.0.1/health`.
    pub url: String,
    /// The body must contain this, after `{color}` and `{release}` are filled in from the new
    /// instance (default `{color}`).
    pub expect_body: String,
    /// Answers in a row needed (default 3).
    pub successes: u32,
    /// Time between two requests (default 20 ms).
    pub interval: Duration,
    /// Give up after this long (default 10 s).
    pub deadline: Duration,
}

impl ProxyVerify {
    /// Verification of `url` with the defaults: the body contains `{color}`, 3 answers in a
    /// row, 20 ms apart, within 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        ProxyVerify {
            url: url.into(),
            expect_body: "{color}".into(),
            successes: 3,
            interval: Duration::from_millis(20),
            deadline: Duration::from_secs(10),
        }
    }

    /// Checks the settings (a plain `http://` URL without a user or password, at least one
    /// success, a deadline), as the routers do when they are built; `proxy` names the proxy
    /// in the error, for example "HAProxy".
    pub fn validate(&self, proxy: &str) -> Result<(), ComponentError> {
        self.check(proxy).map(|_| ())
    }

    /// Checks the settings; `proxy` names the proxy in the error ("HAProxy").
    pub(crate) fn check(&self, proxy: &str) -> Result<Target, ComponentError> {
        let bad = |why: &str| {
            ComponentError::invalid(format!(
                "the {proxy} verification URL `{}` {why}, for example http://127.0.0.1/health",
                self.url.escape_debug()
            ))
        };
        let url = reqwest::Url::parse(&self.url).map_err(|_| bad("is not a URL"))?;
        if url.scheme() != "http" {
            return Err(bad("must start with http://"));
        }
        // A password in the URL would end up in errors and logs: refuse it.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry a user name or password"));
        }
        if url.fragment().is_some() {
            return Err(bad("must not have a `#` fragment"));
        }
        // An IPv6 host comes bracketed; the endpoint holds it without brackets.
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']'),
            _ => return Err(bad("has no host")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_string();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        if self.successes == 0 {
            return Err(ComponentError::invalid(format!(
                "the {proxy} verification needs at least 1 success in a row"
            )));
        }
        if self.deadline.is_zero() {
            return Err(ComponentError::invalid(format!(
                "the {proxy} verification deadline must be more than zero, for example 10s"
            )));
        }
        let probe = HttpProbe::new(HttpProbeConfig {
            path,
            expect_status: StatusMatch::Range { from: 200, to: 299 },
            expect_body: Some(self.expect_body.clone()),
            timeout: ATTEMPT_TIMEOUT.min(self.deadline),
            ..HttpProbeConfig::default()
        });
        probe
            .validate()
            .map_err(|e| bad(&format!("cannot be requested ({e})")))?;
        Ok(Target {
            endpoint: Endpoint::new(host, port),
            probe,
        })
    }

    /// Requests the URL until it answers for `instance` `successes` times in a row, or fails
    /// at the deadline saying what it saw last. `proxy` names the proxy and `routes` says what
    /// it was told, for the error.
    pub(crate) async fn run(
        &self,
        target: &Target,
        instance: &Instance,
        proxy: &str,
        routes: &str,
    ) -> Result<(), ComponentError> {
        let started = Instant::now();
        let deadline = started + self.deadline;
        // The probe aims at the proxy; `{color}` and `{release}` come from the new instance.
        let mut through = instance.clone();
        through.endpoint = target.endpoint.clone();
        let mut in_a_row = 0u32;
        let mut requests = 0u32;
        let mut last_seen = String::from("no answer yet");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let expected = self
                    .expect_body
                    .replace("{color}", instance.color.as_str())
                    .replace("{release}", &instance.release);
                return Err(ComponentError::timeout(format!(
                    "requests through {proxy} to {} did not answer with `{expected}` {} times in a row within {:?} ({requests} requests); last seen: {last_seen}. Check that {proxy} serves that URL from {routes} and that {} answers `{expected}`",
                    self.url, self.successes, self.deadline, instance.endpoint
                )));
            }
            requests += 1;
            match tokio::time::timeout(remaining, target.probe.check(&through)).await {
                Ok(Health::Healthy) => {
                    in_a_row += 1;
                    if in_a_row >= self.successes {
                        tracing::debug!(url = %self.url, requests, elapsed = ?started.elapsed(), "switch verified through {proxy}");
                        return Ok(());
                    }
                }
                Ok(Health::Unhealthy(reason)) => {
                    in_a_row = 0;
                    last_seen = reason;
                }
                Err(_) => {
                    // Keep the last real answer: it says more than the cut-off request.
                    in_a_row = 0;
                    if requests == 1 {
                        last_seen = "a request still unanswered at the deadline".into();
                    }
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(self.interval.min(remaining)).await;
        }
    }
}

/// A checked verification: where the requests go and the probe that sends them.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    endpoint: Endpoint,
    probe: HttpProbe,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_without_credentials_are_accepted() {
        let target = ProxyVerify::new("http://127.0.0.1:8080/health?x=1")
            .check("HAProxy")
            .unwrap();
        assert_eq!(target.endpoint, Endpoint::new("127.0.0.1", 8080));
        assert_eq!(target.probe.config().path, "/health?x=1");
        let v6 = ProxyVerify::new("http://[::1]/").check("Caddy").unwrap();
        assert_eq!(v6.endpoint, Endpoint::new("::1", 80));

        for (url, why) in [
            ("https://127.0.0.1/", "http://"),
            ("127.0.0.1/health", "not a URL"),
            ("http://user:secret@127.0.0.1/", "user name or password"),
            ("http://127.0.0.1/#x", "fragment"),
            ("file:///etc/passwd", "http://"),
        ] {
            let error = ProxyVerify::new(url).check("HAProxy").unwrap_err();
            assert!(error.message.contains(why), "{url}: {error}");
            assert!(error.message.contains("HAProxy"), "{url}: {error}");
        }
        let none = ProxyVerify {
            successes: 0,
            ..ProxyVerify::new("http://127.0.0.1/")
        };
        assert!(none.check("Caddy").is_err());
    }
}
