use super::split::split_weights;
use super::*;
use crate::validate::tests::INJECTIONS;

fn server(name: &str, addr: &str, port: u16, admin: u32, weight: u32) -> Server {
    Server {
        name: name.into(),
        addr: addr.parse().ok(),
        port,
        admin,
        weight,
        initial_weight: 1,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const READY: u32 = 0;
const DRAIN: u32 = 0x08;
const MAINT: u32 = 0x01;
/// Disabled in the config and never touched at runtime.
const DISABLED: u32 = 0x05;

#[test]
fn a_switch_uses_the_idle_slot_and_drains_the_live_one() {
    let servers = [
        server("blue", "127.0.0.1", 8081, READY, 1),
        server("green", "127.0.0.1", 1, DISABLED, 1),
    ];
    assert_eq!(
        HaproxyRouter::plan(&servers, ip("127.0.0.1"), 8082),
        Ok(Plan::Switch {
            slot: 1,
            set_addr: true,
            set_weight: None,
            drain: vec![0],
        })
    );
    // Already there: nothing to send.
    assert_eq!(
        HaproxyRouter::plan(&servers, ip("127.0.0.1"), 8081),
        Ok(Plan::Already)
    );
}

#[test]
fn a_rollback_reuses_the_slot_that_still_points_at_the_old_color() {
    let servers = [
        server("blue", "10.0.0.1", 8080, DRAIN, 1),
        server("green", "10.0.0.2", 8080, READY, 1),
    ];
    assert_eq!(
        HaproxyRouter::plan(&servers, ip("10.0.0.1"), 8080),
        Ok(Plan::Switch {
            slot: 0,
            set_addr: false,
            set_weight: None,
            drain: vec![1],
        })
    );
    // A new endpoint goes to the idle slot (blue's), whatever it pointed at.
    assert_eq!(
        HaproxyRouter::plan(&servers, ip("10.0.0.3"), 8080),
        Ok(Plan::Switch {
            slot: 0,
            set_addr: true,
            set_weight: None,
            drain: vec![1],
        })
    );
}

#[test]
fn nothing_live_takes_a_slot_in_maintenance_and_drains_nothing() {
    let servers = [
        server("blue", "127.0.0.1", 8081, DRAIN, 1),
        server("green", "127.0.0.1", 8082, MAINT, 0),
    ];
    assert_eq!(
        HaproxyRouter::plan(&servers, ip("127.0.0.1"), 9000),
        Ok(Plan::Switch {
            slot: 1,
            set_addr: true,
            set_weight: Some(1),
            drain: vec![],
        })
    );
}

#[test]
fn a_split_moves_to_the_slot_that_points_there_or_refuses() {
    let servers = [
        server("blue", "127.0.0.1", 8081, READY, 10),
        server("green", "127.0.0.1", 8082, READY, 90),
    ];
    assert_eq!(
        HaproxyRouter::plan(&servers, ip("127.0.0.1"), 8082),
        Ok(Plan::Switch {
            slot: 1,
            set_addr: false,
            set_weight: None,
            drain: vec![0],
        })
    );
    let error = HaproxyRouter::plan(&servers, ip("127.0.0.1"), 9000).unwrap_err();
    assert!(error.contains("both servers"), "{error}");
}

#[test]
fn every_name_is_checked_when_the_router_is_built() {
    let good = HaproxyConfig::new("/run/haproxy.sock", "app", "app_blue", "app-green.1");
    assert!(HaproxyRouter::new(good.clone()).is_ok());
    for bad in INJECTIONS {
        let mut c = good.clone();
        c.backend = bad.to_string();
        let error = HaproxyRouter::new(c).unwrap_err();
        assert!(error.message.contains("backend name"), "{bad:?}: {error}");
        let mut c = good.clone();
        c.servers.blue = bad.to_string();
        assert!(HaproxyRouter::new(c).is_err(), "{bad:?}");
        let mut c = good.clone();
        c.servers.green = bad.to_string();
        assert!(HaproxyRouter::new(c).is_err(), "{bad:?}");
    }
    let mut same = good.clone();
    same.servers.green = "app_blue".into();
    assert!(HaproxyRouter::new(same)
        .unwrap_err()
        .message
        .contains("two different"));
    let mut verify = good.clone();
    verify.verify = Some(ProxyVerify::new("http://u:p@127.0.0.1/"));
    assert!(HaproxyRouter::new(verify).is_err());
    let mut timeout = good;
    timeout.timeout = Duration::ZERO;
    assert!(HaproxyRouter::new(timeout).is_err());
}

#[tokio::test]
async fn a_bad_endpoint_or_weight_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let router = HaproxyRouter::new(HaproxyConfig::new(&path, "app", "blue", "green")).unwrap();
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
    }
    let name = router
        .route_to(&Endpoint::new("app-green", 8080))
        .await
        .unwrap_err();
    assert!(name.message.contains("IP address"), "{name}");
    assert!(router
        .route_to(&Endpoint::new("127.0.0.1", 0))
        .await
        .is_err());
    for (blue, green) in [(0, 0), (257, 1), (1, 300)] {
        assert!(router.set_weights(blue, green).await.is_err());
    }
    let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
    assert!(accepted.is_err(), "nothing may reach the socket");
}

#[test]
fn the_state_file_is_replaced_whole_and_readable_by_haproxy() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.state");
    std::fs::write(&file, "old").unwrap();
    write_atomic(&file, b"1\n# be_id\n").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"1\n# be_id\n");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["app.state"], "no temporary file is left");
}

#[test]
fn a_split_reads_back_from_its_odd_and_even_weights_only() {
    for percent in [1u8, 20, 50, 80, 99] {
        let (current, next) = split_weights(percent);
        assert!(current <= u32::from(MAX_WEIGHT) && next <= u32::from(MAX_WEIGHT));
        let servers = [
            server("blue", "127.0.0.1", 8081, READY, next),
            server("green", "127.0.0.1", 8082, READY, current),
        ];
        assert_eq!(HaproxyRouter::read_split(&servers), Some((1, 0, percent)));
        // The share the weights give is within half a percent of the percent.
        let share = f64::from(next) / f64::from(current + next) * 100.0;
        assert!(
            (share - f64::from(percent)).abs() < 0.5,
            "{percent}: {share}"
        );
    }
    // Weights set by hand, one slot draining, or an even current are no split of ours.
    for (a, a_admin, b) in [
        (1, READY, 3),
        (40, DRAIN, 161),
        (40, READY, 160),
        (0, READY, 201),
    ] {
        let servers = [
            server("blue", "127.0.0.1", 8081, a_admin, a),
            server("green", "127.0.0.1", 8082, READY, b),
        ];
        assert_eq!(HaproxyRouter::read_split(&servers), None, "{a} {b}");
    }
}
