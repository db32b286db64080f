//! A small running pvbus for the Home Assistant, CLI and cookbook tests: a real mosquitto,
//! two simulated VE.Direct devices on pseudo-terminals read by the real VE.Direct bridge,
//! the real relay bridge on a simulated GPIO board, and (optionally) `pvbus
//! homeassistant`. Every process is the `pvbus` binary under test; all die with the stack.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, Recorder};

pub const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");

pub struct Stack {
    pub broker: Mosquitto,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    children: Vec<Child>,
}

/// Which processes to start besides the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub vedirect: bool,
    pub relays: bool,
    pub homeassistant: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        vedirect: true,
        relays: true,
        homeassistant: true,
    };
}

impl Stack {
    pub fn start(parts: Parts) -> Stack {
        Stack::start_with(parts, "")
    }

    /// `extra` is appended to the configuration file (e.g. a `[homeassistant]` section).
    pub fn start_with(parts: Parts, extra: &str) -> Stack {
        let broker = Mosquitto::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let config = dir.path().join("pvbus.toml");
        let text = format!(
            r#"[bus]
external_broker = "127.0.0.1:{port}"

[vedirect]
stale_after = 5
auto_detect = false
[[vedirect.ports]]
path = "{d}/mppt"
[[vedirect.ports]]
path = "{d}/bmv"
[vedirect.devices]
HQSIMMPPT01 = "mppt_roof"
HQSIMBMV01 = "bmv"

[relays]
state_dir = "{d}/relays"
[relays.gpio]
backend = "sim"
sim_dir = "{d}/gpio"
[[relays.relay]]
id = "water_heater"
pin = 17
[[relays.relay]]
id = "pump"
pin = 27
{extra}
"#,
            port = broker.port
        );
        std::fs::write(&config, text).expect("config written");
        let mut stack = Stack {
            broker,
            dir,
            config,
            children: Vec::new(),
        };
        if parts.vedirect {
            for (kind, serial) in [("mppt", "HQSIMMPPT01"), ("bmv", "HQSIMBMV01")] {
                let link = stack.dir.path().join(kind);
                stack.spawn(
                    &format!("sim {kind}"),
                    &[
                        "sim",
                        "vedirect",
                        "--kind",
                        kind,
                        "--link",
                        link.to_str().unwrap(),
                        "--serial",
                        serial,
                        "--start-time",
                        "12:00",
                    ],
                );
                wait_for_path(&link);
            }
            stack.spawn_process("vedirect");
        }
        if parts.relays {
            stack.spawn_process("relays");
        }
        if parts.homeassistant {
            stack.spawn_process("homeassistant");
        }
        // Ready when every started process is online and has published its devices.
        let rec = Recorder::start(stack.broker.addr(), "pvbus/#");
        let wait = Duration::from_secs(20);
        if parts.vedirect {
            rec.expect("pvbus/vedirect/status", "online", wait);
            for device in ["mppt_roof", "bmv"] {
                rec.wait_for(&format!("pvbus/vedirect/{device}/state"), wait, |_| true)
                    .unwrap_or_else(|| panic!("{device} never published its state"));
            }
        }
        if parts.relays {
            rec.expect("pvbus/relays/status", "online", wait);
            rec.wait_for("pvbus/relays/water_heater/mode", wait, |_| true)
                .expect("the relay bridge never published its modes");
        }
        if parts.homeassistant {
            rec.expect("pvbus/homeassistant/status", "online", wait);
        }
        stack
    }

    /// `pvbus <process> --config <file>`, logs in the temp dir.
    pub fn spawn_process(&mut self, process: &str) -> usize {
        let config = self.config.to_str().unwrap().to_string();
        self.spawn(process, &[process, "--config", &config])
    }

    pub fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        // Appended: a restarted process keeps the log of its earlier run.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", name.replace(' ', "_"))),
            )
            .expect("log file");
        let child = Child::spawn(
            name,
            Command::new(PVBUS)
                .args(args)
                .env("PVBUS_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn child(&mut self, index: usize) -> &mut Child {
        &mut self.children[index]
    }

    /// A `pvbus` command against this stack (for the CLI).
    pub fn pvbus(&self, args: &[&str]) -> std::process::Output {
        Command::new(PVBUS)
            .args(args)
            .env("PVBUS_CONFIG", &self.config)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("pvbus runs")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

fn wait_for_path(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The demo configuration, on the broker at `port` and under `dir` instead of
/// /tmp/pvbus-demo. (The broker is external so that the test does not depend on how the
/// embedded one is built; the cookbook's commands do not care which broker it is.)
pub fn demo_config(port: u16, dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = std::fs::read_to_string(root.join("examples/demo.toml")).expect("the demo");
    let marks = ["[bus]\n", "[broker]\n", "/tmp/pvbus-demo"];
    assert!(
        marks.iter().all(|m| demo.contains(m)),
        "examples/demo.toml no longer has {marks:?}: update this test"
    );
    let text = demo
        .replacen(
            "[bus]\n",
            &format!("[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n"),
            1,
        )
        .replacen("[broker]\n", "[broker]\nenabled = false\n", 1)
        .replace("/tmp/pvbus-demo", &dir.display().to_string());
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `pvbus run` on the demo (see [`demo_config`]), once its processes are online and the
/// VE.Direct charger, the site, the rules and the discovery have published.
pub fn start_demo(broker: &Mosquitto, dir: &Path) -> (Child, PathBuf) {
    let config = demo_config(broker.port, dir);
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let demo = Child::spawn(
        "pvbus run",
        Command::new(PVBUS)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log),
    );
    let bus = Recorder::start(broker.addr(), "#");
    let ready = Duration::from_secs(30);
    let log = || std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    for process in ["vedirect", "relays", "rules", "homeassistant"] {
        bus.wait_for(&format!("pvbus/{process}/status"), ready, |p| p == "online")
            .unwrap_or_else(|| panic!("{process} never came online in the demo; log:\n{}", log()));
    }
    for topic in [
        "pvbus/vedirect/mppt/state",
        "pvbus/site/state",
        "pvbus/rules/water_heater/status",
        "homeassistant/device/pvbus_vedirect_mppt/config",
    ] {
        bus.wait_for(topic, ready, |p| !p.is_empty())
            .unwrap_or_else(|| panic!("{topic} never published in the demo; log:\n{}", log()));
    }
    (demo, config)
}
