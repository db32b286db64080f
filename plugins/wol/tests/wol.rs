//! `pvbus-wol` as a real process against mosquitto: hosts that answer and hosts that do
//! not (by ping and by TCP knock) become devices, the presence summary is there for
//! rules, and `wake/set` sends a real magic packet (to a local UDP port standing in for
//! the broadcast address). Then the plugin as an unprivileged user, where the kernel
//! may refuse it ICMP: the TCP knock instead, and one log line that says why.

mod common;

use std::net::UdpSocket;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{is_root, range_includes};
use pvbus_plugin_wol::ping::process_groups;
use pvbus_testkit::{Child, Mosquitto, Recorder, free_port, mosquitto_pub};

/// Never assigned (TEST-NET-2, RFC 5737): answers neither ping nor TCP.
const SILENT: &str = "198.51.100.1";

const WAIT: Duration = Duration::from_secs(10);

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_wake_on_lan() {
    let silent = pvbus_plugin_wol::silent_host().await;
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let lan = UdpSocket::bind("127.0.0.1:0").unwrap();
    lan.set_read_timeout(Some(WAIT)).unwrap();
    // Pinged when this process may (root: a raw socket; a group in ping_group_range: a
    // datagram socket), else knocked on its port.
    let pinged = is_root() || range_includes(&process_groups());
    let mut settings = serde_json::json!({
        "interval": "1h",
        "timeout": "300ms",
        "broadcast": lan.local_addr().unwrap().to_string(),
        "host": [
            // Nothing listens on that port: the refusal proves the host is up.
            {"name": "laptop", "address": "127.0.0.1", "method": "tcp", "port": free_port(), "mac": "02:00:00:aa:bb:cc"},
            // A host that does not answer (its SYNs are dropped).
            {"name": "desktop", "address": "127.0.0.1", "method": "tcp", "port": silent.addr.port()},
            // By ping (the default): up, whatever its TCP ports do (the laptop whose
            // firewall drops them all); knocked when ping is not allowed: down.
            {"name": "firewalled", "address": "127.0.0.1", "port": silent.addr.port()},
        ],
    });
    if pinged {
        // Knocking at an unassigned address is not always silent (a proxy on the way
        // may answer for any address), so this one is only pinged.
        settings["host"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "away", "address": SILENT}));
    }
    let _wol = Child::spawn(
        "pvbus-wol",
        Command::new(env!("CARGO_BIN_EXE_pvbus-wol"))
            .env("PVBUS_BROKER", format!("127.0.0.1:{}", broker.port))
            .env("PVBUS_PLUGIN_ID", "wol")
            .env("PVBUS_PLUGIN_CONFIG", settings.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    rec.expect("pvbus/wol/status", "online", WAIT);
    let laptop = rec
        .wait_for("pvbus/wol/laptop/state", WAIT, |_| true)
        .expect("the laptop's presence");
    assert_eq!(json(&laptop)["reachable"], true, "{laptop}");
    let desktop = rec
        .wait_for("pvbus/wol/desktop/state", WAIT, |_| true)
        .expect("the desktop's presence");
    assert_eq!(json(&desktop)["reachable"], false, "{desktop}");
    assert_eq!(json(&desktop)["method"], "tcp", "{desktop}");
    let firewalled = rec
        .wait_for("pvbus/wol/firewalled/state", WAIT, |_| true)
        .expect("the firewalled host's presence");
    let firewalled = json(&firewalled);
    assert_eq!(firewalled["reachable"], pinged, "{firewalled}");
    assert_eq!(
        firewalled["method"],
        if pinged { "ping" } else { "tcp" },
        "{firewalled}"
    );
    if pinged {
        let away = rec
            .wait_for("pvbus/wol/away/state", WAIT, |_| true)
            .expect("the absent host's presence");
        assert_eq!(json(&away)["reachable"], false, "{away}");
        assert_eq!(json(&away)["method"], "ping", "{away}");
    }
    let presence = rec
        .wait_for("pvbus/wol/presence/state", WAIT, |_| true)
        .expect("the summary");
    let presence = json(&presence);
    assert_eq!(
        (presence["hosts_up"].as_u64(), presence["any_up"].as_bool()),
        (Some(if pinged { 2 } else { 1 }), Some(true))
    );

    mosquitto_pub(
        broker.addr(),
        &["-t", "pvbus/wol/laptop/wake/set", "-m", "1"],
    );
    let mut buf = [0u8; 200];
    let (n, _) = lan.recv_from(&mut buf).expect("a magic packet");
    assert_eq!(n, 102);
    assert_eq!(&buf[..6], &[0xFF; 6]);
    assert_eq!(&buf[6..12], &[0x02, 0, 0, 0xaa, 0xbb, 0xcc]);

    mosquitto_pub(
        broker.addr(),
        &["-t", "pvbus/wol/desktop/wake/set", "-m", "1"],
    );
    let error = rec
        .wait_for("pvbus/wol/error", WAIT, |_| true)
        .expect("an answer for a host without a MAC");
    assert!(error.contains("desktop has no `mac`"), "{error}");
}

/// As the user `nobody`, which has no CAP_NET_RAW and, unless ping_group_range includes
/// its group, no ICMP datagram socket either: hosts to ping are knocked by TCP, and the
/// log says why once, not at every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permission_for_icmp_ping_falls_back_to_the_tcp_knock_and_says_why_once() {
    const NOBODY: u32 = 65534;
    if !is_root() {
        eprintln!("not root: cannot run the plugin as another user; skipped");
        return;
    }
    let may_ping = range_includes(&[NOBODY]);
    let silent = pvbus_plugin_wol::silent_host().await;
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let log = tempfile::NamedTempFile::new().unwrap();
    let settings = serde_json::json!({
        "interval": "200ms",
        "timeout": "150ms",
        "host": [
            // Up by ping, and by knock (a refusal).
            {"name": "router", "address": "127.0.0.1", "port": free_port()},
            // Up by ping; by knock, down (its ports are silent): the laptop with a
            // firewall, which only ping finds.
            {"name": "firewalled", "address": "127.0.0.1", "port": silent.addr.port()},
        ],
    });
    // `nobody` must be able to reach the binary: the checkout may sit under a folder only
    // root can enter (/root), so run a copy from a folder anyone can read.
    let copy_dir = tempfile::tempdir().unwrap();
    let binary = copy_dir.path().join("pvbus-wol");
    std::fs::copy(env!("CARGO_BIN_EXE_pvbus-wol"), &binary).unwrap();
    for path in [copy_dir.path(), binary.as_path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let mut wol = Child::spawn(
        "pvbus-wol",
        Command::new(&binary)
            .uid(NOBODY)
            .gid(NOBODY)
            .env("PVBUS_BROKER", format!("127.0.0.1:{}", broker.port))
            .env("PVBUS_PLUGIN_ID", "wol")
            .env("PVBUS_PLUGIN_CONFIG", settings.to_string())
            .env("PVBUS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap()),
    );
    rec.expect("pvbus/wol/status", "online", WAIT);
    // Several rounds.
    let deadline = Instant::now() + WAIT;
    while rec
        .all()
        .iter()
        .filter(|m| m.topic == "pvbus/wol/router/state")
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "fewer than 4 rounds");
        std::thread::sleep(Duration::from_millis(20));
    }
    let method = if may_ping { "ping" } else { "tcp" };
    let router = json(&rec.last("pvbus/wol/router/state").unwrap());
    assert_eq!(
        (&router["reachable"], &router["method"]),
        (&serde_json::json!(true), &serde_json::json!(method)),
        "{router}"
    );
    let firewalled = json(&rec.last("pvbus/wol/firewalled/state").unwrap());
    assert_eq!(
        (&firewalled["reachable"], &firewalled["method"]),
        (&serde_json::json!(may_ping), &serde_json::json!(method)),
        "{firewalled}"
    );
    assert!(wol.terminate(WAIT).is_some_and(|s| s.success()));

    let log = std::fs::read_to_string(log.path()).unwrap();
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ICMP echo is not allowed"))
        .collect();
    if may_ping {
        assert!(why.is_empty(), "{log}");
        assert!(log.contains("ping on an ICMP Datagram socket"), "{log}");
    } else {
        assert_eq!(why.len(), 1, "said once: {log}");
        for words in [
            "net.ipv4.ping_group_range is",
            "[65534]",
            "CAP_NET_RAW",
            "Hosts with method \"ping\" (router, firewalled) are knocked by TCP on their port instead",
        ] {
            assert!(why[0].contains(words), "{words:?} in {}", why[0]);
        }
    }
}
