//! The cold-backup plugin through a whole night, with real parts: mosquitto, `pvbus
//! plugins` running `pvbus-coldbackup` from its folder (settings from
//! `[plugins.config.coldbackup]`), the real relay bridge on a simulated GPIO board, and
//! the backup machine's script (examples/plugins/coldbackup-client.sh) reporting done.
//! The machine needs wake-on-LAN: the magic packet goes to a UDP socket of the test
//! (standing in for the LAN's broadcast address) once the relay is on, before the
//! machine reports. Then a night where the machine never reports (timeout), and one
//! with a low battery (nothing switched, nothing woken).

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Mosquitto, Recorder, mosquitto_pub};
use serde_json::Value;

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");
const WAIT: Duration = Duration::from_secs(15);

/// Builds the plugin (cargo is idle while tests run); its path in this test's profile.
fn coldbackup_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "pvbus-plugin-coldbackup"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building pvbus-coldbackup failed");
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    profile.join("pvbus-coldbackup")
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The datagrams a UDP socket receives, with when they arrived.
type Arrivals = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A UDP socket on 127.0.0.1 standing in for the LAN's broadcast address.
fn lan() -> (String, Arrivals) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let arrivals = Arrivals::default();
    let a = arrivals.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok(n) = socket.recv(&mut buf) {
            a.lock().unwrap().push((Instant::now(), buf[..n].to_vec()));
        }
    });
    (addr, arrivals)
}

/// Waits for the `n`th datagram (from 1); when it arrived and its bytes.
fn nth_arrival(arrivals: &Arrivals, n: usize) -> (Instant, Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(a) = arrivals.lock().unwrap().get(n - 1) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "no magic packet #{n}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// When the recorder saw `topic` become `payload` (the last time).
fn seen_at(rec: &Recorder, topic: &str, payload: &str) -> Instant {
    rec.all()
        .iter()
        .rev()
        .find(|m| m.topic == topic && m.payload == payload)
        .unwrap_or_else(|| panic!("{topic} = {payload} was never seen"))
        .at
}

#[test]
fn a_night_of_cold_backup_then_a_timeout_then_a_low_battery() {
    let binary = coldbackup_binary();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let dir = tempfile::tempdir().unwrap();
    let (broadcast, magic_packets) = lan();
    let folder = dir.path().join("plugins.d");
    fs::create_dir(&folder).unwrap();
    std::os::unix::fs::symlink(&binary, folder.join("coldbackup")).unwrap();
    let config = dir.path().join("pvbus.toml");
    fs::write(
        &config,
        format!(
            r#"
[bus]
external_broker = "127.0.0.1:{port}"

[relays]
state_dir = "{dir}/state"
stale_after = 600
[relays.gpio]
backend = "sim"
sim_dir = "{dir}/board"
[[relays.relay]]
id = "nas"
pin = 22

[plugins]
folder = "{folder}"

[plugins.config.coldbackup]
relay = "nas"
battery = "bmv"
min_soc = 60
max_duration = "2s"
shutdown_grace = "300ms"
device = "nas"
wake_mac = "02:42:ac:11:00:07"
wake_broadcast = "{broadcast}"
wake_delay = "300ms"
"#,
            port = broker.port,
            dir = dir.path().display(),
            folder = folder.display(),
        ),
    )
    .unwrap();
    let bmv = |soc: u32| {
        mosquitto_pub(
            broker.addr(),
            &[
                "-r",
                "-t",
                "pvbus/vedirect/bmv/state",
                "-m",
                &format!(r#"{{"ts":1764040000,"state_of_charge":{soc}}}"#),
            ],
        )
    };
    bmv(80);
    let spawn = |what: &str| {
        Child::spawn(
            &format!("pvbus {what}"),
            Command::new(PVBUS)
                .args([what, "--config"])
                .arg(&config)
                .env("PVBUS_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let _relays = spawn("relays");
    rec.expect("pvbus/relays/nas/state", "OFF", WAIT);
    rec.expect("pvbus/relays/nas/mode", "auto_off", WAIT);
    let mut plugins = spawn("plugins");
    rec.expect("pvbus/coldbackup/status", "online", WAIT);
    let state = rec
        .wait_for("pvbus/coldbackup/nas/state", WAIT, |p| p.contains("idle"))
        .expect("the run's device is published");
    assert!(json(&state).get("last_outcome").is_none(), "{state}");

    // Night 1: started (by a rule, HA or a person), the relay comes on, the machine backs
    // up and reports, then after its shutdown grace the relay goes off again.
    let run = || {
        mosquitto_pub(
            broker.addr(),
            &["-t", "pvbus/coldbackup/nas/run/set", "-m", "start"],
        );
    };
    run();
    rec.expect("pvbus/relays/nas/state", "ON", WAIT);
    rec.expect("pvbus/relays/nas/mode", "forced_on", WAIT);
    let state = rec.last("pvbus/coldbackup/nas/state").unwrap();
    assert_eq!(json(&state)["phase"], "running", "{state}");
    // The machine is powered; wake_delay later it is woken: six 0xff bytes, then its MAC
    // sixteen times.
    let (woken_at, packet) = nth_arrival(&magic_packets, 1);
    let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x07];
    let mut expected = vec![0xff; 6];
    for _ in 0..16 {
        expected.extend_from_slice(&mac);
    }
    assert_eq!(packet.len(), 102);
    assert_eq!(packet, expected);
    assert!(
        woken_at >= seen_at(&rec, "pvbus/relays/nas/state", "ON"),
        "the magic packet came before the relay was on"
    );
    let client = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins/coldbackup-client.sh"),
    )
    .env("PVBUS_BROKER", format!("127.0.0.1:{}", broker.port))
    .env("DEVICE", "nas")
    .env("BACKUP_COMMAND", "echo backing up; sleep 0.2")
    .env("NO_SHUTDOWN", "1")
    .output()
    .expect("the client script runs");
    assert!(client.status.success(), "{client:?}");
    let done = rec
        .wait_for("pvbus/coldbackup/nas/state", WAIT, |p| {
            p.contains("\"last_outcome\"")
        })
        .expect("the night's outcome");
    let done = json(&done);
    assert!(
        woken_at < seen_at(&rec, "pvbus/coldbackup/nas/done/set", "ok"),
        "woken before the machine reported"
    );
    assert_eq!(magic_packets.lock().unwrap().len(), 1, "one packet a night");
    assert_eq!(done["last_outcome"], "ok", "{done}");
    assert_eq!(done["phase"], "idle", "{done}");
    assert!(done["last_duration"].as_u64().unwrap() <= 5, "{done}");
    rec.expect("pvbus/relays/nas/state", "OFF", WAIT);
    rec.expect("pvbus/relays/nas/mode", "auto_off", WAIT);

    // A second start while... nothing runs is fine; `done` without a run is refused.
    mosquitto_pub(
        broker.addr(),
        &["-t", "pvbus/coldbackup/nas/done/set", "-m", "ok"],
    );
    let error = rec
        .wait_for("pvbus/coldbackup/error", WAIT, |_| true)
        .expect("a done without a run is answered");
    assert!(error.contains("no backup run is under way"), "{error}");

    // Night 2: the machine never reports; after max_duration the power goes off anyway.
    rec.clear();
    run();
    rec.expect("pvbus/relays/nas/state", "ON", WAIT);
    // Woken again, then never heard of.
    assert_eq!(nth_arrival(&magic_packets, 2).1, expected);
    let timeout = rec
        .wait_for("pvbus/coldbackup/nas/state", WAIT, |p| {
            p.contains("\"timeout\"")
        })
        .expect("the timeout is the outcome");
    assert_eq!(json(&timeout)["phase"], "idle");
    assert!(
        json(&timeout)["last_duration"].as_u64().unwrap() >= 2,
        "{timeout}"
    );
    rec.expect("pvbus/relays/nas/state", "OFF", WAIT);

    // Night 3: the battery is too low; nothing is switched.
    bmv(30);
    rec.clear();
    std::thread::sleep(Duration::from_millis(200)); // the retained SOC reaches the plugin
    run();
    let skipped = rec
        .wait_for("pvbus/coldbackup/nas/state", WAIT, |p| {
            p.contains("skipped_low_battery")
        })
        .expect("skipped for the battery");
    assert_eq!(json(&skipped)["phase"], "idle");
    assert!(
        rec.last("pvbus/relays/nas/mode/set").is_none(),
        "no relay command"
    );
    std::thread::sleep(Duration::from_millis(600)); // twice wake_delay
    assert_eq!(magic_packets.lock().unwrap().len(), 2, "nothing woken");

    let status = plugins.terminate(WAIT);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
