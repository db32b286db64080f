//! ICMP echo on real sockets: 127.0.0.1 answers, 198.51.100.1 does not.
//!
//! 198.51.100.1 (TEST-NET-2, RFC 5737) is never assigned; 192.0.2.1 would do as well on
//! most machines, but on some (this development machine) it is the gateway, and answers.
//!
//! The raw socket is tested as root; the datagram socket (what an unprivileged pvbus
//! uses on Raspberry Pi OS) in a network namespace of its own whose
//! `net.ipv4.ping_group_range` allows it, so that the machine's setting is not touched.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::is_root;
use pvbus_plugin_wol::ping::process_groups;
use pvbus_plugin_wol::{IcmpSocket, Pinger, Presence};

const SILENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const TIMEOUT: Duration = Duration::from_millis(400);

fn groups_may_ping() -> bool {
    common::range_includes(&process_groups())
}

/// 127.0.0.1 answers, quickly; the silent address does not, within the timeout.
async fn up_and_down(pinger: &Pinger) {
    match pinger.ping(Ipv4Addr::LOCALHOST, TIMEOUT).await {
        Presence::Up(latency) => assert!(latency < TIMEOUT, "{latency:?}"),
        Presence::Down => panic!("127.0.0.1 did not answer a {:?} ping", pinger.kind()),
    }
    let start = Instant::now();
    assert_eq!(pinger.ping(SILENT, TIMEOUT).await, Presence::Down);
    assert!(start.elapsed() < TIMEOUT + Duration::from_millis(200));
    // And again: a late answer or a stale error does not confuse the next request.
    assert!(matches!(
        pinger.ping(Ipv4Addr::LOCALHOST, TIMEOUT).await,
        Presence::Up(_)
    ));
}

#[tokio::test]
async fn a_raw_socket_pings_as_root_and_is_refused_otherwise() {
    match Pinger::open_with(IcmpSocket::Raw) {
        Ok(pinger) => {
            assert!(is_root(), "a raw socket without root?");
            up_and_down(&pinger).await;
        }
        Err(e) => {
            assert!(!is_root(), "root may open a raw socket: {e}");
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        }
    }
}

#[tokio::test]
async fn a_datagram_socket_is_allowed_only_by_ping_group_range() {
    match Pinger::open_with(IcmpSocket::Datagram) {
        Ok(pinger) => {
            assert!(
                groups_may_ping(),
                "allowed, though no group is in the range"
            );
            up_and_down(&pinger).await;
        }
        Err(e) => {
            assert!(
                !groups_may_ping(),
                "refused, though a group is in the range: {e}"
            );
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        }
    }
}

#[tokio::test]
async fn open_prefers_the_datagram_socket_then_raw_and_else_says_why() {
    match (Pinger::open(), groups_may_ping(), is_root()) {
        (Ok(p), true, _) => assert_eq!(p.kind(), IcmpSocket::Datagram),
        (Ok(p), false, true) => assert_eq!(p.kind(), IcmpSocket::Raw),
        (Err(e), false, false) => {
            let e = e.to_string();
            assert!(
                e.contains("net.ipv4.ping_group_range is") && e.contains("CAP_NET_RAW"),
                "{e}"
            );
        }
        (result, may_ping, root) => panic!(
            "{:?} with groups allowed {may_ping} and root {root}",
            result.map(|p| p.kind())
        ),
    }
}

/// The datagram socket, in a network namespace where ping_group_range allows every
/// group (what systemd sets): this test binary runs itself there, for the test below.
#[test]
fn a_datagram_socket_pings_where_ping_group_range_allows_it() {
    if !is_root() {
        eprintln!(
            "not root: no network namespace of our own; skipped (the datagram socket is tested above where allowed)"
        );
        return;
    }
    // A container without CAP_SYS_ADMIN may not make namespaces: say so, skip.
    let unshare = Command::new("unshare").args(["--net", "true"]).output();
    if !unshare.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("cannot make a network namespace here ({unshare:?}); skipped");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ip link set lo up && echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range && exec '{}' --exact in_a_namespace_that_allows_ping --ignored --nocapture",
        exe.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env("PVBUS_WOL_TEST_NETNS", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{out:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run by a_datagram_socket_pings_where_ping_group_range_allows_it, in its own network namespace"]
async fn in_a_namespace_that_allows_ping() {
    assert_eq!(
        std::env::var("PVBUS_WOL_TEST_NETNS").as_deref(),
        Ok("1"),
        "only inside the namespace made by a_datagram_socket_pings_where_ping_group_range_allows_it"
    );
    let pinger = Pinger::open().expect("ping_group_range allows every group here");
    assert_eq!(pinger.kind(), IcmpSocket::Datagram);
    // Only the loopback exists here: the silent address has no route at all.
    up_and_down(&pinger).await;
}
