//! What HAProxy says about a backend's servers: `show servers state BACKEND` (address, port,
//! administrative state, weights) and `show stat BACKEND 4 -1` (sessions per server), parsed
//! by the column names of their header lines.

use std::collections::HashMap;
use std::net::IpAddr;

use blue_green_core::Endpoint;

/// `srv_admin_state` flags (HAProxy's `enum srv_admin`): forced, inherited and resolution
/// maintenance. `CMAINT` (0x04, "disabled" in the config) is left out, as HAProxy does: a
/// server disabled in the config and set ready at runtime keeps that flag and serves.
const ADMIN_MAINT: u32 = 0x01 | 0x02 | 0x20;
/// `srv_admin_state` flags: forced and inherited drain.
const ADMIN_DRAIN: u32 = 0x08 | 0x10;

/// One server of the backend, from `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    /// Its name in the config (`srv_name`).
    pub name: String,
    /// Its address (`srv_addr`), `None` when it has none (`-`).
    pub addr: Option<IpAddr>,
    /// Its port (`srv_port`).
    pub port: u16,
    /// `srv_admin_state` flags.
    pub admin: u32,
    /// The weight it has now (`srv_uweight`).
    pub weight: u32,
    /// The weight the config gave it (`srv_iweight`).
    pub initial_weight: u32,
}

/// A server's administrative state as the runtime API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admin {
    /// Takes new traffic.
    Ready,
    /// Finishes what it has, takes nothing new.
    Drain,
    /// Takes nothing.
    Maint,
}

impl Admin {
    /// The word `set server … state` takes.
    pub fn word(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

impl Server {
    /// Its administrative state.
    pub fn admin_state(&self) -> Admin {
        if self.admin & ADMIN_MAINT != 0 {
            Admin::Maint
        } else if self.admin & ADMIN_DRAIN != 0 {
            Admin::Drain
        } else {
            Admin::Ready
        }
    }

    /// True when new requests can go to it: ready, with a weight above zero. (A server that
    /// its health checks found down still counts: it is where the backend is meant to send
    /// traffic.)
    pub fn serving(&self) -> bool {
        self.admin_state() == Admin::Ready && self.weight > 0
    }

    /// Where it sends traffic, if it has an address.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.addr
            .map(|addr| Endpoint::new(addr.to_string(), self.port))
    }

    /// True when it points at `ip`:`port`.
    pub fn points_at(&self, ip: IpAddr, port: u16) -> bool {
        self.addr == Some(ip) && self.port == port
    }

    /// True when it points at `endpoint` (whose host must be an IP address to match).
    pub fn points_at_endpoint(&self, endpoint: &Endpoint) -> bool {
        endpoint
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| self.points_at(ip, endpoint.port))
    }
}

/// The servers of `backend` from the answer to `show servers state BACKEND`. The error
/// completes "HAProxy's answer to `show servers state` …".
pub(crate) fn parse_servers_state(text: &str, backend: &str) -> Result<Vec<Server>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some("1") => {}
        Some(other) => {
            return Err(format!(
                "is not a version 1 server state (it starts with `{}`)",
                super::api::quote(other)
            ))
        }
        None => return Err("is empty".into()),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or("has no `#` header line")?;
    let columns: Vec<&str> = header.split_whitespace().collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("has no `{name}` column"))
    };
    let (be_name, srv_name, srv_addr, admin, uweight, iweight, port) = (
        column("be_name")?,
        column("srv_name")?,
        column("srv_addr")?,
        column("srv_admin_state")?,
        column("srv_uweight")?,
        column("srv_iweight")?,
        column("srv_port")?,
    );
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| format!("has a short line `{line}`"))
        };
        if field(be_name)? != backend {
            continue;
        }
        let number = |i: usize| -> Result<u32, String> {
            let value = field(i)?;
            value
                .parse()
                .map_err(|_| format!("has `{value}` where a number belongs in `{line}`"))
        };
        let addr = match field(srv_addr)? {
            "-" => None,
            a => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| format!("has an address `{a}` that is not an IP address"))?,
            ),
        };
        let port = number(port)?;
        servers.push(Server {
            name: field(srv_name)?.to_string(),
            addr,
            port: u16::try_from(port).map_err(|_| format!("has a port {port} out of range"))?,
            admin: number(admin)?,
            weight: number(uweight)?,
            initial_weight: number(iweight)?,
        });
    }
    Ok(servers)
}

/// Requests in flight per server (`scur` + `qcur`) from the CSV answer to
/// `show stat BACKEND 4 -1`. The error completes "HAProxy's answer to `show stat` …".
pub(crate) fn parse_sessions(text: &str) -> Result<HashMap<String, u64>, String> {
    // Saturating: a count near u64::MAX from a broken answer must not panic (debug) or wrap to
    // a small number (release) and end a drain early.
    Ok(parse_stat(text, &["scur", "qcur"])?
        .into_iter()
        .map(|(name, c)| (name, c[0].saturating_add(c[1])))
        .collect())
}

/// Responses per server from the CSV answer to `show stat BACKEND 4 -1`, as `(total,
/// errors)`: the responses the server sent (`hrsp_1xx` … `hrsp_5xx`, `hrsp_other`) and
/// HAProxy's own error answers for it, which those columns leave out (measured with 2.6: a
/// refused connection's `503` counts only in `econ`, a broken response only in `eresp`). The
/// errors are the server's `5xx` and those. The error completes "HAProxy's answer to
/// `show stat` …".
pub(crate) fn parse_responses(text: &str) -> Result<HashMap<String, (u64, u64)>, String> {
    let columns = [
        "hrsp_5xx",
        "econ",
        "eresp",
        "hrsp_1xx",
        "hrsp_2xx",
        "hrsp_3xx",
        "hrsp_4xx",
        "hrsp_other",
    ];
    let sum = |counts: &[u64]| counts.iter().fold(0u64, |s, n| s.saturating_add(*n));
    Ok(parse_stat(text, &columns)?
        .into_iter()
        .map(|(name, c)| (name, (sum(&c), sum(&c[..3]))))
        .collect())
}

/// The counts in `columns` (in that order; an empty field is 0) per server of the CSV answer
/// to `show stat`, by the header line's names. The error completes "HAProxy's answer to
/// `show stat` …".
fn parse_stat(text: &str, columns: &[&str]) -> Result<HashMap<String, Vec<u64>>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| format!("is not the CSV it should be: {}", super::api::quote(text)))?;
    let names: Vec<&str> = header.split(',').collect();
    let column = |name: &str| {
        names
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("has no `{name}` column"))
    };
    let svname = column("svname")?;
    let at: Vec<usize> = columns
        .iter()
        .map(|c| column(c))
        .collect::<Result<_, _>>()?;
    let mut counts = HashMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let count = |i: usize| -> Result<u64, String> {
            match fields.get(i).copied() {
                None | Some("") => Ok(0),
                Some(n) => n
                    .parse()
                    .map_err(|_| format!("has `{n}` where a count belongs in `{line}`")),
            }
        };
        let name = fields
            .get(svname)
            .ok_or_else(|| format!("has a short line `{line}`"))?;
        if matches!(*name, "FRONTEND" | "BACKEND") {
            continue;
        }
        let row = at.iter().map(|&i| count(i)).collect::<Result<_, _>>()?;
        counts.insert(name.to_string(), row);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_responses_and_5xx_per_server() {
        let text = "# pxname,svname,scur,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other\napp,blue,0,2,1,0,90,1,2,7,0\napp,green,0,,,,,,,,\napp,BACKEND,0,2,1,0,90,1,2,7,0\n";
        let responses = parse_responses(text).unwrap();
        assert_eq!(responses.get("blue"), Some(&(103, 10)));
        assert_eq!(responses.get("green"), Some(&(0, 0)));
        assert_eq!(responses.get("BACKEND"), None);
        assert!(parse_responses("# pxname,svname,scur\napp,blue,1\n")
            .unwrap_err()
            .contains("no `hrsp_5xx` column"));
        assert!(parse_responses("app,blue,x,1\napp,green,x,2\n").is_err());
        assert!(parse_responses(
            "# pxname,svname,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other\napp,blue,0,0,a,0,0,0,0,0\n"
        )
        .is_err());
    }

    /// Answers captured from HAProxy 2.6.12.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 app 1 blue 127.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0\n3 app 2 green 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 localhost 18082 - 0 0 - - 0\n4 other 1 blue ::1 2 0 1 1 0 1 0 0 8 0 0 0 - 80 - 0 0 - - 0\n\n";
    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status\napp,blue,0,0,3,5,,9,DRAIN\napp,green,1,1,2,2,,4,no check\napp,BACKEND,0,0,5,6,,13,UP\n\n";

    #[test]
    fn reads_the_servers_of_one_backend() {
        let servers = parse_servers_state(STATE, "app").unwrap();
        assert_eq!(servers.len(), 2);
        let (blue, green) = (&servers[0], &servers[1]);
        assert_eq!(blue.name, "blue");
        assert_eq!(blue.endpoint(), Some(Endpoint::new("127.0.0.1", 18081)));
        assert_eq!(blue.admin_state(), Admin::Drain);
        assert!(!blue.serving());
        // Disabled in the config (CMAINT), set ready at runtime: it serves.
        assert_eq!(green.admin_state(), Admin::Ready);
        assert!(green.serving());
        let other = parse_servers_state(STATE, "other").unwrap();
        assert_eq!(other[0].endpoint(), Some(Endpoint::new("::1", 80)));
        assert!(parse_servers_state(STATE, "none").unwrap().is_empty());
    }

    #[test]
    fn maintenance_weight_zero_and_no_address_do_not_serve() {
        let server = |admin, weight| Server {
            name: "s".into(),
            addr: None,
            port: 1,
            admin,
            weight,
            initial_weight: 1,
        };
        assert_eq!(server(1, 1).admin_state(), Admin::Maint);
        assert_eq!(server(5, 1).admin_state(), Admin::Maint);
        assert_eq!(server(0x20, 1).admin_state(), Admin::Maint);
        assert_eq!(server(0x10, 1).admin_state(), Admin::Drain);
        assert!(server(0, 1).serving());
        assert!(!server(0, 0).serving());
        assert_eq!(server(0, 1).endpoint(), None);
    }

    #[test]
    fn refuses_answers_it_does_not_understand() {
        for (text, why) in [
            ("", "is empty"),
            ("Can't find backend.\n", "not a version 1"),
            ("1\n3 app 1 blue\n", "header"),
            ("1\n# be_name srv_name\n", "no `srv_addr` column"),
        ] {
            let error = parse_servers_state(text, "app").unwrap_err();
            assert!(error.contains(why), "{text:?}: {error}");
        }
        let bad_addr = STATE.replace("127.0.0.1 2 8", "evil 2 8");
        assert!(parse_servers_state(&bad_addr, "app")
            .unwrap_err()
            .contains("not an IP"));
    }

    #[test]
    fn counts_sessions_and_queued_requests_per_server() {
        let sessions = parse_sessions(STAT).unwrap();
        assert_eq!(sessions.get("blue"), Some(&3));
        assert_eq!(sessions.get("green"), Some(&3));
        assert_eq!(sessions.get("BACKEND"), None);
        assert!(parse_sessions("No such proxy.\n").is_err());
    }

    /// Regression (seen while writing the fuzz target `router_input`): `scur + qcur` of an
    /// answer with counts near `u64::MAX` overflowed.
    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let text = format!("# pxname,svname,qcur,scur\napp,blue,{},1\n", u64::MAX);
        assert_eq!(parse_sessions(&text).unwrap().get("blue"), Some(&u64::MAX));
    }
}
