//! A gradual shift through the proxy (a split of new clients with a sticky cookie), a staged
//! color at a preview host name, and the responses counted per target for the watch: through
//! the control socket (`ProxyRouter`) and in-process (`EmbeddedRouter`), against real upstreams
//! on loopback.

mod common;

use std::net::SocketAddr;

use blue_green_core::{ComponentErrorKind, Endpoint, Responses, Router, Split};
use blue_green_proxy::{Proxy, ProxyConfig, ProxyRouter};
use bytes::Bytes;
use common::{control_raw, fresh_get, Upstream};
use http_body_util::{BodyExt, Empty};
use hyper::header::{COOKIE, HOST, SET_COOKIE};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One answer: status, body, and the `Set-Cookie` values.
struct Answer {
    status: u16,
    body: String,
    set_cookies: Vec<String>,
}

/// One `GET /` on a fresh connection (a new client), with `cookie` if given.
async fn get(addr: SocketAddr, host: &str, cookie: Option<&str>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get("/").header(HOST, host);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let res = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let set_cookies = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        set_cookies,
    }
}

/// The `name=value` part of a `Set-Cookie` value, to send back as a `Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

struct Setup {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    state: std::path::PathBuf,
    proxy: Proxy,
    blue: Upstream,
    green: Upstream,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("proxy.sock");
        let state = dir.path().join("proxy.json");
        let proxy = Proxy::start(Self::config(&socket, &state)).await.unwrap();
        Setup {
            proxy,
            blue: Upstream::start("blue").await,
            green: Upstream::start("green").await,
            socket,
            state,
            _dir: dir,
        }
    }

    fn config(socket: &std::path::Path, state: &std::path::Path) -> ProxyConfig {
        ProxyConfig::new(["127.0.0.1:0".parse().unwrap()])
            .with_control(socket)
            .with_state_file(state)
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.local_addrs()[0]
    }

    fn router(&self) -> ProxyRouter {
        ProxyRouter::new(&self.socket, "web").with_hosts(vec!["web.example".into()])
    }

    fn split(&self, percent: u8) -> Split {
        Split::new(self.blue.endpoint(), self.green.endpoint(), percent).unwrap()
    }
}

#[tokio::test]
async fn a_20_percent_split_sends_about_a_fifth_of_new_clients_and_each_keeps_its_color() {
    let s = Setup::start().await;
    let router = s.router();
    assert!(router.can_split());
    router.route_to(&s.blue.endpoint()).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), None);
    router.split(&s.split(20)).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), Some(s.split(20)));
    let embedded = s.proxy.router("web");
    assert!(embedded.can_split());
    assert_eq!(embedded.current_split().await.unwrap(), Some(s.split(20)));
    // The split's current stays the live target.
    assert_eq!(router.target().await.unwrap(), Some(s.blue.endpoint()));

    // 400 new clients: binomial(400, 0.2) has a mean of 80 and a deviation of 8, so 40..120
    // (10% to 30%) is five deviations either side.
    let mut green = 0;
    let mut cookies = std::collections::HashMap::new();
    for _ in 0..400 {
        let a = get(s.addr(), "web.example", None).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.set_cookies.len(), 1, "a new client gets its side");
        let set = &a.set_cookies[0];
        assert!(
            set.starts_with("bg-web=") && set.contains("HttpOnly") && set.contains("Path=/"),
            "{set}"
        );
        assert!(
            set.contains("SameSite=Lax") && !set.contains("127.0.0.1"),
            "{set}"
        );
        if a.body == "green\n" {
            green += 1;
        }
        cookies.insert(a.body, cookie_pair(set));
    }
    assert!(
        (40..=120).contains(&green),
        "{green} of 400 new clients went to green with a 20% split"
    );

    // A client with a cookie stays on its color, and is not given another cookie.
    for (color, cookie) in &cookies {
        for _ in 0..50 {
            let a = get(s.addr(), "web.example", Some(&format!("other=1; {cookie}"))).await;
            assert_eq!(&a.body, color, "a client with {cookie} stays on {color}");
            assert!(a.set_cookies.is_empty(), "{:?}", a.set_cookies);
        }
    }

    // A later step (50%) keeps the clients that have a side where they are.
    router.split(&s.split(50)).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), Some(s.split(50)));
    let blue_cookie = &cookies["blue\n"];
    for _ in 0..20 {
        assert_eq!(
            get(s.addr(), "web.example", Some(blue_cookie)).await.body,
            "blue\n"
        );
    }

    // The switch ends the split: everybody goes to green, cookies no longer matter.
    router.route_to(&s.green.endpoint()).await.unwrap();
    assert_eq!(router.current_split().await.unwrap(), None);
    assert_eq!(embedded.current_split().await.unwrap(), None);
    assert_eq!(router.target().await.unwrap(), Some(s.green.endpoint()));
    for _ in 0..20 {
        let a = get(s.addr(), "web.example", Some(blue_cookie)).await;
        assert_eq!(a.body, "green\n");
        assert!(a.set_cookies.is_empty());
    }
    // The counters kept counting both targets through the split.
    let status = s.proxy.handle().status();
    let requests = |e: &Endpoint| {
        status
            .targets
            .iter()
            .find(|t| t.endpoint == e.to_string())
            .map_or(0, |t| t.requests)
    };
    assert!(requests(&s.blue.endpoint()) > 0 && requests(&s.green.endpoint()) > 0);
    assert_eq!(router.in_flight(&s.blue.endpoint()).await.unwrap(), Some(0));
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn a_proxy_restarted_mid_split_serves_the_same_split() {
    let s = Setup::start().await;
    let router = s.router();
    router.route_to(&s.blue.endpoint()).await.unwrap();
    router.split(&s.split(30)).await.unwrap();
    let first = get(s.addr(), "web.example", None).await;
    let cookie = cookie_pair(&first.set_cookies[0]);
    let Setup {
        proxy,
        socket,
        state,
        blue,
        green,
        _dir,
    } = s;
    proxy.shutdown().await;

    let again = Proxy::start(Setup::config(&socket, &state)).await.unwrap();
    let addr = again.local_addrs()[0];
    let router = ProxyRouter::new(&socket, "web");
    assert_eq!(
        router.current_split().await.unwrap(),
        Some(Split::new(blue.endpoint(), green.endpoint(), 30).unwrap())
    );
    assert_eq!(router.target().await.unwrap(), Some(blue.endpoint()));
    // The cookie given before the restart still names the same color.
    for _ in 0..10 {
        assert_eq!(
            get(addr, "web.example", Some(&cookie)).await.body,
            first.body
        );
    }
    // And new clients are still split.
    let mut colors = std::collections::HashSet::new();
    for _ in 0..100 {
        colors.insert(get(addr, "web.example", None).await.body);
    }
    assert_eq!(colors.len(), 2, "both colors serve new clients: {colors:?}");
    again.shutdown().await;
}

#[tokio::test]
async fn bad_splits_cookies_and_preview_hosts_are_refused_and_change_nothing() {
    let s = Setup::start().await;
    let router = s.router();
    router.route_to(&s.blue.endpoint()).await.unwrap();
    let state_before = std::fs::read(&s.state).unwrap();
    let (blue, green) = (s.blue.endpoint(), s.green.endpoint());
    let body = |percent: &str, current: &Endpoint| {
        format!(r#"{{"app":"web","current":"{current}","next":"{green}","percent":{percent}}}"#)
            .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/split", body("0", &blue), 400, "1 to 99 percent"),
        ("/v1/split", body("100", &blue), 400, "1 to 99 percent"),
        (
            "/v1/split",
            body("300", &blue),
            400,
            "not what this request takes",
        ),
        (
            "/v1/split",
            body("\"20\"", &blue),
            400,
            "not what this request takes",
        ),
        (
            "/v1/split",
            format!(r#"{{"app":"web","current":"{green}","next":"{blue}","percent":20}}"#)
                .into_bytes(),
            409,
            "someone else changed it",
        ),
        (
            "/v1/split",
            format!(r#"{{"app":"web","current":"{blue}","next":"{blue}","percent":20}}"#)
                .into_bytes(),
            400,
            "two different endpoints",
        ),
        (
            "/v1/split",
            format!(r#"{{"app":"nope","current":"{blue}","next":"{green}","percent":20}}"#)
                .into_bytes(),
            409,
            "no target",
        ),
        (
            "/v1/preview",
            format!(r#"{{"app":"web","host":"a b","target":"{green}"}}"#).into_bytes(),
            400,
            "not a host name",
        ),
        (
            "/v1/preview",
            format!(r#"{{"app":"web","host":"web.example","target":"{green}"}}"#).into_bytes(),
            400,
            "own hosts",
        ),
        (
            "/v1/preview",
            format!(r#"{{"app":"web","target":"{green}"}}"#).into_bytes(),
            400,
            "needs `host`",
        ),
        (
            "/v1/preview",
            format!(r#"{{"app":"nope","host":"p.example","target":"{green}"}}"#).into_bytes(),
            400,
            "no route in the proxy yet",
        ),
    ];
    for (path, body, status, why) in cases {
        let (got, answer) = control_raw(&s.socket, "PUT", path, body.clone()).await;
        assert_eq!(got, status, "{}: {answer}", String::from_utf8_lossy(&body));
        assert!(
            answer.contains(why),
            "{}: {answer}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(
        std::fs::read(&s.state).unwrap(),
        state_before,
        "nothing was written"
    );
    assert_eq!(router.current_split().await.unwrap(), None);
    assert_eq!(router.target().await.unwrap(), Some(blue.clone()));

    // The router refuses a split whose current is not the live target, as invalid input
    // refused before anything changed.
    let e = router
        .split(&Split::new(green.clone(), blue.clone(), 20).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComponentErrorKind::Failed);
    assert!(e.message.contains("someone else changed it"), "{e}");
    // A preview host that is not a host name is refused, by both routers.
    for bad in ["*.example.com", "preview.example.com/x", "a;b", ""] {
        let e = ProxyRouter::new(&s.socket, "web")
            .with_preview_host(bad)
            .preview(Some(&green))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ComponentErrorKind::Invalid, "{bad}: {e}");
        let e = s
            .proxy
            .router("web")
            .with_preview_host(bad)
            .preview(Some(&green))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ComponentErrorKind::Invalid, "{bad}: {e}");
    }
    assert_eq!(
        std::fs::read(&s.state).unwrap(),
        state_before,
        "nothing was written"
    );

    // A cookie that names neither side is ignored, and never sent back.
    router.split(&s.split(50)).await.unwrap();
    for bad in [
        "bg-web=<script>alert(1)</script>",
        "bg-web=",
        "bg-web=0123456789abcdef",
    ] {
        let a = get(s.addr(), "web.example", Some(bad)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.set_cookies.len(), 1, "{bad}: a new side is given");
        assert!(!a.set_cookies[0].contains("script"), "{:?}", a.set_cookies);
        assert!(
            !a.set_cookies[0].contains("0123456789abcdef"),
            "{:?}",
            a.set_cookies
        );
    }
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn the_preview_host_reaches_the_staged_color_and_other_hosts_are_untouched() {
    let s = Setup::start().await;
    let addr = s.addr();
    let router = s.router().with_preview_host("Preview.Example");
    router.route_to(&s.blue.endpoint()).await.unwrap();
    let url = router.preview(Some(&s.green.endpoint())).await.unwrap();
    assert_eq!(url, Some(format!("http://preview.example:{}", addr.port())));
    for _ in 0..10 {
        assert_eq!(
            fresh_get(addr, "/", "preview.example").await.unwrap(),
            (200, "green\n".into())
        );
        assert_eq!(
            fresh_get(addr, "/", "web.example").await.unwrap(),
            (200, "blue\n".into())
        );
    }
    // The live target is unchanged, and a switch keeps the preview.
    assert_eq!(router.target().await.unwrap(), Some(s.blue.endpoint()));
    let status = s.proxy.handle().status();
    let web = status.apps.iter().find(|a| a.app == "web").unwrap();
    assert_eq!(web.preview.as_ref().unwrap().host, "preview.example");

    // Ending the preview: the host picks nothing any more (no default app here).
    assert_eq!(router.preview(None).await.unwrap(), None);
    assert_eq!(
        fresh_get(addr, "/", "preview.example").await.unwrap().0,
        404
    );
    assert_eq!(
        fresh_get(addr, "/", "web.example").await.unwrap().1,
        "blue\n"
    );

    // Without a preview host, there is no preview.
    assert_eq!(
        s.router().preview(Some(&s.green.endpoint())).await.unwrap(),
        None
    );
    assert_eq!(
        fresh_get(addr, "/", "preview.example").await.unwrap().0,
        404
    );

    // In-process, the same.
    let embedded = s.proxy.router("web").with_preview_host("staged.example");
    let url = embedded.preview(Some(&s.green.endpoint())).await.unwrap();
    assert_eq!(url, Some(format!("http://staged.example:{}", addr.port())));
    assert_eq!(
        fresh_get(addr, "/", "staged.example").await.unwrap().1,
        "green\n"
    );
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn responses_count_the_upstreams_5xx_and_the_proxys_own_502() {
    let s = Setup::start().await;
    let addr = s.addr();
    let router = s.router();
    router.route_to(&s.green.endpoint()).await.unwrap();
    assert_eq!(
        router.responses(&s.green.endpoint()).await.unwrap(),
        Some(Responses::default())
    );
    for path in [
        "/",
        "/status?code=404",
        "/status?code=500",
        "/status?code=503",
    ] {
        fresh_get(addr, path, "web.example").await.unwrap();
    }
    let counted = Responses {
        total: 4,
        errors: 2,
    };
    assert_eq!(
        router.responses(&s.green.endpoint()).await.unwrap(),
        Some(counted)
    );
    let embedded = s.proxy.router("web");
    assert_eq!(
        embedded.responses(&s.green.endpoint()).await.unwrap(),
        Some(counted)
    );
    // Blue answered nothing.
    assert_eq!(
        router.responses(&s.blue.endpoint()).await.unwrap(),
        Some(Responses::default())
    );

    // An upstream that is gone: the proxy's own 502 counts as an error of that target.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Endpoint::new("127.0.0.1", listener.local_addr().unwrap().port())
    };
    router.route_to(&gone).await.unwrap();
    assert_eq!(fresh_get(addr, "/", "web.example").await.unwrap().0, 502);
    assert_eq!(
        router.responses(&gone).await.unwrap(),
        Some(Responses {
            total: 1,
            errors: 1
        })
    );
    s.proxy.shutdown().await;
}
