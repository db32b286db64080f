//! Test support for pvbus: real brokers and real processes, cleaned up by `Drop`.
//!
//! Layout:
//! - [`free_port`]: a TCP port nobody listens on;
//! - [`Mosquitto`]: a real mosquitto on 127.0.0.1 (installed from apt), restartable;
//! - [`Child`]: a child process killed (SIGKILL) when dropped, with `kill9`/`terminate`;
//! - [`rss_kib`]: a process's resident memory, from /proc;
//! - [`stack`]: [`DemoStack`], the pvbus stack on a temp dir and free ports, for tests and benches;
//! - [`Recorder`]: a rumqttc subscriber that records everything it sees, so tests wait
//!   for a topic to reach a value with a deadline instead of sleeping.

pub mod ordered;
pub mod stack;
pub use stack::{DemoBroker, DemoStack, DemoStackBuilder, DemoStackError};

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind to :0 and release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Waits until something accepts TCP on `addr`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process that is killed when dropped.
pub struct Child {
    inner: Option<std::process::Child>,
    name: String,
}

impl Child {
    pub fn spawn(name: &str, cmd: &mut Command) -> Child {
        let inner = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Child {
            inner: Some(inner),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.inner.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.inner.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit status
    /// (None if it had to be killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.inner.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within {timeout:?}; killing it", self.name);
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.inner.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A real mosquitto broker on 127.0.0.1, with no persistence.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        // A config file rather than `-p`: without `set_tcp_nodelay true` mosquitto's
        // replies wait on Nagle's algorithm and delayed ACKs (tens of milliseconds).
        let conf = std::env::temp_dir().join(format!("pvbus-testkit-mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nmax_queued_messages 10000\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Child::spawn(
            "mosquitto",
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_for_listener(addr, Duration::from_secs(5)),
            "mosquitto did not listen on {addr} (is the `mosquitto` package installed?)"
        );
        Mosquitto { port, child }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the broker (SIGKILL): every client sees its connection drop.
    pub fn kill(&mut self) {
        self.child.kill9();
    }

    /// Starts it again on the same port (it has forgotten everything).
    pub fn restart(&mut self) {
        self.child.kill9();
        // The port may linger in TIME_WAIT for the listener: mosquitto sets SO_REUSEADDR.
        *self = Mosquitto::start_on(self.port);
    }
}

/// Runs `mosquitto_pub` with the given extra arguments against `addr`; panics on failure.
pub fn mosquitto_pub(addr: SocketAddr, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .status()
        .expect("mosquitto_pub (package mosquitto-clients) must be installed");
    assert!(status.success(), "mosquitto_pub {args:?} failed: {status}");
}

/// One message seen by a [`Recorder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
    pub at: Instant,
}

/// Records every message on `filter`, in a background thread with its own runtime, so it
/// can be used from sync and async tests alike.
#[derive(Clone)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    pub fn start(addr: SocketAddr, filter: &str) -> Recorder {
        Recorder::start_with_id(addr, filter, &format!("recorder-{}", free_port()))
    }

    pub fn start_with_id(addr: SocketAddr, filter: &str, client_id: &str) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let seen = seen.clone();
            let stop = stop.clone();
            let filter = filter.to_string();
            let client_id = client_id.to_string();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", addr.port());
                    opts.set_keep_alive(Duration::from_secs(5));
                    opts.set_max_packet_size(1 << 20, 1 << 20);
                    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
                    let mut ready = Some(ready_tx);
                    loop {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let ev = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
                        match ev {
                            Err(_) => continue,
                            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => {
                                let _ = client.subscribe(&filter, rumqttc::QoS::AtLeastOnce).await;
                            }
                            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => {
                                if let Some(tx) = ready.take() {
                                    let _ = tx.send(());
                                }
                            }
                            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                                seen.lock().unwrap().push(Seen {
                                    topic: p.topic.clone(),
                                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                                    retain: p.retain,
                                    at: Instant::now(),
                                });
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
            });
        }
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        Recorder { seen, stop }
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Last payload seen on each topic.
    pub fn latest(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        for s in self.seen.lock().unwrap().iter() {
            m.insert(s.topic.clone(), s.payload.clone());
        }
        m
    }

    pub fn last(&self, topic: &str) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.topic == topic)
            .map(|s| s.payload.clone())
    }

    /// Waits until `pred` holds for the latest payload of `topic`; returns it.
    pub fn wait_for(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.last(topic).filter(|p| pred(p)) {
                return Some(p);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `topic`'s latest payload equals `value`; panics with what was seen.
    pub fn expect(&self, topic: &str, value: &str, timeout: Duration) {
        if self.wait_for(topic, timeout, |p| p == value).is_none() {
            panic!(
                "{topic} never became {value:?} within {timeout:?}; last: {:?}",
                self.last(topic)
            );
        }
    }

    /// Forgets what was recorded so far.
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if Arc::strong_count(&self.stop) == 1 {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Resident memory (VmRSS) of process `pid` in KiB, or `None` once it has gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The `shared/` folder beside the repository (test data), from a crate's manifest dir.
pub fn shared_dir(manifest_dir: &str) -> std::path::PathBuf {
    let mut p = Path::new(manifest_dir).to_path_buf();
    loop {
        let candidate = p.join("../shared");
        if candidate.join("vedirect").is_dir() {
            return candidate;
        }
        if !p.pop() {
            panic!("no shared/ folder found above {manifest_dir}");
        }
    }
}
