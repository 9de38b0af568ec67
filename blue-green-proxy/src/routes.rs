//! The route table: which app a request's `Host` picks, and the target each app sends to now.
//!
//! The table is immutable; a switch builds a new one and swaps the pointer. A request takes the
//! read lock only to look up its target and count itself in flight there (no await inside), so
//! a switch never waits for a request, and every request that saw the old table is already
//! counted on the old target when the swap returns: the drain cannot miss it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use blue_green_core::AppName;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::target::{InFlight, Target};

/// One app as the control API and status report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// The app's name.
    pub app: String,
    /// The `Host` names that pick it; empty for the default app (any other host).
    pub hosts: Vec<String>,
    /// Where its requests go now, `host:port`; `None` before the first switch.
    pub target: Option<String>,
}

#[derive(Debug)]
pub(crate) struct AppRoute {
    pub(crate) name: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) target: Option<Arc<Target>>,
}

impl AppRoute {
    pub(crate) fn info(&self) -> AppInfo {
        AppInfo {
            app: self.name.clone(),
            hosts: self.hosts.clone(),
            target: self.target.as_ref().map(|t| t.endpoint.to_string()),
        }
    }
}

/// Why a request found nowhere to go.
#[derive(Debug)]
pub(crate) enum NoRoute {
    /// No app has this host and there is no default app.
    UnknownHost(Option<String>),
    /// The app has no target yet.
    NoTarget(String),
}

/// One immutable version of the routes.
#[derive(Debug, Default, Clone)]
pub(crate) struct RouteTable {
    apps: BTreeMap<String, Arc<AppRoute>>,
    by_host: HashMap<String, Arc<AppRoute>>,
    default_app: Option<Arc<AppRoute>>,
}

impl RouteTable {
    /// The apps, by name.
    pub(crate) fn apps(&self) -> impl Iterator<Item = &Arc<AppRoute>> {
        self.apps.values()
    }

    /// The app called `name`.
    pub(crate) fn app(&self, name: &str) -> Option<&Arc<AppRoute>> {
        self.apps.get(name)
    }

    /// The app that serves `host` (already normalised), or the default app.
    fn pick(&self, host: Option<&str>) -> Option<&Arc<AppRoute>> {
        host.and_then(|h| self.by_host.get(h))
            .or(self.default_app.as_ref())
    }

    /// This table with `app` set to `hosts` and `target`, checked: a valid app name, valid host
    /// names that no other app has, at most one default app.
    pub(crate) fn with_app(
        &self,
        app: &str,
        hosts: Vec<String>,
        target: Option<Arc<Target>>,
    ) -> Result<RouteTable, Error> {
        AppName::new(app).map_err(|e| Error::Invalid(e.message))?;
        let mut checked = Vec::with_capacity(hosts.len());
        for host in hosts {
            let host = check_host(&host)?;
            if !checked.contains(&host) {
                checked.push(host);
            }
        }
        let mut apps = self.apps.clone();
        apps.insert(
            app.to_string(),
            Arc::new(AppRoute {
                name: app.to_string(),
                hosts: checked,
                target,
            }),
        );
        RouteTable::from_apps(apps.into_values())
    }

    fn from_apps(apps: impl IntoIterator<Item = Arc<AppRoute>>) -> Result<RouteTable, Error> {
        let mut table = RouteTable::default();
        for route in apps {
            if route.hosts.is_empty() {
                if let Some(other) = &table.default_app {
                    return Err(Error::Invalid(format!(
                        "apps {} and {} both have no hosts, and only one app can be the default: give one of them `hosts`",
                        other.name, route.name
                    )));
                }
                table.default_app = Some(route.clone());
            }
            for host in &route.hosts {
                if let Some(other) = table.by_host.get(host) {
                    return Err(Error::Invalid(format!(
                        "host {host} is already served by app {}; an app's hosts must be its own",
                        other.name
                    )));
                }
                table.by_host.insert(host.clone(), route.clone());
            }
            table.apps.insert(route.name.clone(), route);
        }
        Ok(table)
    }
}

/// A host name as the table keys it: lowercase, no trailing dot. Exact names only: letters,
/// digits, `-` and `.` (which also covers IPv4 addresses).
pub(crate) fn check_host(host: &str) -> Result<String, Error> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(h)
    } else {
        Err(Error::Invalid(format!(
            "`{host}` is not a host name: expected an exact name such as app.example.com (letters, digits, `-` and `.`)"
        )))
    }
}

/// The host a request names (its `Host` header or, in HTTP/2, its authority), normalised for
/// lookup: no port, lowercase, no trailing dot. Borrowed when it already is (the usual case),
/// so a request copies nothing to find its app.
pub(crate) fn request_host(authority: &str) -> Option<Cow<'_, str>> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal; the table has no such names, so it only picks the default app.
        rest.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        None
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// The current route table behind a lock held only for pointer reads and swaps.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    table: RwLock<Arc<RouteTable>>,
}

impl Routes {
    pub(crate) fn new(table: RouteTable) -> Routes {
        Routes {
            table: RwLock::new(Arc::new(table)),
        }
    }

    /// The table now.
    pub(crate) fn snapshot(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `table` current. Returns once no request can still pick a target from the old one
    /// without being counted there.
    pub(crate) fn replace(&self, table: RouteTable) {
        let new = Arc::new(table);
        let old = std::mem::replace(
            &mut *self.table.write().unwrap_or_else(|p| p.into_inner()),
            new,
        );
        drop(old);
    }

    /// Binds a request for `host` to the target current now, counted in flight there.
    pub(crate) fn bind(&self, host: Option<&str>) -> Result<InFlight, NoRoute> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let app = table
            .pick(host)
            .ok_or_else(|| NoRoute::UnknownHost(host.map(str::to_string)))?;
        match &app.target {
            Some(target) => Ok(target.enter()),
            None => Err(NoRoute::NoTarget(app.name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_drops_port_case_and_trailing_dot() {
        assert_eq!(
            request_host("App.Example.com:8080").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            request_host("app.example.com.").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(request_host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(request_host(""), None);
    }

    #[test]
    fn host_names_are_checked() {
        assert_eq!(check_host("App.example.com").unwrap(), "app.example.com");
        for bad in ["", "a b", "*.example.com", "a..b", "x/y", "a;b"] {
            assert!(check_host(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn two_default_apps_and_shared_hosts_are_refused() {
        let t = RouteTable::default().with_app("a", vec![], None).unwrap();
        let e = t.with_app("b", vec![], None).unwrap_err().to_string();
        assert!(e.contains("only one app can be the default"), "{e}");
        let t = t.with_app("b", vec!["x.example".into()], None).unwrap();
        let e = t
            .with_app("c", vec!["X.example".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already served by app b"), "{e}");
        assert!(t.with_app("Bad Name", vec![], None).is_err());
    }

    #[test]
    fn a_host_picks_its_app_and_anything_else_the_default() {
        let t = RouteTable::default()
            .with_app("a", vec![], None)
            .unwrap()
            .with_app("b", vec!["b.example".into()], None)
            .unwrap();
        assert_eq!(t.pick(Some("b.example")).unwrap().name, "b");
        assert_eq!(t.pick(Some("other")).unwrap().name, "a");
        assert_eq!(t.pick(None).unwrap().name, "a");
    }
}
