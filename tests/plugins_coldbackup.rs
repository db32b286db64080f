//! The cold-backup plugin through a whole night, with real parts: mosquitto, `pvbus
//! plugins` running `pvbus-coldbackup` from its folder (settings from
//! `[plugins.config.coldbackup]`), the real relay bridge on a simulated GPIO board, and
//! the backup machine's script (examples/plugins/coldbackup-client.sh) reporting done.
//! Then a night where the machine never reports (timeout), and one with a low battery.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

#[test]
fn a_night_of_cold_backup_then_a_timeout_then_a_low_battery() {
    let binary = coldbackup_binary();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let dir = tempfile::tempdir().unwrap();
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

    let status = plugins.terminate(WAIT);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
