//! `pvbus status` against a real broker holding retained state: `--once` prints it all,
//! the live view redraws when something changes and not otherwise, and an unreachable
//! broker is an error that names it.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Mosquitto, mosquitto_pub};

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");

fn config(dir: &tempfile::TempDir, broker: &Mosquitto, base: &str) -> PathBuf {
    let path = dir.path().join("pvbus.toml");
    fs::write(
        &path,
        format!(
            "[bus]\nexternal_broker = \"127.0.0.1:{}\"\nbase = \"{base}\"\n",
            broker.port
        ),
    )
    .unwrap();
    path
}

fn retain(broker: &Mosquitto, topic: &str, payload: &str) {
    mosquitto_pub(
        broker.addr(),
        &["-r", "-q", "1", "-t", topic, "-m", payload],
    );
}

fn publish_home(broker: &Mosquitto, base: &str) {
    let t = |rest: &str| format!("{base}/{rest}");
    retain(broker, &t("relays/status"), "online");
    retain(broker, &t("vedirect/status"), "online");
    retain(broker, &t("rules/status"), "offline");
    retain(
        broker,
        &t("vedirect/bmv/state"),
        r#"{"ts":1764040000,"state_of_charge":87.5,"battery_voltage":13.52,"battery_power":-120,"consumed_charge":-12.3}"#,
    );
    retain(broker, &t("vedirect/bmv/availability"), "online");
    retain(
        broker,
        &t("vedirect/mppt_roof/state"),
        r#"{"ts":1764040000,"battery_voltage":13.54,"pv_power":245,"charge_state":"float","yield_today":1.25}"#,
    );
    retain(broker, &t("vedirect/mppt_roof/availability"), "offline");
    retain(
        broker,
        &t("site/state"),
        r#"{"ts":1764040000,"pv_power":245,"battery_power":-120,"consumption":365}"#,
    );
    retain(broker, &t("relays/water_heater/state"), "ON");
    retain(broker, &t("relays/water_heater/mode"), "auto_on");
    retain(
        broker,
        &t("relays/water_heater/reason"),
        r#"{"ts":1764040000,"by":"rules","text":"surplus 820 W above 800 W"}"#,
    );
    retain(broker, &t("relays/pump/state"), "OFF");
    retain(broker, &t("relays/pump/mode"), "forced_off");
    retain(
        broker,
        &t("rules/water_heater/status"),
        "on while the surplus stays above 800 W",
    );
    retain(
        broker,
        &t("supervisor/processes"),
        r#"{"ts":1764040000,"processes":{"rules":{"role":"process","state":"crash_loop","pid":null,"restarts":4,"failures_in_a_row":5,"since":1764040000,"retry_in_secs":16.0,"last_exit":{"ts":1764040000,"code":1,"signal":null,"ran_secs":0.1}}}}"#,
    );
}

fn once(config: &PathBuf) -> (bool, String, String) {
    let out = Command::new(PVBUS)
        .args(["status", "--once", "--config"])
        .arg(config)
        .env("COLUMNS", "80")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn once_shows_the_retained_state_of_the_bus() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    publish_home(&broker, "home/solar");
    // Another installation on the same broker stays out of the picture.
    retain(&broker, "pvbus/lcd/status", "online");
    let config = config(&dir, &broker, "home/solar");

    let (ok, out, err) = once(&config);
    assert!(ok, "{err}");
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    assert!(!out.contains('\x1b'), "colour codes on a pipe:\n{out}");

    assert!(line_with(&out, "relays ").contains("online"), "{out}");
    assert!(line_with(&out, "vedirect ").contains("online"), "{out}");
    let rules = line_with(&out, "rules  ");
    assert!(
        rules.contains("offline")
            && rules.contains("crash_loop")
            && rules.contains("retry in 16 s"),
        "{rules}"
    );
    assert!(!out.contains("lcd"), "{out}");

    let bmv = line_with(&out, "vedirect/bmv");
    assert!(bmv.contains("SOC 87.5 %  13.52 V  -120 W"), "{bmv}");
    assert!(out.contains("consumed_charge=-12.3"), "{out}");
    let mppt = line_with(&out, "vedirect/mppt_roof");
    assert!(
        mppt.contains("offline") && mppt.contains("PV 245 W  float"),
        "{mppt}"
    );
    let site = line_with(&out, "Site");
    assert!(
        site.contains("PV 245 W")
            && site.contains("battery -120 W")
            && site.contains("consumption 365 W"),
        "{site}"
    );
    let heater = line_with(&out, "water_heater  ");
    assert!(
        heater.contains("ON")
            && heater.contains("auto_on")
            && heater.contains("rules")
            && heater.contains("surplus 820 W above 800 W"),
        "{heater}"
    );
    let pump = line_with(&out, "pump");
    assert!(
        pump.contains("OFF") && pump.contains("forced_off"),
        "{pump}"
    );
    let rule = out
        .lines()
        .skip_while(|l| !l.starts_with("Rules"))
        .find(|l| l.contains("water_heater"))
        .unwrap_or_else(|| panic!("no rule line:\n{out}"));
    assert!(
        rule.contains("on while the surplus stays above 800 W"),
        "{rule}"
    );
}

#[test]
fn garbage_payloads_are_named_not_fatal() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    retain(&broker, "pvbus/vedirect/bmv/state", "{\"state_of_charge\":");
    retain(&broker, "pvbus/relays/status", "online");
    let (ok, out, err) = once(&config(&dir, &broker, "pvbus"));
    assert!(ok, "{err}");
    assert!(
        line_with(&out, "pvbus/vedirect/bmv/state").contains("not JSON"),
        "{out}"
    );
    assert!(line_with(&out, "relays").contains("online"), "{out}");
}

#[test]
fn an_unreachable_broker_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = pvbus_testkit::free_port();
    let path = dir.path().join("pvbus.toml");
    fs::write(
        &path,
        format!("[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let (ok, _, err) = once(&path);
    assert!(!ok);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn the_live_view_redraws_on_change_and_sleeps_otherwise() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    retain(&broker, "pvbus/relays/pump/state", "OFF");
    let config = config(&dir, &broker, "pvbus");
    let screen = dir.path().join("screen");
    let mut view = Child::spawn(
        "pvbus status",
        Command::new(PVBUS)
            .args(["status", "--config"])
            .arg(&config)
            .stdout(fs::File::create(&screen).unwrap())
            .stderr(Stdio::null()),
    );
    let read = || fs::read_to_string(&screen).unwrap_or_default();
    let draws = || read().matches("\x1b[H").count();
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !read().contains(what) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(read().contains(what), "{what:?} never drawn:\n{}", read());
    };
    wait_for("OFF");

    // Nothing changes: no redraw.
    std::thread::sleep(Duration::from_millis(600));
    let idle = draws();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(draws(), idle, "redrawn while nothing changed");

    retain(&broker, "pvbus/relays/pump/state", "ON");
    retain(&broker, "pvbus/relays/pump/mode", "forced_on");
    wait_for("forced_on");
    assert!(draws() > idle);

    let status = view
        .terminate(Duration::from_secs(5))
        .expect("no clean stop");
    assert!(status.success(), "{status}");
    assert!(
        read().ends_with("\x1b[?25h\x1b[?1049l"),
        "the terminal was not restored"
    );
}
