//! The setup checks of `validate` that ask the tools themselves: what nginx really loads
//! (`nginx -T`), which services and ports the compose files really have (`compose config`), and
//! whether the Docker runtime's image is on the machine. Each catches a mistake that `deploy`
//! would otherwise find only after it had started something.

use std::path::{Path, PathBuf};

use blue_green_core::process::{Command, Keep};
use blue_green_core::{Color, Endpoint};
use blue_green_docker::{ComposeRuntime, DockerRuntime, PerColor};
use blue_green_router::NginxConfig;

/// Where the guide explains how to move an existing both-colors upstream block.
pub(crate) const MIGRATION_DOC: &str =
    "docs/guide.md, section \"Moving from a both-colors upstream\"";

/// How much of `nginx -T`'s dump is read: the whole config of any ordinary site.
const DUMP_LIMIT: usize = 8 * 1024 * 1024;

/// One finished check: what it is about, and its result.
pub(super) type Found = (String, Result<String, String>);

/// The configured test command, and what `nginx -T` says about the upstream file.
pub(super) async fn nginx(n: &NginxConfig) -> Vec<Found> {
    let mut found = Vec::new();
    let Some(test) = Command::from_argv(&n.test_command) else {
        return found;
    };
    let shown = n.test_command.join(" ");
    let out = match test.run(n.command_timeout).await {
        Err(e) => {
            found.push(("nginx test".into(), Err(e.to_string())));
            return found;
        }
        Ok(out) => out,
    };
    if !out.status.success() {
        let stderr = out.stderr.text();
        let last: Vec<&str> = stderr.lines().rev().take(3).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        let mut message = format!(
            "`{shown}` failed ({}): {}",
            out.status_text(),
            last.join(" / ")
        );
        if let Some(hint) = test_hint(&stderr, n) {
            message = format!("{message}. {hint}");
        }
        found.push(("nginx test".into(), Err(message)));
        return found;
    }
    found.push(("nginx test".into(), Ok(format!("`{shown}` passed"))));
    // `-T` tests the same config as `-t` (same `-p`, `-c`, `-g`) and prints every file it read.
    if !n.test_command.iter().any(|a| a == "-t") {
        found.push((
            "include".into(),
            Ok("not checked: test_command has no `-t` to turn into `-T`".into()),
        ));
        return found;
    }
    let dump_argv: Vec<String> = n
        .test_command
        .iter()
        .map(|a| if a == "-t" { "-T".into() } else { a.clone() })
        .collect();
    let Some(dump) = Command::from_argv(&dump_argv) else {
        return found;
    };
    let dump = dump.output_limit(DUMP_LIMIT, Keep::Start);
    let shown = dump_argv.join(" ");
    match dump.run(n.command_timeout).await {
        Ok(out) if out.status.success() => {
            found.extend(read_dump(&out.stdout.text(), n));
        }
        Ok(out) => found.push((
            "include".into(),
            Err(format!(
                "`{shown}` failed ({}): {}",
                out.status_text(),
                out.stderr.text().trim()
            )),
        )),
        Err(e) => found.push(("include".into(), Err(format!("`{shown}`: {e}")))),
    }
    found
}

/// What to do about a failed `nginx -t`, when its words point at the upstream.
fn test_hint(stderr: &str, n: &NginxConfig) -> Option<String> {
    let upstream = &n.upstream;
    let file = absolute(&n.upstream_file);
    if let Some(at) = after(
        stderr,
        &format!("host not found in upstream \"{upstream}\" in "),
    ) {
        return Some(format!(
            "nginx's config uses upstream `{upstream}` ({at}) but does not load {} (router.upstream_file), which defines it: add `include {};` at http level (outside any `server {{ }}`), for example at the top of {}",
            file.display(),
            file.display(),
            at.rsplit_once(':').map_or(at.as_str(), |(f, _)| f)
        ));
    }
    if let Some(at) = after(stderr, &format!("duplicate upstream \"{upstream}\" in ")) {
        return Some(format!(
            "upstream `{upstream}` is defined twice (the second at {at}): {} (router.upstream_file) must be its only definition; remove the other `upstream {upstream} {{ }}` block (see {MIGRATION_DOC})",
            file.display()
        ));
    }
    None
}

/// The `FILE:LINE` that follows `prefix` in nginx's message.
fn after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let rest = &text[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        }
    })
}

/// The files of an `nginx -T` dump, each with its text.
fn dump_files(dump: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for line in dump.lines() {
        if let Some(name) = line
            .strip_prefix("# configuration file ")
            .and_then(|l| l.strip_suffix(':'))
        {
            files.push((PathBuf::from(name), String::new()));
        } else if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    files
}

/// Whether the upstream file is among the files nginx loads, and whether another file defines
/// the same upstream.
fn read_dump(dump: &str, n: &NginxConfig) -> Vec<Found> {
    let files = dump_files(dump);
    let ours = absolute(&n.upstream_file);
    let is_ours = |p: &Path| absolute(p) == ours;
    let mut found = Vec::new();
    let http_file = files
        .iter()
        .find(|(_, text)| {
            text.lines().any(|l| {
                let l = l.split('#').next().unwrap_or("").trim_start();
                l.starts_with("http ") || l.starts_with("http{")
            })
        })
        .or(files.first())
        .map(|(p, _)| p.display().to_string())
        .unwrap_or_else(|| "your main nginx config".into());
    if files.iter().any(|(p, _)| is_ours(p)) {
        found.push((
            "include".into(),
            Ok(format!("nginx loads {}", ours.display())),
        ));
    } else {
        found.push((
            "include".into(),
            Err(format!(
                "nginx does not load {} (router.upstream_file): `nginx -T` lists {} other file(s) but not this one. Add `include {};` inside the `http {{ }}` block of {http_file} (outside any `server {{ }}`), or set upstream_file to the file nginx includes",
                ours.display(),
                files.len(),
                ours.display()
            )),
        ));
    }
    let mut others = Vec::new();
    for (path, text) in files.iter().filter(|(p, _)| !is_ours(p)) {
        for (i, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            let mut words = code.split_whitespace();
            if words.next() == Some("upstream")
                && words.next().map(|w| w.trim_end_matches('{')) == Some(n.upstream.as_str())
            {
                others.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    if others.is_empty() {
        found.push((
            "duplicate".into(),
            Ok(format!(
                "upstream `{}` is defined only by blue-green's file",
                n.upstream
            )),
        ));
    } else {
        found.push((
            "duplicate".into(),
            Err(format!(
                "upstream `{}` is also defined at {}: blue-green's {} must be its only definition, or nginx routes by the old block (a both-colors block even hides a failed color behind passive failover). Remove that block and include the file instead (see {MIGRATION_DOC})",
                n.upstream,
                others.join(", "),
                ours.display()
            )),
        ));
    }
    found
}

/// The compose files have the service, and publish the `[endpoints]` ports.
pub(super) async fn compose(
    r: &ComposeRuntime,
    endpoints: Option<&PerColor<Endpoint>>,
    shared: bool,
) -> Vec<Found> {
    let mut found = Vec::new();
    let service = r.service();
    let colors: &[Color] = if shared {
        &[Color::Blue]
    } else {
        &[Color::Blue, Color::Green]
    };
    for &color in colors {
        let file = r.file(color).display().to_string();
        let whose = if shared {
            "(both colors)".to_string()
        } else {
            format!("({color})")
        };
        match r.config_output(color, &["--services"]).await {
            Err(e) => {
                found.push(("service".into(), Err(format!("{file} {whose}: {e}"))));
                continue;
            }
            Ok(text) => {
                let services: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                if !services.contains(&service) {
                    found.push((
                        "service".into(),
                        Err(format!(
                            "compose file {file} {whose} has no service `{service}` (runtime.service); its services: {}. Set `service` in [runtime] to the one that answers on the endpoint",
                            if services.is_empty() { "none".to_string() } else { services.join(", ") }
                        )),
                    ));
                    continue;
                }
                found.push((
                    "service".into(),
                    Ok(format!("{file} {whose} has service `{service}`")),
                ));
            }
        }
    }
    if let Some(endpoints) = endpoints {
        for color in Color::ALL {
            let endpoint = endpoints.get(color);
            if !is_local(&endpoint.host) {
                continue;
            }
            let file = r.file(color).display().to_string();
            let text = match r.config_output(color, &[]).await {
                Ok(t) => t,
                Err(e) => {
                    found.push(("ports".into(), Err(format!("{file} ({color}): {e}"))));
                    continue;
                }
            };
            let Some(svc) = service_block(&text, service) else {
                // The service check above already said so.
                continue;
            };
            if svc.host_network {
                continue;
            }
            if svc.ports.iter().any(|p| p.published == endpoint.port) {
                found.push((
                    "ports".into(),
                    Ok(format!(
                        "{color}: {file} publishes port {} of service `{service}`",
                        endpoint.port
                    )),
                ));
                continue;
            }
            let published: Vec<String> = svc
                .ports
                .iter()
                .map(|p| match p.target {
                    Some(t) => format!("{} (container port {t})", p.published),
                    None => p.published.to_string(),
                })
                .collect();
            let fix = match svc.ports.first() {
                Some(p) => format!(
                    "set endpoints.{color} = \"{}:{}\" (the published port, not the container's)",
                    endpoint.host, p.published
                ),
                None => format!(
                    "publish it: `ports: [\"127.0.0.1:{}:CONTAINER_PORT\"]` under service `{service}`",
                    endpoint.port
                ),
            };
            found.push((
                "ports".into(),
                Err(format!(
                    "endpoints.{color} = {endpoint} but {file} publishes {} of service `{service}`: probes would be refused; {fix}",
                    if published.is_empty() {
                        "no port".to_string()
                    } else {
                        format!("port {}", published.join(", "))
                    }
                )),
            ));
        }
    }
    found
}

fn is_local(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// One published port of a service, as `compose config` prints it.
#[derive(Debug, PartialEq)]
struct Published {
    published: u16,
    target: Option<u16>,
}

/// What the port check needs of one service in `compose config`'s output.
#[derive(Debug, Default)]
struct ServiceBlock {
    ports: Vec<Published>,
    host_network: bool,
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches(|c| c == '"' || c == '\'')
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Reads the service's ports from `compose config`'s YAML (v1 prints short and long forms,
/// v2 only long ones with quoted numbers); `None` when the service is not in it.
fn service_block(yaml: &str, service: &str) -> Option<ServiceBlock> {
    let lines: Vec<&str> = yaml.lines().collect();
    let services = lines.iter().position(|l| l.trim_end() == "services:")?;
    let mut i = services + 1;
    let mut start = None;
    while i < lines.len() {
        let l = lines[i];
        if !l.trim().is_empty() && indent(l) == 0 {
            break;
        }
        if indent(l) == 2 && unquote(l.trim_end().trim_end_matches(':')) == service {
            start = Some(i + 1);
            break;
        }
        i += 1;
    }
    let start = start?;
    let end = (start..lines.len())
        .find(|&j| !lines[j].trim().is_empty() && indent(lines[j]) <= 2)
        .unwrap_or(lines.len());
    let body = &lines[start..end];
    let mut block = ServiceBlock::default();
    let mut j = 0;
    while j < body.len() {
        let l = body[j];
        let t = l.trim();
        if indent(l) == 4 && t.starts_with("network_mode:") {
            block.host_network = unquote(&t["network_mode:".len()..]) == "host";
        }
        if indent(l) == 4 && t == "ports:" {
            j += 1;
            let mut current: Option<(Option<u16>, Option<u16>)> = None;
            while j < body.len() && (indent(body[j]) > 4 || body[j].trim_start().starts_with("- "))
            {
                let t = body[j].trim();
                if indent(body[j]) == 4 && !t.starts_with("- ") {
                    break;
                }
                let (item_start, t) = match t.strip_prefix("- ") {
                    Some(rest) => (true, rest.trim()),
                    None => (false, t),
                };
                if item_start {
                    if let Some((Some(p), target)) = current.take() {
                        block.ports.push(Published {
                            published: p,
                            target,
                        });
                    }
                    if !t.contains(": ") && !t.ends_with(':') {
                        if let Some(p) = short_port(unquote(t)) {
                            block.ports.push(p);
                        }
                        j += 1;
                        continue;
                    }
                    current = Some((None, None));
                }
                if let (Some(cur), Some((key, value))) = (current.as_mut(), t.split_once(':')) {
                    match key.trim() {
                        "published" => cur.0 = unquote(value).parse().ok(),
                        "target" => cur.1 = unquote(value).parse().ok(),
                        _ => {}
                    }
                }
                j += 1;
            }
            if let Some((Some(p), target)) = current.take() {
                block.ports.push(Published {
                    published: p,
                    target,
                });
            }
            continue;
        }
        j += 1;
    }
    Some(block)
}

/// `[HOST:]PUBLISHED:TARGET[/PROTO]`; a bare `TARGET` publishes no fixed port.
fn short_port(spec: &str) -> Option<Published> {
    let spec = spec.split('/').next().unwrap_or(spec);
    let mut parts = spec.rsplitn(3, ':');
    let target = parts.next()?;
    let published = parts.next()?;
    Some(Published {
        published: published.parse().ok()?,
        target: target.parse().ok(),
    })
}

/// The Docker runtime's image is on the machine (nothing is pulled by `validate`).
pub(super) async fn image(r: &DockerRuntime, image: &str) -> Found {
    let result = match r.image_present(image).await {
        Ok(true) => Ok(format!("image {image} is on this machine")),
        Ok(false) => Err(format!(
            "image {image} (runtime.image) is not on this machine: deploy would have to pull it from its registry. Build or load it first (`docker build -t {image} .`, `docker load`), or pass another with `deploy --image`"
        )),
        Err(e) => Err(format!("cannot inspect image {image}: {e}")),
    };
    ("image".into(), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_v1_and_v2_output() {
        let v1 = "services:\n  other:\n    image: x\n  shop:\n    image: nc-web:x\n    ports:\n    - 127.0.0.1:28191:8080/tcp\n    - published: 28192\n      target: 9090\n    - 7000/tcp\nversion: '3.9'\n";
        let b = service_block(v1, "shop").expect("shop");
        assert_eq!(
            b.ports,
            vec![
                Published {
                    published: 28191,
                    target: Some(8080)
                },
                Published {
                    published: 28192,
                    target: Some(9090)
                },
            ]
        );
        let v2 = "name: p\nservices:\n  shop:\n    image: x\n    networks:\n      default: null\n    ports:\n      - mode: ingress\n        host_ip: 127.0.0.1\n        target: 8080\n        published: \"28191\"\n        protocol: tcp\nnetworks:\n  default:\n    name: p_default\n";
        let b = service_block(v2, "shop").expect("shop");
        assert_eq!(
            b.ports,
            vec![Published {
                published: 28191,
                target: Some(8080)
            }]
        );
        assert!(service_block(v2, "web").is_none());
    }

    #[test]
    fn dump_files_split_on_headers() {
        let dump = "# configuration file /a/nginx.conf:\nhttp {\n include /a/up.conf;\n}\n\n# configuration file /a/up.conf:\nupstream shop { server 1.2.3.4:1; }\n";
        let files = dump_files(dump);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].0, PathBuf::from("/a/up.conf"));
        assert!(files[1].1.contains("upstream shop"));
    }
}
