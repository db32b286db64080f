//! The same broker checks against the embedded broker (`pvbus broker`, a child process) and
//! a real mosquitto: what pvbus processes and Home Assistant rely on from any broker.

#[path = "support/brokers.rs"]
mod brokers;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brokers::{BrokerKind, BrokerProcess, ChildGuard};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const RETAINED_TOPICS: usize = 2000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client(id: &str, addr: SocketAddr) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 4096)
}

/// Publishes `count` retained messages under `pvbus/test/` at QoS 1 and waits for all acks.
async fn seed_retained(addr: SocketAddr, count: usize) {
    let (client, mut events) = client("seeder", addr);
    for i in 0..count {
        let payload = format!("{{\"ts\":1764040000,\"pv_power\":{i}}}");
        client
            .publish(
                format!("pvbus/test/dev{i}/state"),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .expect("queue publish");
    }
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < count {
        let event = tokio::time::timeout_at(deadline.into(), events.poll())
            .await
            .expect("all PUBACKs within 60 s")
            .expect("seeder connection");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    client.disconnect().await.expect("disconnect");
    while events.poll().await.is_ok() {}
}

/// Subscribes and gathers retained messages until `expected` topics or 3 s of silence.
async fn catch_up(
    addr: SocketAddr,
    id: &str,
    filter: &str,
    qos: QoS,
    expected: usize,
) -> BTreeMap<String, Vec<u8>> {
    let (client, mut events) = client(id, addr);
    client.subscribe(filter, qos).await.expect("subscribe");
    let mut got = BTreeMap::new();
    while got.len() < expected {
        match tokio::time::timeout(Duration::from_secs(3), events.poll()).await {
            Err(_) => break,
            Ok(Err(error)) => panic!("{id}: connection lost: {error}"),
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                assert!(
                    publish.retain,
                    "{id}: catch-up message {} without retain",
                    publish.topic
                );
                assert_eq!(
                    publish.qos, qos,
                    "{id}: delivered at the subscription's QoS"
                );
                got.insert(publish.topic.clone(), publish.payload.to_vec());
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = client.disconnect().await;
    got
}

fn retained_catch_up(kind: BrokerKind) {
    let broker = BrokerProcess::start(kind);
    runtime().block_on(async {
        seed_retained(broker.addr, RETAINED_TOPICS).await;
        for (qos, id) in [
            (QoS::AtMostOnce, "catch-up-qos0"),
            (QoS::AtLeastOnce, "catch-up-qos1"),
        ] {
            let started = Instant::now();
            let got = catch_up(broker.addr, id, "pvbus/test/#", qos, RETAINED_TOPICS).await;
            eprintln!(
                "{kind:?}: {} of {RETAINED_TOPICS} retained messages at {qos:?} in {:?}",
                got.len(),
                started.elapsed()
            );
            assert_eq!(
                got.len(),
                RETAINED_TOPICS,
                "{kind:?} retained catch-up at {qos:?}"
            );
            assert_eq!(
                got["pvbus/test/dev1234/state"],
                b"{\"ts\":1764040000,\"pv_power\":1234}"
            );
        }
    });
}

fn last_will_on_kill_9(kind: BrokerKind) {
    let broker = BrokerProcess::start(kind);
    let addr = broker.addr;
    runtime().block_on(async {
        let (watcher, mut watcher_events) = client("will-watcher", addr);
        watcher
            .subscribe("pvbus/willer/status", QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = watcher_events.poll().await.unwrap() {
                break;
            }
        }
        // A retained marker the doomed client prints once it is connected and subscribed.
        let (marker, mut marker_events) = client("marker", addr);
        marker
            .publish("pvbus/willer/ready", QoS::AtLeastOnce, true, "ready")
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = marker_events.poll().await.unwrap() {
                break;
            }
        }

        let mut doomed = ChildGuard(
            Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
                .args(["-i", "willer", "-q", "1", "-t", "pvbus/willer/ready"])
                .args([
                    "--will-topic",
                    "pvbus/willer/status",
                    "--will-payload",
                    "offline",
                ])
                .args(["--will-retain", "--will-qos", "1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_sub (apt install mosquitto-clients)"),
        );
        let stdout = doomed.0.stdout.take().unwrap();
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(first_line.trim(), "ready");

        doomed.0.kill().unwrap(); // SIGKILL
        let killed = Instant::now();
        let will = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Event::Incoming(Packet::Publish(publish)) =
                    watcher_events.poll().await.unwrap()
                {
                    return publish;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: no last will within 10 s of SIGKILL"));
        eprintln!(
            "{kind:?}: last will arrived {:?} after SIGKILL",
            killed.elapsed()
        );
        assert_eq!(&will.payload[..], b"offline");

        let retained = catch_up(
            addr,
            "late-watcher",
            "pvbus/willer/status",
            QoS::AtLeastOnce,
            1,
        )
        .await;
        assert_eq!(
            retained.get("pvbus/willer/status").map(Vec::as_slice),
            Some(&b"offline"[..])
        );
    });
}

/// What the resubscribing client saw.
#[derive(Debug)]
enum Seen {
    ConnAck,
    Publish { topic: String, retain: bool },
}

fn reconnect_after_restart(kind: BrokerKind) {
    const SEEDED: usize = 100;
    let mut broker = BrokerProcess::start(kind);
    let addr = broker.addr;
    let runtime = runtime();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    runtime.block_on(seed_retained(addr, SEEDED));
    // A client that (re)subscribes on every ConnAck, as pvbus processes do.
    let (resub, mut events) = client("resubscriber", addr);
    runtime.spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    resub.subscribe("pvbus/#", QoS::AtLeastOnce).await.unwrap();
                    let _ = seen_tx.send(Seen::ConnAck);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let _ = seen_tx.send(Seen::Publish {
                        topic: publish.topic.clone(),
                        retain: publish.retain,
                    });
                }
                Ok(_) => {}
                // The broker is down: rumqttc reconnects on the next poll.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let retained_after_connack = |seen: &mut mpsc::UnboundedReceiver<Seen>| {
        runtime.block_on(async {
            let mut topics = std::collections::BTreeSet::new();
            let mut connacked = false;
            let deadline = Instant::now() + Duration::from_secs(20);
            while topics.len() < SEEDED {
                let next = tokio::time::timeout_at(deadline.into(), seen.recv()).await;
                match next {
                    Ok(Some(Seen::ConnAck)) => {
                        connacked = true;
                        topics.clear();
                    }
                    Ok(Some(Seen::Publish { topic, retain })) => {
                        if connacked && retain && topic.starts_with("pvbus/test/") {
                            topics.insert(topic);
                        }
                    }
                    _ => break,
                }
            }
            topics.len()
        })
    };
    assert_eq!(
        retained_after_connack(&mut seen),
        SEEDED,
        "{kind:?}: first connection"
    );

    broker.terminate();
    let ready = broker.restart();
    eprintln!("{kind:?}: restart (SIGTERM, start again) ready in {ready:?}");
    let after = retained_after_connack(&mut seen);
    eprintln!("{kind:?}: {after} of {SEEDED} retained messages back after the restart");
    assert_eq!(after, SEEDED, "{kind:?}: retained state after restart");

    runtime.block_on(async {
        let (talker, mut talker_events) = client("talker", addr);
        talker
            .publish("pvbus/live/after-restart", QoS::AtLeastOnce, false, "hi")
            .await
            .unwrap();
        tokio::spawn(async move { while talker_events.poll().await.is_ok() {} });
        let live = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match seen.recv().await {
                    Some(Seen::Publish {
                        topic,
                        retain: false,
                    }) if topic == "pvbus/live/after-restart" => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        })
        .await;
        assert_eq!(live, Ok(true), "{kind:?}: live message after the restart");
    });
}

fn connect_disconnect_cycles(kind: BrokerKind) {
    let broker = BrokerProcess::start(kind);
    let started = Instant::now();
    let refused: Vec<(usize, Option<u8>)> = (0..500)
        .map(|i| (i, brokers::mqtt_connack(broker.addr, &format!("cycle-{i}"))))
        .filter(|(_, code)| *code != Some(0))
        .collect();
    eprintln!(
        "{kind:?}: 500 connect/disconnect cycles in {:?}",
        started.elapsed()
    );
    assert!(
        refused.is_empty(),
        "{kind:?}: refused or unanswered: {refused:?}"
    );
}

/// Embedded only (mosquitto saves on exit or every `autosave_interval`): retained messages
/// saved by the coalesced flush survive a SIGKILL, as they would a power cut.
#[test]
fn embedded_retained_survive_sigkill_after_the_flush_interval() {
    const SEEDED: usize = 100;
    let mut broker = BrokerProcess::start_with_env(
        BrokerKind::Embedded,
        &[("PVBUS_BROKER__RETAINED_FLUSH_SECS", "1")],
    );
    let runtime = runtime();
    runtime.block_on(seed_retained(broker.addr, SEEDED));
    let file = broker.data_dir().join("broker").join("retained.bin");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The flush is 1 s after the first change; the file must then hold all 100 topics.
    while !std::fs::read(&file).is_ok_and(|bytes| {
        String::from_utf8_lossy(&bytes).contains(&format!("pvbus/test/dev{}/state", SEEDED - 1))
    }) {
        assert!(
            Instant::now() < deadline,
            "retained.bin not written within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.kill();
    let ready = broker.restart();
    eprintln!("Embedded: restart after SIGKILL ready in {ready:?}");
    let got = runtime.block_on(catch_up(
        broker.addr,
        "after-kill",
        "pvbus/test/#",
        QoS::AtLeastOnce,
        SEEDED,
    ));
    assert_eq!(got.len(), SEEDED);
}

macro_rules! against_both_brokers {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use super::*;
            #[test]
            fn embedded() {
                super::$check(BrokerKind::Embedded);
            }
            #[test]
            fn mosquitto() {
                super::$check(BrokerKind::Mosquitto);
            }
        }
    )*};
}

against_both_brokers!(
    retained_catch_up,
    last_will_on_kill_9,
    reconnect_after_restart,
    connect_disconnect_cycles,
);
