//! `[router] kind = "caddy"`: Caddy's admin address and the `@id` of the reverse_proxy
//! handler. The values are checked by the router library itself, one field at a time, so that
//! a refusal names its key and line.

use blue_green_core::AppName;
use blue_green_router::caddy::{CaddyAdmin, CaddyConfig, CaddyRouter};
use toml::Spanned;

use super::super::raw::RawRouter;
use super::Checker;

/// Caddy's own default admin address.
const DEFAULT_ADMIN: &str = "localhost:2019";

impl Checker<'_> {
    pub(super) fn caddy(&mut self, raw: &Spanned<RawRouter>, app: &AppName) -> Option<CaddyConfig> {
        let r = raw.get_ref();
        let admin = match &r.admin {
            Some(a) => {
                let filled = self.filled(a, "router.admin", &["app"], app);
                match filled.parse::<CaddyAdmin>() {
                    Ok(admin) => Some(admin),
                    Err(e) => {
                        self.bad(a.span(), "router.admin", e.message);
                        None
                    }
                }
            }
            None => DEFAULT_ADMIN.parse().ok(),
        };
        let upstream_id = match &r.upstream_id {
            Some(id) => {
                let filled = self.filled(id, "router.upstream_id", &["app"], app);
                let probe =
                    CaddyConfig::new(CaddyAdmin::Unix("/admin.sock".into()), filled.clone());
                self.refused_by_router(id.span(), "router.upstream_id", CaddyRouter::new(probe));
                Some(filled)
            }
            None => {
                self.bad(raw.span(), "router.upstream_id", "kind = \"caddy\" needs `upstream_id`: the \"@id\" you put on the reverse_proxy handler in Caddy's JSON config");
                None
            }
        };
        let verify = self.proxy_verify(r, "Caddy");
        let mut config = CaddyConfig::new(admin?, upstream_id?);
        config.verify = verify;
        Some(config)
    }
}

/// `validate`'s look at Caddy, changing nothing: the admin API answers and the `@id` is on a
/// reverse_proxy handler.
pub async fn check_caddy(config: &CaddyConfig) -> Result<String, String> {
    let router = CaddyRouter::new(config.clone()).map_err(|e| e.message)?;
    router.check().await.map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use blue_green_router::caddy::CaddyAdmin;

    use crate::config::{parse, RouterConfig};

    const BASE: &str = r#"
app = "web"
[runtime]
kind = "docker"
image = "web:1"
container_port = 8080
[router]
"#;

    fn parsed(router: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse(
            &format!("{BASE}{router}"),
            Path::new("/etc/bg/bg.toml"),
            Path::new("/etc/bg"),
        )
    }

    fn refused(router: &str, key: &str, line: usize, says: &str) {
        let problems = parsed(router).unwrap_err().problems;
        assert!(
            problems.iter().any(|p| p.line == Some(line)
                && p.key.as_deref() == Some(key)
                && p.message.contains(says)),
            "expected {key} at line {line} saying `{says}`, got {problems:?}"
        );
    }

    #[test]
    fn a_caddy_router_reaches_the_config_with_the_default_admin_address() {
        let config = parsed("kind = \"caddy\"\nupstream_id = \"{app}_upstreams\"\nverify_url = \"http://127.0.0.1/health\"\n").unwrap();
        let RouterConfig::Caddy(c) = &config.router else {
            panic!("expected caddy, got {:?}", config.router)
        };
        assert_eq!(c.upstream_id, "web_upstreams");
        assert_eq!(c.admin, "localhost:2019".parse::<CaddyAdmin>().unwrap());
        assert_eq!(c.verify.as_ref().unwrap().url, "http://127.0.0.1/health");

        let config = parsed(
            "kind = \"caddy\"\nadmin = \"unix//run/caddy/{app}.sock\"\nupstream_id = \"u\"\n",
        )
        .unwrap();
        let RouterConfig::Caddy(c) = &config.router else {
            panic!("expected caddy")
        };
        assert_eq!(c.admin, CaddyAdmin::Unix("/run/caddy/web.sock".into()));
    }

    #[test]
    fn caddy_errors_name_the_key_and_line() {
        refused(
            "kind = \"caddy\"\nupstream_id = \"a/../../config\"\n",
            "router.upstream_id",
            9,
            "@id",
        );
        refused(
            "kind = \"caddy\"\nupstream_id = \"a b\"\n",
            "router.upstream_id",
            9,
            "@id",
        );
        refused(
            "kind = \"caddy\"\nadmin = \"http://localhost:2019\"\nupstream_id = \"u\"\n",
            "router.admin",
            9,
            "Caddy admin address",
        );
        refused(
            "kind = \"caddy\"\nadmin = \"unix/relative.sock\"\nupstream_id = \"u\"\n",
            "router.admin",
            9,
            "absolute",
        );
        refused(
            "kind = \"caddy\"\nupstream_id = \"u\"\nverify_url = \"https://127.0.0.1/\"\n",
            "router.verify_url",
            10,
            "Caddy verification URL",
        );
        refused(
            "kind = \"caddy\"\nupstream_id = \"u\"\nbackend = \"b\"\n",
            "router.backend",
            10,
            "only applies to kind = \"haproxy\"",
        );
        refused(
            "kind = \"caddy\"\nupstream_id = \"u\"\ntarget_file = \"t\"\n",
            "router.target_file",
            10,
            "only applies to kind = \"none\"",
        );
        assert!(parsed("kind = \"caddy\"\n")
            .unwrap_err()
            .problems
            .iter()
            .any(|p| p.key.as_deref() == Some("router.upstream_id")));
    }
}
