//! One client request: the health path, the gate, the route, then the upstream; upgrades
//! (WebSocket and any other `Upgrade`) become a byte copy in both directions.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, SET_COOKIE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::PathAndQuery;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::body::{self, ProxyBody};
use crate::gate::Admit;
use crate::proxy::Shared;
use crate::routes::{request_host, Bound, NoRoute};
use crate::target::InFlight;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The client connection a request came on, as the forwarding headers name it. Made once per
/// connection, so that a request does not format its peer's address again.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The client's IP address as `X-Forwarded-For` carries it.
    forwarded_for: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            // An IP address is always a valid header value.
            forwarded_for: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}

/// Answers one client request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: &Peer,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if req.uri().path() == shared.config.health_path {
        return body::text(StatusCode::OK, "ok\n");
    }
    match shared.gate.admit().await {
        Admit::Go => {}
        Admit::Maintenance => return body::maintenance(),
        Admit::Refused(reason) => return body::error(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
    // HTTP/2 names the host in the authority, HTTP/1.1 in `Host`. Kept as a header value, so
    // that the usual request (HTTP/1.1, lowercase host) copies no bytes for it.
    let authority = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(HOST).cloned(),
    };
    let host = authority
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .and_then(request_host);
    // Bound to the target current now; a switch after this line does not move it.
    let bound = match shared.routes.bind(host.as_deref(), req.headers()) {
        Ok(bound) => bound,
        Err(NoRoute::UnknownHost(h)) => {
            return body::error(
                StatusCode::NOT_FOUND,
                format!(
                    "no app serves host {}",
                    h.as_deref().unwrap_or("(none given)")
                ),
            )
        }
        Err(NoRoute::NoTarget(app)) => {
            return body::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("app {app} has no target yet"),
            )
        }
    };
    let Bound { guard, set_cookie } = bound;
    let mut res = forward(&shared, guard, peer, authority, req).await;
    if let Some(cookie) = set_cookie {
        // Appended: the upstream's own cookies stay.
        res.headers_mut().append(SET_COOKIE, cookie);
    }
    res
}

async fn forward(
    shared: &Shared,
    mut guard: InFlight,
    peer: &Peer,
    authority: Option<HeaderValue>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let upgrade = wants_upgrade(&parts.headers, parts.version)
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    let upgrade_to = upgrade
        .as_ref()
        .and_then(|_| parts.headers.get(UPGRADE).cloned());

    strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade_to {
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, proto);
    }
    let trust = shared.config.trust_forwarded_headers;
    match authority {
        Some(v) => {
            if !trust || !parts.headers.contains_key(X_FORWARDED_HOST) {
                parts.headers.insert(X_FORWARDED_HOST, v.clone());
            }
            parts.headers.insert(HOST, v);
        }
        // HTTP/1.1 requires a `Host`; a client that sent none gets the target's.
        None => {
            parts
                .headers
                .insert(HOST, guard.target().host_header.clone());
        }
    }
    forwarded_for(&mut parts.headers, peer, trust);
    if !trust || !parts.headers.contains_key(X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    // Upstreams get the origin form (`/path?query`); an HTTP/2 or absolute-form request's
    // scheme and authority are dropped (the authority went into `Host` above).
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
    }
    // Upstreams are spoken to in HTTP/1.1, whatever the client used.
    parts.version = Version::HTTP_11;

    let timeout = shared.config.limits.upstream_response_timeout;
    // A cut while this waits aborts the upstream connection, which ends the wait with an
    // error; `is_cut` tells that error from the upstream's.
    let answer = {
        let target = guard.target();
        let sent = target.pool.send(
            &target.endpoint,
            shared.config.limits.upstream_connect_timeout,
            Request::from_parts(parts, body),
            guard.generation(),
        );
        tokio::time::timeout(timeout, sent).await.ok()
    };
    let endpoint = &guard.target().endpoint;
    let (mut res, lease) = match answer {
        Some(Ok(answer)) => answer,
        _ if guard.is_cut() => {
            let why = format!("the request to {endpoint} was cut at the drain deadline");
            guard.mark_cut();
            guard.answered_for_proxy();
            return body::error(StatusCode::SERVICE_UNAVAILABLE, why);
        }
        Some(Err(e)) => {
            let why = if e.is_connect() {
                format!("could not connect to the upstream {endpoint}: {e}")
            } else {
                format!("the upstream {endpoint} failed: {e}")
            };
            guard.mark_error();
            guard.answered(StatusCode::BAD_GATEWAY);
            tracing::warn!("{why}");
            return body::error(StatusCode::BAD_GATEWAY, why);
        }
        None => {
            let why = format!(
                "the upstream {endpoint} sent no response within {:.1}s",
                timeout.as_secs_f64()
            );
            guard.mark_error();
            guard.answered(StatusCode::GATEWAY_TIMEOUT);
            tracing::warn!("{why}");
            return body::error(StatusCode::GATEWAY_TIMEOUT, why);
        }
    };
    guard.answered(res.status());

    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = upgrade {
            // The upstream connection becomes the tunnel: it is not given back to the pool.
            drop(lease);
            let upstream_side = hyper::upgrade::on(&mut res);
            tokio::spawn(pipe(client_side, upstream_side, guard));
            let (parts, _) = res.into_parts();
            return Response::from_parts(parts, body::empty());
        }
    }
    let (mut parts, incoming) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body::streamed(incoming, guard, lease))
}

/// Copies bytes both ways between an upgraded client and upstream connection until either side
/// closes or the target is cut; the guard keeps it counted in flight until then.
async fn pipe(client: OnUpgrade, upstream: OnUpgrade, mut guard: InFlight) {
    let token = guard.cut_token();
    let sides = async { tokio::try_join!(client, upstream) };
    let (client, upstream) = tokio::select! {
        sides = sides => match sides {
            Ok(sides) => sides,
            Err(e) => {
                guard.mark_error();
                tracing::warn!("an upgrade to {} did not complete: {e}", guard.target().endpoint);
                return;
            }
        },
        _ = token.cancelled() => { guard.mark_cut(); return; }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!("an upgraded connection to {} ended: {e}", guard.target().endpoint);
            }
        }
        _ = token.cancelled() => guard.mark_cut(),
    }
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` and `Upgrade: …`).
fn wants_upgrade(headers: &HeaderMap, version: Version) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The headers that belong to one connection, not to the message (RFC 9110 7.6.1).
const HOP_BY_HOP_COUNT: usize = 7;
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the message's few names finds which are there: cheaper than a hashed
    // removal of each of the seven, twice for every request (its head and its answer's).
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    // `Connection` (the first) names further headers of the connection; the usual tokens
    // (`keep-alive`, `close`, `upgrade`) name none that is not already in the list.
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| t.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, here) in HOP_BY_HOP.into_iter().zip(present) {
        if here {
            headers.remove(name);
        }
    }
}

fn forwarded_for(headers: &mut HeaderMap, peer: &Peer, trust: bool) {
    let prior = headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|_| trust);
    let value = match prior {
        Some(prior) => {
            let ip = peer.forwarded_for.to_str().unwrap_or_default();
            match HeaderValue::from_str(&format!("{prior}, {ip}")) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => peer.forwarded_for.clone(),
    };
    headers.insert(X_FORWARDED_FOR, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        // Each one alone too (the pass that looks for any of them must see every one).
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert("x-kept", HeaderValue::from_static("1"));
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} was removed");
        }
        let mut none = HeaderMap::new();
        none.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn upgrade_needs_both_headers_on_http11() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&h, Version::HTTP_11));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(wants_upgrade(&h, Version::HTTP_11));
        assert!(!wants_upgrade(&h, Version::HTTP_2));
    }

    #[test]
    fn forwarded_for_is_replaced_unless_trusted() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        forwarded_for(&mut h, &Peer::new(peer), false);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9");
        forwarded_for(
            &mut h,
            &Peer::new("[::ffff:127.0.0.1]:1".parse().unwrap()),
            true,
        );
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9, 127.0.0.1");
    }
}
