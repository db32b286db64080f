//! Memory of the embedded broker under a Pi-like load, measured from outside: this program
//! runs the broker as a child process of itself (`rss_bench serve ADDR DIR`), loads it with
//! rumqttc clients, and prints the child's RSS as JSON.
//!
//! cargo run --release -p pvbus-broker --example rss_bench

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_broker::{BrokerConfig, EmbeddedBroker};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const TOPICS: usize = 2000;
const SUBSCRIBERS: usize = 4;
const UPDATE_ROUNDS: usize = 50;

/// `BENCH_ROUNDS` and `BENCH_SUB_QOS` (0 or 1) override the defaults for quick runs.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve(
            args[2].parse().expect("listen address"),
            args[3].clone().into(),
        );
        return;
    }
    if let (Ok(addr), Ok(pid)) = (
        std::env::var("BENCH_BROKER_ADDR"),
        std::env::var("BENCH_BROKER_PID"),
    ) {
        // Another broker (mosquitto...) already running, for comparison.
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let report = runtime.block_on(load(
            addr.parse().expect("BENCH_BROKER_ADDR"),
            pid.parse().expect("BENCH_BROKER_PID"),
        ));
        println!("{report}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "serve",
            &addr.to_string(),
            &dir.path().display().to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("broker child");
    let pid = child.id();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime.block_on(load(addr, pid));
    let _ = child.kill();
    let _ = child.wait();
    println!("{report}");
}

fn serve(listen: SocketAddr, data_dir: std::path::PathBuf) {
    let broker = EmbeddedBroker::start(BrokerConfig {
        listen,
        data_dir,
        segment_size: env_or("BENCH_SEGMENT_SIZE", BrokerConfig::default().segment_size),
        segment_count: env_or("BENCH_SEGMENT_COUNT", BrokerConfig::default().segment_count),
        ..BrokerConfig::default()
    })
    .expect("broker start");
    // Until SIGTERM (then save, like `pvbus broker`) or SIGKILL.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        term.recv().await;
    });
    broker.shutdown().expect("shutdown");
}

/// RSS and peak RSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn connect(id: &str, addr: SocketAddr) -> (AsyncClient, rumqttc::EventLoop) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        let (client, mut events) = AsyncClient::new(options, 4096);
        match events.poll().await {
            Ok(_) => return (client, events),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("broker not reachable: {error}"),
        }
    }
}

/// Publishes one round of `TOPICS` retained states at QoS 1 and waits for the acks.
async fn publish_round(client: &AsyncClient, events: &mut rumqttc::EventLoop, round: usize) {
    for i in 0..TOPICS {
        let payload = format!(
            "{{\"ts\":{},\"battery_voltage\":13.{:02},\"pv_power\":{},\"charge_state\":\"float\"}}",
            1_764_040_000 + round,
            i % 100,
            round * 10 + i
        );
        client
            .publish(
                format!("pvbus/bench/dev{i}/state"),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .expect("publish");
    }
    let mut acked = 0;
    while acked < TOPICS {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publisher") {
            acked += 1;
        }
    }
}

async fn load(addr: SocketAddr, pid: u32) -> String {
    let (publisher, mut publisher_events) = connect("bench-publisher", addr).await;
    let idle = rss_kib(pid);
    publish_round(&publisher, &mut publisher_events, 0).await;
    let seeded = rss_kib(pid);

    // A few subscribers to everything, as Home Assistant and the pvbus processes are.
    let mut received = Vec::new();
    for n in 0..SUBSCRIBERS {
        let (subscriber, mut events) = connect(&format!("bench-sub{n}"), addr).await;
        subscriber
            .subscribe(
                "pvbus/#",
                if env_or("BENCH_SUB_QOS", 1) == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                },
            )
            .await
            .expect("subscribe");
        let (count_tx, count_rx) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            let _keep = subscriber;
            let mut count = 0;
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = event {
                    count += 1;
                    let _ = count_tx.send(count);
                }
            }
        });
        received.push(count_rx);
    }
    for rx in &mut received {
        let _ = rx.wait_for(|count| *count >= TOPICS).await;
    }
    let subscribed = rss_kib(pid);

    let started = Instant::now();
    let rounds = env_or("BENCH_ROUNDS", UPDATE_ROUNDS);
    for round in 1..=rounds {
        publish_round(&publisher, &mut publisher_events, round).await;
    }
    let expected = TOPICS * (rounds + 1);
    for rx in &mut received {
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            rx.wait_for(|count| *count >= expected),
        )
        .await;
    }
    let after_updates = rss_kib(pid);
    let delivered: Vec<usize> = received.iter().map(|rx| *rx.borrow()).collect();
    format!(
        "{{\"topics\":{TOPICS},\"subscribers\":{SUBSCRIBERS},\"update_rounds\":{rounds},\
         \"rss_kib\":{{\"idle\":{},\"retained_seeded\":{},\"subscribed\":{},\"after_updates\":{},\
         \"peak\":{}}},\"updates_seconds\":{:.1},\"delivered_per_subscriber\":{:?},\
         \"expected_per_subscriber\":{expected}}}",
        idle.0,
        seeded.0,
        subscribed.0,
        after_updates.0,
        after_updates.1,
        started.elapsed().as_secs_f64(),
        delivered
    )
}
