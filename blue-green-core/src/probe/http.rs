//! [`HttpProbe`]: one HTTP request to the instance's endpoint.
//!
//! ```no_run
//! # async fn demo(instance: blue_green_core::Instance) {
//! use std::time::Duration;
//! use blue_green_core::{HealthProbe, HttpProbe, HttpProbeConfig};
//!
//! let probe = HttpProbe::new(HttpProbeConfig {
//!     path: "/health".into(),
//!     expect_body: Some("{color}".into()),
//!     timeout: Duration::from_secs(2),
//!     ..HttpProbeConfig::default()
//! });
//! // Healthy, or Unhealthy("GET http://127.0.0.1:8082/health: status 503, expected 200: …")
//! let health = probe.check(&instance).await;
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::error::ComponentError;
use crate::model::{Health, Instance};
use crate::probe::HealthProbe;

/// How much of a body an unhealthy reason quotes.
const BODY_SNIPPET: usize = 200;
/// How much of a body is read for the `expect_body` match; a health answer is small, and the
/// limit keeps a misbehaving endpoint from filling memory.
const BODY_LIMIT: usize = 1 << 20;

/// Which status codes count as healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusMatch {
    /// Exactly this code.
    Code(u16),
    /// Any of these codes.
    List(Vec<u16>),
    /// A range, both ends included, written `"200-399"` in config.
    Range {
        /// Lowest accepted code.
        from: u16,
        /// Highest accepted code.
        to: u16,
    },
}

impl StatusMatch {
    /// True when `status` is accepted.
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            StatusMatch::Code(code) => *code == status,
            StatusMatch::List(codes) => codes.contains(&status),
            StatusMatch::Range { from, to } => (*from..=*to).contains(&status),
        }
    }
}

impl Default for StatusMatch {
    fn default() -> Self {
        StatusMatch::Code(200)
    }
}

impl fmt::Display for StatusMatch {
    /// As an unhealthy reason says it: `200`, `one of 200, 204`, `200-399`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatch::Code(code) => write!(f, "{code}"),
            StatusMatch::List(codes) => {
                let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
                write!(f, "one of {}", codes.join(", "))
            }
            StatusMatch::Range { from, to } => write!(f, "{from}-{to}"),
        }
    }
}

/// How an [`HttpProbe`] asks and what it expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbeConfig {
    /// HTTP method, default `GET`.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Optional `Host` header.
    pub host_header: Option<String>,
    /// Other headers, sent as given.
    pub headers: Vec<(String, String)>,
    /// Accepted status codes.
    pub expect_status: StatusMatch,
    /// If set, the body must contain this text, after `{color}` and `{release}` are filled in
    /// from the instance probed.
    pub expect_body: Option<String>,
    /// One attempt's timeout.
    pub timeout: Duration,
}

impl Default for HttpProbeConfig {
    fn default() -> Self {
        HttpProbeConfig {
            method: "GET".into(),
            path: "/health".into(),
            host_header: None,
            headers: Vec::new(),
            expect_status: StatusMatch::default(),
            expect_body: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Probes `http://{endpoint}{path}` once per check, with one HTTP client (and its connection
/// pool) reused across checks. Plain HTTP only: a probe talks to the instance directly, on its
/// own endpoint, never through the load balancer.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    config: HttpProbeConfig,
    /// The prepared request parts, or why the config cannot be used (then every check says so).
    prepared: Result<Prepared, String>,
}

#[derive(Debug, Clone)]
struct Prepared {
    client: reqwest::Client,
    method: Method,
    headers: HeaderMap,
}

impl HttpProbe {
    /// A probe with `config`. A config that cannot be sent (a bad method, header or path) does
    /// not fail here: every check then answers unhealthy with the reason, and
    /// [`HttpProbe::validate`] reports it up front.
    pub fn new(config: HttpProbeConfig) -> Self {
        let prepared = prepare(&config).map_err(|e| e.message);
        HttpProbe { config, prepared }
    }

    /// Its configuration.
    pub fn config(&self) -> &HttpProbeConfig {
        &self.config
    }

    /// Checks that the config can be sent: the method, the path and every header. A caller
    /// such as a `validate` command uses this to refuse a bad config before any deploy.
    pub fn validate(&self) -> Result<(), ComponentError> {
        match &self.prepared {
            Ok(_) => Ok(()),
            Err(message) => Err(ComponentError::invalid(message.clone())),
        }
    }
}

fn prepare(config: &HttpProbeConfig) -> Result<Prepared, ComponentError> {
    let method = Method::from_bytes(config.method.as_bytes()).map_err(|_| {
        ComponentError::invalid(format!(
            "the HTTP probe's method `{}` is not an HTTP method, for example GET or HEAD",
            config.method
        ))
    })?;
    if !config.path.starts_with('/')
        || config
            .path
            .chars()
            .any(|c| c.is_ascii_control() || c == ' ')
    {
        return Err(ComponentError::invalid(format!(
            "the HTTP probe's path `{}` must start with `/` and hold no spaces or control characters, for example /health",
            config.path.escape_debug()
        )));
    }
    let mut headers = HeaderMap::new();
    let all = config
        .host_header
        .iter()
        .map(|host| ("Host", host.as_str()))
        .chain(config.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    for (name, value) in all {
        let bad = || {
            ComponentError::invalid(format!(
                "the HTTP probe's header `{}: {}` is not a valid header",
                name.escape_debug(),
                value.escape_debug()
            ))
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value).map_err(|_| bad())?;
        if name == HOST {
            headers.insert(name, value);
        } else {
            headers.append(name, value);
        }
    }
    // No kept-alive connections between attempts: an app that closes an idle connection just as
    // the next attempt reuses it would break the run of successes for no fault of its own.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| {
            ComponentError::failed(format!("could not build the HTTP probe's client: {e}"))
        })?;
    Ok(Prepared {
        client,
        method,
        headers,
    })
}

/// Fills `{color}` and `{release}` from `instance`.
pub(crate) fn fill_placeholders(template: &str, instance: &Instance) -> String {
    template
        .replace("{color}", instance.color.as_str())
        .replace("{release}", &instance.release)
}

/// The first [`BODY_SNIPPET`] bytes of a body, on one line, for a reason.
pub(crate) fn body_snippet(body: &[u8]) -> String {
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

/// Why a request failed, in a person's words: "connection refused", "timed out after 2s",
/// "connection closed before an answer", … The full error chain (reqwest, hyper and the
/// socket's error) goes only to a debug log.
pub(crate) fn describe_request_error(error: &reqwest::Error, timeout: Duration) -> String {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    let mut innermost: &dyn std::error::Error = error;
    let mut io_kind = None;
    while let Some(err) = source {
        chain.push_str(": ");
        chain.push_str(&err.to_string());
        if io_kind.is_none() {
            io_kind = err.downcast_ref::<std::io::Error>().map(|io| io.kind());
        }
        innermost = err;
        source = err.source();
    }
    tracing::debug!(error = %chain, "an HTTP request failed");
    classify_request_error(
        error.is_timeout(),
        error.is_connect(),
        io_kind,
        &innermost.to_string(),
        timeout,
    )
}

/// The short reason, from what [`describe_request_error`] found in the chain.
fn classify_request_error(
    is_timeout: bool,
    is_connect: bool,
    io_kind: Option<std::io::ErrorKind>,
    innermost: &str,
    timeout: Duration,
) -> String {
    use std::io::ErrorKind;
    if is_timeout || io_kind == Some(ErrorKind::TimedOut) {
        return format!("timed out after {timeout:?}");
    }
    match io_kind {
        Some(ErrorKind::ConnectionRefused) => return "connection refused".into(),
        Some(ErrorKind::ConnectionReset) => return "connection reset by peer".into(),
        Some(ErrorKind::ConnectionAborted) => return "connection aborted".into(),
        Some(ErrorKind::UnexpectedEof) => return "connection closed before an answer".into(),
        Some(ErrorKind::HostUnreachable) => return "host unreachable".into(),
        Some(ErrorKind::NetworkUnreachable) => return "network unreachable".into(),
        Some(ErrorKind::AddrNotAvailable) => return "address not available".into(),
        _ => {}
    }
    // hyper says so when the peer closes the connection before (or while) it answers; the
    // error has no kind of its own to match on.
    if innermost.contains("connection closed before message completed") {
        return "connection closed before an answer".into();
    }
    if is_connect {
        format!("could not connect: {innermost}")
    } else {
        innermost.to_string()
    }
}

/// Reads up to [`BODY_LIMIT`] bytes of a response body.
pub(crate) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
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

#[async_trait]
impl HealthProbe for HttpProbe {
    async fn check(&self, instance: &Instance) -> Health {
        let prepared = match &self.prepared {
            Ok(prepared) => prepared,
            Err(message) => return Health::Unhealthy(message.clone()),
        };
        let url = format!("http://{}{}", instance.endpoint, self.config.path);
        let what = format!("{} {url}", prepared.method);
        let timeout = self.config.timeout;
        let request = prepared
            .client
            .request(prepared.method.clone(), &url)
            .headers(prepared.headers.clone())
            .send();
        // One deadline for connecting, the answer and its body.
        let attempt = async {
            let response = request.await?;
            let status = response.status().as_u16();
            let body = read_body(response).await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, body) = match tokio::time::timeout(timeout, attempt).await {
            Err(_) => return Health::Unhealthy(format!("{what}: timed out after {timeout:?}")),
            Ok(Err(error)) => {
                return Health::Unhealthy(format!(
                    "{what}: {}",
                    describe_request_error(&error, timeout)
                ))
            }
            Ok(Ok(answer)) => answer,
        };
        if !self.config.expect_status.accepts(status) {
            return Health::Unhealthy(format!(
                "{what}: status {status}, expected {}: {}",
                self.config.expect_status,
                body_snippet(&body)
            ));
        }
        if let Some(expected) = &self.config.expect_body {
            let expected = fill_placeholders(expected, instance);
            if !contains(&body, expected.as_bytes()) {
                return Health::Unhealthy(format!(
                    "{what}: status {status}, but the body does not contain `{expected}`: {}",
                    body_snippet(&body)
                ));
            }
        }
        Health::Healthy
    }
}

/// True when `needle` occurs in `haystack` (an empty needle always does).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Color, Endpoint};

    fn instance() -> Instance {
        Instance::new(Color::Green, "v7", "x", Endpoint::new("127.0.0.1", 1))
    }

    #[test]
    fn status_match_accepts_codes_lists_and_ranges() {
        assert!(StatusMatch::Code(200).accepts(200));
        assert!(!StatusMatch::Code(200).accepts(204));
        assert!(StatusMatch::List(vec![200, 204]).accepts(204));
        assert!(!StatusMatch::List(vec![200, 204]).accepts(500));
        let range = StatusMatch::Range { from: 200, to: 399 };
        assert!(range.accepts(200) && range.accepts(399) && range.accepts(302));
        assert!(!range.accepts(199) && !range.accepts(400));
        assert_eq!(range.to_string(), "200-399");
        assert_eq!(
            StatusMatch::List(vec![200, 204]).to_string(),
            "one of 200, 204"
        );
    }

    #[test]
    fn placeholders_are_filled_from_the_instance() {
        assert_eq!(
            fill_placeholders("color={color} release={release}", &instance()),
            "color=green release=v7"
        );
    }

    #[test]
    fn body_snippet_is_short_and_on_one_line() {
        assert_eq!(
            body_snippet(b"down\nfor maintenance\n"),
            "down for maintenance"
        );
        let long = vec![b'a'; 500];
        let snippet = body_snippet(&long);
        assert_eq!(snippet.chars().filter(|c| *c == 'a').count(), 200);
        assert!(snippet.ends_with('…'));
        assert_eq!(body_snippet(b""), "(empty body)");
    }

    #[test]
    fn request_errors_get_short_reasons() {
        use std::io::ErrorKind;
        let t = Duration::from_secs(2);
        let closed = "connection closed before message completed";
        let cases = [
            ((true, false, None, "x"), "timed out after 2s"),
            (
                (false, true, Some(ErrorKind::TimedOut), "x"),
                "timed out after 2s",
            ),
            (
                (
                    false,
                    true,
                    Some(ErrorKind::ConnectionRefused),
                    "Connection refused (os error 111)",
                ),
                "connection refused",
            ),
            (
                (
                    false,
                    false,
                    Some(ErrorKind::ConnectionReset),
                    "Connection reset by peer (os error 104)",
                ),
                "connection reset by peer",
            ),
            (
                (false, false, None, closed),
                "connection closed before an answer",
            ),
            (
                (false, false, Some(ErrorKind::UnexpectedEof), "eof"),
                "connection closed before an answer",
            ),
            (
                (false, true, None, "dns error"),
                "could not connect: dns error",
            ),
            (
                (false, false, None, "invalid HTTP version parsed"),
                "invalid HTTP version parsed",
            ),
        ];
        for ((timeout, connect, kind, innermost), reason) in cases {
            assert_eq!(
                classify_request_error(timeout, connect, kind, innermost, t),
                reason,
                "{innermost}"
            );
        }
    }

    #[test]
    fn contains_finds_bytes() {
        assert!(contains(b"hello green world", b"green"));
        assert!(!contains(b"hello blue", b"green"));
        assert!(contains(b"x", b""));
    }

    #[tokio::test]
    async fn a_config_that_cannot_be_sent_is_refused_with_the_reason() {
        for (config, word) in [
            (
                HttpProbeConfig {
                    method: "GE T".into(),
                    ..HttpProbeConfig::default()
                },
                "method",
            ),
            (
                HttpProbeConfig {
                    path: "health".into(),
                    ..HttpProbeConfig::default()
                },
                "path",
            ),
            (
                HttpProbeConfig {
                    headers: vec![("X-Bad\n".into(), "1".into())],
                    ..HttpProbeConfig::default()
                },
                "header",
            ),
        ] {
            let probe = HttpProbe::new(config);
            let error = probe.validate().unwrap_err();
            assert!(error.message.contains(word), "{error}");
            match probe.check(&instance()).await {
                Health::Unhealthy(reason) => assert!(reason.contains(word), "{reason}"),
                Health::Healthy => panic!("a bad config must not be healthy"),
            }
        }
        assert!(HttpProbe::new(HttpProbeConfig::default())
            .validate()
            .is_ok());
    }
}
