//! `[router] kind = "proxy"`: blue-green's own proxy, driven over its control socket.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use blue_green_core::AppName;
use blue_green_proxy::{ControlClient, ProxyRouter, VerifyRequest};
use toml::Spanned;

use super::super::raw::RawRouter;
use super::super::RouterConfig;
use super::Checker;

/// Where `blue-green proxy run` puts its control socket unless told otherwise.
pub const DEFAULT_CONTROL: &str = "/run/blue-green/proxy.sock";

/// The checked `[router]` of kind `proxy`.
#[derive(Debug, Clone)]
pub struct ProxyRouterConfig {
    /// The proxy's control socket.
    pub control: PathBuf,
    /// The app's host names; `None`: the proxy's default app.
    pub hosts: Option<Vec<String>>,
    /// The host name a staged color is reachable at (`deploy --no-switch`), checked and
    /// lowercased; `None`: the staged color is reachable at its own endpoint only.
    pub preview_host: Option<String>,
    /// A request through the proxy after each switch, if configured.
    pub verify: Option<VerifyRequest>,
}

impl ProxyRouterConfig {
    /// The router for `app`.
    pub fn router(&self, app: &AppName) -> ProxyRouter {
        let mut router = ProxyRouter::new(self.control.clone(), app.as_str());
        if let Some(hosts) = &self.hosts {
            router = router.with_hosts(hosts.clone());
        }
        if let Some(host) = &self.preview_host {
            router = router.with_preview_host(host.clone());
        }
        if let Some(v) = &self.verify {
            router = router.with_verify(v.clone());
        }
        router
    }

    /// For `validate`: whether the proxy answers on its socket, and what it routes.
    pub async fn answers(&self, app: &AppName) -> Result<String, String> {
        let status = ControlClient::new(&self.control)
            .status()
            .await
            .map_err(|e| e.to_string())?;
        let target = status
            .apps
            .iter()
            .find(|a| a.app == app.as_str())
            .and_then(|a| a.target.clone())
            .unwrap_or_else(|| "no target yet".to_string());
        Ok(format!(
            "the proxy answers on {} ({:?}); app {app} -> {target}",
            self.control.display(),
            status.mode
        ))
    }
}

/// The keys only `kind = "proxy"` takes.
fn proxy_only_keys(r: &RawRouter) -> [(&'static str, Option<Range<usize>>); 3] {
    [
        ("control", r.control.as_ref().map(Spanned::span)),
        ("hosts", r.hosts.as_ref().map(Spanned::span)),
        ("preview_host", r.preview_host.as_ref().map(Spanned::span)),
    ]
}

impl Checker<'_> {
    /// Refuses the proxy's keys under another router kind.
    pub(super) fn refuse_proxy_keys(&mut self, raw: &Spanned<RawRouter>) {
        let r = raw.get_ref();
        if r.kind.get_ref() != "proxy" {
            self.refuse_keys("router", &proxy_only_keys(r), "kind = \"proxy\"");
        }
    }

    pub(super) fn proxy(
        &mut self,
        raw: &Spanned<RawRouter>,
        app: &AppName,
    ) -> Option<RouterConfig> {
        let r = raw.get_ref();
        let others: [(&str, Option<Range<usize>>); 10] = [
            ("upstream", r.upstream.as_ref().map(Spanned::span)),
            ("upstream_file", r.upstream_file.as_ref().map(Spanned::span)),
            (
                "server_options",
                r.server_options.as_ref().map(Spanned::span),
            ),
            (
                "upstream_directives",
                r.upstream_directives.as_ref().map(Spanned::span),
            ),
            ("test_command", r.test_command.as_ref().map(Spanned::span)),
            (
                "reload_command",
                r.reload_command.as_ref().map(Spanned::span),
            ),
            (
                "command_timeout",
                r.command_timeout.as_ref().map(Spanned::span),
            ),
            ("pid_file", r.pid_file.as_ref().map(Spanned::span)),
            (
                "verify_successes",
                r.verify_successes.as_ref().map(Spanned::span),
            ),
            ("target_file", r.target_file.as_ref().map(Spanned::span)),
        ];
        self.refuse_keys("router", &others, "other router kinds (nginx, none)");
        let control = match &r.control {
            Some(c) => {
                let filled = self.filled(c, "router.control", &["app"], app);
                self.path(c, "router.control", &filled)
            }
            None => PathBuf::from(DEFAULT_CONTROL),
        };
        let hosts = r.hosts.as_ref().map(|list| {
            let mut hosts = Vec::new();
            for h in list.get_ref() {
                match blue_green_proxy::host_name(h.get_ref()) {
                    Ok(name) => hosts.push(name),
                    Err(e) => self.bad(h.span(), "router.hosts", e.to_string()),
                }
            }
            if hosts.is_empty() && self.problems.is_empty() {
                self.bad(
                    list.span(),
                    "router.hosts",
                    "the list is empty: name the app's hosts, or remove `hosts` to make it the proxy's default app",
                );
            }
            hosts
        });
        let preview_host = r
            .preview_host
            .as_ref()
            .and_then(|h| match blue_green_proxy::host_name(h.get_ref()) {
                Ok(name) if hosts.as_ref().is_some_and(|list| list.contains(&name)) => {
                    self.bad(
                        h.span(),
                        "router.preview_host",
                        format!(
                            "`{name}` is also in `hosts`: the preview needs a host name of its own"
                        ),
                    );
                    None
                }
                Ok(name) => Some(name),
                Err(e) => {
                    self.bad(h.span(), "router.preview_host", e.to_string());
                    None
                }
            });
        let verify = match &r.verify_url {
            Some(url) => {
                let mut verify = match VerifyRequest::new(url.get_ref()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.bad(url.span(), "router.verify_url", e.to_string());
                        return None;
                    }
                };
                if let Some(b) = &r.verify_body {
                    self.placeholders(b, "router.verify_body", &["color", "release"]);
                    verify.expect_body = Some(b.get_ref().clone());
                }
                verify.timeout = self.duration(
                    r.verify_deadline.as_ref(),
                    "router.verify_deadline",
                    Duration::from_secs(5),
                    false,
                );
                Some(verify)
            }
            None => {
                self.refuse_keys(
                    "router",
                    &[
                        ("verify_body", r.verify_body.as_ref().map(Spanned::span)),
                        (
                            "verify_deadline",
                            r.verify_deadline.as_ref().map(Spanned::span),
                        ),
                    ],
                    "a router with `verify_url`",
                );
                None
            }
        };
        let _ = r.verify_interval.as_ref().map(|v| {
            self.bad(
                v.span(),
                "router.verify_interval",
                "`verify_interval` only applies to kind = \"nginx\"; remove it",
            )
        });
        Some(RouterConfig::Proxy(ProxyRouterConfig {
            control,
            hosts,
            preview_host,
            verify,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::{parse, RouterConfig};

    fn config(router: &str) -> Result<super::super::super::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yml"), "").unwrap();
        let text = format!(
            "app = \"web\"\n[runtime]\nkind = \"compose\"\nfile = \"c.yml\"\nservice = \"web\"\ncontainer_port = 8080\n[router]\n{router}"
        );
        parse(&text, &dir.path().join("blue-green.toml"), dir.path()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_proxy_router_takes_control_hosts_and_verify() {
        let c = config(
            "kind = \"proxy\"\ncontrol = \"/run/bg/{app}.sock\"\nhosts = [\"Web.Example.com\"]\nverify_url = \"http://127.0.0.1:8080/health\"\n",
        )
        .unwrap();
        let RouterConfig::Proxy(p) = &c.router else {
            panic!("expected proxy, got {:?}", c.router)
        };
        assert_eq!(p.control, Path::new("/run/bg/web.sock"));
        assert_eq!(
            p.hosts.as_deref(),
            Some(&["web.example.com".to_string()][..])
        );
        assert_eq!(
            p.verify.as_ref().unwrap().url.to_string(),
            "http://127.0.0.1:8080/health"
        );
        let c = config("kind = \"proxy\"\n").unwrap();
        let RouterConfig::Proxy(p) = &c.router else {
            panic!()
        };
        assert_eq!(p.control, Path::new(super::DEFAULT_CONTROL));
        assert!(p.hosts.is_none() && p.verify.is_none() && p.preview_host.is_none());
    }

    #[test]
    fn a_preview_host_is_a_checked_host_name_of_its_own() {
        let c = config(
            "kind = \"proxy\"\nhosts = [\"web.example\"]\npreview_host = \"Preview.Example.com\"\n",
        )
        .unwrap();
        let RouterConfig::Proxy(p) = &c.router else {
            panic!()
        };
        assert_eq!(p.preview_host.as_deref(), Some("preview.example.com"));
        for (bad, why) in [
            ("*.example.com", "not a host name"),
            ("preview.example.com:8080", "not a host name"),
            ("a;b", "not a host name"),
            ("", "not a host name"),
            ("WEB.example", "also in `hosts`"),
        ] {
            let e = config(&format!(
                "kind = \"proxy\"\nhosts = [\"web.example\"]\npreview_host = \"{bad}\"\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("router.preview_host") && e.contains(why) && e.contains("line 10"),
                "{bad}: {e}"
            );
        }
        let e = config("kind = \"none\"\npreview_host = \"p.example\"\n").unwrap_err();
        assert!(
            e.contains("router.preview_host") && e.contains("only applies to kind = \"proxy\""),
            "{e}"
        );
    }

    #[test]
    fn bad_proxy_keys_are_named_with_their_line() {
        let e = config("kind = \"proxy\"\nhosts = [\"ok.example\", \"*.example\"]\n").unwrap_err();
        assert!(
            e.contains("router.hosts") && e.contains("*.example") && e.contains("line 9"),
            "{e}"
        );
        let e = config("kind = \"proxy\"\nupstream = \"x\"\n").unwrap_err();
        assert!(
            e.contains("router.upstream") && e.contains("only applies to other router kinds"),
            "{e}"
        );
        let e = config("kind = \"proxy\"\nverify_url = \"https://x/\"\n").unwrap_err();
        assert!(
            e.contains("router.verify_url") && e.contains("plain http://"),
            "{e}"
        );
        let e = config("kind = \"none\"\ncontrol = \"/x.sock\"\n").unwrap_err();
        assert!(
            e.contains("router.control") && e.contains("only applies to kind = \"proxy\""),
            "{e}"
        );
        let e = config("kind = \"proxy\"\nhosts = []\n").unwrap_err();
        assert!(e.contains("the list is empty"), "{e}");
        let e = config("kind = \"traefik\"\n").unwrap_err();
        assert!(e.contains("expected \"proxy\", "), "{e}");
    }
}
