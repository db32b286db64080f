//! Shared by the relay integration tests: a real mosquitto, the real `pvbus relays`
//! child process on a simulated board kept in a temporary directory.

#![allow(dead_code)] // each test crate uses its own part of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, Recorder, mosquitto_pub};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct RelaysSetup {
    pub dir: tempfile::TempDir,
    pub broker: Mosquitto,
    pub config: PathBuf,
}

impl RelaysSetup {
    /// `relays` is the `[[relays.relay]]` part of the config.
    pub fn new(stale_after: &str, relays: &str) -> RelaysSetup {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start();
        let config = dir.path().join("pvbus.toml");
        let text = format!(
            "[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n\n[relays]\nstate_dir = \"{state}\"\n\
             stale_after = {stale_after}\n\n[relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{board}\"\n\n{relays}",
            port = broker.port,
            state = dir.path().join("state").display(),
            board = dir.path().join("board").display(),
        );
        std::fs::write(&config, text).unwrap();
        RelaysSetup {
            dir,
            broker,
            config,
        }
    }

    pub fn board(&self) -> PathBuf {
        self.dir.path().join("board")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts `pvbus relays` and waits until it is online.
    pub fn start(&self) -> Child {
        let status = Recorder::start(self.broker.addr(), "pvbus/relays/status");
        status.clear();
        let child = Child::spawn(
            "pvbus relays",
            Command::new(env!("CARGO_BIN_EXE_pvbus"))
                .args(["relays", "--config"])
                .arg(&self.config)
                .env("PVBUS_LOG", "warn"),
        );
        status.expect("pvbus/relays/status", "online", WAIT);
        child
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        mosquitto_pub(self.broker.addr(), &["-q", "1", "-t", topic, "-m", payload]);
    }

    pub fn recorder(&self, filter: &str) -> Recorder {
        Recorder::start(self.broker.addr(), filter)
    }

    pub fn pvbus(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_pvbus"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

pub fn saved_level(board: &Path, pin: u8) -> Option<pvbus_hardware::Level> {
    pvbus_hardware::SimBoard::saved_levels(board)
        .unwrap()
        .get(&pin)
        .copied()
}
