//! Caddy's admin API: JSON over HTTP, on a TCP address or a Unix socket. Requests go to that
//! endpoint only (no proxy from the environment, no redirects followed).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use blue_green_core::{ComponentError, Endpoint};
use reqwest::header::{HeaderValue, CONTENT_TYPE, HOST};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::validate::{self, Host};

/// The most of an answer that is read: a handler's config or the upstream list.
const ANSWER_LIMIT: usize = 4 << 20;
/// How much of an answer an error quotes.
const QUOTE_LIMIT: usize = 300;

/// Where Caddy's admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaddyAdmin {
    /// A TCP address, for example `localhost:2019` (Caddy's default).
    Tcp(Endpoint),
    /// A Unix socket, written `unix//run/caddy/admin.sock` (as in Caddy's `admin.listen`) or
    /// as an absolute path.
    Unix(PathBuf),
}

impl FromStr for CaddyAdmin {
    type Err = ComponentError;

    /// `unix//PATH`, `/PATH`, or `HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ComponentError::invalid(format!(
                "`{}` is not a Caddy admin address: {why}; write HOST:PORT (for example localhost:2019) or unix//PATH (for example unix//run/caddy/admin.sock)",
                s.escape_debug()
            ))
        };
        if let Some(path) = s.strip_prefix("unix/").or(s.starts_with('/').then_some(s)) {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(bad("the socket path must be absolute"));
            }
            if path.chars().any(char::is_control) {
                return Err(bad("the socket path holds a control character"));
            }
            return Ok(CaddyAdmin::Unix(PathBuf::from(path)));
        }
        let endpoint: Endpoint = s.parse().map_err(|_| bad("it is not HOST:PORT"))?;
        validate::endpoint("Caddy's admin API", &endpoint).map_err(|e| bad(&e.message))?;
        Ok(CaddyAdmin::Tcp(endpoint))
    }
}

impl fmt::Display for CaddyAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaddyAdmin::Tcp(endpoint) => write!(f, "{endpoint}"),
            CaddyAdmin::Unix(path) => write!(f, "unix/{}", path.display()),
        }
    }
}

/// A client of one admin endpoint.
#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    admin: CaddyAdmin,
    base: String,
    client: reqwest::Client,
    /// Caddy checks the `Host` of admin requests; on a Unix socket it accepts an empty one.
    host: Option<HeaderValue>,
}

/// An answer that was not a success: the status and Caddy's `error` text.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub error: String,
}

impl AdminApi {
    pub(crate) fn new(admin: CaddyAdmin, timeout: Duration) -> Result<Self, ComponentError> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout);
        let (builder, base, host) = match &admin {
            CaddyAdmin::Tcp(endpoint) => (builder, format!("http://{endpoint}"), None),
            CaddyAdmin::Unix(path) => (
                builder.unix_socket(path.clone()),
                "http://localhost".to_string(),
                Some(HeaderValue::from_static("")),
            ),
        };
        let client = builder.build().map_err(|e| {
            ComponentError::failed(format!(
                "could not build the HTTP client for Caddy's admin API: {e}"
            ))
        })?;
        Ok(AdminApi {
            admin,
            base,
            client,
            host,
        })
    }

    pub(crate) fn admin(&self) -> &CaddyAdmin {
        &self.admin
    }

    /// Sends `method path` with an optional JSON body. `Ok(Ok(json))` for a 2xx answer (JSON
    /// `null` for an empty body), `Ok(Err(refusal))` for any other status; `Err` when Caddy
    /// could not be reached or its answer could not be read. `path` is built from checked
    /// names only.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Result<Value, Refusal>, ComponentError> {
        let what = format!("{method} {path}");
        let admin = &self.admin;
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(host) = &self.host {
            request = request.header(HOST, host.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                return ComponentError::timeout(format!(
                    "Caddy's admin API at {admin} did not answer `{what}` in time"
                ));
            } else if e.is_connect() {
                "cannot connect: is Caddy running, with its admin API there (`admin.listen`)?"
                    .to_string()
            } else {
                e.to_string()
            };
            ComponentError::unreachable(format!("Caddy's admin API at {admin} (`{what}`): {why}"))
                .with_source(e)
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > ANSWER_LIMIT {
                return Err(ComponentError::failed(format!(
                    "Caddy's admin API at {admin} answered `{what}` with more than {ANSWER_LIMIT} bytes"
                )));
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            let error = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| quote(&text));
            return Ok(Err(Refusal { status, error }));
        }
        if text.trim().is_empty() {
            return Ok(Ok(Value::Null));
        }
        serde_json::from_slice(&bytes).map(Ok).map_err(|e| {
            ComponentError::failed(format!(
                "Caddy's admin API at {admin} answered `{what}` with something that is not JSON ({e}): {}",
                quote(&text)
            ))
        })
    }
}

/// A text on one line, cut to [`QUOTE_LIMIT`] characters.
pub(crate) fn quote(text: &str) -> String {
    let one_line = text.trim().replace('\n', " | ");
    if one_line.chars().count() > QUOTE_LIMIT {
        let cut: String = one_line.chars().take(QUOTE_LIMIT).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// The `dial` address for `endpoint` (`host:port`, `[v6]:port`), after checking it.
pub(crate) fn dial(endpoint: &Endpoint) -> Result<String, ComponentError> {
    match validate::endpoint("Caddy", endpoint)? {
        Host::Ip(std::net::IpAddr::V6(ip)) => Ok(format!("[{ip}]:{}", endpoint.port)),
        Host::Ip(ip) => Ok(format!("{ip}:{}", endpoint.port)),
        Host::Name(name) => Ok(format!("{name}:{}", endpoint.port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_are_tcp_or_absolute_unix_sockets() {
        assert_eq!(
            "localhost:2019".parse::<CaddyAdmin>().unwrap(),
            CaddyAdmin::Tcp(Endpoint::new("localhost", 2019))
        );
        assert_eq!(
            "[::1]:2019".parse::<CaddyAdmin>().unwrap(),
            CaddyAdmin::Tcp(Endpoint::new("::1", 2019))
        );
        assert_eq!(
            "unix//run/caddy/admin.sock".parse::<CaddyAdmin>().unwrap(),
            CaddyAdmin::Unix("/run/caddy/admin.sock".into())
        );
        assert_eq!(
            "/run/caddy/admin.sock".parse::<CaddyAdmin>().unwrap(),
            CaddyAdmin::Unix("/run/caddy/admin.sock".into())
        );
        assert_eq!(
            "unix//run/caddy/admin.sock"
                .parse::<CaddyAdmin>()
                .unwrap()
                .to_string(),
            "unix//run/caddy/admin.sock"
        );
        for bad in [
            "",
            "localhost",
            "localhost:0",
            "unix/relative.sock",
            "unix/",
            "http://localhost:2019",
            "localhost:2019/config",
            "evil host:2019",
            "a;b:2019",
            "/run/a\nb",
        ] {
            let error = bad.parse::<CaddyAdmin>().unwrap_err();
            assert!(
                error.message.contains("Caddy admin address"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn dial_addresses_bracket_ipv6_and_refuse_anything_else() {
        assert_eq!(
            dial(&Endpoint::new("127.0.0.1", 8081)).unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(dial(&Endpoint::new("::1", 80)).unwrap(), "[::1]:80");
        assert_eq!(
            dial(&Endpoint::new("app-green", 8080)).unwrap(),
            "app-green:8080"
        );
        for bad in crate::validate::tests::INJECTIONS {
            assert!(dial(&Endpoint::new(*bad, 80)).is_err(), "{bad:?}");
        }
    }
}
