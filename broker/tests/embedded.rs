//! The embedded broker in-process, driven over real TCP by rumqttc clients and raw MQTT bytes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use pvbus_broker::{BrokerConfig, BrokerError, BrokerUser, EmbeddedBroker, LanListener};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

fn config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..BrokerConfig::default()
    }
}

fn client(id: &str, addr: SocketAddr) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(options, 4096)
}

/// Publishes `count` retained messages `pvbus/test/<i>/state` at QoS 1 and waits for every
/// PUBACK, so that they are all in the broker when it returns.
async fn publish_retained(addr: SocketAddr, count: usize, tag: &str) {
    let (client, mut events) = client("seeder", addr);
    for i in 0..count {
        let payload = format!("{{\"ts\":1764040000,\"n\":{i},\"tag\":\"{tag}\"}}");
        client
            .publish(
                format!("pvbus/test/{i}/state"),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked < count {
        let event = tokio::time::timeout_at(deadline.into(), events.poll())
            .await
            .expect("PUBACKs in time")
            .expect("seeder connection");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    // Let the DISCONNECT reach the broker.
    while events.poll().await.is_ok() {}
}

/// Subscribes `filter` at `qos` and collects retained messages until `expected` distinct
/// topics arrived or `quiet` passes without any message.
async fn collect_retained(
    addr: SocketAddr,
    id: &str,
    filter: &str,
    qos: QoS,
    expected: usize,
) -> BTreeMap<String, (Vec<u8>, QoS)> {
    let (client, mut events) = client(id, addr);
    client.subscribe(filter, qos).await.unwrap();
    let mut got = BTreeMap::new();
    let quiet = Duration::from_secs(2);
    while got.len() < expected {
        match tokio::time::timeout(quiet, events.poll()).await {
            Err(_) => break,
            Ok(Err(error)) => panic!("subscriber connection: {error}"),
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                assert!(publish.retain, "catch-up message without retain flag");
                got.insert(
                    publish.topic.clone(),
                    (publish.payload.to_vec(), publish.qos),
                );
            }
            Ok(Ok(_)) => {}
        }
    }
    let _ = client.disconnect().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retained_message_reaches_new_subscribers_at_qos_0_and_1() {
    let dir = tempfile::tempdir().unwrap();
    let broker = tokio::task::spawn_blocking({
        let config = config(dir.path());
        move || EmbeddedBroker::start(config).unwrap()
    })
    .await
    .unwrap();
    let addr = broker.local_addr();
    publish_retained(addr, 2000, "a").await;

    for (qos, id) in [(QoS::AtMostOnce, "sub0"), (QoS::AtLeastOnce, "sub1")] {
        let got = collect_retained(addr, id, "pvbus/test/#", qos, 2000).await;
        assert_eq!(got.len(), 2000, "retained catch-up at {qos:?}");
        assert!(got.values().all(|(_, delivered)| *delivered == qos));
        let (payload, _) = &got["pvbus/test/1999/state"];
        assert!(String::from_utf8_lossy(payload).contains("\"n\":1999"));
    }
    // The subscriber that acked 2000 injected QoS 1 messages still gets live QoS 1 traffic.
    let (listener, mut events) = client("live", addr);
    listener
        .subscribe("pvbus/live", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (talker, mut talker_events) = client("talker", addr);
    tokio::spawn(async move { while talker_events.poll().await.is_ok() {} });
    let mut live = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut subscribed = false;
    while live < 150 {
        let event = tokio::time::timeout_at(deadline.into(), events.poll())
            .await
            .expect("live messages in time")
            .unwrap();
        match event {
            Event::Incoming(Packet::SubAck(_)) if !subscribed => {
                subscribed = true;
                for i in 0..150 {
                    talker
                        .publish("pvbus/live", QoS::AtLeastOnce, false, i.to_string())
                        .await
                        .unwrap();
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                assert!(!publish.retain, "live message must not carry retain");
                live += 1;
            }
            _ => {}
        }
    }
    tokio::task::spawn_blocking(move || broker.shutdown().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_survive_a_restart_and_empty_non_retained_payload_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        let config = config(dir);
        tokio::task::spawn_blocking(move || EmbeddedBroker::start(config).unwrap())
    };
    let broker = start(dir.path()).await.unwrap();
    let addr = broker.local_addr();
    publish_retained(addr, 50, "before").await;
    {
        let (client, mut events) = client("clearer", addr);
        // MQTT: an empty payload without retain must not clear the retained message
        // (rumqttd alone clears it); with retain it must.
        client
            .publish("pvbus/test/1/state", QoS::AtLeastOnce, false, "")
            .await
            .unwrap();
        client
            .publish("pvbus/test/2/state", QoS::AtLeastOnce, true, "")
            .await
            .unwrap();
        let mut acks = 0;
        while acks < 2 {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acks += 1;
            }
        }
    }
    tokio::task::spawn_blocking(move || broker.shutdown().unwrap())
        .await
        .unwrap();
    assert!(dir.path().join("retained.bin").exists());

    let restarted = Instant::now();
    let broker = start(dir.path()).await.unwrap();
    eprintln!(
        "embedded broker restart to ready: {:?}",
        restarted.elapsed()
    );
    let got = collect_retained(
        broker.local_addr(),
        "after",
        "pvbus/#",
        QoS::AtLeastOnce,
        51,
    )
    .await;
    assert!(got.contains_key("pvbus/test/1/state"));
    assert!(!got.contains_key("pvbus/test/2/state"));
    assert_eq!(got.len(), 49 + 1, "49 test topics and pvbus/broker/status");
    assert_eq!(got["pvbus/broker/status"].0, b"online");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_saved_after_the_flush_interval_not_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        retained_flush_secs: 1,
        ..config(dir.path())
    };
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(config).unwrap())
        .await
        .unwrap();
    let file = dir.path().join("retained.bin");
    publish_retained(broker.local_addr(), 20, "x").await;
    assert!(!file.exists(), "saved before the flush interval");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let saved = std::fs::read(&file).expect("saved after the flush interval");
    assert!(String::from_utf8_lossy(&saved).contains("pvbus/test/19/state"));
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    // Nothing changed since: no further write.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
    drop(broker);
}

/// Raw MQTT 3.1.1 CONNECT (clean session, keep alive 30 s).
fn connect_packet(
    client_id: &str,
    will: Option<(&str, &str)>,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    let mut flags = 0x02;
    if will.is_some() {
        flags |= 0x04 | 0x08 | 0x20; // will, QoS 1, retain
    }
    if login.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&[0, 30]);
    let mut fields = vec![client_id];
    if let Some((topic, message)) = will {
        fields.extend([topic, message]);
    }
    if let Some((user, password)) = login {
        fields.extend([user, password]);
    }
    for field in fields {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

fn connack_code(addr: SocketAddr, packet: &[u8]) -> (u8, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(packet).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20);
    (connack[3], stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_will_of_a_vanished_client_is_kept_and_a_clean_disconnect_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let broker = tokio::task::spawn_blocking({
        let config = config(dir.path());
        move || EmbeddedBroker::start(config).unwrap()
    })
    .await
    .unwrap();
    let addr = broker.local_addr();
    let (code, stream) = connack_code(
        addr,
        &connect_packet("dies", Some(("pvbus/dies/status", "offline")), None),
    );
    assert_eq!(code, 0);
    drop(stream); // no DISCONNECT: the will fires
    let (code, mut stream) = connack_code(
        addr,
        &connect_packet("polite", Some(("pvbus/polite/status", "offline")), None),
    );
    assert_eq!(code, 0);
    stream.write_all(&[0xe0, 0]).unwrap();
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = collect_retained(addr, "watcher", "pvbus/+/status", QoS::AtLeastOnce, 3).await;
        if got.contains_key("pvbus/dies/status") {
            assert_eq!(got["pvbus/dies/status"].0, b"offline");
            assert!(!got.contains_key("pvbus/polite/status"));
            break;
        }
        assert!(Instant::now() < deadline, "will not retained: {got:?}");
    }
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_listener_requires_the_right_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        lan: Some(LanListener {
            listen: "127.0.0.2:0".parse().unwrap(),
            users: vec![BrokerUser {
                username: "ha".into(),
                password_hash: pvbus_broker::hash_password("s3cret").unwrap(),
            }],
            tls: None,
        }),
        ..config(dir.path())
    };
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(config).unwrap())
        .await
        .unwrap();
    let lan = broker.lan_addr().unwrap();
    let code = |login| connack_code(lan, &connect_packet("ha1", None, login)).0;
    assert_eq!(code(None), 5, "no login");
    assert_eq!(code(Some(("ha", "wrong"))), 4, "bad password");
    assert_eq!(code(Some(("nobody", "s3cret"))), 4, "unknown user");
    assert_eq!(code(Some(("ha", "s3cret"))), 0, "good login");
    // The loopback listener needs no login.
    assert_eq!(
        connack_code(broker.local_addr(), &connect_packet("local", None, None)).0,
        0
    );
    drop(broker);
}

#[test]
fn a_taken_port_is_an_error_not_a_silent_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = BrokerConfig {
        listen: taken.local_addr().unwrap(),
        ..config(dir.path())
    };
    match EmbeddedBroker::start(config) {
        Err(BrokerError::Bind { addr, .. }) => assert_eq!(addr, taken.local_addr().unwrap()),
        Err(other) => panic!("expected a bind error, got {other}"),
        Ok(_) => panic!("started on a taken port"),
    }
}

#[test]
fn garbage_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(config(dir.path())).unwrap();
    let addr = broker.local_addr();
    // An HTTP request (read as a packet of the wrong type), then a remaining length that
    // is not a valid variable byte integer.
    let mut http = b"GET / HTTP/1.1\r\nHost: pi\r\n\r\n".to_vec();
    http.resize(200, b'x');
    for garbage in [&http[..], &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]] {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(garbage).unwrap();
        let mut buf = [0u8; 16];
        let started = Instant::now();
        // Closed at once, without an answer.
        let read = stream.read(&mut buf);
        let reset = matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(matches!(read, Ok(0)) || reset, "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(
        connack_code(addr, &connect_packet("after-garbage", None, None)).0,
        0
    );
}

#[test]
fn a_corrupt_retained_file_is_set_aside_and_the_broker_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("retained.bin"),
        b"PVBUS-RETAINED-1\n\0\0\0\x05",
    )
    .unwrap();
    let broker = EmbeddedBroker::start(config(dir.path())).unwrap();
    assert_eq!(broker.retained_count(), 1, "only the broker's own status");
    assert_eq!(
        std::fs::read(dir.path().join("retained.bin.corrupt")).unwrap(),
        b"PVBUS-RETAINED-1\n\0\0\0\x05"
    );
    broker.shutdown().unwrap();
    assert!(dir.path().join("retained.bin").exists());
}

#[test]
fn a_client_without_keep_alive_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(config(dir.path())).unwrap();
    let mut packet = connect_packet("no-keep-alive", None, None);
    // Keep alive is the two bytes after the connect flags (offset 2 + 8).
    packet[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(connack_code(broker.local_addr(), &packet).0, 0);
}

#[test]
fn mqtt_5_clients_are_refused_with_a_3_1_1_connack() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::start(config(dir.path())).unwrap();
    // CONNECT, protocol level 5, clean start, keep alive 30, no properties, client id "v5".
    let packet = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 0, 0, 2, b'v', b'5',
    ];
    let (code, _) = connack_code(broker.local_addr(), &packet);
    assert_eq!(code, 1);
}
