//! Publish-to-delivery latency through the embedded broker (in-process), one message at a
//! time, QoS 1 publisher to QoS 1 subscriber; or through another broker given by
//! `BENCH_BROKER_ADDR`. Prints JSON (microseconds).
//!
//! cargo run -p pvbus-broker --example latency_bench

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pvbus_broker::{BrokerConfig, EmbeddedBroker};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const ROUNDS: usize = 200;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (addr, _broker) = match std::env::var("BENCH_BROKER_ADDR") {
        Ok(addr) => (addr.parse().expect("BENCH_BROKER_ADDR"), None),
        Err(_) => {
            let broker = EmbeddedBroker::start(BrokerConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                data_dir: dir.path().to_path_buf(),
                ..BrokerConfig::default()
            })
            .expect("broker");
            (broker.local_addr(), Some(broker))
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!("{}", runtime.block_on(measure(addr)));
}

async fn measure(addr: SocketAddr) -> String {
    let options = |id: &str| MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (subscriber, mut sub_events) = AsyncClient::new(options("lat-sub"), 100);
    subscriber
        .subscribe("pvbus/latency", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.expect("subscriber") {
            break;
        }
    }
    let (publisher, mut pub_events) = AsyncClient::new(options("lat-pub"), 100);
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let sent = Instant::now();
        publisher
            .publish("pvbus/latency", QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("publish");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), sub_events.poll())
                .await
                .expect("delivery within 5 s")
                .expect("subscriber");
            if let Event::Incoming(Packet::Publish(_)) = event {
                break;
            }
        }
        samples.push(sent.elapsed().as_micros() as u64);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "{{\"rounds\":{ROUNDS},\"latency_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{}}}}}",
        at(0.5),
        at(0.9),
        at(0.99),
        samples[samples.len() - 1]
    )
}
