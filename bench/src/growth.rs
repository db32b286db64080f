//! Does the broker's memory level off under the demo's message pattern? The soak runs the
//! simulated day fast but the traffic at its real rate (a few messages a second), so a
//! small per-message leak would take days to show there. This drives one broker alone with
//! the same pattern as fast as it takes it (a million messages in minutes) and samples its
//! resident memory every `sample_every` messages:
//! - a bridge publishing retained device states (3 devices, JSON of a BMV's size, a new
//!   `ts` each time) and, now and then, their availability;
//! - the relay bridge's retained `state`/`mode`/`reason`, the rules' retained status,
//!   non-retained `auto/set`, decisions and heartbeats, the supervisor's table;
//! - subscribers as the processes subscribe (relays to its commands, rules and the panel
//!   to states and modes, Home Assistant to states and availability, a person's
//!   `mosquitto_sub -t 'pvbus/#'`);
//! - at every sample one subscriber goes away and comes back (alternately a clean
//!   DISCONNECT and a dropped socket, as a kill -9 would) and catches up on the retained
//!   states, so that per-connection state comes and goes as it does over months.
//!
//! Each sample is taken once every subscriber has received a marker published after the
//! sample's last message: everything before it went through the broker.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::procfs;
use crate::stack::{BrokerKind, start_broker_alone};

const DEADLINE: Duration = Duration::from_secs(60);
const MARKER: &str = "pvbus/bench/marker";

/// The subscribers: a process name and the filters it subscribes to, as in the demo.
const SUBSCRIBERS: &[(&str, &[&str])] = &[
    (
        "relays",
        &[
            "pvbus/relays/+/mode/set",
            "pvbus/relays/+/auto/set",
            "pvbus/rules/heartbeat",
        ],
    ),
    (
        "rules",
        &[
            "pvbus/vedirect/+/state",
            "pvbus/vedirect/+/availability",
            "pvbus/relays/+/state",
            "pvbus/relays/+/mode",
        ],
    ),
    (
        "homeassistant",
        &[
            "pvbus/+/+/state",
            "pvbus/+/+/availability",
            "pvbus/+/status",
        ],
    ),
    (
        "tm1638",
        &[
            "pvbus/vedirect/+/state",
            "pvbus/relays/+/state",
            "pvbus/relays/+/mode",
        ],
    ),
    ("monitor", &["pvbus/#"]),
];

const DEVICES: [&str; 3] = ["mppt", "mppt_garage", "bmv"];
const RELAYS: [&str; 2] = ["water_heater", "pump"];

/// Message `n` of the demo's pattern: per second of the demo, a state of each device, the
/// site totals, and now and then a relay change, a decision, a heartbeat, an availability.
fn message(n: u64) -> (String, String, bool) {
    let ts = 1_764_040_000 + n / 8;
    let device = DEVICES[(n % 3) as usize];
    let relay = RELAYS[((n / 8) % 2) as usize];
    match n % 8 {
        0..=2 => {
            let mut state = json!({"ts": ts, "battery_voltage": 12.0 + (n % 300) as f64 / 100.0,
                "battery_current": (n % 50) as f64 / 10.0, "charge_state": "float"});
            for k in 0..25 {
                state[format!("reading_{k}")] = json!((n + k) % 1000);
            }
            (format!("pvbus/vedirect/{device}/state"), state.to_string(), true)
        }
        3 => (
            "pvbus/site/state".into(),
            json!({"ts": ts, "pv_power": n % 900, "battery_power": n % 400, "consumption": n % 300})
                .to_string(),
            true,
        ),
        4 => match (n / 8) % 6 {
            0 => (
                format!("pvbus/relays/{relay}/state"),
                if (n / 16).is_multiple_of(2) { "ON" } else { "OFF" }.into(),
                true,
            ),
            1 => (
                format!("pvbus/relays/{relay}/mode"),
                if (n / 16).is_multiple_of(2) { "auto_on" } else { "auto_off" }.into(),
                true,
            ),
            2 => (
                format!("pvbus/relays/{relay}/reason"),
                json!({"ts": ts, "by": "rules", "text": format!("rule {n}")}).to_string(),
                true,
            ),
            3 => (
                format!("pvbus/relays/{relay}/auto/set"),
                if (n / 16).is_multiple_of(2) { "ON" } else { "OFF" }.into(),
                false,
            ),
            4 => (
                "pvbus/rules/decisions".into(),
                json!({"ts": ts, "relay": relay, "on": n.is_multiple_of(2), "because": "soc >= 95%"})
                    .to_string(),
                false,
            ),
            _ => (
                format!("pvbus/rules/{relay}/status"),
                json!({"ts": ts, "waiting_for": format!("stable for {}s", n % 30)}).to_string(),
                true,
            ),
        },
        5 => ("pvbus/rules/heartbeat".into(), ts.to_string(), false),
        6 => (
            format!("pvbus/vedirect/{device}/availability"),
            if (n / 8).is_multiple_of(50) { "offline" } else { "online" }.into(),
            true,
        ),
        _ => (
            "pvbus/supervisor/processes".into(),
            json!({"ts": ts, "processes": {"vedirect": {"state": "running", "pid": n % 30000}}})
                .to_string(),
            true,
        ),
    }
}

fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_inflight(100);
    opts.set_last_will(LastWill::new(
        format!("pvbus/{id}/status"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    opts
}

/// What the driver tells a subscriber: reconnect cleanly, or drop the socket.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leave {
    Stay,
    Disconnect(u64),
    Drop(u64),
}

/// One subscriber: connects, subscribes, reports the last marker seen; reconnects when told.
async fn subscriber(
    addr: SocketAddr,
    name: &'static str,
    filters: &'static [&'static str],
    marker: watch::Sender<u64>,
    mut leave: watch::Receiver<Leave>,
    reconnected: watch::Sender<u64>,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let (delivered, live) = (&counts.all, &counts.live);
    let connect = || -> (AsyncClient, EventLoop) { AsyncClient::new(options(addr, name), 1000) };
    let subscribe = |c: AsyncClient| async move {
        for f in filters {
            c.subscribe(*f, QoS::AtLeastOnce).await?;
        }
        if !filters.contains(&"pvbus/#") {
            c.subscribe(MARKER, QoS::AtLeastOnce).await?;
        }
        c.publish(
            format!("pvbus/{name}/status"),
            QoS::AtLeastOnce,
            true,
            "online",
        )
        .await?;
        anyhow::Ok(c)
    };
    let (c, mut el) = connect();
    let mut client = subscribe(c).await?;
    loop {
        tokio::select! {
            changed = leave.changed() => {
                if changed.is_err() {
                    let _ = client.disconnect().await;
                    return Ok(());
                }
                let order = *leave.borrow_and_update();
                let round = match order {
                    Leave::Stay => continue,
                    Leave::Disconnect(round) => {
                        client.disconnect().await?;
                        // Let the DISCONNECT go out before the connection is dropped.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while el.poll().await.is_ok() {}
                        })
                        .await;
                        round
                    }
                    Leave::Drop(round) => round,
                };
                drop(el);
                let (c, e) = connect();
                el = e;
                client = subscribe(c).await?;
                // Back when its subscriptions are acknowledged (the retained states follow).
                let mut acks = 0;
                let wanted = filters.len() + usize::from(!filters.contains(&"pvbus/#"));
                while acks < wanted {
                    match tokio::time::timeout(DEADLINE, el.poll()).await {
                        Err(_) => bail!("{name}: not resubscribed within {DEADLINE:?}"),
                        Ok(Err(e)) => bail!("{name}: {e}"),
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => acks += 1,
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            if !p.retain && !p.topic.ends_with("/status") {
                                live.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Ok(_)) => {}
                    }
                }
                let _ = reconnected.send(round);
            }
            ev = el.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if !p.retain && !p.topic.ends_with("/status") {
                        live.fetch_add(1, Ordering::Relaxed);
                    }
                    if p.topic == MARKER {
                        let k: u64 = std::str::from_utf8(&p.payload)?.parse()?;
                        let _ = marker.send(k);
                    }
                }
                Ok(_) => {}
                Err(e) => bail!("{name}: {e}"),
            },
        }
    }
}

/// Publishes `messages` at QoS 1 and waits for every acknowledgement.
async fn publish_acked(
    client: &AsyncClient,
    el: &mut EventLoop,
    messages: impl Iterator<Item = (String, String, bool)>,
) -> anyhow::Result<()> {
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut messages = messages.peekable();
    while messages.peek().is_some() || acked < sent {
        if let Some((topic, payload, retain)) = messages.peek().cloned() {
            // try_publish keeps the event loop turning while the request queue is full.
            if client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok()
            {
                messages.next();
                sent += 1;
                continue;
            }
        }
        match tokio::time::timeout(DEADLINE, el.poll()).await {
            Err(_) => bail!("publisher: {acked} of {sent} acknowledged within {DEADLINE:?}"),
            Ok(Err(e)) => bail!("publisher: {e}"),
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
        }
    }
    Ok(())
}

struct Sample {
    messages: u64,
    seconds: f64,
    rss_kib: u64,
    pss_kib: Option<u64>,
}

/// Publishes received by the subscribers so far (see [`Deliveries`]).
#[derive(Default)]
struct Counts {
    all: AtomicU64,
    live: AtomicU64,
}

/// What a run delivered: every publish the subscribers received (retained catch-ups
/// included), and the live ones (no retain flag, not a `status`), which can be counted
/// in advance.
struct Deliveries {
    all: u64,
    live: u64,
}

/// How fast to publish: as fast as the broker takes it, or `per_second` messages a
/// second, in batches every 10 ms (at a device's rate, each message reaches the broker in
/// a read of its own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Flat,
    PerSecond(u64),
}

async fn drive(
    addr: SocketAddr,
    pid: u32,
    total: u64,
    every: u64,
    rate: Rate,
) -> anyhow::Result<(Vec<Sample>, u64, Deliveries)> {
    let counts = Arc::new(Counts::default());
    let mut markers = Vec::new();
    let mut leaves = Vec::new();
    let mut backs = Vec::new();
    let mut tasks = Vec::new();
    for (name, filters) in SUBSCRIBERS {
        let (marker_tx, marker_rx) = watch::channel(0);
        let (leave_tx, leave_rx) = watch::channel(Leave::Stay);
        let (back_tx, back_rx) = watch::channel(0);
        tasks.push(tokio::spawn(subscriber(
            addr,
            name,
            filters,
            marker_tx,
            leave_rx,
            back_tx,
            counts.clone(),
        )));
        markers.push(marker_rx);
        leaves.push(leave_tx);
        backs.push(back_rx);
    }
    // The subscriptions reach the broker before the first message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (publisher, mut el) = AsyncClient::new(options(addr, "vedirect"), 1000);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut reconnects = 0u64;
    let mut n = 0u64;
    let mut round = 0u64;
    while n < total {
        let upto = (n + every).min(total);
        match rate {
            Rate::Flat => publish_acked(&publisher, &mut el, (n..upto).map(message)).await?,
            Rate::PerSecond(per_second) => {
                let batch = (per_second / 100).max(1);
                let mut at = n;
                while at < upto {
                    let due = started + Duration::from_secs_f64(at as f64 / per_second as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let end = (at + batch).min(upto);
                    publish_acked(&publisher, &mut el, (at..end).map(message)).await?;
                    at = end;
                }
            }
        }
        n = upto;
        round += 1;
        publish_acked(
            &publisher,
            &mut el,
            std::iter::once((MARKER.to_string(), round.to_string(), false)),
        )
        .await?;
        for (i, m) in markers.iter_mut().enumerate() {
            let name = SUBSCRIBERS[i].0;
            tokio::time::timeout(DEADLINE, m.wait_for(|k| *k >= round))
                .await
                .with_context(|| format!("{name} never got marker {round}"))??;
        }
        let s = procfs::sample(pid).context("sampling the broker")?;
        samples.push(Sample {
            messages: n,
            seconds: started.elapsed().as_secs_f64(),
            rss_kib: s.rss_kib,
            pss_kib: s.pss_kib,
        });
        // One subscriber leaves and comes back.
        let who = (round as usize) % SUBSCRIBERS.len();
        let order = if round.is_multiple_of(2) {
            Leave::Disconnect(round)
        } else {
            Leave::Drop(round)
        };
        leaves[who].send(order)?;
        tokio::time::timeout(DEADLINE, backs[who].wait_for(|r| *r >= round))
            .await
            .with_context(|| format!("{} never came back", SUBSCRIBERS[who].0))??;
        reconnects += 1;
    }
    let _ = publisher.disconnect().await;
    drop(leaves);
    for t in tasks {
        t.await??;
    }
    let deliveries = Deliveries {
        all: counts.all.load(Ordering::Relaxed),
        live: counts.live.load(Ordering::Relaxed),
    };
    Ok((samples, reconnects, deliveries))
}

/// MQTT topic matching of a filter (`+` one level, `#` the rest).
fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Live deliveries a loss-free broker makes for messages `0..total` and `markers` markers.
fn expected_live(total: u64, markers: u64) -> u64 {
    let per_message: u64 = (0..total)
        .map(|n| message(n).0)
        // Not counted as live on the subscribers' side either (see [`Deliveries`]).
        .filter(|topic| !topic.ends_with("/status"))
        .map(|topic| {
            SUBSCRIBERS
                .iter()
                .filter(|(_, filters)| filters.iter().any(|f| matches(f, &topic)))
                .count() as u64
        })
        .sum();
    per_message + markers * SUBSCRIBERS.len() as u64
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 {
        return None;
    }
    Some(points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / var)
}

/// Starts the broker alone, drives `total` messages through it, samples every `every`.
/// The warm-up is the first tenth of the run.
/// With `running` (an address and a pid), drives that broker instead of starting one.
pub fn run(
    pvbus: &Path,
    broker: BrokerKind,
    total: u64,
    every: u64,
    rate: Rate,
    running: Option<(SocketAddr, u32)>,
) -> anyhow::Result<Value> {
    if every == 0 || total < every * 10 {
        bail!("--messages must be at least 10 x --sample-every (got {total} and {every})");
    }
    let dir = tempfile::tempdir()?;
    let port = pvbus_testkit::free_port();
    let (addr, child) = match running {
        Some((addr, pid)) => (addr, Err(pid)),
        None => (
            SocketAddr::from(([127, 0, 0, 1], port)),
            Ok(start_broker_alone(pvbus, broker, dir.path(), port)?),
        ),
    };
    let pid = match &child {
        Ok(c) => c.pid(),
        Err(pid) => *pid,
    };
    let at_start = procfs::sample(pid)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (samples, reconnects, deliveries) = rt.block_on(drive(addr, pid, total, every, rate))?;
    drop(child);
    summarise(
        match running {
            Some(_) => "given".to_string(),
            None => format!("{broker:?}").to_lowercase(),
        },
        total,
        &at_start,
        &samples,
        reconnects,
        &deliveries,
        rate,
    )
}

fn summarise(
    broker: String,
    total: u64,
    at_start: &procfs::ProcSample,
    samples: &[Sample],
    reconnects: u64,
    deliveries: &Deliveries,
    rate: Rate,
) -> anyhow::Result<Value> {
    // One marker after each sample.
    let expected_live = expected_live(total, samples.len() as u64);
    let warm = total / 10;
    let at_warm = samples
        .iter()
        .find(|s| s.messages >= warm)
        .context("no sample after the warm-up")?;
    let last = samples.last().context("no sample")?;
    let after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.messages >= warm)
        .map(|s| (s.messages as f64 / 1e6, s.rss_kib as f64))
        .collect();
    let second_half: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.messages >= total / 2)
        .map(|s| (s.messages as f64 / 1e6, s.rss_kib as f64))
        .collect();
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let round1 = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
    Ok(json!({
        "bench": "broker_growth",
        "broker": broker,
        "pattern": "3 retained device states (~600 B JSON), site totals, relay state/mode/reason, rules status and supervisor table (retained); auto/set, decisions, heartbeats (not retained); availability (retained); QoS 1; subscribers relays, rules, homeassistant, tm1638, a pvbus/# monitor; one of them leaves (DISCONNECT or dropped socket, alternately) and comes back at every sample",
        "messages": total,
        "rate_per_s": match rate {
            Rate::Flat => None,
            Rate::PerSecond(r) => Some(r),
        },
        "deliveries": deliveries.all,
        "live_deliveries": deliveries.live,
        "live_deliveries_expected": expected_live,
        "live_deliveries_lost": expected_live as i64 - deliveries.live as i64,
        "reconnects": reconnects,
        "seconds": (last.seconds * 10.0).round() / 10.0,
        "messages_per_s": (total as f64 / last.seconds).round(),
        "rss_kib_at_start": at_start.rss_kib,
        "rss_kib_after_warmup": {"messages": at_warm.messages, "rss_kib": at_warm.rss_kib, "pss_kib": at_warm.pss_kib},
        "rss_kib_at_end": {"messages": last.messages, "rss_kib": last.rss_kib, "pss_kib": last.pss_kib},
        "rss_kib_peak": peak,
        "slope_kib_per_million_after_warmup": round1(slope(&after)),
        "slope_kib_per_million_second_half": round1(slope(&second_half)),
        "samples": samples.iter().map(|s| json!({
            "messages": s.messages,
            "seconds": (s.seconds * 10.0).round() / 10.0,
            "rss_kib": s.rss_kib,
            "pss_kib": s.pss_kib,
        })).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_has_every_kind_of_message_on_a_fixed_set_of_topics() {
        let messages: Vec<_> = (0..10_000).map(message).collect();
        let topics: std::collections::BTreeSet<&str> =
            messages.iter().map(|m| m.0.as_str()).collect();
        // The demo's topics and no more: a growing topic set would be a leak of the bench's.
        assert!(topics.len() < 30, "{topics:?}");
        for t in [
            "pvbus/vedirect/bmv/state",
            "pvbus/relays/pump/auto/set",
            "pvbus/rules/decisions",
            "pvbus/rules/heartbeat",
            "pvbus/relays/water_heater/reason",
        ] {
            assert!(topics.contains(t), "{t} missing from {topics:?}");
        }
        let retained = messages.iter().filter(|m| m.2).count();
        assert!(retained > 5_000 && retained < 10_000, "{retained}");
        let states: std::collections::BTreeSet<&str> = messages
            .iter()
            .filter(|m| m.0.ends_with("/state"))
            .map(|m| m.1.as_str())
            .collect();
        assert!(
            states.len() > 1000,
            "payloads change from message to message"
        );
    }

    #[test]
    fn topic_filters_match_as_mqtt_says() {
        assert!(matches("pvbus/#", "pvbus/relays/pump/state"));
        assert!(matches("pvbus/+/+/state", "pvbus/relays/pump/state"));
        assert!(!matches("pvbus/+/+/state", "pvbus/site/state"));
        assert!(matches("pvbus/relays/+/mode", "pvbus/relays/pump/mode"));
        assert!(!matches(
            "pvbus/relays/+/mode",
            "pvbus/relays/pump/mode/set"
        ));
        assert!(matches(MARKER, MARKER));
        // The first 8 messages: 3 device states (rules, Home Assistant, panel, monitor),
        // the site (monitor), a relay state (the same 4), a heartbeat (relays, monitor),
        // an availability (rules, Home Assistant, monitor), the process table (monitor).
        assert_eq!(expected_live(8, 0), 4 * 3 + 1 + 4 + 2 + 3 + 1);
        assert_eq!(expected_live(0, 2), 2 * SUBSCRIBERS.len() as u64);
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_curve() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 5.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 7.0)).collect();
        assert_eq!(slope(&flat), Some(0.0));
        assert_eq!(slope(&[(1.0, 1.0)]), None);
    }
}
