//! [`Bus`]: one MQTT connection per process, with the guarantees every pvbus process
//! needs and that rumqttc leaves to its user:
//!
//! - a last will (`<base>/<process>/status` = `offline`, retained) and `online` after every
//!   connection;
//! - subscriptions re-issued after every reconnect (with a clean session the broker forgets
//!   them);
//! - the process's own retained state republished after every reconnect, so that a broker
//!   that lost its memory gets it back;
//! - reconnect with exponential backoff and jitter, so that a broker restart is not met by
//!   every process at the same millisecond;
//! - publishing never blocks: publications go through an unbounded queue to a forwarding
//!   task, so a task that consumes incoming messages and publishes in reply cannot
//!   deadlock against rumqttc's bounded request channel. While disconnected that queue is
//!   drained by dropping (retained state is kept in a map and replayed), so an outage does
//!   not grow memory;
//! - TCP_NODELAY, because our messages are small and latency matters more than packets.
//!
//! Shell commands (`pvbus get`, `pvbus status`) use the same client as tools
//! ([`Bus::connect_tool`]): they are not processes of the bus, so they have no last will
//! and no `online`, a client id of their own per run, and can fail at once rather than
//! wait for a broker that is not there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, ConnectionError, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::BusConfig;
use crate::contract::{ErrorReport, OFFLINE, ONLINE, now_ts};
use crate::topics::Topics;

/// A message received from the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// Set when the broker replayed a retained message (or a publisher set the flag).
    pub retain: bool,
}

impl Message {
    /// The payload as text, with an error that names the topic.
    pub fn text(&self) -> Result<&str, BusError> {
        std::str::from_utf8(&self.payload).map_err(|_| BusError::NotUtf8 {
            topic: self.topic.clone(),
        })
    }
}

/// What the inbox yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Connected (again): subscriptions and retained state are being re-sent.
    Connected,
    /// The connection was lost; the client is reconnecting by itself.
    Disconnected,
    Message(Message),
}

/// Why the connection is down, or why a tool could not connect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// The broker answered and said no (CONNACK with an error code): most often the
    /// username or password.
    #[error("refused ({0})")]
    Refused(String),
    /// No MQTT conversation: nothing listens there, the network, the name...
    #[error("{0}")]
    Unreachable(String),
    /// [`Bus::connect_tool_or_fail`]: no answer in the time given.
    #[error("no answer within {} s", .0.as_secs_f32())]
    TimedOut(Duration),
}

impl From<&ConnectionError> for LinkError {
    fn from(error: &ConnectionError) -> LinkError {
        match error {
            ConnectionError::ConnectionRefused(code) => LinkError::Refused(format!("{code:?}")),
            other => LinkError::Unreachable(other.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("payload on {topic} is not UTF-8 text")]
    NotUtf8 { topic: String },
    #[error("the bus connection of this process has been shut down")]
    Closed,
}

/// Receiving side of a [`Bus`]; one per process.
pub struct Inbox {
    rx: mpsc::Receiver<Event>,
}

impl Inbox {
    /// The next event, or `None` once the bus has been shut down.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

enum Outgoing {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    },
    Subscribe(Vec<String>),
    Unsubscribe(String),
    /// Publish `offline`, then disconnect.
    Shutdown,
}

#[derive(Default)]
struct Remembered {
    subscriptions: Vec<String>,
    retained: BTreeMap<String, Bytes>,
}

impl Inner {
    /// Whether the process itself subscribed to a filter matching `topic`.
    fn subscribed_to(&self, topic: &str) -> bool {
        self.remembered
            .lock()
            .expect("bus lock poisoned")
            .subscriptions
            .iter()
            .any(|f| crate::topics::topic_matches(f, topic))
    }
}

struct Inner {
    process: String,
    client_id: String,
    /// A process announces itself (`online`, `offline`, last will); a tool does not.
    announces: bool,
    /// `<base>/<process>/status`, compared with every incoming topic.
    status_topic: String,
    topics: Topics,
    tx: mpsc::UnboundedSender<Outgoing>,
    remembered: Mutex<Remembered>,
    connected: watch::Receiver<bool>,
    /// The last connection error, `None` once connected.
    failure: watch::Receiver<Option<LinkError>>,
    /// Set by [`Bus::shutdown`]: from then on incoming messages are discarded rather
    /// than waited on, because a process that is stopping no longer reads its inbox.
    closing: watch::Sender<bool>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

/// Handle to the bus connection of this process. Cheap to clone; every method returns at
/// once (the work is done by the connection's own tasks).
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// How many incoming events may wait for the process before the connection stops
/// reading from the socket (back-pressure onto the broker, not unbounded memory).
const INBOX_CAPACITY: usize = 512;

impl Bus {
    /// Connects in the background and returns at once. `process` names the process on
    /// the bus (`<base>/<process>/status`); it must be a valid topic level.
    pub fn connect(cfg: &BusConfig, process: &str) -> (Bus, Inbox) {
        let client_id = format!("{}{}", cfg.client_id_prefix, process);
        Bus::start(cfg, process, client_id, true)
    }

    /// Connects a tool (a shell command, a viewer) in the background and returns at
    /// once. A tool is not a process of the bus: no last will and no `online` (a command
    /// run in a loop would flood `<base>/<tool>/status`), and a client id of its own per
    /// run, `<prefix><tool>-<pid>-<nanos>`, so that two runs at once do not throw each
    /// other off the broker. Otherwise it is a [`Bus`] like any other: it reconnects and
    /// subscribes again by itself.
    pub fn connect_tool(cfg: &BusConfig, tool: &str) -> (Bus, Inbox) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let client_id = format!(
            "{}{tool}-{}-{nanos:x}",
            cfg.client_id_prefix,
            std::process::id()
        );
        Bus::start(cfg, tool, client_id, false)
    }

    /// [`Bus::connect_tool`] for a command that cannot wait: returns once connected, or
    /// fails at the first refusal or connection error rather than retrying, or after
    /// `within`. On failure the connection's tasks are left to the end of the program.
    pub async fn connect_tool_or_fail(
        cfg: &BusConfig,
        tool: &str,
        within: Duration,
    ) -> Result<(Bus, Inbox), LinkError> {
        let (bus, mut inbox) = Bus::connect_tool(cfg, tool);
        let mut failure = bus.inner.failure.clone();
        let closed = || LinkError::Unreachable("the connection closed".into());
        let first = tokio::time::timeout(within, async {
            tokio::select! {
                // Nothing is subscribed yet: the first event is `Connected`.
                event = inbox.recv() => match event {
                    Some(Event::Connected) => Ok(()),
                    _ => Err(closed()),
                },
                failed = failure.wait_for(Option::is_some) => {
                    Err(failed.ok().and_then(|e| e.clone()).unwrap_or_else(closed))
                }
            }
        })
        .await;
        match first {
            Ok(Ok(())) => Ok((bus, inbox)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LinkError::TimedOut(within)),
        }
    }

    fn start(cfg: &BusConfig, process: &str, client_id: String, announces: bool) -> (Bus, Inbox) {
        let topics = Topics::new(cfg.base.clone());
        let status_topic = topics.process_status(process);
        let (host, port) = cfg.endpoint();

        let mut options = MqttOptions::new(client_id.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs.max(5)));
        options.set_clean_session(true);
        options.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
        if announces {
            options.set_last_will(LastWill::new(
                status_topic.clone(),
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        }
        if let Some(user) = &cfg.username {
            options.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(5);
        eventloop.set_network_options(network);

        let (tx, out_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let (connected_tx, connected_rx) = watch::channel(false);
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let (closing_tx, closing_rx) = watch::channel(false);
        let (failure_tx, failure_rx) = watch::channel(None);

        let inner = Arc::new(Inner {
            process: process.to_string(),
            client_id,
            announces,
            status_topic: status_topic.clone(),
            topics,
            tx,
            remembered: Mutex::new(Remembered::default()),
            connected: connected_rx.clone(),
            failure: failure_rx,
            closing: closing_tx,
            stopped: Mutex::new(Some(stopped_rx)),
        });
        let bus = Bus { inner };

        let status_topic = announces.then_some(status_topic);
        tokio::spawn(forward(client, out_rx, connected_rx, status_topic));
        tokio::spawn(drive(
            eventloop,
            bus.clone_weak_view(),
            inbox_tx,
            closing_rx,
            Link {
                connected: connected_tx,
                failure: failure_tx,
            },
            stopped_tx,
        ));
        (bus, Inbox { rx: inbox_rx })
    }

    fn clone_weak_view(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    pub fn process(&self) -> &str {
        &self.inner.process
    }

    /// The MQTT client id: `<prefix><process>`, or unique per run for a tool.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Why the connection is down: the last error since it was last up (`None` while
    /// connected, and before the first attempt has failed).
    pub fn link_error(&self) -> Option<LinkError> {
        self.inner.failure.borrow().clone()
    }

    /// Completes once a connection attempt has failed and the bus is not connected: how a
    /// process that shows its link (the panel) tells "still starting" from "no broker",
    /// since [`Event::Disconnected`] only follows a connection that was up.
    pub async fn wait_unreachable(&self) {
        let mut rx = self.inner.failure.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Waits until connected (or returns at once if already).
    pub async fn wait_connected(&self) {
        let mut rx = self.inner.connected.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Subscribes at QoS 1, now and after every reconnect.
    pub fn subscribe(&self, filter: impl Into<String>) {
        let filter = filter.into();
        {
            let mut r = self.lock();
            if !r.subscriptions.contains(&filter) {
                r.subscriptions.push(filter.clone());
            }
        }
        let _ = self.inner.tx.send(Outgoing::Subscribe(vec![filter]));
    }

    /// Ends a subscription (and its renewal after reconnects), e.g. one that was only
    /// needed to read the retained state at start.
    pub fn unsubscribe(&self, filter: impl Into<String>) {
        let filter = filter.into();
        self.lock().subscriptions.retain(|f| *f != filter);
        let _ = self.inner.tx.send(Outgoing::Unsubscribe(filter));
    }

    /// A non-retained message at QoS 1 (commands, events, decisions).
    pub fn publish(&self, topic: impl Into<String>, payload: impl Into<Bytes>) {
        self.send(topic.into(), payload.into(), QoS::AtLeastOnce, false);
    }

    /// A non-retained message at QoS 0: frequent, disposable (heartbeats).
    pub fn publish_volatile(&self, topic: impl Into<String>, payload: impl Into<Bytes>) {
        self.send(topic.into(), payload.into(), QoS::AtMostOnce, false);
    }

    /// Retained state at QoS 1, remembered and republished after every reconnect.
    pub fn publish_retained(&self, topic: impl Into<String>, payload: impl Into<Bytes>) {
        let topic = topic.into();
        let payload = payload.into();
        self.lock().retained.insert(topic.clone(), payload.clone());
        self.send(topic, payload, QoS::AtLeastOnce, true);
    }

    /// Removes a retained message of ours from the broker (empty retained payload).
    pub fn clear_retained(&self, topic: impl Into<String>) {
        let topic = topic.into();
        self.lock().retained.remove(&topic);
        self.send(topic, Bytes::new(), QoS::AtLeastOnce, true);
    }

    /// Answers an invalid command on `<base>/<process>/error`, and logs it.
    pub fn report_error(&self, command_topic: &str, error: impl std::fmt::Display) {
        let report = ErrorReport {
            ts: now_ts(),
            topic: command_topic.to_string(),
            error: error.to_string(),
        };
        warn!(topic = command_topic, error = %report.error, "rejected command");
        let json = serde_json::to_vec(&report).expect("error report serialises");
        self.publish(self.inner.topics.process_error(&self.inner.process), json);
    }

    /// Publishes `offline` (a process; not a tool), disconnects cleanly and waits (at most
    /// 2 s) until done.
    ///
    /// What was published before goes out first. Incoming messages are discarded from
    /// now on: the connection stops reading the socket while the inbox is full, so a
    /// process that no longer reads it, under a flood of messages, would otherwise never
    /// get its last publications, nor its `offline`, out.
    pub async fn shutdown(&self) {
        self.inner.closing.send_replace(true);
        let _ = self.inner.tx.send(Outgoing::Shutdown);
        let stopped = self.inner.stopped.lock().expect("bus lock").take();
        if let Some(stopped) = stopped {
            let _ = tokio::time::timeout(Duration::from_secs(2), stopped).await;
        }
    }

    fn send(&self, topic: String, payload: Bytes, qos: QoS, retain: bool) {
        let _ = self.inner.tx.send(Outgoing::Publish {
            topic,
            payload,
            qos,
            retain,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.inner.remembered.lock().expect("bus lock poisoned")
    }
}

/// Moves publications from the unbounded queue into rumqttc. Awaiting rumqttc's bounded
/// channel here is safe: the event loop task that drains it never waits for this task.
async fn forward(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    connected: watch::Receiver<bool>,
    status_topic: Option<String>,
) {
    let mut dropped: u64 = 0;
    while let Some(item) = rx.recv().await {
        let is_connected = *connected.borrow();
        match item {
            Outgoing::Publish {
                topic,
                payload,
                qos,
                retain,
            } => {
                if !is_connected {
                    // Retained state is replayed from memory on reconnect; the rest would
                    // be stale by then.
                    dropped += 1;
                    debug!(%topic, dropped, "not connected: publication dropped");
                    continue;
                }
                if client
                    .publish_bytes(topic, qos, retain, payload)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Outgoing::Subscribe(filters) => {
                if !is_connected {
                    continue; // re-issued on connect
                }
                let subs = filters
                    .into_iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                if client.subscribe_many(subs).await.is_err() {
                    break;
                }
            }
            Outgoing::Unsubscribe(filter) => {
                // Not connected: the new session has no subscription to end.
                if is_connected && client.unsubscribe(filter).await.is_err() {
                    break;
                }
            }
            Outgoing::Shutdown => {
                if is_connected && let Some(status_topic) = &status_topic {
                    let _ = client
                        .publish(status_topic.clone(), QoS::AtLeastOnce, true, OFFLINE)
                        .await;
                }
                let _ = client.disconnect().await;
                break;
            }
        }
    }
}

/// What the connection tells the handles about itself.
struct Link {
    connected: watch::Sender<bool>,
    failure: watch::Sender<Option<LinkError>>,
}

/// Polls the rumqttc event loop: reconnects with backoff, replays subscriptions and
/// retained state on every ConnAck, and hands incoming publishes to the inbox.
async fn drive(
    mut eventloop: EventLoop,
    bus: std::sync::Weak<Inner>,
    inbox: mpsc::Sender<Event>,
    mut closing: watch::Receiver<bool>,
    link: Link,
    stopped: oneshot::Sender<()>,
) {
    let connected = link.connected;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut failures: u32 = 0;
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                let Some(inner) = bus.upgrade() else { break };
                info!(process = %inner.process, "connected to the bus");
                failures = 0;
                backoff.reset();
                link.failure.send_replace(None);
                connected.send_replace(true);
                replay(&inner);
                deliver(&inbox, Event::Connected, &mut closing).await;
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                if let Some(inner) = bus.upgrade()
                    && inner.announces
                    && p.topic == inner.status_topic
                {
                    if p.payload.as_ref() == OFFLINE.as_bytes() && !*closing.borrow() {
                        // We are connected, so this `offline` is a stale last will: that of
                        // our previous connection, which the broker may fire only after our
                        // new `online` when it drops a half-open connection for ours.
                        info!(process = %inner.process, "the bus says we are offline (a late last will): online again");
                        announce_online(&inner);
                    }
                    if !inner.subscribed_to(&p.topic) {
                        continue;
                    }
                }
                let msg = Message {
                    topic: p.topic,
                    payload: p.payload,
                    retain: p.retain,
                };
                deliver(&inbox, Event::Message(msg), &mut closing).await;
            }
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                drain_until_closed(&mut eventloop).await;
                break;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(e) => {
                link.failure.send_replace(Some(LinkError::from(&e)));
                let was_connected = connected.send_replace(false);
                if was_connected {
                    deliver(&inbox, Event::Disconnected, &mut closing).await;
                }
                failures += 1;
                let delay = backoff.next_delay();
                if failures == 1 {
                    warn!(error = %e, "bus connection lost or refused; retrying");
                } else {
                    debug!(error = %e, failures, ?delay, "bus still unreachable");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
    connected.send_replace(false);
    let _ = stopped.send(());
}

/// Hands `event` to the process, waiting while its inbox is full (back-pressure onto
/// the broker), until the bus is shutting down: then it is dropped, so that the event
/// loop goes on and the last publications leave. Dropped too when nobody holds the
/// inbox any more; the connection stays up for publishing.
async fn deliver(inbox: &mpsc::Sender<Event>, event: Event, closing: &mut watch::Receiver<bool>) {
    if *closing.borrow() {
        return;
    }
    let shutting_down = async {
        if closing.wait_for(|c| *c).await.is_err() {
            // Every `Bus` handle is gone: nobody can shut down any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = inbox.send(event) => {}
        _ = shutting_down => {}
    }
}

/// After our DISCONNECT, reads until the broker closes the connection (or 1 s passes).
/// Dropping the socket while the broker's acknowledgements sit unread in our receive
/// buffer makes the kernel send RST instead of FIN, and a broker that receives RST
/// discards what it had not read yet: the last publications, even the DISCONNECT, so the
/// last will would announce `offline` for a clean stop too.
async fn drain_until_closed(eventloop: &mut EventLoop) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn announce_online(inner: &Inner) {
    let _ = inner.tx.send(Outgoing::Publish {
        topic: inner.status_topic.clone(),
        payload: Bytes::from_static(ONLINE.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: true,
    });
}

fn replay(inner: &Inner) {
    if inner.announces {
        announce_online(inner);
        // Our own status, to answer a late last will of a previous connection (see
        // `drive`); after `online`, so the retained copy we get back is that one.
        let _ = inner
            .tx
            .send(Outgoing::Subscribe(vec![inner.status_topic.clone()]));
    }
    let r = inner.remembered.lock().expect("bus lock poisoned");
    if !r.subscriptions.is_empty() {
        let _ = inner.tx.send(Outgoing::Subscribe(r.subscriptions.clone()));
    }
    for (topic, payload) in &r.retained {
        let _ = inner.tx.send(Outgoing::Publish {
            topic: topic.clone(),
            payload: payload.clone(),
            qos: QoS::AtLeastOnce,
            retain: true,
        });
    }
}
