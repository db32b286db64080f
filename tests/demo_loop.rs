//! The demo house feels its loads, all real parts: `pvbus relays` drives a simulated GPIO
//! board, `pvbus sim vedirect` (an MPPT and a BMV on real ptys, closed loop) reads that
//! board's pin levels and draws the switched load from the battery, `pvbus vedirect`
//! publishes what the devices say on a real mosquitto. A user forces the water heater on
//! and off with `mosquitto_pub`; the readings must show the heater's power and then its
//! absence.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Mosquitto, Recorder, mosquitto_pub};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const BMV_STATE: &str = "pvbus/vedirect/bmv/state";
const MPPT_STATE: &str = "pvbus/vedirect/mppt/state";
const HEATER_STATE: &str = "pvbus/relays/water_heater/state";

fn pvbus(name: &str, args: &[&str], config: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvbus"));
    cmd.args(args)
        .env("PVBUS_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    Child::spawn(name, &mut cmd)
}

/// A broker, an MPPT and a BMV simulated for the same house (closed loop on the water
/// heater's relay, pin 17, active-low like the relay's default), the VE.Direct bridge and
/// the relay bridge on the simulated board.
struct House {
    /// Dropped first (fields drop in order): the processes stop before the broker.
    _children: Vec<Child>,
    broker: Mosquitto,
    rec: Recorder,
    _dir: tempfile::TempDir,
}

impl House {
    fn start(start_time: &str, time_scale: &str, heater_w: f64) -> House {
        let broker = Mosquitto::start();
        let dir = tempfile::tempdir().unwrap();
        let gpio = dir.path().join("gpio");
        let config = dir.path().join("pvbus.toml");
        std::fs::write(
            &config,
            format!(
                "[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n\n\
                 [vedirect]\nauto_detect = false\n\
                 [[vedirect.ports]]\npath = \"{mppt}\"\n[[vedirect.ports]]\npath = \"{bmv}\"\n\
                 [vedirect.devices]\nHQ2150SIM01 = \"mppt\"\nHQ2150SIM02 = \"bmv\"\n\n\
                 [relays]\nstate_dir = \"{state}\"\nstale_after = 600\n\
                 [relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{gpio}\"\n\
                 [[relays.relay]]\nid = \"water_heater\"\npin = 17\n",
                port = broker.port,
                mppt = dir.path().join("mppt").display(),
                bmv = dir.path().join("bmv").display(),
                state = dir.path().join("relays").display(),
                gpio = gpio.display(),
            ),
        )
        .unwrap();
        let rec = Recorder::start(broker.addr(), "pvbus/#");
        let load = format!("17={heater_w}");
        let mut children = Vec::new();
        for kind in ["mppt", "bmv"] {
            let link = dir.path().join(kind);
            children.push(pvbus(
                &format!("sim {kind}"),
                &[
                    "sim",
                    "vedirect",
                    "--kind",
                    kind,
                    "--link",
                    link.to_str().unwrap(),
                    "--start-time",
                    start_time,
                    "--time-scale",
                    time_scale,
                    "--gpio-dir",
                    gpio.to_str().unwrap(),
                    "--load",
                    &load,
                ],
                None,
            ));
        }
        children.push(pvbus("relays", &["relays"], Some(&config)));
        children.push(pvbus("vedirect", &["vedirect"], Some(&config)));
        rec.expect(HEATER_STATE, "OFF", WAIT);
        // Stopped readers first, then the devices they read.
        children.reverse();
        House {
            _children: children,
            broker,
            rec,
            _dir: dir,
        }
    }

    /// What a user types: `mosquitto_pub -t pvbus/relays/water_heater/mode/set -m MODE`;
    /// returns when the relay reports the state it switched to.
    fn force_heater(&self, mode: &str, state: &str) -> Instant {
        mosquitto_pub(
            self.broker.addr(),
            &["-t", "pvbus/relays/water_heater/mode/set", "-m", mode],
        );
        self.rec.expect(HEATER_STATE, state, WAIT);
        self.rec
            .all()
            .into_iter()
            .rev()
            .find(|s| s.topic == HEATER_STATE && s.payload == state)
            .map(|s| s.at)
            .unwrap()
    }

    /// Waits for a reading of `topic` whose `field` satisfies `pred`; returns the whole
    /// reading and when it arrived.
    fn wait_reading(
        &self,
        topic: &str,
        field: &str,
        what: &str,
        pred: impl Fn(f64) -> bool,
    ) -> (Value, Instant) {
        let deadline = Instant::now() + WAIT;
        loop {
            let hit = self
                .rec
                .all()
                .into_iter()
                .rev()
                .find(|s| s.topic == topic)
                .and_then(|s| Some((serde_json::from_str::<Value>(&s.payload).ok()?, s.at)))
                .filter(|(v, _)| v[field].as_f64().is_some_and(&pred));
            if let Some(hit) = hit {
                return hit;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {WAIT:?}; last {topic}: {:?}",
                self.rec.last(topic)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn at_night_a_forced_water_heater_shows_on_the_battery_monitor_and_goes_away() {
    // Night: the charger is off, the battery carries every load. Ten times real time.
    const HEATER_W: f64 = 1000.0;
    let house = House::start("02:00", "10", HEATER_W);
    let (idle, _) = house.wait_reading(BMV_STATE, "battery_power", "a BMV reading", |_| true);
    let idle = num(&idle, "battery_power");
    assert!((-200.0..0.0).contains(&idle), "night, heater off: {idle} W");

    let switched_on = house.force_heater("forced_on", "ON");
    let (heating, seen_at) = house.wait_reading(
        BMV_STATE,
        "battery_power",
        "the heater on the battery",
        |p| p < idle - HEATER_W / 2.0,
    );
    let heating = num(&heating, "battery_power");
    let drop = idle - heating;
    // All of the heater's power, less what the battery's internal resistance (10 mΩ in
    // the model) sags the voltage by at 80 A: about 6 %.
    assert!(
        (0.9 * HEATER_W..=1.02 * HEATER_W).contains(&drop),
        "battery power fell by {drop} W for a {HEATER_W} W heater ({idle} -> {heating} W)"
    );
    let delay = seen_at.duration_since(switched_on);
    // One block a second: the simulator reads the pin before its next block, which is
    // the main block or, every other second, the history block (then the one after).
    assert!(delay < Duration::from_secs(4), "seen after {delay:?}");
    eprintln!(
        "night, heater on: {idle} W -> {heating} W (-{drop} W), seen {delay:?} after the relay"
    );

    house.force_heater("forced_off", "OFF");
    let (back, _) = house.wait_reading(
        BMV_STATE,
        "battery_power",
        "the heater off the battery",
        |p| p > heating + HEATER_W / 2.0,
    );
    let back = num(&back, "battery_power");
    // The few virtual minutes of heating emptied the battery a little: its voltage, and
    // the base load's power with it, barely moved.
    assert!(
        (back - idle).abs() < 0.02 * HEATER_W,
        "heater off: {back} W, before: {idle} W"
    );
    eprintln!("night, heater off: back to {back} W");
}

#[test]
fn at_noon_the_floating_charger_takes_the_heater_from_the_sun() {
    // Early afternoon, battery full, charger in float throttling 600 W of panels down to
    // the 30 W the house uses. Real time, so that the sun stays where it is.
    const HEATER_W: f64 = 300.0;
    let house = House::start("13:00", "1", HEATER_W);
    let (before, _) = house.wait_reading(MPPT_STATE, "pv_power", "an MPPT reading", |_| true);
    assert_eq!(before["charge_state"], "float", "{before}");
    let pv_before = num(&before, "pv_power");
    let (bmv, _) = house.wait_reading(BMV_STATE, "battery_power", "a BMV reading", |_| true);
    let battery_before = num(&bmv, "battery_power");

    house.force_heater("forced_on", "ON");
    let (after, seen_at) = house.wait_reading(
        MPPT_STATE,
        "pv_power",
        "the charger taking the heater",
        |p| p > pv_before + HEATER_W / 2.0,
    );
    // The harvest rises by the heater's power plus the converter's losses; the charger
    // stays in float and the battery gives nothing.
    let rise = num(&after, "pv_power") - pv_before;
    assert!(
        (HEATER_W..=HEATER_W * 1.15).contains(&rise),
        "PV rose by {rise} W for a {HEATER_W} W heater"
    );
    assert_eq!(after["charge_state"], "float", "{after}");
    assert_eq!(num(&after, "battery_voltage"), 13.5, "{after}");
    // A BMV main block built after the change (the BMV's next block may be its history
    // block, the main one follows a second later): the same house, so the battery must
    // not carry the heater.
    let later = seen_at + Duration::from_millis(1100);
    let deadline = Instant::now() + WAIT;
    let battery_after = loop {
        let fresh = house
            .rec
            .all()
            .into_iter()
            .rev()
            .find(|s| s.topic == BMV_STATE && s.at > later);
        if let Some(s) = fresh {
            break num(&serde_json::from_str(&s.payload).unwrap(), "battery_power");
        }
        assert!(Instant::now() < deadline, "no BMV reading after the change");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        (battery_after - battery_before).abs() < 20.0,
        "battery {battery_before} W -> {battery_after} W with the charger covering the heater"
    );
    eprintln!(
        "noon, heater on: PV {pv_before} W -> {} W, battery {battery_before} W -> {battery_after} W",
        pv_before + rise
    );

    house.force_heater("forced_off", "OFF");
    let (off, _) = house.wait_reading(MPPT_STATE, "pv_power", "the heater gone", |p| {
        p < pv_before + HEATER_W / 2.0
    });
    assert!(
        (num(&off, "pv_power") - pv_before).abs() < 10.0,
        "{off} vs {pv_before} W before"
    );
}
