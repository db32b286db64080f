//! `pvbus run` on a temp dir and a free port: the stack under measurement.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use pvbus_testkit::{Child, Recorder};
use serde_json::Value;

/// Which MQTT broker the stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// `pvbus broker`, started by the supervisor (`[broker]`).
    Embedded,
    /// A mosquitto of the test kit (`[bus] external_broker`), started beside the stack.
    Mosquitto,
}

/// A running `pvbus run` and its folder. Dropping it kills the supervisor, which takes its
/// children with it; [`Stack::stop`] stops it cleanly.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub broker: BrokerKind,
    child: Child,
    /// Dropped after the supervisor (fields drop in order), so the processes never see
    /// their broker go before they stop.
    mosquitto: Option<Child>,
}

impl Stack {
    /// Writes `config` (with `{bus}` standing for the broker's section and `{dir}` for the
    /// temp dir) and starts `pvbus run` on it.
    pub fn start(pvbus: &Path, config: &str, broker: BrokerKind) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let (bus, port, mosquitto) = match broker {
            BrokerKind::Embedded => {
                let port = pvbus_testkit::free_port();
                (
                    format!(
                        "[broker]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{{dir}}/broker\"\n"
                    ),
                    port,
                    None,
                )
            }
            BrokerKind::Mosquitto => {
                let port = pvbus_testkit::free_port();
                let m = start_mosquitto(dir.path(), port)?;
                (
                    format!("[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n"),
                    port,
                    Some(m),
                )
            }
        };
        let text = config
            .replace("{bus}", &bus)
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("pvbus.toml");
        std::fs::write(&config_path, text)?;
        let log = std::fs::File::create(dir.path().join("run.log"))?;
        let child = Child::spawn(
            "pvbus run",
            Command::new(pvbus)
                .args(["run", "--config"])
                .arg(&config_path)
                .env("NO_COLOR", "1")
                // Quiet by default: logging is work the measurement would count.
                .env(
                    "PVBUS_LOG",
                    std::env::var("PVBUS_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(log),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !pvbus_testkit::wait_for_listener(addr, Duration::from_secs(15)) {
            bail!(
                "the embedded broker never listened:\n{}",
                log_of(dir.path())
            );
        }
        Ok(Stack {
            dir,
            addr,
            broker,
            child,
            mosquitto,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log(&self) -> String {
        log_of(self.dir.path())
    }

    /// The supervisor's process table once every process in `names` runs: name → (pid, role).
    /// The embedded broker is among them only when it is the one used.
    pub fn wait_running(&self, names: &[&str]) -> anyhow::Result<Vec<(String, u32, String)>> {
        let names: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != "broker" || self.broker == BrokerKind::Embedded)
            .collect();
        let rec = Recorder::start(self.addr, "pvbus/supervisor/processes");
        let found = rec.wait_for("pvbus/supervisor/processes", Duration::from_secs(30), |p| {
            serde_json::from_str::<Value>(p).is_ok_and(|v| {
                names
                    .iter()
                    .all(|n| v["processes"][n]["state"] == "running")
            })
        });
        let found = found.with_context(|| {
            format!(
                "not every one of {names:?} ran within 30 s; last table: {:?}\n{}",
                rec.last("pvbus/supervisor/processes"),
                self.log()
            )
        })?;
        let table: Value = serde_json::from_str(&found)?;
        let mut out = Vec::new();
        if let Some(map) = table["processes"].as_object() {
            for (name, p) in map {
                if let Some(pid) = p["pid"].as_u64() {
                    let role = p["role"].as_str().unwrap_or("").to_string();
                    out.push((name.clone(), pid as u32, role));
                }
            }
        }
        Ok(out)
    }

    /// The pid of the external mosquitto, when it is the broker.
    pub fn mosquitto_pid(&self) -> Option<u32> {
        self.mosquitto.as_ref().map(Child::pid)
    }

    /// SIGTERM, and the supervisor's clean exit.
    pub fn stop(mut self) {
        self.child.terminate(Duration::from_secs(15));
    }
}

/// mosquitto as the test kit starts it (TCP_NODELAY, no persistence), as our own child so
/// that its pid can be measured.
pub fn start_mosquitto(dir: &Path, port: u16) -> anyhow::Result<Child> {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nmax_queued_messages 10000\n"
        ),
    )?;
    let child = Child::spawn(
        "mosquitto",
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !pvbus_testkit::wait_for_listener(addr, Duration::from_secs(5)) {
        bail!("mosquitto did not listen on {addr} (is the mosquitto package installed?)");
    }
    Ok(child)
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
}
