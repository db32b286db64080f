//! `pvbus relay`, `pvbus get` and `pvbus watch` against a running pvbus (real broker,
//! simulated VE.Direct devices read by the real bridge, the real relay bridge): what they
//! print, what they change on the bus, and their errors.

#[path = "ha/stack.rs"]
mod stack;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pvbus_testkit::{Recorder, free_port, mosquitto_pub};
use stack::{PVBUS, Parts, Stack};

const WAIT: Duration = Duration::from_secs(5);

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_ha() -> Parts {
    Parts {
        vedirect: true,
        relays: true,
        homeassistant: false,
    }
}

#[test]
fn relay_sets_modes_and_waits_for_the_bridge() {
    let stack = Stack::start(no_ha());
    let rec = Recorder::start(stack.broker.addr(), "pvbus/relays/#");

    let out = stack.pvbus(&["relay", "water_heater", "forced-on"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "water_heater: forced_on (was auto_off)");
    rec.expect("pvbus/relays/water_heater/mode", "forced_on", WAIT);
    rec.expect("pvbus/relays/water_heater/state", "ON", WAIT);
    let sent: Vec<_> = rec
        .all()
        .into_iter()
        .filter(|s| s.topic.ends_with("/mode/set"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!sent[0].retain, "commands are never retained");

    // Asked again: nothing to wait for.
    let out = stack.pvbus(&["relay", "water_heater", "on"]);
    assert_eq!(text(&out).0.trim(), "water_heater: already forced_on");

    let out = stack.pvbus(&["relay", "pump", "forced-on", "--for", "2h"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("pump: forced_on until ") && stdout.contains(", then auto_off"),
        "{stdout}"
    );
    let o = rec
        .wait_for("pvbus/relays/pump/override", WAIT, |p| !p.is_empty())
        .unwrap();
    let o: serde_json::Value = serde_json::from_str(&o).unwrap();
    let left = o["until"].as_u64().unwrap() as i64 - pvbus_bus::contract::now_ts() as i64;
    assert!((7190..=7200).contains(&left), "{o}");

    let out = stack.pvbus(&["relay", "pump", "auto"]);
    assert!(
        text(&out).0.starts_with("pump: auto_off"),
        "{:?}",
        text(&out)
    );
    rec.expect("pvbus/relays/pump/override", "", WAIT);
}

/// Runs a command that must fail with exit code 1, a message on stderr and nothing else.
fn fails(stack: &Stack, args: &[&str]) -> String {
    let out = stack.pvbus(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {:?}", text(&out));
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    stderr
}

#[test]
fn relay_errors_say_what_to_do() {
    let mut stack = Stack::start(Parts {
        vedirect: false,
        relays: true,
        homeassistant: false,
    });
    let e = fails(&stack, &["relay", "heater", "auto"]);
    assert!(
        e.contains("no relay `heater` on the bus; relays on the bus: pump and water_heater"),
        "{e}"
    );
    let e = fails(&stack, &["relay", "pump", "turbo"]);
    assert!(e.contains("unknown mode \"turbo\""), "{e}");
    let e = fails(&stack, &["relay", "pump", "on", "--for", "2x"]);
    assert!(e.contains("--for: bad duration \"2x\""), "{e}");
    let e = fails(&stack, &["relay", "pump", "on", "--until", "25:99"]);
    assert!(
        e.contains("refused the command") && e.contains("25:99"),
        "{e}"
    );

    // The relay bridge is gone (its retained modes are still there).
    stack
        .child(0)
        .terminate(Duration::from_secs(5))
        .expect("clean stop");
    let e = fails(&stack, &["relay", "pump", "forced-on"]);
    assert!(
        e.contains("did not confirm within 5 s: the relay bridge is offline"),
        "{e}"
    );

    // No broker at all.
    let port = free_port();
    let out = Command::new(PVBUS)
        .args(["get", "bmv.state_of_charge"])
        .env("PVBUS_BUS__EXTERNAL_BROKER", format!("127.0.0.1:{port}"))
        .env_remove("PVBUS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out).1;
    assert!(
        e.contains(&format!("cannot reach the MQTT broker at 127.0.0.1:{port}")),
        "{e}"
    );
}

#[test]
fn get_reads_values_like_rules_name_them() {
    let stack = Stack::start(no_ha());
    let number = |path: &str| -> f64 {
        let out = stack.pvbus(&["get", path]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{path}: {stderr}");
        stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{path}: {stdout:?}"))
    };
    let v = number("mppt_roof.battery_voltage");
    assert!((10.0..16.0).contains(&v), "{v}");
    let soc = number("bmv.state_of_charge");
    assert!((0.0..=100.0).contains(&soc), "{soc}");
    number("site.consumption");
    let out = stack.pvbus(&["get", "relays.pump"]);
    assert_eq!(text(&out).0.trim(), "auto_off");
    let out = stack.pvbus(&["get", "relays/pump/state"]);
    assert_eq!(text(&out).0.trim(), "OFF");
    let out = stack.pvbus(&["get", "mppt_roof.charge_state"]);
    assert!(
        !text(&out).0.trim().contains('"'),
        "strings are printed bare"
    );

    let out = stack.pvbus(&["get", "mppt_roof.battery_volts"]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out).1;
    assert!(
        e.contains("its readings are:") && e.contains("battery_voltage"),
        "{e}"
    );
    let out = stack.pvbus(&["get", "roof.pv_power"]);
    assert!(
        text(&out)
            .1
            .contains("devices on the bus: bmv and mppt_roof")
    );

    // A device that went stale: the value, and a warning on stderr.
    mosquitto_pub(
        stack.broker.addr(),
        &[
            "-r",
            "-t",
            "pvbus/script/cellar/state",
            "-m",
            r#"{"ts":1,"temperature":12.5}"#,
        ],
    );
    mosquitto_pub(
        stack.broker.addr(),
        &[
            "-r",
            "-t",
            "pvbus/script/cellar/availability",
            "-m",
            "offline",
        ],
    );
    let out = stack.pvbus(&["get", "cellar.temperature"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "12.5");
    assert!(
        stderr.contains("cellar is offline: this value is stale"),
        "{stderr}"
    );
}

#[test]
fn watch_prints_retained_then_live_lines() {
    let stack = Stack::start(Parts {
        vedirect: false,
        relays: true,
        homeassistant: false,
    });
    let out = stack.pvbus(&["watch", "--once", "relays/+/mode"]);
    assert_eq!(
        text(&out).0,
        "pvbus/relays/pump/mode auto_off\npvbus/relays/water_heater/mode auto_off\n"
    );

    let mut child = Command::new(PVBUS)
        .args(["watch", "pump"])
        .env("PVBUS_CONFIG", &stack.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("pvbus/relays/pump/"), "{first}");
    mosquitto_pub(
        stack.broker.addr(),
        &["-t", "pvbus/relays/pump/mode/set", "-m", "forced_on"],
    );
    let seen: Vec<String> = lines
        .by_ref()
        .map_while(Result::ok)
        .take_while(|l| l != "pvbus/relays/pump/mode forced_on")
        .collect();
    assert!(
        seen.contains(&"pvbus/relays/pump/mode/set forced_on".to_string()),
        "{seen:?}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "watch stops cleanly on SIGTERM: {status}");
}
