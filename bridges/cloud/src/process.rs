//! The process: the local bus on one side ([`Bus`]), the remote broker on the other.
//!
//! Two tasks. The link task owns the remote connection (rumqttc's event loop): it
//! builds the TLS configuration and reads the password file at every attempt, connects,
//! reports each state change and each incoming command over an unbounded channel, and
//! after a failure waits with backoff and jitter before a fresh attempt. The main task
//! owns everything else in one `select!`: local messages, link events, the next held-back
//! reading, shutdown. It never waits on the link task (the channel is unbounded and the
//! link task drains rumqttc's request queue on its own), so neither can block the other.

use std::sync::Arc;
use std::time::Duration;

use pvbus_bus::backoff::Backoff;
use pvbus_bus::contract::{OFFLINE, ONLINE, now_ts};
use pvbus_bus::{Bus, BusConfig, Event, Message, Shutdown};
use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, Packet, QoS, Transport};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::CloudConfig;
use crate::route::{Outbox, Router};
use crate::tls::{CONNECT_TIMEOUT_SECS, client_config, describe};

/// What the link task tells the main task.
enum LinkEvent {
    /// CONNACK received: publish through this client until the next `Down`.
    Up(AsyncClient),
    /// Not connected, and why (a failed attempt or a lost connection).
    Down(String),
    /// A message on one of our remote subscriptions.
    Command(rumqttc::Publish),
}

/// `<base>/cloud/remote`.
#[derive(Debug, Serialize)]
struct LinkReport<'a> {
    ts: u64,
    connected: bool,
    remote: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// When `connected` last changed (unix s).
    since: u64,
    /// Events (not retained) that could not be sent while the link was down.
    dropped_events: u64,
    /// Commands from the remote ignored because they were retained.
    ignored_retained_commands: u64,
}

struct Link {
    client: Option<AsyncClient>,
    error: Option<String>,
    since: u64,
    dropped_events: u64,
    ignored_retained_commands: u64,
}

/// Runs the cloud bridge until `shutdown` fires.
pub async fn run(
    config: CloudConfig,
    bus_config: BusConfig,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let router = Router::new(
        &bus_config.base,
        config.remote_base(),
        config.forward.clone(),
        config.accept.clone(),
        !config.state_interval.is_zero(),
    );
    let (host, port) = config.remote_endpoint();
    let remote_name = format!("{host}:{port}");
    let (bus, mut inbox) = Bus::connect(&bus_config, crate::PROCESS);
    let report_topic = bus.topics().cloud_remote();
    for filter in router.local_filters() {
        bus.subscribe(filter);
    }

    let (link_tx, mut link_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let link_task = tokio::spawn(drive_link(config.clone(), router.clone(), link_tx, stop_rx));

    let mut outbox = Outbox::new(config.state_interval);
    let mut link = Link {
        client: None,
        error: None,
        since: now_ts(),
        dropped_events: 0,
        ignored_retained_commands: 0,
    };
    publish_report(&bus, &report_topic, &remote_name, &link);
    info!(remote = %remote_name, remote_base = config.remote_base(), "cloud bridge started");

    loop {
        let next_due = outbox.next_due();
        tokio::select! {
            _ = shutdown.wait() => break,
            event = inbox.recv() => match event {
                Some(Event::Message(msg)) => {
                    local_message(&router, &mut outbox, &mut link, msg).await;
                }
                Some(Event::Connected | Event::Disconnected) => {}
                None => break,
            },
            event = link_rx.recv() => match event {
                Some(LinkEvent::Up(client)) => {
                    info!(remote = %remote_name, "connected to the remote broker");
                    link.client = Some(client.clone());
                    link.error = None;
                    link.since = now_ts();
                    remote_connected(&client, &router, &mut outbox).await;
                    publish_report(&bus, &report_topic, &remote_name, &link);
                }
                Some(LinkEvent::Down(error)) => {
                    let was_up = link.client.take().is_some();
                    if was_up || link.error.as_deref() != Some(error.as_str()) {
                        warn!(remote = %remote_name, %error, "remote broker not connected; retrying");
                        if was_up {
                            link.since = now_ts();
                        }
                        link.error = Some(error);
                        publish_report(&bus, &report_topic, &remote_name, &link);
                    }
                }
                Some(LinkEvent::Command(publish)) => {
                    let ignored = link.ignored_retained_commands;
                    remote_command(&bus, &router, &mut link, publish);
                    if link.ignored_retained_commands != ignored {
                        publish_report(&bus, &report_topic, &remote_name, &link);
                    }
                }
                None => break,
            },
            _ = sleep_until(next_due) => {
                let now = Instant::now();
                let due = outbox.due(now);
                if let Some(client) = &link.client {
                    for (topic, payload) in due {
                        let _ = client.publish_bytes(topic, QoS::AtLeastOnce, true, payload).await;
                    }
                }
            }
        }
    }

    // A clean goodbye on both sides: `offline` on the remote by our own publication (a
    // clean DISCONNECT means the broker does not send the will), then locally.
    if let Some(client) = link.client.take() {
        let _ = client
            .publish(router.remote_status(), QoS::AtLeastOnce, true, OFFLINE)
            .await;
        let _ = client.disconnect().await;
    }
    stop_tx.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(3), link_task)
        .await
        .is_err()
    {
        warn!("the remote connection did not close within 3 s");
    }
    link.since = now_ts();
    link.error = Some("stopped".into());
    publish_report(&bus, &report_topic, &remote_name, &link);
    bus.shutdown().await;
    info!("cloud bridge stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn publish_report(bus: &Bus, topic: &str, remote: &str, link: &Link) {
    let report = LinkReport {
        ts: now_ts(),
        connected: link.client.is_some(),
        remote,
        error: link.error.as_deref(),
        since: link.since,
        dropped_events: link.dropped_events,
        ignored_retained_commands: link.ignored_retained_commands,
    };
    let json = serde_json::to_vec(&report).expect("link report serialises");
    bus.publish_retained(topic.to_string(), json);
}

/// A message from the local bus: out now, held back, remembered, or dropped.
async fn local_message(router: &Router, outbox: &mut Outbox, link: &mut Link, msg: Message) {
    let Some(out) = router.outbound(&msg.topic, msg.retain) else {
        return;
    };
    let now = Instant::now();
    if out.retain {
        let send_now = outbox.record(&out.remote_topic, msg.payload.clone(), out.throttled, now);
        if send_now && let Some(client) = &link.client {
            let sent = client
                .publish_bytes(
                    out.remote_topic.clone(),
                    QoS::AtLeastOnce,
                    true,
                    msg.payload,
                )
                .await;
            if sent.is_ok() {
                outbox.sent(&out.remote_topic, now);
            }
        }
        return;
    }
    match &link.client {
        Some(client) => {
            let _ = client
                .publish_bytes(out.remote_topic, QoS::AtLeastOnce, false, msg.payload)
                .await;
        }
        None => {
            // An event is news only now; a queue of them would grow without bound
            // through a long outage and arrive stale.
            link.dropped_events += 1;
            debug!(topic = %msg.topic, dropped = link.dropped_events, "remote down: event dropped");
        }
    }
}

/// Right after CONNACK: `online`, the command subscriptions, and every retained value
/// (the remote may have restarted without persistence).
async fn remote_connected(client: &AsyncClient, router: &Router, outbox: &mut Outbox) {
    let _ = client
        .publish(router.remote_status(), QoS::AtLeastOnce, true, ONLINE)
        .await;
    let filters = router.remote_filters();
    if !filters.is_empty() {
        let subs = filters
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        let _ = client.subscribe_many(subs).await;
    }
    let all = outbox.replay(Instant::now());
    debug!(count = all.len(), "retained values replayed to the remote");
    for (topic, payload) in all {
        if client
            .publish_bytes(topic, QoS::AtLeastOnce, true, payload)
            .await
            .is_err()
        {
            break; // the connection is gone again; the next connect replays
        }
    }
}

/// A command from the remote: onto the local bus, unless it was retained.
fn remote_command(bus: &Bus, router: &Router, link: &mut Link, publish: rumqttc::Publish) {
    let Some(local_topic) = router.inbound(&publish.topic) else {
        warn!(topic = %publish.topic, "message from the remote on a topic not accepted: ignored");
        return;
    };
    if publish.payload.is_empty() {
        // Someone cleared a retained command on the remote (`mosquitto_pub -r -n`): the
        // broker passes the empty message on, and it is not a command.
        debug!(topic = %publish.topic, "empty message from the remote ignored");
        return;
    }
    if publish.retain {
        // A retained command would be obeyed again at every reconnect; the contract
        // says it is never obeyed.
        link.ignored_retained_commands += 1;
        warn!(topic = %publish.topic, "retained command from the remote ignored (commands must not be retained)");
        return;
    }
    info!(topic = %local_topic, "command from the remote");
    bus.publish(local_topic, publish.payload);
}

/// The remote connection: connect, report, reconnect with backoff, until stopped.
async fn drive_link(
    config: Arc<CloudConfig>,
    router: Router,
    events: mpsc::UnboundedSender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
) {
    // 1 s doubling to 5 min: a remote that is down for hours is not hammered over a
    // metered link, and sites do not all come back at once.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        if *stop.borrow() {
            return;
        }
        match options(&config, &router) {
            Err(error) => {
                let _ = events.send(LinkEvent::Down(error));
            }
            Ok(options) => {
                let (client, mut eventloop) = AsyncClient::new(options, 256);
                let mut network = rumqttc::NetworkOptions::new();
                network.set_tcp_nodelay(true);
                network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
                eventloop.set_network_options(network);
                match run_connection(&mut eventloop, client, &events, &mut stop, &config).await {
                    Ended::Stopped => return,
                    Ended::Failed { was_up } => {
                        if was_up {
                            backoff.reset();
                        }
                    }
                }
            }
        }
        let delay = backoff.next_delay();
        debug!(?delay, "next remote connection attempt");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

enum Ended {
    Stopped,
    Failed { was_up: bool },
}

async fn run_connection(
    eventloop: &mut EventLoop,
    client: AsyncClient,
    events: &mpsc::UnboundedSender<LinkEvent>,
    stop: &mut watch::Receiver<bool>,
    config: &CloudConfig,
) -> Ended {
    let mut up = false;
    let mut stopping_since: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = stop.wait_for(|s| *s), if stopping_since.is_none() => {
                if !up {
                    return Ended::Stopped;
                }
                // Once up, the main task ends the connection with `offline` and a
                // DISCONNECT, which we must keep polling to send; unless it stopped
                // before it heard that we were up: then the will says `offline`.
                stopping_since = Some(Instant::now());
                continue;
            }
            _ = sleep_until(stopping_since.map(|at| at + Duration::from_secs(2))) => {
                return Ended::Stopped;
            }
        };
        match event {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                up = true;
                let _ = events.send(LinkEvent::Up(client.clone()));
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                let _ = events.send(LinkEvent::Command(publish));
            }
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                drain_until_closed(eventloop).await;
                return Ended::Stopped;
            }
            Ok(_) => {}
            Err(error) => {
                if *stop.borrow() {
                    return Ended::Stopped;
                }
                let _ = events.send(LinkEvent::Down(describe(&error, config, up)));
                return Ended::Failed { was_up: up };
            }
        }
    }
}

/// After our DISCONNECT, reads until the broker closes (at most 1 s), so that the socket
/// is not reset with the broker's acknowledgements unread (a reset makes the broker drop
/// our last publications and send the will).
async fn drain_until_closed(eventloop: &mut EventLoop) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {}
}

/// The connection options of one attempt; the TLS files and the password file are read
/// now, so that a fixed file is used at the next attempt.
fn options(config: &CloudConfig, router: &Router) -> Result<MqttOptions, String> {
    let (host, port) = config.remote_endpoint();
    let mut options = MqttOptions::new(config.client_id(), host, port);
    options.set_keep_alive(config.keep_alive);
    options.set_clean_session(true);
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    options.set_last_will(LastWill::new(
        router.remote_status(),
        OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &config.username {
        let password = config.password()?.unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    if config.tls {
        let tls = client_config(config).map_err(|e| e.to_string())?;
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    Ok(options)
}
