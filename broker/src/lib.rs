//! The embedded MQTT broker of pvbus: rumqttd 0.20 routes the messages, and a thin relay in
//! front of it makes it correct for us (every retained message to every new subscriber,
//! retained messages kept across restarts, logins on the LAN, bounded memory).
//!
//! Layout:
//! - [`config`]: the `[broker]` config section, defaults for a Pi, `validate()`.
//! - `packet`: just enough MQTT 3.1.1 framing for the relay.
//! - `relay`: the listeners clients connect to; relays each connection to rumqttd and
//!   handles retained messages and logins.
//! - `tls`: loads the LAN listener's certificate and key into a TLS acceptor.
//! - [`retained`]: the retained-message store and its atomic, coalesced saves to disk.
//! - [`password`]: Argon2 hashes for LAN users (`pvbus broker hash-password`).
//! - `cli`: the `pvbus broker` process: config, flags, signals ([`Cli`], [`main`]).
//! - this file: [`EmbeddedBroker`], which starts rumqttd on a private loopback port, probes
//!   it, restores the retained store, opens the listeners, and saves on shutdown.

mod cli;
pub mod config;
mod packet;
pub mod password;
mod relay;
pub mod retained;
mod tls;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pvbus_bus::config::Section;
use tokio::sync::{Semaphore, oneshot};

pub use cli::{BrokerCommand, Cli, main};
pub use config::{BrokerConfig, BrokerUser, LanListener, TlsFiles};
pub use password::{hash_password, verify_password};
use relay::{Access, Relay};
use retained::{LoadError, RETAINED_FILE, RetainedStore, SaveError};

/// How long rumqttd has to answer the readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("config key `{key}`: {problem}")]
    Config { key: String, problem: String },
    #[error("cannot create the broker data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config key `{key}`: {path}: {problem}")]
    Tls {
        key: String,
        path: PathBuf,
        problem: String,
    },
    #[error(transparent)]
    Load(LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("rumqttd did not come up on its loopback port {addr}: {problem}")]
    Internal { addr: SocketAddr, problem: String },
    #[error("cannot start a broker thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Save(#[from] SaveError),
}

/// A section that fails its validation, for callers of [`EmbeddedBroker::start`] that did
/// not validate it through [`Settings::check`](pvbus_bus::config::Settings::check).
impl From<pvbus_bus::ConfigError> for BrokerError {
    fn from(error: pvbus_bus::ConfigError) -> BrokerError {
        match error {
            pvbus_bus::ConfigError::Key { key, message, .. } => BrokerError::Config {
                key,
                problem: message,
            },
            other => BrokerError::Config {
                key: "broker".into(),
                problem: other.to_string(),
            },
        }
    }
}

/// A running embedded broker. Dropping it stops the listeners and saves retained messages
/// like [`EmbeddedBroker::shutdown`], logging instead of returning a save error.
pub struct EmbeddedBroker {
    local_addr: SocketAddr,
    lan_addr: Option<SocketAddr>,
    store: Arc<RetainedStore>,
    data_dir: PathBuf,
    status_topic: String,
    stop: Option<oneshot::Sender<()>>,
    relay_thread: Option<JoinHandle<()>>,
    status_link: rumqttd::local::LinkTx,
    // Kept so that the router does not see the link as gone.
    _status_link_rx: rumqttd::local::LinkRx,
}

impl EmbeddedBroker {
    /// Returns once the listener accepts MQTT connections, or an error (port taken, bad
    /// config, unreadable data directory...). Blocks for the start-up probe (milliseconds);
    /// from async code, call it in `spawn_blocking` or before serving.
    pub fn start(config: BrokerConfig) -> Result<EmbeddedBroker, BrokerError> {
        config.validate()?;
        let started = Instant::now();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = Arc::new(RetainedStore::new(
            config.max_retained_topics,
            config.max_retained_bytes,
        ));
        // Before any port opens: a bad certificate or key stops the start.
        let lan_tls = match config.lan.as_ref().and_then(|lan| lan.tls.as_ref()) {
            Some(files) => Some(tls::load_acceptor(files)?),
            None => None,
        };
        restore_retained(&store, &config)?;

        // Our listeners first: a taken port is an error here, not a silent rumqttd log line.
        let local = bind(config.listen)?;
        let local_addr = local.local_addr().map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?;
        let lan = match &config.lan {
            Some(lan) => Some((bind(lan.listen)?, Arc::new(lan.users.clone()))),
            None => None,
        };
        let lan_addr = lan
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok());

        let (upstream, status_link, status_link_rx) = start_rumqttd(&config)?;

        let status_topic = config.status_topic();
        store.apply(&status_topic, Bytes::from_static(b"online"), 1);

        let relay = Arc::new(Relay {
            upstream,
            store: Arc::clone(&store),
            max_packet_size: config.max_packet_size,
            connections: Arc::new(Semaphore::new(config.max_connections)),
        });
        let (stop, stopped) = oneshot::channel();
        let flush_dir = config.data_dir.clone();
        let flush_every = Duration::from_secs(config.retained_flush_secs);
        let flush_store = Arc::clone(&store);
        let relay_thread = std::thread::Builder::new()
            .name("pvbus-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "cannot build the broker runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    match listener(local) {
                        Ok(local) => {
                            tasks.spawn(relay::serve(
                                local,
                                Access::Local,
                                None,
                                Arc::clone(&relay),
                            ));
                        }
                        Err(error) => tracing::error!(%error, "loopback listener lost"),
                    }
                    if let Some((lan, users)) = lan {
                        match listener(lan) {
                            Ok(lan) => {
                                tasks.spawn(relay::serve(
                                    lan,
                                    Access::Login(users),
                                    lan_tls,
                                    relay,
                                ));
                            }
                            Err(error) => tracing::error!(%error, "LAN listener lost"),
                        }
                    }
                    tasks.spawn(flush_store.flush_loop(flush_dir, flush_every));
                    // Either shutdown() or the handle being dropped stops everything.
                    let _ = stopped.await;
                });
                // Dropping the runtime drops every connection task: clients see the close.
            })
            .map_err(BrokerError::Thread)?;

        tracing::info!(
            listen = %local_addr,
            lan = ?lan_addr,
            lan_tls = config.lan.as_ref().is_some_and(|lan| lan.tls.is_some()),
            retained = store.len(),
            ready_ms = started.elapsed().as_millis() as u64,
            "embedded broker ready"
        );
        Ok(EmbeddedBroker {
            local_addr,
            lan_addr,
            store,
            data_dir: config.data_dir,
            status_topic,
            stop: Some(stop),
            relay_thread: Some(relay_thread),
            status_link,
            _status_link_rx: status_link_rx,
        })
    }

    /// The loopback listener's address (its real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The LAN listener's address, when configured.
    pub fn lan_addr(&self) -> Option<SocketAddr> {
        self.lan_addr
    }

    /// Number of retained messages held now.
    pub fn retained_count(&self) -> usize {
        self.store.len()
    }

    /// Stops the listeners (clients see their connection close), records
    /// `<prefix>/broker/status` = `offline`, and saves the retained store to disk. Called on
    /// SIGTERM.
    pub fn shutdown(mut self) -> Result<(), BrokerError> {
        self.stop_and_save()
    }

    fn stop_and_save(&mut self) -> Result<(), BrokerError> {
        let Some(stop) = self.stop.take() else {
            return Ok(());
        };
        // Best effort for subscribers still connected; the stored value is what counts.
        if let Err(error) = self
            .status_link
            .publish(self.status_topic.clone(), "offline")
        {
            tracing::debug!(%error, "broker status not published live");
        }
        self.store
            .apply(&self.status_topic, Bytes::from_static(b"offline"), 1);
        let _ = stop.send(());
        if let Some(thread) = self.relay_thread.take() {
            let _ = thread.join();
        }
        self.store.save_if_dirty(&self.data_dir)?;
        tracing::info!(
            retained = self.store.len(),
            "embedded broker stopped, retained messages saved"
        );
        Ok(())
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Err(error) = self.stop_and_save() {
            tracing::error!(%error, "embedded broker dropped");
        }
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BrokerError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| BrokerError::Bind { addr, source })?;
    Ok(listener)
}

fn listener(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(listener)
}

/// Loads the saved retained messages. A corrupt file is moved aside (kept for inspection) and
/// the broker starts empty; an unreadable one stops the start, so that it is not overwritten.
fn restore_retained(store: &RetainedStore, config: &BrokerConfig) -> Result<(), BrokerError> {
    match store.load(&config.data_dir) {
        Ok(count) => {
            tracing::info!(count, dir = %config.data_dir.display(), "retained messages restored");
            Ok(())
        }
        Err(error @ LoadError::Io { .. }) => Err(BrokerError::Load(error)),
        Err(error) => {
            let path = config.data_dir.join(RETAINED_FILE);
            let aside = config.data_dir.join(format!("{RETAINED_FILE}.corrupt"));
            tracing::error!(%error, moved_to = %aside.display(), "retained messages lost; starting empty");
            std::fs::rename(&path, &aside).map_err(|source| BrokerError::DataDir {
                path: aside,
                source,
            })?;
            Ok(())
        }
    }
}

/// Starts rumqttd's router and a v4 listener on a free loopback port, and waits until it
/// answers an MQTT CONNECT. Returns its address and a local link for the broker's status.
fn start_rumqttd(
    config: &BrokerConfig,
) -> Result<(SocketAddr, rumqttd::local::LinkTx, rumqttd::local::LinkRx), BrokerError> {
    let upstream = free_loopback_port()?;
    let internal_error = |problem: String| BrokerError::Internal {
        addr: upstream,
        problem,
    };
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: config.max_packet_size,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        // Harmless here and needed by other 0.20 code paths for publishes nobody listens to.
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "pvbus-relay".into(),
        listen: upstream,
        tls: None,
        // rumqttd sleeps this long after each accept; every connection comes from the relay.
        next_connection_delay_ms: 1,
        connections,
    };
    let rumqttd_config = rumqttd::Config {
        id: 0,
        // RouterConfig::default() is all zeros and panics; every field is set here.
        router: rumqttd::RouterConfig {
            // + the probe and the status link.
            max_connections: config.max_connections + 2,
            max_outgoing_packet_count: 200,
            max_segment_size: config.segment_size,
            max_segment_count: config.segment_count,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("pvbus".to_owned(), server)])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(rumqttd_config);
    let (link_tx, link_rx) = broker
        .link("pvbus-broker-status")
        .map_err(|error| internal_error(error.to_string()))?;
    let rumqttd_thread = std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            // start() blocks for the broker's life and logs (not returns) a bind failure.
            if let Err(error) = broker.start() {
                tracing::error!(%error, "rumqttd stopped");
            }
        })
        .map_err(BrokerError::Thread)?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match probe(upstream) {
            Ok(()) => return Ok((upstream, link_tx, link_rx)),
            Err(error) if rumqttd_thread.is_finished() => {
                return Err(internal_error(format!("rumqttd exited ({error})")));
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(internal_error(format!("no answer ({error})")));
            }
            // Start-up only: rumqttd offers no readiness signal to wait on.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn free_loopback_port() -> Result<SocketAddr, BrokerError> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let probe = std::net::TcpListener::bind(any)
        .map_err(|source| BrokerError::Bind { addr: any, source })?;
    probe
        .local_addr()
        .map_err(|source| BrokerError::Bind { addr: any, source })
}

/// One MQTT CONNECT/CONNACK/DISCONNECT exchange with rumqttd.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(&packet::encode_probe_connect("pvbus-broker-probe"))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack != packet::encode_connack(0) {
        return Err(std::io::Error::other(format!(
            "unexpected CONNACK {connack:?}"
        )));
    }
    stream.write_all(&[packet::DISCONNECT << 4, 0])
}
