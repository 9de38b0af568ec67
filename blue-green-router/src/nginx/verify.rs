//! Verification through nginx: after a reload, wait until nginx's old workers stop accepting
//! (when they can be watched) and then until requests through nginx answer for the new color.
//!
//! What passes from the switch to its verification is a [`Reloaded`] in the
//! [`RouteReceipt`]: nginx's workers as they were before the reload, or why they could not be
//! noted.

use std::path::Path;
use std::time::Duration;

use blue_green_core::{ComponentError, Instance, RouteReceipt};
use tokio::time::Instant;

use super::workers::{WaitError, WorkerWatch};
use super::{NginxRouter, NginxVerify};

/// How long a run of new-color answers must last before a switch counts as verified: nginx's
/// old workers accept new connections for about 100 ms after the new ones start, and a busy
/// machine may be slower to tell them to stop.
pub const OLD_WORKER_OVERLAP: Duration = Duration::from_millis(250);
/// How often the router looks at nginx's workers while they are replaced.
const WORKER_POLL: Duration = Duration::from_millis(10);
/// How much of a body the router reads: the expected text is near the start of a health page.
const BODY_LIMIT: usize = 64 * 1024;
/// How much of an unexpected body an error quotes.
const BODY_SNIPPET: usize = 200;

/// What a switch hands to its verification: nginx's workers noted before the reload (or why
/// they could not be), so `verify` can wait for exactly those to stop accepting.
#[derive(Debug)]
pub(super) struct Reloaded(pub(super) Result<WorkerWatch, String>);

impl NginxRouter {
    /// With a pid file: notes nginx's workers before a reload; `None` without a pid file.
    pub(super) async fn watch_workers(&self) -> Option<Result<WorkerWatch, String>> {
        let pid_file = self.config.pid_file.as_ref()?;
        let timeout = self.config.command_timeout;
        let watch = tokio::time::timeout(
            timeout,
            WorkerWatch::before_reload(&self.proc_root, pid_file),
        )
        .await
        .unwrap_or_else(|_| Err(format!("reading /proc took longer than {timeout:?}")));
        Some(watch)
    }

    /// Checks that requests through nginx reach `instance` after the switch of `receipt`.
    pub(super) async fn verify_switch(
        &self,
        instance: &Instance,
        receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        let started = Instant::now();
        let reload = receipt.detail::<Reloaded>();
        let Some(verify) = &self.config.verify else {
            // Without a URL, still wait for the old workers when they can be watched.
            if matches!(reload, Some(Reloaded(Ok(_)))) {
                let deadline = started + self.config.command_timeout;
                self.wait_for_workers(reload, started, deadline).await?;
            }
            return Ok(());
        };
        let overlap = self
            .wait_for_workers(reload, started, started + verify.deadline)
            .await?;
        self.verify_through_nginx(verify, instance, started, overlap)
            .await
    }

    /// How long a run of good answers must last: nothing once nginx's old workers are seen to
    /// stop accepting, else [`OLD_WORKER_OVERLAP`]. Fails when the workers are not replaced
    /// by `deadline`.
    async fn wait_for_workers(
        &self,
        reload: Option<&Reloaded>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Duration, ComponentError> {
        let watch = match reload.map(|r| &r.0) {
            Some(Ok(watch)) => watch,
            Some(Err(why)) => {
                tracing::debug!(reason = %why, overlap = ?OLD_WORKER_OVERLAP, "cannot watch nginx's workers; verifying with the fixed overlap");
                return Ok(OLD_WORKER_OVERLAP);
            }
            None => {
                tracing::debug!(overlap = ?OLD_WORKER_OVERLAP, "no pid file, or no reload to watch; verifying with the fixed overlap");
                return Ok(OLD_WORKER_OVERLAP);
            }
        };
        let pid_file = self
            .config
            .pid_file
            .as_deref()
            .unwrap_or(Path::new(""))
            .display();
        match watch.wait(deadline, WORKER_POLL).await {
            Ok(()) => {
                tracing::debug!(
                    master = watch.master(),
                    elapsed = ?started.elapsed(),
                    "nginx's old workers stopped accepting; verifying without an overlap"
                );
                Ok(Duration::ZERO)
            }
            Err(WaitError::Timeout(why)) => Err(ComponentError::timeout(format!(
                "nginx did not replace its workers within {:?} after the reload: {why}. Check nginx's error log (a reload that nginx cannot apply keeps the old workers), and that pid_file {pid_file} belongs to the nginx that the reload command reloads",
                deadline.saturating_duration_since(started)
            ))),
            Err(WaitError::Unreadable(why)) => Err(ComponentError::failed(format!(
                "{why}; check that nginx (pid file {pid_file}) still runs"
            ))),
        }
    }

    /// Requests `verify.url` until `verify.successes` answers in a row, over at least
    /// `overlap`, contain the expected body for `instance`.
    async fn verify_through_nginx(
        &self,
        verify: &NginxVerify,
        instance: &Instance,
        started: Instant,
        overlap: Duration,
    ) -> Result<(), ComponentError> {
        let expected = verify
            .expect_body
            .replace("{color}", instance.color.as_str())
            .replace("{release}", instance.release.as_str());
        let deadline = started + verify.deadline;
        let over = if overlap.is_zero() {
            String::new()
        } else {
            format!(", over at least {overlap:?},")
        };
        let mut in_a_row = 0u32;
        let mut run_started = started;
        let mut requests = 0u32;
        let mut last_seen = String::from("no answer yet");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ComponentError::timeout(format!(
                    "requests through nginx to {} did not answer with `{expected}` {} times in a row{over} within {:?} ({requests} requests); last seen: {last_seen}. Check that nginx proxies that URL to upstream `{}` and that {} answers `{expected}`",
                    verify.url, verify.successes, verify.deadline, self.config.upstream, instance.endpoint
                )));
            }
            requests += 1;
            let attempt = async {
                let response = self.verify_client.get(&verify.url).send().await?;
                let status = response.status().as_u16();
                Ok::<_, reqwest::Error>((status, read_body(response).await?))
            };
            match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok((status, body)))
                    if (200..300).contains(&status) && contains(&body, expected.as_bytes()) =>
                {
                    if in_a_row == 0 {
                        run_started = Instant::now();
                    }
                    in_a_row += 1;
                    last_seen = format!(
                        "the expected answer {in_a_row} times in a row over {:?}",
                        run_started.elapsed()
                    );
                    if in_a_row >= verify.successes && run_started.elapsed() >= overlap {
                        tracing::debug!(
                            url = %verify.url,
                            requests,
                            ?overlap,
                            elapsed = ?started.elapsed(),
                            "switch verified through nginx"
                        );
                        return Ok(());
                    }
                }
                Ok(Ok((status, body))) => {
                    in_a_row = 0;
                    last_seen = format!("status {status}: {}", body_snippet(&body));
                }
                Ok(Err(error)) => {
                    in_a_row = 0;
                    last_seen = describe_request_error(&error);
                }
                Err(_) => {
                    in_a_row = 0;
                    last_seen = "a request still unanswered at the deadline".into();
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(verify.interval.min(remaining)).await;
        }
    }
}

/// Reads up to [`BODY_LIMIT`] bytes of a response body.
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= BODY_LIMIT {
            break;
        }
    }
    Ok(body)
}

/// True when `needle` occurs in `haystack` (an empty needle always does).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first [`BODY_SNIPPET`] bytes of a body, on one line, control characters blanked.
fn body_snippet(body: &[u8]) -> String {
    let cut = body.len().min(BODY_SNIPPET);
    let mut text: String = String::from_utf8_lossy(&body[..cut])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text = text.trim().to_string();
    if body.len() > cut {
        text.push('…');
    }
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
}

/// Why a request failed, in a person's words: the innermost cause ("Connection refused (os
/// error 111)"), without reqwest's wrapping, which quotes the URL again.
fn describe_request_error(error: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    tracing::debug!(error = ?error, "a request through nginx failed");
    let cause = innermost.to_string();
    if error.is_connect() {
        format!("could not connect: {cause}")
    } else {
        cause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_quoted_short_and_on_one_line() {
        assert_eq!(body_snippet(b""), "(empty body)");
        assert_eq!(body_snippet(b" blue v1\n"), "blue v1");
        assert_eq!(body_snippet(b"a\x1b[2Jb"), "a [2Jb");
        let long = vec![b'x'; BODY_SNIPPET + 1];
        assert!(body_snippet(&long).ends_with('…'));
        assert!(contains(b"green v2", b"green"));
        assert!(contains(b"x", b""));
        assert!(!contains(b"blue", b"green"));
    }
}
