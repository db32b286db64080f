//! `pvbus-wol` as a real process against mosquitto: hosts that answer and hosts that do
//! not become devices, the presence summary is there for rules, and `wake/set` sends a
//! real magic packet (to a local UDP port standing in for the broadcast address).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, Recorder, free_port, mosquitto_pub};

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
    let settings = serde_json::json!({
        "interval": "1h",
        "timeout": "300ms",
        "broadcast": lan.local_addr().unwrap().to_string(),
        "host": [
            // Nothing listens on that port: the refusal proves the host is up.
            {"name": "laptop", "address": "127.0.0.1", "port": free_port(), "mac": "02:00:00:aa:bb:cc"},
            // A host that does not answer (its SYNs are dropped).
            {"name": "desktop", "address": "127.0.0.1", "port": silent.addr.port()},
        ],
    });
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
    let presence = rec
        .wait_for("pvbus/wol/presence/state", WAIT, |_| true)
        .expect("the summary");
    let presence = json(&presence);
    assert_eq!(
        (presence["hosts_up"].as_u64(), presence["any_up"].as_bool()),
        (Some(1), Some(true))
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
