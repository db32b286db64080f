//! The stack under measurement: a [`DemoStack`] of the release `pvbus`, on the embedded
//! broker or on a mosquitto started beside it (as our own child, so that its pid can be
//! measured).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::bail;
use pvbus_testkit::{Child, DemoBroker, DemoStack, DemoStackBuilder};

const WAIT: Duration = Duration::from_secs(30);

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
    demo: DemoStack,
    pub addr: SocketAddr,
    pub broker: BrokerKind,
    /// Dropped after the stack (fields drop in order), so the processes never see their
    /// broker go before they stop.
    mosquitto: Option<Child>,
}

impl Stack {
    /// Starts `pvbus run` on what `builder` describes, quiet (`PVBUS_LOG=warn` unless set:
    /// logging is work the measurement would count) and with no recorder of the bus but
    /// for the process table.
    pub fn start(builder: DemoStackBuilder, broker: BrokerKind) -> anyhow::Result<Stack> {
        let (builder, mosquitto) = match broker {
            BrokerKind::Embedded => (builder, None),
            BrokerKind::Mosquitto => {
                let port = pvbus_testkit::free_port();
                let conf_dir = tempfile::tempdir()?;
                let m = start_mosquitto(conf_dir.path(), port)?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                (builder.broker(DemoBroker::External(addr)), Some(m))
            }
        };
        let demo = builder
            .log_level(&std::env::var("PVBUS_LOG").unwrap_or_else(|_| "warn".into()))
            .record("pvbus/supervisor/processes")
            .start()?;
        Ok(Stack {
            addr: demo.addr,
            demo,
            broker,
            mosquitto,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.demo.path(name)
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.demo.supervisor_pid()
    }

    pub fn log(&self) -> String {
        self.demo.logs()
    }

    /// The supervisor's process table once every process in `names` runs: (name, pid,
    /// role). The embedded broker is among them only when it is the one used.
    pub fn wait_running(&self, names: &[&str]) -> anyhow::Result<Vec<(String, u32, String)>> {
        let names: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != "broker" || self.broker == BrokerKind::Embedded)
            .collect();
        let table = self.demo.wait_running(&names, WAIT)?;
        Ok(table
            .into_iter()
            .map(|(name, (pid, role))| (name, pid, role))
            .collect())
    }

    /// The pid of the external mosquitto, when it is the broker.
    pub fn mosquitto_pid(&self) -> Option<u32> {
        self.mosquitto.as_ref().map(Child::pid)
    }

    /// SIGTERM, and the supervisor's clean exit.
    pub fn stop(self) {
        self.demo.stop();
    }
}

/// One broker alone on `port`, with no stack: `pvbus broker` with the demo's `[broker]`
/// section (defaults but for the address and folder, `dir`), or a mosquitto.
pub fn start_broker_alone(
    pvbus: &Path,
    broker: BrokerKind,
    dir: &Path,
    port: u16,
) -> anyhow::Result<Child> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match broker {
        BrokerKind::Embedded => {
            let config = dir.join("pvbus.toml");
            std::fs::write(
                &config,
                format!(
                    "[broker]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
                    dir.join("broker").display()
                ),
            )?;
            let child = Child::spawn(
                "pvbus broker",
                Command::new(pvbus)
                    .args(["broker", "--config"])
                    .arg(&config)
                    .env("PVBUS_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            if !pvbus_testkit::wait_for_listener(addr, Duration::from_secs(10)) {
                bail!("pvbus broker never listened on {addr}");
            }
            Ok(child)
        }
        BrokerKind::Mosquitto => start_mosquitto(dir, port),
    }
}

/// mosquitto as the test kit starts it (TCP_NODELAY, no persistence), as our own child so
/// that its pid can be measured. Its config file is written in `dir`, which may go once
/// it has started.
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
