//! Brokers as child processes for tests: the embedded one (`pvbus broker`) and a real
//! mosquitto, each on a free loopback port with its own temp directory, killed on Drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Embedded,
    Mosquitto,
}

/// A broker child process. The data directory outlives restarts; the child dies with it.
pub struct BrokerProcess {
    pub kind: BrokerKind,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn mosquitto_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "mosquitto".into()
}

impl BrokerProcess {
    pub fn start(kind: BrokerKind) -> BrokerProcess {
        Self::start_with_env(kind, &[])
    }

    /// Starts with extra environment variables (e.g. `PVBUS_BROKER__RETAINED_FLUSH_SECS`).
    pub fn start_with_env(kind: BrokerKind, env: &[(&str, &str)]) -> BrokerProcess {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = BrokerProcess {
            kind,
            addr,
            dir,
            child: None,
            env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        };
        broker.spawn();
        broker
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the process and returns how long it took to answer an MQTT CONNECT.
    fn spawn(&mut self) -> Duration {
        let started = Instant::now();
        let mut command = match self.kind {
            BrokerKind::Embedded => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_pvbus"));
                command
                    .arg("broker")
                    .arg("--listen")
                    .arg(self.addr.to_string())
                    .arg("--data-dir")
                    .arg(self.dir.path().join("broker"));
                command
            }
            BrokerKind::Mosquitto => {
                let config = self.dir.path().join("mosquitto.conf");
                let persistence = self.dir.path().join("mosquitto-data");
                std::fs::create_dir_all(&persistence).expect("mosquitto data dir");
                // Run as root, mosquitto switches to the `mosquitto` user, which cannot write
                // into our temp dir; stay root then (tests only).
                let as_root = std::fs::metadata(&persistence)
                    .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
                    .unwrap_or(false);
                let user = if as_root { "user root\n" } else { "" };
                // Persistence on, so that retained messages survive a restart as with the
                // embedded broker; queue limit raised, or mosquitto drops retained messages
                // beyond 1000 for a QoS 1 subscriber (its default max_queued_messages).
                std::fs::write(
                    &config,
                    format!(
                        "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                         persistence_location {}/\nmax_queued_messages 10000\n{user}",
                        self.addr.port(),
                        persistence.display()
                    ),
                )
                .expect("mosquitto config");
                let mut command = Command::new(mosquitto_binary());
                command.arg("-c").arg(config);
                command
            }
        };
        let log = std::fs::File::create(self.dir.path().join(format!(
            "{:?}-{}.log",
            self.kind,
            started.elapsed().as_nanos()
        )))
        .expect("log file");
        let child = command
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {:?} broker: {error}", self.kind));
        self.child = Some(child);
        self.wait_ready(started)
    }

    fn wait_ready(&mut self, started: Instant) -> Duration {
        let deadline = started + Duration::from_secs(20);
        loop {
            if mqtt_connack(self.addr, "ready-probe") == Some(0) {
                return started.elapsed();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!(
                    "{:?} broker exited early ({status}); logs in {}",
                    self.kind,
                    self.dir.path().display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} broker not ready in 20 s",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the clean shutdown path.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .expect("kill -TERM");
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{:?} broker ignored SIGTERM for 10 s", self.kind);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts again on the same port and data directory; returns the time to ready.
    pub fn restart(&mut self) -> Duration {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Any child process killed on Drop (mosquitto_sub and the like).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One raw MQTT 3.1.1 CONNECT; returns the CONNACK code, or None if there was no CONNACK.
/// Sends DISCONNECT after a successful CONNACK.
pub fn mqtt_connack(addr: SocketAddr, client_id: &str) -> Option<u8> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    stream.write_all(&packet).ok()?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).ok()?;
    if connack[0] != 0x20 {
        return None;
    }
    if connack[3] == 0 {
        stream.write_all(&[0xe0, 0]).ok()?;
    }
    Some(connack[3])
}
