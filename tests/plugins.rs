//! Plugins with the real binary and a real broker (mosquitto):
//! - an executable dropped into the plugins folder of a running `pvbus run` starts, its
//!   readings reach the bus and the rules (which switch a relay on them), and removing the
//!   file stops it;
//! - an old PvMonit `key:value` script runs unchanged as an `exec` plugin;
//! - plugins that crash in a loop, never connect or flood their output are reported on
//!   their health topic, and the others keep running.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, Recorder, mosquitto_pub};
use serde_json::Value;

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");
const WAIT: Duration = Duration::from_secs(15);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/plugins")
        .join(name)
}

/// Writes an executable file (written beside, then renamed in: how a file should be
/// installed into a watched folder, and what `install` does).
fn install(dir: &Path, name: &str, text: &str) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    fs::rename(&tmp, &path).unwrap();
    path
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn a_dropped_plugin_reaches_the_bus_and_the_rules_and_exec_runs_old_scripts() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plugins.d");
    let probe = dir.path().join("thermal_zone0_temp");
    fs::write(&probe, "45000\n").unwrap();
    // An old PvMonit sensor script: Fahrenheit, a French decimal comma, a comment.
    let old_script = install(
        dir.path(),
        "dht22.sh",
        "#!/bin/sh\necho '# DHT22 in the cellar'\necho 'T:77'\necho 'H:55,5'\n",
    );
    let config = dir.path().join("pvbus.toml");
    fs::write(
        &config,
        format!(
            r#"
[bus]
external_broker = "127.0.0.1:{port}"

[supervisor]
processes = ["rules", "plugins"]
restart_delay_secs = 0.2

[plugins]
folder = "{folder}"
restart_delay = "200ms"

[[plugins.exec]]
id = "cellar"
command = "{old_script}"
interval = "1s"
readings = {{ T = "temperature", H = "humidity" }}
units = {{ T = "°F" }}

[site]
timezone = "UTC"
latitude = 45.19
longitude = 5.72

[rules]
heartbeat = "1s"
[rules.devices]
cpu = {{ values = ["temperature"] }}
[rules.relays.fan]
on = "cpu.temperature > 40"
off = "cpu.temperature < 30"
"#,
            port = broker.port,
            folder = folder.display(),
            old_script = old_script.display(),
        ),
    )
    .unwrap();
    // The relay bridge's retained state, as the rules expect it.
    mosquitto_pub(
        broker.addr(),
        &["-r", "-t", "pvbus/relays/fan/mode", "-m", "auto_off"],
    );
    mosquitto_pub(
        broker.addr(),
        &["-r", "-t", "pvbus/relays/fan/state", "-m", "OFF"],
    );

    let mut run = Child::spawn(
        "pvbus run",
        Command::new(PVBUS)
            .args(["run", "--config"])
            .arg(&config)
            .env("PROBE_FILE", &probe)
            .env("PROBE_INTERVAL", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    rec.expect("pvbus/plugins/status", "online", WAIT);
    rec.expect("pvbus/rules/status", "online", WAIT);
    // `pvbus run` started `pvbus plugins` as one of its processes.
    rec.wait_for("pvbus/supervisor/processes", WAIT, |p| {
        serde_json::from_str::<Value>(p)
            .is_ok_and(|v| v["processes"]["plugins"]["state"] == "running")
    })
    .expect("the supervisor runs the plugins process");

    // The exec kind: the old script's lines became readings, converted to °C.
    let cellar = rec
        .wait_for("pvbus/cellar/cellar/state", WAIT, |_| true)
        .expect("the exec plugin publishes");
    let cellar = json(&cellar);
    assert_eq!(cellar["temperature"], 25.0, "{cellar}");
    assert_eq!(cellar["humidity"], 55.5, "{cellar}");
    assert!(cellar["ts"].is_u64(), "{cellar}");
    rec.expect("pvbus/cellar/cellar/availability", "online", WAIT);

    // Drop the shell plugin into the running folder (created by `pvbus plugins`).
    let text = fs::read_to_string(example("cpu-temperature.sh")).unwrap();
    let path = install(&folder, "cpu-temperature.sh", &text);
    rec.expect("pvbus/cpu_temperature/status", "online", WAIT);
    let state = rec
        .wait_for("pvbus/cpu_temperature/cpu/state", WAIT, |_| true)
        .expect("the dropped plugin publishes");
    assert_eq!(json(&state)["temperature"], 45.0, "{state}");
    let health = rec
        .wait_for("pvbus/plugins/cpu_temperature/health", WAIT, |p| {
            p.contains("\"online\":true")
        })
        .expect("the plugin's health says online");
    assert_eq!(json(&health)["state"], "running", "{health}");
    assert_eq!(json(&health)["path"], path.display().to_string());

    // The rules see the plugin's reading and switch the fan on.
    rec.wait_for("pvbus/relays/fan/auto/set", WAIT, |p| {
        pvbus_bus::contract::AutoSet::parse(p).is_ok_and(|a| a.on == ("ON" == "ON"))
    })
    .expect("auto/set ON");
    // It answers a command on its own topic.
    fs::write(&probe, "20000\n").unwrap();
    rec.clear();
    mosquitto_pub(
        broker.addr(),
        &["-t", "pvbus/cpu_temperature/cpu/refresh/set", "-m", "now"],
    );
    rec.wait_for("pvbus/cpu_temperature/cpu/state", WAIT, |p| {
        p.contains("\"temperature\":20.0")
    })
    .expect("a new reading after the command");
    rec.wait_for("pvbus/relays/fan/auto/set", WAIT, |p| {
        pvbus_bus::contract::AutoSet::parse(p).is_ok_and(|a| a.on == ("OFF" == "ON"))
    })
    .expect("auto/set OFF");

    // Removing the file stops it (its process goes), and removes it from the bus: its
    // health, status and devices are cleared (so Home Assistant removes its entities).
    let pid = json(&health)["pid"].as_u64().unwrap();
    fs::remove_file(&path).unwrap();
    rec.expect("pvbus/plugins/cpu_temperature/health", "", WAIT);
    for cleared in [
        "cpu_temperature/status",
        "cpu_temperature/cpu/state",
        "cpu_temperature/cpu/availability",
    ] {
        rec.expect(&format!("pvbus/{cleared}"), "", WAIT);
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the plugin process is gone"
    );

    let status = run.terminate(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "pvbus run stops cleanly: {status:?}"
    );
    rec.expect("pvbus/plugins/status", "offline", WAIT);
}

#[test]
fn misbehaving_plugins_are_contained_and_reported() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plugins.d");
    fs::create_dir(&folder).unwrap();
    let config = dir.path().join("pvbus.toml");
    fs::write(
        &config,
        format!(
            r#"
[bus]
external_broker = "127.0.0.1:{port}"
[plugins]
folder = "{folder}"
restart_delay = "100ms"
restart_delay_max = "400ms"
online_timeout = "1s"
log_lines_per_sec = 10
max_messages_per_sec = 20
"#,
            port = broker.port,
            folder = folder.display(),
        ),
    )
    .unwrap();
    install(
        &folder,
        "crashes.sh",
        "#!/bin/sh\necho 'going down'\nexit 3\n",
    );
    install(&folder, "silent.sh", "#!/bin/sh\nexec sleep 600\n");
    install(
        &folder,
        "flood.sh",
        "#!/bin/sh\nexec yes 'spam spam spam'\n",
    );
    // Floods the bus: every line of `yes` becomes a message.
    install(
        &folder,
        "spammer.sh",
        "#!/bin/sh\nyes 1 | mosquitto_pub -h \"${PVBUS_BROKER%:*}\" -p \"${PVBUS_BROKER##*:}\" -l -t \"$PVBUS_BASE/$PVBUS_PLUGIN_ID/spam\"\n",
    );
    // Not plugins: not executable, hidden, an editor's backup.
    fs::write(folder.join("notes.txt"), "not a plugin").unwrap();
    install(&folder, ".hidden.sh", "#!/bin/sh\nexit 0\n");
    install(&folder, "silent.sh~", "#!/bin/sh\nexit 0\n");
    // A well-behaved plugin in another language than ours, started alongside.
    let text = fs::read_to_string(example("cpu-temperature.sh")).unwrap();
    let probe = dir.path().join("temp");
    fs::write(&probe, "31000\n").unwrap();

    let mut plugins = Child::spawn(
        "pvbus plugins",
        Command::new(PVBUS)
            .args(["plugins", "--config"])
            .arg(&config)
            .env("PROBE_FILE", &probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    rec.expect("pvbus/plugins/status", "online", WAIT);
    install(&folder, "good.sh", &text);

    let crash = rec
        .wait_for("pvbus/plugins/crashes/health", WAIT, |p| {
            p.contains("crash loop")
        })
        .expect("the crash loop is reported");
    let crash = json(&crash);
    assert!(
        crash["problem"].as_str().unwrap().contains("exit code 3"),
        "{crash}"
    );
    assert!(crash["restarts"].as_u64().unwrap() >= 2, "{crash}");

    let silent = rec
        .wait_for("pvbus/plugins/silent/health", WAIT, |p| {
            p.contains("not online")
        })
        .expect("a plugin that never connects is reported");
    assert_eq!(json(&silent)["state"], "running", "{silent}");

    let flood = rec
        .wait_for("pvbus/plugins/flood/health", WAIT, |p| {
            p.contains("flooding")
        })
        .expect("the flood is reported");
    assert_eq!(json(&flood)["state"], "running", "{flood}");

    let spammer = rec
        .wait_for("pvbus/plugins/spammer/health", WAIT, |p| {
            p.contains("flooding the bus")
        })
        .expect("the bus flood is stopped and reported");
    let spammer = json(&spammer);
    assert!(
        spammer["last_exit"]
            .as_str()
            .unwrap()
            .starts_with("stopped for flooding the bus"),
        "{spammer}"
    );
    // Stopped, then started again after a delay, like a plugin that crashed.
    assert!(
        ["restarting", "running"].contains(&spammer["state"].as_str().unwrap()),
        "{spammer}"
    );

    // The good one works in the middle of all that.
    let good = rec
        .wait_for("pvbus/good/cpu/state", WAIT, |_| true)
        .expect("the good plugin publishes");
    assert_eq!(json(&good)["temperature"], 31.0);
    rec.expect("pvbus/good/status", "online", WAIT);
    for not in ["notes", "hidden", "silent.sh~"] {
        assert!(
            rec.last(&format!("pvbus/plugins/{not}/health")).is_none(),
            "{not}"
        );
    }

    // Rewriting a plugin restarts it (new pid).
    let pid = |p: &str| json(p)["pid"].as_u64();
    let before = pid(&rec.last("pvbus/plugins/silent/health").unwrap());
    install(&folder, "silent.sh", "#!/bin/sh\nexec sleep 601\n");
    rec.wait_for("pvbus/plugins/silent/health", WAIT, |p| {
        p.contains("\"running\"") && pid(p).is_some() && pid(p) != before
    })
    .expect("restarted with a new pid");

    let status = plugins.terminate(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "stops cleanly: {status:?}"
    );
    rec.expect("pvbus/good/status", "offline", WAIT);
    // The runner reports each plugin stopped as it goes; under load that can come after
    // another plugin's `offline`, so wait for it rather than read the latest at once.
    let flood = rec.wait_for("pvbus/plugins/flood/health", WAIT, |p| {
        serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| v["state"] == "stopped")
    });
    assert!(
        flood.is_some(),
        "the flooding plugin was never reported stopped; last: {:?}",
        rec.last("pvbus/plugins/flood/health")
    );
}
