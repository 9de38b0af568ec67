//! The route table: which app a request's `Host` picks, and the target each app sends to now
//! (or the two targets of a split, or its preview target for the preview host name).
//!
//! The table is immutable; a switch builds a new one and swaps the pointer. A request takes the
//! read lock only to look up its target and count itself in flight there (no await inside), so
//! a switch never waits for a request, and every request that saw the old table is already
//! counted on the old target when the swap returns: the drain cannot miss it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use blue_green_core::AppName;
use hyper::header::{HeaderMap, HeaderValue, COOKIE};
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
    /// Where its requests go now, `host:port`; `None` before the first switch. During a split,
    /// the split's current target (which keeps `100 - percent` of new clients).
    pub target: Option<String>,
    /// A gradual shift in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitInfo>,
    /// A staged color reachable at a preview host name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewInfo>,
}

/// An app's split: `percent` of new clients go to `next`, the rest to the app's target; a
/// client keeps its side by a cookie (`bg-<app>`) while the split lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitInfo {
    /// The new target, `host:port`.
    pub next: String,
    /// The share of new clients sent to `next`, 1 to 99.
    pub percent: u8,
}

/// An app's preview: requests whose `Host` is `host` go to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewInfo {
    /// The preview host name.
    pub host: String,
    /// The staged target, `host:port`.
    pub target: String,
}

/// A split as the table keeps it: the new target, the share, and the cookie that keeps a
/// client on one side (made once here, so a request formats nothing).
#[derive(Debug)]
pub(crate) struct SplitRoute {
    pub(crate) next: Arc<Target>,
    pub(crate) percent: u8,
    /// `bg-<app>`.
    cookie_name: String,
    /// `Set-Cookie` values naming the current and the next target.
    current_cookie: HeaderValue,
    next_cookie: HeaderValue,
}

impl SplitRoute {
    fn new(app: &str, current: &Target, next: Arc<Target>, percent: u8) -> Result<Self, Error> {
        let cookie_name = format!("bg-{app}");
        let set = |t: &Target| {
            HeaderValue::from_str(&format!(
                "{cookie_name}={}; Path=/; HttpOnly; SameSite=Lax",
                t.sticky_id
            ))
            .map_err(|e| Error::Invalid(format!("app {app}: no cookie for a split: {e}")))
        };
        Ok(SplitRoute {
            current_cookie: set(current)?,
            next_cookie: set(&next)?,
            cookie_name,
            next,
            percent,
        })
    }
}

/// A preview as the table keeps it.
#[derive(Debug, Clone)]
pub(crate) struct PreviewRoute {
    pub(crate) host: String,
    pub(crate) target: Arc<Target>,
}

#[derive(Debug)]
pub(crate) struct AppRoute {
    pub(crate) name: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) target: Option<Arc<Target>>,
    pub(crate) split: Option<SplitRoute>,
    pub(crate) preview: Option<PreviewRoute>,
}

impl AppRoute {
    pub(crate) fn info(&self) -> AppInfo {
        AppInfo {
            app: self.name.clone(),
            hosts: self.hosts.clone(),
            target: self.target.as_ref().map(|t| t.endpoint.to_string()),
            split: self.split.as_ref().map(|s| SplitInfo {
                next: s.next.endpoint.to_string(),
                percent: s.percent,
            }),
            preview: self.preview.as_ref().map(|p| PreviewInfo {
                host: p.host.clone(),
                target: p.target.endpoint.to_string(),
            }),
        }
    }
}

/// What an app's route is to become: [`RouteTable::with_route`] checks it.
#[derive(Debug)]
pub(crate) struct RouteSpec {
    pub(crate) hosts: Vec<String>,
    pub(crate) target: Option<Arc<Target>>,
    /// The next target and its percent.
    pub(crate) split: Option<(Arc<Target>, u8)>,
    /// The preview host and target.
    pub(crate) preview: Option<(String, Arc<Target>)>,
}

impl RouteSpec {
    /// The spec that keeps `route` as it is.
    pub(crate) fn of(route: &AppRoute) -> RouteSpec {
        RouteSpec {
            hosts: route.hosts.clone(),
            target: route.target.clone(),
            split: route.split.as_ref().map(|s| (s.next.clone(), s.percent)),
            preview: route
                .preview
                .as_ref()
                .map(|p| (p.host.clone(), p.target.clone())),
        }
    }
}

/// A request bound to its target: counted in flight there, with the cookie to set when a
/// split picked its side.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) guard: InFlight,
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// Why a request found nowhere to go.
#[derive(Debug)]
pub(crate) enum NoRoute {
    /// No app has this host and there is no default app.
    UnknownHost(Option<String>),
    /// The app has no target yet.
    NoTarget(String),
}

/// What a host name picks: an app, or an app's preview.
#[derive(Debug, Clone)]
enum Pick {
    App(Arc<AppRoute>),
    Preview(Arc<AppRoute>),
}

impl Pick {
    fn app(&self) -> &Arc<AppRoute> {
        match self {
            Pick::App(a) | Pick::Preview(a) => a,
        }
    }
}

/// One immutable version of the routes.
#[derive(Debug, Default, Clone)]
pub(crate) struct RouteTable {
    apps: BTreeMap<String, Arc<AppRoute>>,
    by_host: HashMap<String, Pick>,
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

    /// What serves `host` (already normalised): an app, an app's preview, or the default app.
    fn pick(&self, host: Option<&str>) -> Option<Pick> {
        host.and_then(|h| self.by_host.get(h))
            .cloned()
            .or_else(|| self.default_app.clone().map(Pick::App))
    }

    /// This table with `app` set to `hosts` and `target` (no split, no preview).
    #[cfg(test)]
    pub(crate) fn with_app(
        &self,
        app: &str,
        hosts: Vec<String>,
        target: Option<Arc<Target>>,
    ) -> Result<RouteTable, Error> {
        self.with_route(
            app,
            RouteSpec {
                hosts,
                target,
                split: None,
                preview: None,
            },
        )
    }

    /// This table with `app` set to `spec`, checked: a valid app name, valid host names that no
    /// other app (or preview) has, at most one default app, a split only beside a target and
    /// to another endpoint with 1 to 99 percent, a valid preview host name.
    pub(crate) fn with_route(&self, app: &str, spec: RouteSpec) -> Result<RouteTable, Error> {
        AppName::new(app).map_err(|e| Error::Invalid(e.message))?;
        let mut checked = Vec::with_capacity(spec.hosts.len());
        for host in spec.hosts {
            let host = check_host(&host)?;
            if !checked.contains(&host) {
                checked.push(host);
            }
        }
        let split = match (spec.split, &spec.target) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::Invalid(format!(
                    "app {app} has no target to split traffic from; route it to one first"
                )))
            }
            (Some((next, percent)), Some(current)) => {
                blue_green_core::Split::new(
                    current.endpoint.clone(),
                    next.endpoint.clone(),
                    percent,
                )
                .map_err(|e| Error::Invalid(format!("app {app}: {}", e.message)))?;
                Some(SplitRoute::new(app, current, next, percent)?)
            }
        };
        let preview = match spec.preview {
            Some((host, target)) => {
                let host = check_host(&host)?;
                if checked.contains(&host) {
                    return Err(Error::Invalid(format!(
                        "the preview host {host} is one of app {app}'s own hosts; give the preview a name of its own"
                    )));
                }
                Some(PreviewRoute { host, target })
            }
            None => None,
        };
        let mut apps = self.apps.clone();
        apps.insert(
            app.to_string(),
            Arc::new(AppRoute {
                name: app.to_string(),
                hosts: checked,
                target: spec.target,
                split,
                preview,
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
            let preview = route.preview.as_ref().map(|p| &p.host);
            for (host, pick) in route
                .hosts
                .iter()
                .map(|h| (h, Pick::App(route.clone())))
                .chain(preview.map(|h| (h, Pick::Preview(route.clone()))))
            {
                if let Some(other) = table.by_host.get(host) {
                    let what = match other {
                        Pick::App(_) => "served by app",
                        Pick::Preview(_) => "the preview host of app",
                    };
                    return Err(Error::Invalid(format!(
                        "host {host} is already {what} {}; an app's hosts and preview host must be its own",
                        other.app().name
                    )));
                }
                table.by_host.insert(host.clone(), pick);
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

    /// Binds a request for `host` (with its `headers`, for a split's cookie) to the target
    /// current now, counted in flight there.
    pub(crate) fn bind(&self, host: Option<&str>, headers: &HeaderMap) -> Result<Bound, NoRoute> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let pick = table
            .pick(host)
            .ok_or_else(|| NoRoute::UnknownHost(host.map(str::to_string)))?;
        let app = match pick {
            Pick::Preview(app) => {
                // Only in the table while the app has a preview.
                return match &app.preview {
                    Some(p) => Ok(Bound {
                        guard: p.target.enter(),
                        set_cookie: None,
                    }),
                    None => Err(NoRoute::NoTarget(app.name.clone())),
                };
            }
            Pick::App(app) => app,
        };
        let Some(current) = &app.target else {
            return Err(NoRoute::NoTarget(app.name.clone()));
        };
        let Some(split) = &app.split else {
            return Ok(Bound {
                guard: current.enter(),
                set_cookie: None,
            });
        };
        // A client that has a side keeps it; any other cookie value is ignored (and never
        // sent back).
        match sticky_cookie(headers, &split.cookie_name) {
            Some(id) if id == current.sticky_id => Ok(Bound {
                guard: current.enter(),
                set_cookie: None,
            }),
            Some(id) if id == split.next.sticky_id => Ok(Bound {
                guard: split.next.enter(),
                set_cookie: None,
            }),
            _ if fastrand::u8(0..100) < split.percent => Ok(Bound {
                guard: split.next.enter(),
                set_cookie: Some(split.next_cookie.clone()),
            }),
            _ => Ok(Bound {
                guard: current.enter(),
                set_cookie: Some(split.current_cookie.clone()),
            }),
        }
    }
}

/// The value of the cookie `name` in a request's `Cookie` headers, if it has one.
fn sticky_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
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
        assert_eq!(t.pick(Some("b.example")).unwrap().app().name, "b");
        assert_eq!(t.pick(Some("other")).unwrap().app().name, "a");
        assert_eq!(t.pick(None).unwrap().app().name, "a");
    }

    fn target(port: u16) -> Arc<Target> {
        crate::target::Targets::default()
            .get_or_add(&blue_green_core::Endpoint::new("127.0.0.1", port))
            .unwrap()
    }

    fn spec(target: Option<Arc<Target>>) -> RouteSpec {
        RouteSpec {
            hosts: vec!["web.example".into()],
            target,
            split: None,
            preview: None,
        }
    }

    #[test]
    fn a_split_needs_a_target_another_endpoint_and_1_to_99_percent() {
        let (blue, green) = (target(1), target(2));
        let t = RouteTable::default();
        let with = |current: Option<Arc<Target>>, next: &Arc<Target>, percent| {
            t.with_route(
                "web",
                RouteSpec {
                    split: Some((next.clone(), percent)),
                    ..spec(current)
                },
            )
        };
        assert!(with(Some(blue.clone()), &green, 20).is_ok());
        for (current, next, percent, why) in [
            (None, &green, 20, "no target to split"),
            (Some(blue.clone()), &green, 0, "1 to 99 percent"),
            (Some(blue.clone()), &green, 100, "1 to 99 percent"),
            (Some(blue.clone()), &blue, 50, "two different endpoints"),
        ] {
            let e = with(current, next, percent).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_preview_host_is_checked_and_must_be_nobody_elses() {
        let t = RouteTable::default()
            .with_app("other", vec!["other.example".into()], Some(target(3)))
            .unwrap();
        let with = |host: &str| {
            t.with_route(
                "web",
                RouteSpec {
                    preview: Some((host.into(), target(2))),
                    ..spec(Some(target(1)))
                },
            )
        };
        let ok = with("Preview.Example").unwrap();
        assert!(
            matches!(ok.pick(Some("preview.example")), Some(Pick::Preview(a)) if a.name == "web")
        );
        for (bad, why) in [
            ("web.example", "one of app web's own hosts"),
            ("other.example", "already served by app other"),
            ("*.example", "not a host name"),
            ("a b", "not a host name"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_sticky_cookie_is_found_among_others_and_only_by_its_exact_name() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; bg-web2=x"));
        h.append(COOKIE, HeaderValue::from_static("session=z;bg-web= abc "));
        assert_eq!(sticky_cookie(&h, "bg-web"), Some("abc"));
        assert_eq!(sticky_cookie(&h, "bg-web2"), Some("x"));
        assert_eq!(sticky_cookie(&h, "bg-other"), None);
    }

    #[test]
    fn a_split_sticks_by_cookie_and_ignores_a_foreign_value() {
        let (blue, green) = (target(1), target(2));
        let routes = Routes::new(
            RouteTable::default()
                .with_route(
                    "web",
                    RouteSpec {
                        split: Some((green.clone(), 50)),
                        ..spec(Some(blue.clone()))
                    },
                )
                .unwrap(),
        );
        let cookie = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                COOKIE,
                HeaderValue::from_str(&format!("bg-web={value}")).unwrap(),
            );
            h
        };
        for _ in 0..20 {
            let b = routes
                .bind(Some("web.example"), &cookie(&green.sticky_id))
                .unwrap();
            assert_eq!(b.guard.target().endpoint, green.endpoint);
            assert!(b.set_cookie.is_none());
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let b = routes
                .bind(Some("web.example"), &cookie("<script>"))
                .unwrap();
            let set = b
                .set_cookie
                .expect("a new side is set")
                .to_str()
                .unwrap()
                .to_string();
            assert!(!set.contains("script"), "{set}");
            assert!(set.contains(&b.guard.target().sticky_id), "{set}");
            assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set}");
            seen.insert(b.guard.target().endpoint.port);
        }
        assert_eq!(seen.len(), 2, "a fifty-fifty split uses both sides");
    }
}
