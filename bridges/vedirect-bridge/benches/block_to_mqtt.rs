//! Latency of the VE.Direct bridge: from the last byte of a text block written into a
//! pseudo-terminal (the device side) to the JSON state received by an MQTT subscriber,
//! through the bridge's reader thread, parser, decoder, bus client and a real mosquitto.
//! Prints JSON and writes it to target/bench/vedirect_block_to_mqtt.json.
//!
//! Run: `cargo bench -p pvbus-vedirect-bridge --bench block_to_mqtt` (needs `mosquitto`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pvbus_bus::{Bus, BusConfig, Shutdown};
use pvbus_vedirect_bridge::Bridge;
use pvbus_vedirect_bridge::config::{PortConfig, VedirectConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serialport::{SerialPort, TTYPort};

const SAMPLES: usize = 300;
const WARMUP: usize = 20;

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn block(i: usize) -> Vec<u8> {
    let v = (12_000 + i).to_string();
    let fields = [
        ("PID", "0xA053"),
        ("FW", "163"),
        ("SER#", "HQ2150BENCH"),
        ("V", v.as_str()),
        ("I", "5200"),
        ("VPV", "31250"),
        ("PPV", "75"),
        ("CS", "3"),
        ("MPPT", "2"),
        ("OR", "0x00000000"),
        ("ERR", "0"),
        ("LOAD", "ON"),
        ("IL", "300"),
        ("H19", "123456"),
        ("H20", "123"),
        ("H21", "410"),
        ("H22", "140"),
        ("H23", "450"),
        ("HSDS", "42"),
    ];
    vedirect::text::encode_block(&fields).expect("valid block")
}

fn main() {
    let port = pvbus_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    // mosquitto leaves Nagle's algorithm on unless told; pvbus's client sets TCP_NODELAY.
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"),
    )
    .unwrap();
    let _broker = pvbus_testkit::Child::spawn(
        "mosquitto",
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(pvbus_testkit::wait_for_listener(
        addr,
        Duration::from_secs(5)
    ));
    let _ = TcpStream::connect(addr);

    // The device side: a pty whose slave the bridge opens, like `pvbus sim vedirect`.
    let (mut master, slave) = TTYPort::pair().expect("a pty");
    let slave_path = slave.name().expect("pty path");

    // The bridge, in its own thread with the one-thread runtime `pvbus` uses.
    let (_shutdown, trigger) = Shutdown::manual();
    {
        let slave_path = slave_path.clone();
        let shutdown = _shutdown.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let cfg = VedirectConfig {
                    ports: vec![PortConfig {
                        path: slave_path.into(),
                        name: Some("bench".into()),
                    }],
                    auto_detect: false,
                    ..VedirectConfig::default()
                };
                let (bus, inbox) = Bus::connect(&BusConfig::at(addr), "vedirect");
                let (bridge, events) = Bridge::new(cfg, bus.clone()).unwrap();
                bridge.run(events, inbox, shutdown).await.unwrap();
                bus.shutdown().await;
            });
        });
    }

    // The subscriber, timestamping each state on arrival.
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut opts = MqttOptions::new("bench-subscriber", "127.0.0.1", port);
            opts.set_keep_alive(Duration::from_secs(30));
            let (client, mut el) = AsyncClient::new(opts, 100);
            let mut net = rumqttc::NetworkOptions::new();
            net.set_tcp_nodelay(true);
            el.set_network_options(net);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe("pvbus/vedirect/+/state", QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let at = Instant::now();
                        let text = String::from_utf8_lossy(&p.payload).into_owned();
                        if tx.send((text, at)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    });

    // Wait until the bridge reads the pty and the subscriber receives.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the bridge never published");
        master.write_all(&block(0)).unwrap();
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
    }
    while rx.try_recv().is_ok() {}

    let mut micros = Vec::with_capacity(SAMPLES);
    for i in 1..=(WARMUP + SAMPLES) {
        let bytes = block(i);
        master.write_all(&bytes).unwrap();
        master.flush().unwrap();
        let written = Instant::now();
        let want = format!("\"battery_voltage\":{}", (12_000 + i) as f64 / 1000.0);
        let arrived = loop {
            let (text, at) = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("block {i} never arrived"));
            if text.contains(&want) {
                break at;
            }
        };
        if i > WARMUP {
            micros.push(arrived.saturating_duration_since(written).as_micros());
        }
        // Devices send one block per second; a short gap keeps samples independent.
        std::thread::sleep(Duration::from_millis(20));
    }
    trigger.fire();
    drop(slave);

    micros.sort_unstable();
    // Resident memory of this whole process: the bridge plus the test subscriber.
    let rss_kb = pvbus_testkit::rss_kib(std::process::id());
    let result = serde_json::json!({
        "process_rss_kb_bridge_plus_subscriber": rss_kb,
        "bench": "vedirect_block_to_mqtt",
        "what": "last byte of a VE.Direct text block written to a pty -> JSON state received by an MQTT subscriber (bridge in-process, real mosquitto on loopback)",
        "samples": micros.len(),
        "block_bytes": block(1).len(),
        "latency_us": {
            "p50": percentile(&micros, 50.0),
            "p90": percentile(&micros, 90.0),
            "p99": percentile(&micros, 99.0),
            "min": micros[0],
            "max": micros[micros.len() - 1],
        },
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("vedirect_block_to_mqtt.json"), text);
    }
}
