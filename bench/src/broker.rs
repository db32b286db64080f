//! The broker under pvbus's load, the embedded one and a mosquitto side by side, each
//! alone on a free port, driven by rumqttc clients like pvbus's own:
//! - retained catch-up: a newcomer subscribing to `pvbus/#` gets every retained state
//!   (one JSON object per device, as the bridges publish them);
//! - fan-out: one publisher, every process subscribed to `pvbus/#`;
//! - reconnect storm: every process connecting at once and catching up.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::report::percentile;
use crate::stack::{BrokerKind, start_broker_alone};

/// Retained device states of a large home (the demo has 6).
const RETAINED: usize = 200;
/// Clients of a full stack: broker status, vedirect, relays, rules, homeassistant,
/// tm1638, lcd, plugins, supervisor, and a person's `mosquitto_sub`.
const CLIENTS: usize = 10;
const FANOUT_MESSAGES: usize = 1000;
const ROUNDS: usize = 20;
const DEADLINE: Duration = Duration::from_secs(30);

fn state(i: usize) -> String {
    // About the size of a BMV's state (the union of its two blocks).
    let mut v = json!({"ts": 1_764_040_000 + i, "battery_voltage": 12.85, "battery_current": -1.2});
    for k in 0..30 {
        v[format!("reading_{k}")] = json!(k as f64 * 1.5);
    }
    v.to_string()
}

fn client(addr: SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_inflight(100);
    AsyncClient::new(opts, 1000)
}

/// Connects, subscribes to `filter`, and returns when `wanted` publishes were received.
async fn receive(addr: SocketAddr, id: String, filter: &str, wanted: usize) -> anyhow::Result<()> {
    let (c, mut el) = client(addr, &id);
    c.subscribe(filter, QoS::AtLeastOnce).await?;
    let mut got = 0;
    while got < wanted {
        match tokio::time::timeout(DEADLINE, el.poll()).await {
            Err(_) => bail!("{id}: {got} of {wanted} messages within {DEADLINE:?}"),
            Ok(Err(e)) => bail!("{id}: {e}"),
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => got += 1,
            Ok(Ok(_)) => {}
        }
    }
    let _ = c.disconnect().await;
    Ok(())
}

/// Publishes `messages` at QoS 1 and returns once the broker acknowledged them all.
async fn publish(
    addr: SocketAddr,
    id: &str,
    messages: Vec<(String, String, bool)>,
) -> anyhow::Result<()> {
    let (c, mut el) = client(addr, id);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload, retain) in messages {
            if c.publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .is_err()
            {
                break;
            }
        }
        c
    });
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout(DEADLINE, el.poll()).await {
            Err(_) => bail!("{id}: {acked} of {total} acknowledged within {DEADLINE:?}"),
            Ok(Err(e)) => bail!("{id}: {e}"),
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
        }
    }
    let c = sender.await?;
    let _ = c.disconnect().await;
    Ok(())
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let r = |v: Option<f64>| v.map(|v| (v * 100.0).round() / 100.0);
    json!({"runs": ms.len(), "p50_ms": r(percentile(&ms, 50.0)), "max_ms": r(ms.last().copied())})
}

async fn scenarios(addr: SocketAddr) -> anyhow::Result<Value> {
    let retained: Vec<_> = (0..RETAINED)
        .map(|i| (format!("pvbus/vedirect/device_{i}/state"), state(i), true))
        .collect();
    publish(addr, "bench-retained", retained).await?;

    let mut catch_up = Vec::new();
    for round in 0..ROUNDS {
        let t = Instant::now();
        receive(addr, format!("bench-newcomer-{round}"), "pvbus/#", RETAINED).await?;
        catch_up.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let mut storm = Vec::new();
    for round in 0..ROUNDS {
        let t = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(receive(
                    addr,
                    format!("bench-storm-{round}-{i}"),
                    "pvbus/#",
                    RETAINED,
                ))
            })
            .collect();
        for c in clients {
            c.await??;
        }
        storm.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Fan-out: subscribers on a topic with no retained message, so that they count only
    // the live ones.
    let mut fanout = Vec::new();
    for round in 0..5 {
        let subscribers: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(receive(
                    addr,
                    format!("bench-fan-{round}-{i}"),
                    "pvbus/fanout/#",
                    FANOUT_MESSAGES,
                ))
            })
            .collect();
        // Let the subscriptions reach the broker (on loopback they take a few ms); the
        // pause is not part of the timing, which starts at the publisher's connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let messages: Vec<_> = (0..FANOUT_MESSAGES)
            .map(|i| (format!("pvbus/fanout/{}", i % 10), state(i), false))
            .collect();
        publish(addr, &format!("bench-fan-pub-{round}"), messages).await?;
        for s in subscribers {
            s.await??;
        }
        fanout.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let fan = summary(fanout.clone());
    let best = fanout.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(json!({
        "retained_catch_up": {"retained": RETAINED, "payload_bytes": state(0).len(), "time": summary(catch_up)},
        "reconnect_storm": {"clients": CLIENTS, "retained_each": RETAINED, "time_until_all_caught_up": summary(storm)},
        "fan_out": {"subscribers": CLIENTS, "messages": FANOUT_MESSAGES, "deliveries": CLIENTS * FANOUT_MESSAGES,
                     "time": fan, "best_deliveries_per_s": ((CLIENTS * FANOUT_MESSAGES) as f64 / best * 1e3).round()},
    }))
}

/// Runs the scenarios against each broker in turn.
pub fn run(pvbus: &Path) -> anyhow::Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut results = serde_json::Map::new();
    for kind in [BrokerKind::Embedded, BrokerKind::Mosquitto] {
        let dir = tempfile::tempdir()?;
        let port = pvbus_testkit::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let _broker = start_broker_alone(pvbus, kind, dir.path(), port)?;
        let name = format!("{kind:?}").to_lowercase();
        let result = rt
            .block_on(scenarios(addr))
            .with_context(|| format!("against {name}"))?;
        results.insert(name, result);
    }
    Ok(json!({"bench": "broker", "brokers": results}))
}
