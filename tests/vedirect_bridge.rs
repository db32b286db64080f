//! The VE.Direct bridge end to end, all real parts: `pvbus sim vedirect` processes write
//! VE.Direct bytes into real pseudo-terminals, `pvbus vedirect` reads them through the
//! symlinks and publishes on a real mosquitto, and a recording subscriber checks the bus.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, Recorder, mosquitto_pub};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn sim(dir: &Path, kind: &str, extra: &[&str]) -> Child {
    sim_at(&dir.join(kind), kind, extra)
}

fn sim_at(link: &Path, kind: &str, extra: &[&str]) -> Child {
    let child = Child::spawn(
        &format!("sim {kind}"),
        Command::new(env!("CARGO_BIN_EXE_pvbus"))
            .args(["sim", "vedirect", "--kind", kind, "--link"])
            .arg(link)
            .args(extra)
            .env("PVBUS_LOG", "warn")
            .stdout(Stdio::null()),
    );
    // The link appears once the pty exists.
    for _ in 0..200 {
        if std::fs::symlink_metadata(link).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the simulator did not create {}", link.display());
}

fn bridge(broker: &Mosquitto, dir: &Path, ports: &[&str], extra: &str) -> Child {
    let detect = if extra.contains("auto_detect") {
        ""
    } else {
        "auto_detect = false\n"
    };
    let mut toml = format!(
        "[bus]\nexternal_broker = \"127.0.0.1:{}\"\n[vedirect]\n{detect}stale_after = 2\n{extra}\n",
        broker.port
    );
    for p in ports {
        toml.push_str(&format!(
            "[[vedirect.ports]]\npath = \"{}\"\n",
            dir.join(p).display()
        ));
    }
    toml.push_str("[vedirect.devices]\nHQ2150SIM01 = \"mppt_roof\"\n");
    let config: PathBuf = dir.join("pvbus.toml");
    std::fs::write(&config, toml).unwrap();
    Child::spawn(
        "bridge",
        Command::new(env!("CARGO_BIN_EXE_pvbus"))
            .args(["vedirect", "--config"])
            .arg(&config)
            .env("PVBUS_LOG", "info")
            .stdout(Stdio::null()),
    )
}

fn json(p: &str) -> Value {
    serde_json::from_str(p).unwrap_or_else(|e| panic!("not JSON: {p:?}: {e}"))
}

fn wait_json(rec: &Recorder, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
    match rec.wait_for(topic, WAIT, |p| {
        serde_json::from_str(p).is_ok_and(|v| pred(&v))
    }) {
        Some(p) => json(&p),
        None => panic!(
            "{topic}: no matching payload within {WAIT:?}; last: {:?}",
            rec.last(topic)
        ),
    }
}

#[test]
fn simulated_mppt_and_bmv_on_the_bus_survive_a_simulator_restart() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let mut mppt = sim(dir.path(), "mppt", &["--start-time", "11:00"]);
    let _bmv = sim(dir.path(), "bmv", &["--start-time", "11:00"]);
    let mut bridge = bridge(&broker, dir.path(), &["mppt", "bmv"], "");

    // The MPPT is named by its serial number from the config.
    let state = wait_json(&rec, "pvbus/vedirect/mppt_roof/state", |v| {
        v["pv_power"].is_number()
    });
    assert_eq!(state["serial_number"], "HQ2150SIM01");
    assert!(state["ts"].as_u64().unwrap() > 1_700_000_000);
    assert!(state["battery_voltage"].as_f64().unwrap() > 11.0);
    assert_eq!(
        state["charge_state"].as_str().map(|s| s.is_empty()),
        Some(false)
    );
    rec.expect("pvbus/vedirect/mppt_roof/availability", "online", WAIT);
    rec.expect("pvbus/vedirect/status", "online", WAIT);

    // The BMV sends no SER#: the bridge asked for it over HEX. Its state is the union
    // of its live block and its history block.
    let bmv_topic = "pvbus/vedirect/monitor_hq2150sim02/state";
    let bmv = wait_json(&rec, bmv_topic, |v| {
        v["state_of_charge"].is_number() && v["deepest_discharge"].is_number()
    });
    assert!(bmv["battery_power"].is_number(), "{bmv}");

    // Site totals: consumption = PV - battery, from the latest readings.
    let site = wait_json(&rec, "pvbus/site/state", |v| v["consumption"].is_number());
    let (pv, batt, cons) = (
        site["pv_power"].as_f64().unwrap(),
        site["battery_power"].as_f64().unwrap(),
        site["consumption"].as_f64().unwrap(),
    );
    assert!((cons - (pv - batt)).abs() < 0.011, "{site}");
    assert!(pv > 0.0, "11:00 is daytime: {site}");

    // Closing the simulator: the device goes offline after stale_after (2 s), the PV total
    // becomes unknown, and the bridge keeps running.
    mppt.terminate(Duration::from_secs(5))
        .expect("simulator stops on SIGTERM");
    assert!(
        std::fs::symlink_metadata(dir.path().join("mppt")).is_err(),
        "link removed"
    );
    rec.expect("pvbus/vedirect/mppt_roof/availability", "offline", WAIT);
    wait_json(&rec, "pvbus/site/state", |v| v["pv_power"].is_null());
    assert!(bridge.is_running());

    // A new simulator (a new pty behind the same link) is picked up without a restart.
    rec.clear();
    let _mppt2 = sim(dir.path(), "mppt", &["--start-time", "11:00"]);
    rec.expect("pvbus/vedirect/mppt_roof/availability", "online", WAIT);
    wait_json(&rec, "pvbus/vedirect/mppt_roof/state", |v| {
        v["pv_power"].is_number()
    });
    wait_json(&rec, "pvbus/site/state", |v| v["pv_power"].is_number());

    // SIGTERM: a clean exit that marks the devices offline.
    let status = bridge
        .terminate(Duration::from_secs(5))
        .expect("bridge stops on SIGTERM");
    assert!(status.success(), "{status}");
    rec.expect("pvbus/vedirect/status", "offline", WAIT);
    rec.expect("pvbus/vedirect/mppt_roof/availability", "offline", WAIT);
    // What a newcomer sees (the retained state) says nothing is live any more.
    let after = Recorder::start(broker.addr(), "pvbus/#");
    after.expect(
        "pvbus/vedirect/monitor_hq2150sim02/availability",
        "offline",
        WAIT,
    );
    let site = wait_json(&after, "pvbus/site/state", |v| v["battery_power"].is_null());
    assert!(
        site["pv_power"].is_null() && site["consumption"].is_null(),
        "{site}"
    );
}

#[test]
fn settings_are_written_over_hex_and_the_volatile_limit_is_kept() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    // The simulated device forgets the charge current limit 6 s after the last write
    // (a real one after about a minute); the bridge rewrites it every 2 s.
    let _mppt = sim(
        dir.path(),
        "mppt",
        &[
            "--start-time",
            "10:00",
            "--time-scale",
            "10",
            "--volatile-timeout",
            "6",
        ],
    );
    let addr = broker.addr();
    let error = "pvbus/vedirect/error";
    // A retained command (the broker replays it to every new subscriber) is ignored.
    let load_set = "pvbus/vedirect/mppt_roof/load_output/set";
    mosquitto_pub(addr, &["-r", "-t", load_set, "-m", "off"]);
    let mut bridge_process = bridge(&broker, dir.path(), &["mppt"], "volatile_refresh = 2");
    let state = "pvbus/vedirect/mppt_roof/state";
    let full = wait_json(&rec, state, |v| v["battery_current"].is_number());
    assert!(
        full["battery_current"].as_f64().unwrap() > 10.0,
        "bulk at 10:00: {full}"
    );
    assert_eq!(full["load_output"], true, "{full}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rec.last("pvbus/vedirect/mppt_roof/load_output"), None);
    assert_eq!(rec.last(error), None);
    wait_json(&rec, state, |v| v["load_output"] == true);
    mosquitto_pub(addr, &["-r", "-t", load_set, "-n"]);

    // Load output.
    mosquitto_pub(
        addr,
        &[
            "-t",
            "pvbus/vedirect/mppt_roof/load_output/set",
            "-m",
            "off",
        ],
    );
    rec.expect("pvbus/vedirect/mppt_roof/load_output", "off", WAIT);
    wait_json(&rec, state, |v| v["load_output"] == false);
    mosquitto_pub(
        addr,
        &["-t", "pvbus/vedirect/mppt_roof/load_output/set", "-m", "ON"],
    );
    rec.expect("pvbus/vedirect/mppt_roof/load_output", "on", WAIT);
    wait_json(&rec, state, |v| v["load_output"] == true);

    // Invalid commands change nothing and are answered on the error topic.
    for (topic, payload, says) in [
        (
            "pvbus/vedirect/mppt_roof/load_output/set",
            "maybe",
            "on, off or auto",
        ),
        (
            "pvbus/vedirect/mppt_roof/charge_current_limit/set",
            "-3",
            "amperes",
        ),
        ("pvbus/vedirect/mppt_roof/turbo/set", "1", "unknown setting"),
        (
            "pvbus/vedirect/nothere/load_output/set",
            "on",
            "not connected",
        ),
    ] {
        mosquitto_pub(addr, &["-t", topic, "-m", payload]);
        let e = wait_json(&rec, error, |v| v["topic"] == topic);
        assert!(e["error"].as_str().unwrap().contains(says), "{e}");
        assert!(e["ts"].is_u64());
    }
    // The charge current limit holds for longer than the device remembers it (6 s).
    mosquitto_pub(
        addr,
        &[
            "-t",
            "pvbus/vedirect/mppt_roof/charge_current_limit/set",
            "-m",
            "5",
        ],
    );
    rec.expect("pvbus/vedirect/mppt_roof/charge_current_limit", "5", WAIT);
    wait_json(&rec, state, |v| v["battery_current"].as_f64() == Some(5.0));
    // The charging currents the device reports over the next 10 s.
    let currents_for_10_s = || {
        rec.clear();
        std::thread::sleep(Duration::from_secs(10));
        let currents: Vec<f64> = rec
            .all()
            .iter()
            .filter(|s| s.topic == state)
            .map(|s| json(&s.payload)["battery_current"].as_f64().unwrap())
            .collect();
        assert!(currents.len() >= 8, "{currents:?}");
        currents
    };
    let currents = currents_for_10_s();
    assert!(
        currents.iter().all(|&a| a <= 5.0),
        "limit lost: {currents:?}"
    );

    // The bridge dies and comes back: the bus still says 5 A, so the new bridge keeps
    // the limit in force too, longer than the device remembers it.
    bridge_process.kill9();
    rec.clear();
    let _bridge = bridge(&broker, dir.path(), &["mppt"], "volatile_refresh = 2");
    rec.expect("pvbus/vedirect/status", "online", WAIT);
    let currents = currents_for_10_s();
    assert!(
        currents.iter().all(|&a| a <= 5.0),
        "limit lost across the bridge's restart: {currents:?}"
    );

    // Released: the device returns to its own limit within its memory time.
    mosquitto_pub(
        addr,
        &[
            "-t",
            "pvbus/vedirect/mppt_roof/charge_current_limit/set",
            "-m",
            "none",
        ],
    );
    rec.expect(
        "pvbus/vedirect/mppt_roof/charge_current_limit",
        "none",
        WAIT,
    );
    wait_json(&rec, state, |v| {
        v["battery_current"].as_f64().is_some_and(|a| a > 5.0)
    });
    assert!(
        rec.last(error).is_none(),
        "no error expected: {:?}",
        rec.last(error)
    );
}

#[test]
fn cables_are_auto_detected_and_ports_can_name_their_device() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    // A by-id folder as udev makes it, with one VE.Direct cable (a simulated Phoenix)
    // and a link that is not a VE.Direct cable.
    let by_id = dir.path().join("by-id");
    let cable = "usb-VictronEnergy_BV_VE_Direct_cable_VE00TEST-if00-port0";
    let _phoenix = sim_at(&by_id.join(cable), "phoenix", &[]);
    std::os::unix::fs::symlink("/dev/null", by_id.join("usb-FTDI_FT232R_UART-if00-port0")).unwrap();
    let _shunt = sim(dir.path(), "smartshunt", &[]);
    let extra = format!(
        "auto_detect = true\ndetect_dir = \"{}\"\n[[vedirect.ports]]\npath = \"{}\"\nname = \"shunt\"\n",
        by_id.display(),
        dir.path().join("smartshunt").display()
    );
    let _bridge = bridge(&broker, dir.path(), &[], &extra);
    let inverter = wait_json(&rec, "pvbus/vedirect/inverter_hq2150sim04/state", |v| {
        v["ac_output_voltage"].is_number()
    });
    assert_eq!(inverter["serial_number"], "HQ2150SIM04");
    let shunt = wait_json(&rec, "pvbus/vedirect/shunt/state", |v| {
        v["state_of_charge"].is_number()
    });
    assert!(
        shunt["dc_monitor_mode"].is_string() || shunt["dc_monitor_mode"].is_number(),
        "{shunt}"
    );
    rec.expect("pvbus/vedirect/shunt/availability", "online", WAIT);
}

#[test]
fn decode_reads_a_serial_port_live() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let _mppt = sim(dir.path(), "mppt", &["--serial", "HQ2150LIVE1"]);
    let mut decode = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["vedirect", "decode"])
        .arg(dir.path().join("mppt"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = decode.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Blocks come out one by one as the device sends them, not at the end of the input.
    for _ in 0..2 {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a block within 5 s");
        let v = json(&line);
        assert_eq!(v["SER#"], "HQ2150LIVE1", "{line}");
        assert_eq!(v["PID"], "0xA053", "{line}");
    }
    let _ = decode.kill();
    let _ = decode.wait();
}

/// A cable that stays open but carries only garbage (a wrong baud rate, a damaged line):
/// no valid block for `stale_after`, so the device goes `offline`, without the port
/// closing; valid blocks again, and it is back `online`. The test writes the bytes into a
/// real pseudo-terminal itself: valid blocks from the device model, then noise.
#[test]
fn a_port_that_carries_only_garbage_goes_offline_and_recovers() {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    use vedirect::sim::{DeviceKind, SimOptions, Simulator};

    const VALID: u8 = 0;
    const NOISE: u8 = 1;
    const STOP: u8 = 2;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = nix::unistd::ttyname(&pty.slave).unwrap();
    std::os::unix::fs::symlink(&slave, dir.path().join("mppt")).unwrap();
    let mut master = std::fs::File::from(pty.master);
    let phase = Arc::new(AtomicU8::new(VALID));
    let writer = {
        let phase = phase.clone();
        std::thread::spawn(move || {
            let mut device = Simulator::new(DeviceKind::Mppt, "HQ2150SIM01", SimOptions::default());
            let mut seed: u32 = 12345;
            let mut t = 12.0 * 3600.0;
            loop {
                let bytes = match phase.load(Ordering::Relaxed) {
                    VALID => device.text_block(t),
                    NOISE => {
                        // Label-looking lines and random bytes: nothing sums to 0 mod 256
                        // by design except by chance, which the bridge must reject too.
                        let mut b = b"\r\nPPV\t120\r\nV\t12800\r\nChecksum\t".to_vec();
                        for _ in 0..100 {
                            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                            b.push((seed >> 16) as u8);
                        }
                        b
                    }
                    _ => return,
                };
                if master.write_all(&bytes).is_err() {
                    return;
                }
                t += 1.0;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let _bridge = bridge(&broker, dir.path(), &["mppt"], "");
    let availability = "pvbus/vedirect/mppt_roof/availability";
    rec.expect(availability, "online", WAIT);

    phase.store(NOISE, Ordering::Relaxed);
    rec.expect(availability, "offline", WAIT);
    assert_eq!(rec.last("pvbus/vedirect/status").as_deref(), Some("online"));

    rec.clear();
    phase.store(VALID, Ordering::Relaxed);
    rec.expect(availability, "online", WAIT);
    assert!(
        rec.wait_for("pvbus/vedirect/mppt_roof/state", WAIT, |_| true)
            .is_some()
    );
    phase.store(STOP, Ordering::Relaxed);
    writer.join().unwrap();
}
