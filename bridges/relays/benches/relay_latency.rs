//! Latency of the relay bridge: from an `auto/set` published by a client to the
//! simulated pin changing (seen by a wire-level hook on the board), and to the
//! client receiving the retained `state` acknowledgement. A real mosquitto sits
//! between them. Prints JSON and writes it to target/bench/relay_latency.json.
//!
//! Run: `cargo bench -p pvbus-relays --bench relay_latency` (needs `mosquitto`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_bus::{BusConfig, Shutdown};
use pvbus_hardware::sim::{HostChange, Wire, WireModel};
use pvbus_hardware::{Level, SimBoard};
use pvbus_relays::{OnStale, RelayConfig, RelaysConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const SAMPLES: usize = 400;
const WARMUP: usize = 20;
const PIN: u8 = 17;

/// Reports the instant the host drives the relay pin to a new level.
struct PinWatch(mpsc::UnboundedSender<(Level, Instant)>);

impl WireModel for PinWatch {
    fn host_changed(&mut self, change: HostChange, _wire: &mut Wire<'_>) {
        if change.pin == PIN
            && let Some(level) = change.drive
        {
            let _ = self.0.send((level, Instant::now()));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut micros: Vec<u128>) -> serde_json::Value {
    micros.sort_unstable();
    serde_json::json!({
        "p50": percentile(&micros, 50.0),
        "p99": percentile(&micros, 99.0),
        "min": micros[0],
        "max": micros[micros.len() - 1],
        "mean": micros.iter().sum::<u128>() / micros.len() as u128,
    })
}

fn main() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // mosquitto leaves Nagle's algorithm on unless told: with it, a small
    // message can wait for a delayed ACK (40 ms) on loopback.
    let broker_config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &broker_config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&broker_config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto must be installed");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let board = SimBoard::open(dir.path().join("board")).unwrap();
    let (pin_tx, mut pin_rx) = mpsc::unbounded_channel();
    board.attach(Box::new(PinWatch(pin_tx)));
    let config = RelaysConfig {
        state_dir: dir.path().join("state"),
        relay: vec![RelayConfig {
            id: "bench".into(),
            name: None,
            pin: PIN,
            active_low: false,
            on_stale: OnStale::Off,
        }],
        ..RelaysConfig::default()
    };
    let bus = BusConfig {
        external_broker: Some(addr.to_string()),
        ..BusConfig::default()
    };

    // The bridge runs as in production: its own single-threaded runtime.
    let (shutdown, trigger) = Shutdown::manual();
    let relays = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(pvbus_relays::run(config, bus, Box::new(board), shutdown))
            .unwrap();
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pin_us, ack_us) = runtime.block_on(async move {
        let mut options = MqttOptions::new("bench-client", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        // As every pvbus process does: small messages, latency over packet count.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        client
            .subscribe("pvbus/relays/bench/state", QoS::AtLeastOnce)
            .await
            .unwrap();
        client
            .subscribe("pvbus/relays/status", QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = ack_tx.send((p.topic, p.payload, Instant::now()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        // Wait for the bridge to be online.
        loop {
            let (topic, payload, _) = ack_rx.recv().await.unwrap();
            if topic.ends_with("/status") && &payload[..] == b"online" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        while ack_rx.try_recv().is_ok() {}
        while pin_rx.try_recv().is_ok() {}

        let mut pin_us = Vec::new();
        let mut ack_us = Vec::new();
        for i in 0..SAMPLES + WARMUP {
            let on = i % 2 == 0;
            let start = Instant::now();
            client
                .publish(
                    "pvbus/relays/bench/auto/set",
                    QoS::AtLeastOnce,
                    false,
                    if on { "ON" } else { "OFF" },
                )
                .await
                .unwrap();
            let (level, changed) = tokio::time::timeout(Duration::from_secs(5), pin_rx.recv())
                .await
                .expect("the pin changed")
                .unwrap();
            assert_eq!(level == Level::High, on);
            let expected: &[u8] = if on { b"ON" } else { b"OFF" };
            let acked = loop {
                let (topic, payload, at) =
                    tokio::time::timeout(Duration::from_secs(5), ack_rx.recv())
                        .await
                        .expect("the state was acknowledged")
                        .unwrap();
                if topic.ends_with("/state") && &payload[..] == expected {
                    break at;
                }
            };
            if i >= WARMUP {
                pin_us.push(changed.duration_since(start).as_micros());
                ack_us.push(acked.duration_since(start).as_micros());
            }
        }
        (pin_us, ack_us)
    });
    trigger.fire();
    relays.join().unwrap();
    let _ = broker.kill();
    let _ = broker.wait();

    let result = serde_json::json!({
        "benchmark": "relay_auto_set_latency",
        "what": "client publishes pvbus/relays/<id>/auto/set via mosquitto; pin = simulated GPIO driven; ack = retained state received by the client (after fsync of the history)",
        "samples": pin_us.len(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "pin_latency_us": summary(pin_us),
        "ack_latency_us": summary(ack_us),
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("relay_latency.json"), text);
    }
}
