//! A small running pvbus for the Home Assistant, CLI and cookbook tests: a real mosquitto,
//! two simulated VE.Direct devices on pseudo-terminals read by the real VE.Direct bridge,
//! the real relay bridge on a simulated GPIO board, and (optionally) `pvbus
//! homeassistant`. Every process is the `pvbus` binary under test; all die with the stack.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pvbus_testkit::{
    Child, DemoBroker, DemoStack, Mosquitto, Recorder, free_port, wait_for_listener,
};

#[path = "../support/demo.rs"]
mod support_demo;

use support_demo::demo_copy;

pub const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");

/// The stack of the test kit ([`DemoStack`], which it derefs to: `dir`, `config`,
/// `spawn_process`, `child`, `log`) on a mosquitto of its own.
pub struct Stack {
    // Fields drop in order: the processes go before their broker.
    demo: DemoStack,
    pub broker: Mosquitto,
}

impl std::ops::Deref for Stack {
    type Target = DemoStack;
    fn deref(&self) -> &DemoStack {
        &self.demo
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut DemoStack {
        &mut self.demo
    }
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
        Stack::start_full(parts, extra, false)
    }

    /// Also the simulated panel (`pvbus tm1638` and `pvbus lcd`, started after the
    /// relays and before `pvbus homeassistant`).
    pub fn start_with_panel(parts: Parts, extra: &str) -> Stack {
        Stack::start_full(parts, extra, true)
    }

    fn start_full(parts: Parts, extra: &str, panel: bool) -> Stack {
        let broker = Mosquitto::start();
        let mut builder = DemoStack::builder(PVBUS)
            .broker(DemoBroker::External(broker.addr()))
            .device("mppt", "mppt_roof", "HQSIMMPPT01")
            .device("bmv", "bmv", "HQSIMBMV01")
            .vedirect_config("stale_after = 5")
            .relay("water_heater", 17)
            .relay("pump", 27)
            .config(extra);
        if panel {
            builder = builder.panel();
        }
        let demo = builder.prepare().unwrap_or_else(|e| panic!("{e}"));
        let mut stack = Stack { demo, broker };
        if parts.vedirect {
            stack.spawn_simulators().unwrap_or_else(|e| panic!("{e}"));
            stack.spawn_process("vedirect");
        }
        if parts.relays {
            stack.spawn_process("relays");
        }
        if panel {
            stack.spawn_process("tm1638");
            stack.spawn_process("lcd");
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
        if panel {
            rec.expect("pvbus/tm1638/status", "online", wait);
            rec.expect("pvbus/lcd/status", "online", wait);
        }
        if parts.homeassistant {
            rec.expect("pvbus/homeassistant/status", "online", wait);
        }
        stack
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
}

/// The demo configuration, on the broker at `port` and under `dir` instead of
/// /tmp/pvbus-demo. (The broker is external so that the test does not depend on how the
/// embedded one is built; the cookbook's commands do not care which broker it is.)
pub fn demo_config(port: u16, dir: &Path) -> PathBuf {
    demo_copy(
        dir,
        &[
            (
                "[bus]\n",
                &format!("[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n"),
            ),
            ("[broker]\n", "[broker]\nenabled = false\n"),
            ("/tmp/pvbus-demo", &dir.display().to_string()),
        ],
    )
}

/// `pvbus run` on the demo (see [`demo_config`]), once its processes are online and the
/// VE.Direct charger, the site, the rules and the discovery have published.
pub fn start_demo(broker: &Mosquitto, dir: &Path) -> (Child, PathBuf) {
    let config = demo_config(broker.port, dir);
    let demo = run_demo(&config, broker.addr(), dir, &[]);
    (demo, config)
}

/// `pvbus run` on examples/demo.toml as shipped, with its own embedded broker (`pvbus
/// broker`): only the broker's port (a free one instead of 1883) and the folder (`dir`
/// instead of /tmp/pvbus-demo) change. Returns once the panel is online too, with the
/// broker's address.
pub fn start_demo_embedded(dir: &Path) -> (Child, std::net::SocketAddr) {
    let port = free_port();
    let config = demo_copy(
        dir,
        &[
            (
                "listen = \"127.0.0.1:1883\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            ),
            ("/tmp/pvbus-demo", &dir.display().to_string()),
        ],
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let demo = run_demo(&config, addr, dir, &["tm1638", "lcd"]);
    (demo, addr)
}

fn run_demo(config: &Path, addr: std::net::SocketAddr, dir: &Path, more: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let demo = Child::spawn(
        "pvbus run",
        Command::new(PVBUS)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log),
    );
    let log = || std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    assert!(
        wait_for_listener(addr, Duration::from_secs(20)),
        "no broker listens on {addr}; log:\n{}",
        log()
    );
    let bus = Recorder::start(addr, "#");
    let ready = Duration::from_secs(30);
    for process in ["vedirect", "relays", "rules", "homeassistant"]
        .iter()
        .chain(more)
    {
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
    demo
}
