//! [`CaddyRouter`]: switches a Caddy `reverse_proxy` handler's upstream through Caddy's admin
//! API.
//!
//! The user puts an `@id` on the handler in Caddy's JSON config:
//!
//! ```json
//! { "handler": "reverse_proxy", "@id": "app_upstreams",
//!   "upstreams": [{ "dial": "127.0.0.1:8081" }] }
//! ```
//!
//! and a switch is one `PATCH /id/app_upstreams/upstreams` with `[{"dial": "127.0.0.1:8082"}]`
//! (other fields of the first upstream, such as `max_requests`, are kept). Caddy applies it as
//! a graceful config reload: it provisions the new config, moves its listeners over, and lets
//! the old config's server finish what it has. If Caddy refuses the change, the old config
//! stays, so the previous target is still in place. [`Router::target`] reads the handler's
//! upstreams back; [`Router::verify`] checks them and then requests a URL through Caddy until
//! it answers for the new color.
//!
//! No gradual shift: [`Router::can_split`] keeps its default, `false`. Caddy's
//! `reverse_proxy` has no weighted load balancing before 2.8 (`weighted_round_robin`), and the
//! Caddy here is 2.6.2 (`caddy version`), so the engine refuses `[switch] steps` with this
//! router before anything starts.
//!
//! What a switch does to open connections, measured here with Caddy 2.6.2 (tests/caddy.rs):
//!
//! - requests in flight finish normally, on the old color (the old config's server drains
//!   them);
//! - Caddy (2.6 and later, on Linux) listens on a new socket for every config (with
//!   `SO_REUSEPORT`) and closes the old one, so a connection that the kernel had queued on the
//!   old socket, but Caddy had not accepted yet, is reset. Such a request never reached Caddy
//!   or the app, and browsers send it again, but a client that does not retry sees an error:
//!   0 to 1 of about 1,750 requests (about 880 on new connections) per 50 switches under load
//!   here, 12 of 2,465 new connections in 200 switches with six clients connecting as fast as
//!   they could. Kept-alive connections that the old server closes as idle show up the same
//!   way (0 to 3 per run, retried by the load's clients). HAProxy's runtime API and the
//!   built-in proxy switch without touching their listeners;
//! - every WebSocket (and other upgraded connection) proxied by the handler is closed at the
//!   switch, because the old handler closes its upgraded connections when its config is
//!   unloaded; clients must reconnect (they reach the new color). Caddy 2.7 and later have the
//!   handler option `stream_close_delay` that keeps them open for that long after a config
//!   change: set it at least as long as `[switch] drain`;
//! - the old upstream's count is gone from `GET /reverse_proxy/upstreams` as soon as the new
//!   config is in, even while a request to it is still running. So [`Router::in_flight`] can
//!   count only an upstream the handler still has; for a replaced one it answers `None`, and
//!   the engine waits `[switch] drain` in full.
//!
//! There is no [`Router::cut`]: the admin API cannot close one upstream's requests (and the
//! upgraded connections are closed at the switch already); what is left at the drain deadline
//! ends when the old color stops.
//!
//! Caddy writes every change made through the API to its autosave file; run it with
//! `caddy run --resume` so that a restart keeps the switch (`caddy reload --config FILE` or a
//! start from the config file alone puts the file's upstream back).

pub(crate) mod admin;

use std::time::Duration;

use async_trait::async_trait;
use blue_green_core::{ComponentError, Endpoint, Instance, RouteReceipt, Router};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::validate;
use crate::verify::{self, ProxyVerify};
pub use admin::CaddyAdmin;
use admin::{AdminApi, Refusal};

/// Everything [`CaddyRouter`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyConfig {
    /// Where Caddy's admin API listens; nothing is sent anywhere else.
    pub admin: CaddyAdmin,
    /// The `@id` of the `reverse_proxy` handler, `[A-Za-z0-9_.-]{1,64}`.
    pub upstream_id: String,
    /// Every admin request must be answered within this (a switch is a config reload).
    pub timeout: Duration,
    /// Optional verification through Caddy after a switch.
    pub verify: Option<ProxyVerify>,
}

impl CaddyConfig {
    /// A config for the handler `upstream_id` on `admin`: 10 s per request, no verification.
    pub fn new(admin: CaddyAdmin, upstream_id: impl Into<String>) -> Self {
        CaddyConfig {
            admin,
            upstream_id: upstream_id.into(),
            timeout: Duration::from_secs(10),
            verify: None,
        }
    }
}

/// Routes through Caddy by replacing a `reverse_proxy` handler's upstreams.
///
/// ```no_run
/// # async fn demo() -> Result<(), blue_green_core::ComponentError> {
/// use blue_green_core::{Endpoint, Router};
/// use blue_green_router::caddy::{CaddyConfig, CaddyRouter};
/// use blue_green_router::ProxyVerify;
///
/// let mut config = CaddyConfig::new("localhost:2019".parse()?, "app_upstreams");
/// config.verify = Some(ProxyVerify::new("http://127.0.0.1/health"));
/// let router = CaddyRouter::new(config)?;
/// router.route_to(&Endpoint::new("127.0.0.1", 8082)).await?;
/// assert_eq!(router.target().await?, Some(Endpoint::new("127.0.0.1", 8082)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CaddyRouter {
    config: CaddyConfig,
    api: AdminApi,
    verify: Option<verify::Target>,
    /// One switch at a time.
    switching: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl CaddyRouter {
    /// A router with `config`. The id, the admin address and the verification are checked
    /// here, so a bad config fails before anything is sent.
    pub fn new(config: CaddyConfig) -> Result<Self, ComponentError> {
        validate::name("Caddy upstream id (@id)", &config.upstream_id)?;
        if let CaddyAdmin::Tcp(endpoint) = &config.admin {
            validate::endpoint("Caddy's admin API", endpoint)?;
        }
        if config.timeout.is_zero() {
            return Err(ComponentError::invalid(
                "the Caddy admin request timeout must be more than zero",
            ));
        }
        let verify = config
            .verify
            .as_ref()
            .map(|v| v.check("Caddy"))
            .transpose()?;
        Ok(CaddyRouter {
            api: AdminApi::new(config.admin.clone(), config.timeout)?,
            config,
            verify,
            switching: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &CaddyConfig {
        &self.config
    }

    fn id(&self) -> &str {
        &self.config.upstream_id
    }

    /// The error for a refused admin request.
    fn refused(&self, what: &str, refusal: Refusal) -> ComponentError {
        let admin = self.api.admin();
        let id = self.id();
        if refusal.status == StatusCode::NOT_FOUND && refusal.error.contains("unknown object ID") {
            return ComponentError::failed(format!(
                "Caddy (admin API at {admin}) has no object with \"@id\": \"{id}\"; put it on the reverse_proxy handler in Caddy's JSON config"
            ));
        }
        if refusal.status == StatusCode::FORBIDDEN {
            return ComponentError::failed(format!(
                "Caddy's admin API at {admin} refused {what}: {} (check `admin.origins` and `enforce_origin` in Caddy's config)",
                refusal.error
            ));
        }
        ComponentError::failed(format!(
            "Caddy's admin API at {admin} refused {what} with status {}: {}",
            refusal.status.as_u16(),
            refusal.error
        ))
    }

    /// The handler's upstream objects.
    async fn upstreams(&self) -> Result<Vec<Value>, ComponentError> {
        let path = format!("/id/{}/upstreams", self.id());
        match self.api.call(Method::GET, &path, None).await? {
            Ok(Value::Array(list)) => Ok(list),
            Ok(Value::Null) => Ok(Vec::new()),
            Ok(other) => Err(ComponentError::failed(format!(
                "`@id` \"{}\" on Caddy's admin API at {} has upstreams that are not a list: {}; put the @id on the reverse_proxy handler itself",
                self.id(),
                self.api.admin(),
                admin::quote(&other.to_string())
            ))),
            Err(refusal) => Err(self.refused(&format!("GET {path}"), refusal)),
        }
    }

    /// Checks, changing nothing, that the admin API answers and that `@id` names a
    /// `reverse_proxy` handler; says where it routes. For a `validate` command.
    pub async fn check(&self) -> Result<String, ComponentError> {
        let path = format!("/id/{}", self.id());
        let handler = match self.api.call(Method::GET, &path, None).await? {
            Ok(handler) => handler,
            Err(refusal) => return Err(self.refused(&format!("GET {path}"), refusal)),
        };
        let kind = handler.get("handler").and_then(Value::as_str);
        if kind != Some("reverse_proxy") {
            return Err(ComponentError::failed(format!(
                "\"@id\": \"{}\" in Caddy's config is on {}, not on a reverse_proxy handler; move it to the handler whose upstreams blue-green switches",
                self.id(),
                kind.map_or_else(|| "an object that is not a handler".to_string(), |k| format!("a `{k}` handler"))
            )));
        }
        let target = self.target().await?;
        Ok(match target {
            Some(endpoint) => format!(
                "Caddy's admin API at {} answers; reverse_proxy \"{}\" routes to {endpoint}",
                self.api.admin(),
                self.id()
            ),
            None => format!(
                "Caddy's admin API at {} answers; reverse_proxy \"{}\" has no upstream yet",
                self.api.admin(),
                self.id()
            ),
        })
    }
}

#[async_trait]
impl Router for CaddyRouter {
    async fn target(&self) -> Result<Option<Endpoint>, ComponentError> {
        let upstreams = self.upstreams().await?;
        match upstreams.as_slice() {
            [] => Ok(None),
            [one] => {
                let dial = one.get("dial").and_then(Value::as_str).unwrap_or_default();
                dial.parse::<Endpoint>().map(Some).map_err(|_| {
                    ComponentError::failed(format!(
                        "Caddy's reverse_proxy \"{}\" dials `{}`, which is not HOST:PORT; route again (for example `blue-green switch`) to rewrite it",
                        self.id(),
                        dial.escape_debug()
                    ))
                })
            }
            many => Err(ComponentError::failed(format!(
                "Caddy's reverse_proxy \"{}\" has {} upstreams; blue-green routes to exactly one: leave one in Caddy's config",
                self.id(),
                many.len()
            ))),
        }
    }

    async fn route_to(&self, endpoint: &Endpoint) -> Result<RouteReceipt, ComponentError> {
        // Checked before anything is sent.
        let dial = admin::dial(endpoint)?;
        let _switching = self.switching.lock().await;
        let current = self.upstreams().await?;
        // Keep what else the user set on the upstream (max_requests, …); replace the dial.
        let mut upstream = current.first().cloned().unwrap_or_else(|| json!({}));
        if current.len() == 1 && upstream.get("dial").and_then(Value::as_str) == Some(&dial) {
            return Ok(RouteReceipt::new());
        }
        if let Value::Object(fields) = &mut upstream {
            fields.insert("dial".into(), Value::String(dial.clone()));
        } else {
            upstream = json!({ "dial": dial });
        }
        let path = format!("/id/{}/upstreams", self.id());
        match self
            .api
            .call(Method::PATCH, &path, Some(&json!([upstream])))
            .await?
        {
            Ok(_) => Ok(RouteReceipt::new()),
            // Caddy loads a config whole or not at all: the old one still runs.
            Err(refusal) => {
                let error = self.refused(&format!("PATCH {path} (dial {dial})"), refusal);
                Err(ComponentError::failed(format!(
                    "{}; Caddy kept its previous config, so it routes as before",
                    error.message
                )))
            }
        }
    }

    async fn verify(
        &self,
        instance: &Instance,
        _receipt: &RouteReceipt,
    ) -> Result<(), ComponentError> {
        let expected = admin::dial(&instance.endpoint)?;
        let target = self.target().await?;
        let now = target.as_ref().map(admin::dial).transpose()?;
        if now.as_deref() != Some(expected.as_str()) {
            return Err(ComponentError::failed(format!(
                "Caddy's reverse_proxy \"{}\" dials {} after the switch, not {expected}",
                self.id(),
                now.unwrap_or_else(|| "nothing".into())
            )));
        }
        match (&self.config.verify, &self.verify) {
            (Some(settings), Some(probe)) => {
                let routes = format!("reverse_proxy \"{}\"", self.id());
                settings.run(probe, instance, "Caddy", &routes).await
            }
            _ => Ok(()),
        }
    }

    async fn in_flight(&self, endpoint: &Endpoint) -> Result<Option<u64>, ComponentError> {
        let address = admin::dial(endpoint)?;
        let path = "/reverse_proxy/upstreams";
        let list = match self.api.call(Method::GET, path, None).await? {
            Ok(Value::Array(list)) => list,
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Err(ComponentError::failed(format!(
                "Caddy's admin API at {} answered GET {path} with something else than a list: {}",
                self.api.admin(),
                admin::quote(&other.to_string())
            )))
            }
            Err(refusal) => return Err(self.refused(&format!("GET {path}"), refusal)),
        };
        let count = list
            .iter()
            .find(|u| u.get("address").and_then(Value::as_str) == Some(address.as_str()))
            .and_then(|u| u.get("num_requests").and_then(Value::as_u64));
        if count.is_none() {
            // Caddy drops a replaced upstream's count with the old config, even while
            // requests to it still run: it cannot say.
            tracing::debug!(%address, "Caddy no longer counts requests to this upstream");
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::INJECTIONS;

    #[test]
    fn the_id_admin_address_and_verification_are_checked_when_built() {
        let good = CaddyConfig::new("localhost:2019".parse().unwrap(), "app_upstreams");
        assert!(CaddyRouter::new(good.clone()).is_ok());
        for bad in INJECTIONS {
            let mut c = good.clone();
            c.upstream_id = bad.to_string();
            let error = CaddyRouter::new(c).unwrap_err();
            assert!(error.message.contains("@id"), "{bad:?}: {error}");
        }
        let mut c = good.clone();
        c.admin = CaddyAdmin::Tcp(Endpoint::new("a b", 2019));
        assert!(CaddyRouter::new(c).is_err());
        let mut c = good.clone();
        c.verify = Some(ProxyVerify::new("https://127.0.0.1/"));
        assert!(CaddyRouter::new(c).is_err());
        let mut c = good;
        c.timeout = Duration::ZERO;
        assert!(CaddyRouter::new(c).is_err());
    }

    #[tokio::test]
    async fn caddy_2_6_cannot_split_and_refuses_a_split_without_calling_caddy() {
        let router =
            CaddyRouter::new(CaddyConfig::new("localhost:2019".parse().unwrap(), "app")).unwrap();
        assert!(!router.can_split());
        let split = blue_green_core::Split::new(
            Endpoint::new("127.0.0.1", 8081),
            Endpoint::new("127.0.0.1", 8082),
            10,
        )
        .unwrap();
        let error = router.split(&split).await.unwrap_err();
        assert_eq!(error.kind, blue_green_core::ComponentErrorKind::Invalid);
        assert_eq!(router.current_split().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_refused_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let router = CaddyRouter::new(CaddyConfig::new(CaddyAdmin::Unix(path), "app")).unwrap();
        for bad in INJECTIONS {
            let error = router
                .route_to(&Endpoint::new(*bad, 8080))
                .await
                .unwrap_err();
            assert_eq!(
                error.kind,
                blue_green_core::ComponentErrorKind::Invalid,
                "{bad:?}: {error}"
            );
            assert!(router.in_flight(&Endpoint::new(*bad, 1)).await.is_err());
        }
        assert!(router
            .route_to(&Endpoint::new("127.0.0.1", 0))
            .await
            .is_err());
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "nothing may reach the admin socket");
    }
}
