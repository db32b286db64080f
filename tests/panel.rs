//! The local panel as a person meets it: the real `pvbus tm1638` and `pvbus lcd`
//! processes on their simulated hardware (wire-level TM1638, MCP23017 + HD44780 models),
//! a real mosquitto, the real relay bridge, and what the simulated panel shows in the
//! pictures it draws (`tm1638.txt`, `lcd.txt`). Buttons are pressed through the sim's
//! topic, which holds the key down for a few scans as a finger would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Mosquitto, Recorder, mosquitto_pub};

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    config: PathBuf,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start();
        let config = dir.path().join("pvbus.toml");
        let d = dir.path().display();
        let text = format!(
            "[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n\n\
             [relays]\nstate_dir = \"{d}/relays\"\n[relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{d}/relay-board\"\n\
             [[relays.relay]]\nid = \"water_heater\"\npin = 17\n[[relays.relay]]\nid = \"pump\"\npin = 27\n\n\
             [tm1638]\nstb = [16]\nclk = 21\ndio = 20\nbrightness = 2\n[tm1638.gpio]\nbackend = \"sim\"\nsim_dir = \"{d}/panel\"\n\n\
             [lcd]\nbackend = \"sim\"\nsim_dir = \"{d}/panel\"\nwake_for = 2\n{extra}\n",
            port = broker.port,
        );
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            broker,
            config,
        }
    }

    fn start(&self, process: &str, envs: &[(&str, &str)]) -> Child {
        let status = Recorder::start(self.broker.addr(), &format!("pvbus/{process}/status"));
        let child = Child::spawn(
            process,
            Command::new(PVBUS)
                .args([process, "--config"])
                .arg(&self.config)
                .env("PVBUS_LOG", "warn")
                .envs(envs.iter().copied()),
        );
        status.expect(&format!("pvbus/{process}/status"), "online", WAIT);
        child
    }

    fn publish(&self, topic: &str, payload: &str) {
        mosquitto_pub(self.broker.addr(), &["-q", "1", "-t", topic, "-m", payload]);
    }

    fn publish_retained(&self, topic: &str, payload: &str) {
        mosquitto_pub(
            self.broker.addr(),
            &["-q", "1", "-r", "-t", topic, "-m", payload],
        );
    }

    fn picture(&self, name: &str) -> PathBuf {
        self.dir.path().join("panel").join(name)
    }
}

/// Waits until the picture the simulated panel drew contains `wanted`.
fn sees(picture: &Path, wanted: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = std::fs::read_to_string(picture).unwrap_or_default();
        if now.contains(wanted) {
            return now;
        }
        if Instant::now() > deadline {
            panic!(
                "{} never showed {wanted:?}; it shows:\n{now}",
                picture.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_tm1638_shows_relays_and_its_buttons_set_modes_through_the_relay_bridge() {
    let setup = Setup::new("");
    let seen = Recorder::start(setup.broker.addr(), "pvbus/#");
    let panel = setup.picture("tm1638.txt");
    let _tm1638 = setup.start("tm1638", &[]);
    // Before the relay bridge speaks, the digits say "unknown".
    sees(&panel, "[--      ]  brightness 2");
    let _relays = setup.start("relays", &[]);
    sees(&panel, "[11      ]  brightness 2\n LEDs: . . . . . . . .");
    seen.expect("pvbus/tm1638/display", "11      ", WAIT);
    seen.expect("pvbus/tm1638/led/1", "OFF", WAIT);
    seen.expect("pvbus/tm1638/brightness", "2", WAIT);

    // One press on button 1: forced on is chosen (lit point: not sent yet)...
    setup.publish("pvbus/tm1638/sim/press", "1");
    sees(&panel, "[3.1      ]");
    let pressed_at = Instant::now();
    seen.wait_for("pvbus/tm1638/button/1", WAIT, |p| {
        p.contains("\"event_type\":\"press\"")
    })
    .expect("a button event");
    assert!(
        seen.last("pvbus/relays/water_heater/mode/set").is_none(),
        "sent too early"
    );
    // ...and sent 2 s after the press; the relay bridge switches the relay and the LED
    // follows its real state.
    seen.expect("pvbus/relays/water_heater/mode/set", "forced_on", WAIT);
    let waited = pressed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "sent after {waited:?}"
    );
    seen.expect("pvbus/relays/water_heater/state", "ON", WAIT);
    sees(&panel, "[31      ]  brightness 2\n LEDs: * . . . . . . .");
    seen.expect("pvbus/tm1638/led/1", "ON", WAIT);

    // Several presses choose: forced on, then forced off; only the last is sent.
    setup.publish("pvbus/tm1638/sim/press", "2");
    setup.publish("pvbus/tm1638/sim/press", "2");
    sees(&panel, "[30.      ]");
    seen.expect("pvbus/relays/pump/mode", "forced_off", WAIT);
    sees(&panel, "[30      ]");
    let sent: Vec<String> = seen
        .all()
        .into_iter()
        .filter(|m| m.topic == "pvbus/relays/pump/mode/set")
        .map(|m| m.payload)
        .collect();
    assert_eq!(sent, ["forced_off"]);

    // A third press on a forced-off relay gives it back to the rules.
    setup.publish("pvbus/tm1638/sim/press", "2");
    sees(&panel, "[3A.      ]");
    seen.expect("pvbus/relays/pump/mode", "auto_off", WAIT);
    sees(&panel, "[31      ]");

    // MQTT drives the display for other uses, and gives it back.
    setup.publish("pvbus/tm1638/display/set", "SoLAr 42");
    sees(&panel, "[5oLAr 42]");
    seen.expect("pvbus/tm1638/display", "5oLAr 42", WAIT);
    setup.publish("pvbus/tm1638/led/8/set", "ON");
    sees(&panel, " LEDs: * . . . . . . *");
    setup.publish("pvbus/tm1638/brightness/set", "7");
    sees(&panel, "]  brightness 7");
    setup.publish("pvbus/tm1638/display/set", "auto");
    sees(&panel, "[31      ]  brightness 7");
    for (topic, payload, error) in [
        ("pvbus/tm1638/brightness/set", "9", "expected 0..7"),
        ("pvbus/tm1638/display/set", "WWW", "'W'"),
        ("pvbus/tm1638/led/9/set", "ON", "no LED 9"),
        ("pvbus/tm1638/led/2/set", "maybe", "ON or OFF"),
    ] {
        seen.clear();
        setup.publish(topic, payload);
        let report = seen
            .wait_for("pvbus/tm1638/error", WAIT, |p| p.contains(topic))
            .unwrap_or_else(|| panic!("no error for {topic} {payload}"));
        assert!(report.contains(error), "{report}");
    }
    sees(&panel, "[31      ]  brightness 7");
}

#[test]
fn the_tm1638_shows_when_the_bus_is_unreachable_and_recovers() {
    let mut setup = Setup::new("");
    let panel = setup.picture("tm1638.txt");
    setup.publish_retained("pvbus/relays/water_heater/mode", "forced_on");
    setup.publish_retained("pvbus/relays/water_heater/state", "ON");
    let _tm1638 = setup.start("tm1638", &[]);
    sees(&panel, "[3-      ]  brightness 2\n LEDs: * . . . . . . .");
    setup.broker.kill();
    sees(&panel, "[no bu5  ]  brightness 2\n LEDs: . . . . . . . .");
    setup.broker.restart();
    setup.publish_retained("pvbus/relays/water_heater/mode", "forced_on");
    setup.publish_retained("pvbus/relays/water_heater/state", "ON");
    sees(&panel, "[3-      ]  brightness 2\n LEDs: * . . . . . . .");
}

/// Started before any broker answers: "boot" while its first attempt is pending (here a
/// port that accepts TCP but never speaks MQTT, so the attempt lasts until its timeout),
/// the bus-lost sign once it has failed, then the relays as soon as a broker appears.
#[test]
fn the_tm1638_says_boot_then_no_bus_until_a_broker_appears() {
    let mut setup = Setup::new("");
    let port = setup.broker.port;
    setup.broker.kill();
    // The kernel completes the handshake from the backlog; nobody ever answers CONNECT.
    let silent = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let panel = setup.picture("tm1638.txt");
    let _tm1638 = Child::spawn(
        "tm1638",
        Command::new(PVBUS)
            .args(["tm1638", "--config"])
            .arg(&setup.config)
            .env("PVBUS_LOG", "warn"),
    );
    sees(&panel, "[boot    ]  brightness 2");
    sees(&panel, "[no bu5  ]  brightness 2");
    drop(silent);
    setup.broker = Mosquitto::start_on(port);
    setup.publish_retained("pvbus/relays/water_heater/mode", "forced_off");
    sees(&panel, "[0-      ]  brightness 2");
}

/// `brightness/set off` blanks the display (the chip's display-off command) and keeps
/// what it shows; `on` brings it back at the same brightness.
#[test]
fn the_tm1638_display_switches_off_and_on_over_mqtt() {
    let setup = Setup::new("");
    let panel = setup.picture("tm1638.txt");
    let seen = Recorder::start(setup.broker.addr(), "pvbus/tm1638/#");
    setup.publish_retained("pvbus/relays/water_heater/mode", "forced_on");
    let _tm1638 = setup.start("tm1638", &[]);
    sees(&panel, "[3-      ]  brightness 2");
    setup.publish("pvbus/tm1638/brightness/set", "off");
    // The chip is dark: the picture shows no digits, as a person would see.
    sees(&panel, "[        ]  display off");
    seen.expect("pvbus/tm1638/brightness", "off", WAIT);
    setup.publish("pvbus/tm1638/brightness/set", "on");
    sees(&panel, "[3-      ]  brightness 2");
    seen.expect("pvbus/tm1638/brightness", "2", WAIT);
}

const BMV_87: &str =
    r#"{"ts":1764040000,"state_of_charge":87.4,"battery_voltage":12.8,"charge_state":"float"}"#;
const SITE: &str = r#"{"ts":1764040000,"pv_power":245,"battery_power":-120,"consumption":365}"#;

#[test]
fn the_lcd_shows_pages_of_values_coloured_by_the_state_of_charge() {
    let setup = Setup::new("");
    let seen = Recorder::start(setup.broker.addr(), "pvbus/#");
    let lcd = setup.picture("lcd.txt");
    setup.publish_retained("pvbus/vedirect/bmv/state", BMV_87);
    setup.publish_retained("pvbus/site/state", SITE);
    setup.publish_retained("pvbus/relays/water_heater/state", "ON");
    setup.publish_retained("pvbus/relays/water_heater/mode", "forced_on");
    // Night hours far from now, whatever the time zone: the backlight is lit.
    let _lcd = setup.start("lcd", &[("PVBUS_LCD__NIGHT", "")]);
    sees(
        &lcd,
        "|BA:87%  P:-120W |\n|U:12.80V float  |\n+----------------+  backlight yellow",
    );
    seen.expect("pvbus/lcd/line/1", "BA:87%  P:-120W", WAIT);
    seen.expect("pvbus/lcd/backlight", "yellow", WAIT);
    seen.expect("pvbus/lcd/page", "1", WAIT);

    setup.publish_retained("pvbus/vedirect/bmv/state", &BMV_87.replace("87.4", "94"));
    sees(&lcd, "|BA:94%  P:-120W |");
    sees(&lcd, "backlight green");
    setup.publish_retained("pvbus/vedirect/bmv/state", &BMV_87.replace("87.4", "85"));
    sees(&lcd, "|BA:85%  P:-120W |");
    sees(&lcd, "backlight red");

    setup.publish("pvbus/lcd/sim/press", "right");
    sees(&lcd, "|PV:245W         |\n|Conso:365W      |");
    seen.wait_for("pvbus/lcd/button/right", WAIT, |p| p.contains("press"))
        .expect("event");
    setup.publish("pvbus/lcd/sim/press", "right");
    // Relays in the [[relays.relay]] order; the pump has not been heard of.
    sees(&lcd, "|Relays *-       |\n|Modes  3-       |");
    setup.publish("pvbus/lcd/sim/press", "right");
    sees(&lcd, "|BA:85%  P:-120W |");
    setup.publish("pvbus/lcd/sim/press", "left");
    sees(&lcd, "|Relays *-       |");
    setup.publish("pvbus/lcd/sim/press", "select");
    sees(&lcd, "|BA:85%  P:-120W |");

    setup.publish("pvbus/lcd/line/2/set", "Hello from HA");
    sees(&lcd, "|BA:85%  P:-120W |\n|Hello from HA   |");
    seen.expect("pvbus/lcd/line/2", "Hello from HA", WAIT);
    setup.publish("pvbus/lcd/backlight/set", "violet");
    sees(&lcd, "backlight violet");
    setup.publish("pvbus/lcd/page/set", "2");
    sees(&lcd, "|PV:245W         |\n|Hello from HA   |");
    setup.publish("pvbus/lcd/line/2/set", "");
    setup.publish("pvbus/lcd/backlight/set", "auto");
    sees(
        &lcd,
        "|PV:245W         |\n|Conso:365W      |\n+----------------+  backlight red",
    );
    for (topic, payload, error) in [
        ("pvbus/lcd/backlight/set", "pink", "unknown colour"),
        ("pvbus/lcd/page/set", "4", "1..3"),
        ("pvbus/lcd/sim/press", "enter", "select"),
    ] {
        seen.clear();
        setup.publish(topic, payload);
        let report = seen
            .wait_for("pvbus/lcd/error", WAIT, |p| p.contains(topic))
            .unwrap_or_else(|| panic!("no error for {topic} {payload}"));
        assert!(report.contains(error), "{report}");
    }
    // Garbage readings change nothing.
    setup.publish_retained("pvbus/vedirect/bmv/state", "not json");
    setup.publish("pvbus/lcd/page/set", "1");
    sees(&lcd, "|BA:85%  P:-120W |");
}

#[test]
fn at_night_the_backlight_is_off_and_a_button_wakes_it_for_a_while() {
    let setup = Setup::new("");
    let lcd = setup.picture("lcd.txt");
    setup.publish_retained("pvbus/vedirect/bmv/state", BMV_87);
    // A night that started a minute ago and lasts an hour, in UTC.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let hhmm = |z: &jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
    let from = hhmm(&now.checked_sub(jiff::SignedDuration::from_mins(1)).unwrap());
    let until = hhmm(
        &now.checked_add(jiff::SignedDuration::from_mins(60))
            .unwrap(),
    );
    let night = format!("{from}-{until}");
    let _lcd = setup.start("lcd", &[("TZ", "UTC"), ("PVBUS_LCD__NIGHT", &night)]);
    sees(&lcd, "|BA:87%  P:--W   |");
    sees(&lcd, "backlight off");
    // The first press only wakes the screen: the page stays.
    setup.publish("pvbus/lcd/sim/press", "right");
    let text = sees(&lcd, "backlight yellow");
    assert!(text.contains("|BA:87%  P:--W   |"), "{text}");
    // A press while awake pages.
    setup.publish("pvbus/lcd/sim/press", "right");
    sees(&lcd, "|PV:--W          |");
    // wake_for = 2 s after the last press, it goes dark again.
    sees(&lcd, "backlight off");
}

#[test]
fn the_lcd_with_inta_wired_to_a_gpio_reads_its_buttons_when_it_falls() {
    let setup = Setup::new("int_pin = 25\n");
    let lcd = setup.picture("lcd.txt");
    setup.publish_retained("pvbus/site/state", SITE);
    let _lcd = setup.start("lcd", &[("PVBUS_LCD__NIGHT", "")]);
    sees(&lcd, "|BA:--%  P:-120W |");
    setup.publish("pvbus/lcd/sim/press", "right");
    sees(&lcd, "|PV:245W         |");
    setup.publish("pvbus/lcd/sim/press", "left");
    sees(&lcd, "|BA:--%  P:-120W |");
    // The presses came through the INTA wire of the simulated board: it fell at each
    // button change and rose when the process read the expander.
    let log = std::fs::read_to_string(setup.dir.path().join("panel/pins.log")).unwrap();
    let inta: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"pin\":25") && l.contains("\"by\":\"device\""))
        .collect();
    assert!(
        inta.len() >= 4 && inta[0].contains("\"level\":\"low\""),
        "INTA edges: {inta:?}"
    );
}
