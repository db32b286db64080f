//! The bus client against a real mosquitto over TCP: online/offline, resubscribe and
//! republish after a broker restart, and no deadlock when one task both consumes and
//! publishes.

use std::time::Duration;

use pvbus_bus::{Bus, BusConfig, Event};
use pvbus_testkit::{Mosquitto, Recorder, mosquitto_pub};

async fn next_message(
    inbox: &mut pvbus_bus::Inbox,
    timeout: Duration,
) -> Option<pvbus_bus::Message> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(Event::Message(m))) => return Some(m),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn online_then_offline_on_clean_shutdown() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let (bus, _inbox) = Bus::connect(&BusConfig::at(broker.addr()), "demo");
    bus.wait_connected().await;
    let r = rec.clone();
    tokio::task::spawn_blocking(move || {
        r.expect("pvbus/demo/status", "online", Duration::from_secs(5))
    })
    .await
    .unwrap();
    bus.shutdown().await;
    let r = rec.clone();
    tokio::task::spawn_blocking(move || {
        r.expect("pvbus/demo/status", "offline", Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(!bus.is_connected());
}

#[tokio::test(flavor = "current_thread")]
async fn resubscribes_and_republishes_after_broker_restart() {
    let mut broker = Mosquitto::start();
    let addr = broker.addr();
    let (bus, mut inbox) = Bus::connect(&BusConfig::at(addr), "demo");
    bus.subscribe("pvbus/test/in");
    bus.publish_retained("pvbus/demo/thing/state", r#"{"ts":1,"v":42}"#);
    bus.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    mosquitto_pub(addr, &["-t", "pvbus/test/in", "-m", "before"]);
    let m = next_message(&mut inbox, Duration::from_secs(5))
        .await
        .expect("message before restart");
    assert_eq!(&m.payload[..], b"before");

    // mosquitto without persistence forgets every subscription and retained message.
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();

    // The client reconnects by itself (backoff starts at 200 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(Event::Connected)) => break,
            Ok(Some(_)) => continue,
            _ => panic!("no reconnect within 15 s"),
        }
    }
    // Subscriptions are re-issued and the retained state is back on the new broker.
    let rec = Recorder::start(addr, "pvbus/#");
    let r = rec.clone();
    tokio::task::spawn_blocking(move || {
        r.expect(
            "pvbus/demo/thing/state",
            r#"{"ts":1,"v":42}"#,
            Duration::from_secs(5),
        );
        r.expect("pvbus/demo/status", "online", Duration::from_secs(5));
    })
    .await
    .unwrap();
    let mut got_after = false;
    for _ in 0..20 {
        mosquitto_pub(addr, &["-t", "pvbus/test/in", "-m", "after"]);
        if let Some(m) = next_message(&mut inbox, Duration::from_millis(500)).await {
            assert_eq!(&m.payload[..], b"after");
            got_after = true;
            break;
        }
    }
    assert!(
        got_after,
        "subscription was not re-issued after the restart"
    );
    bus.shutdown().await;
    drop(broker);
}

/// A task that answers every message with a publish must never deadlock, even when far
/// more messages arrive than any internal channel holds.
#[tokio::test(flavor = "current_thread")]
async fn consume_and_publish_from_one_task_does_not_deadlock() {
    const N: usize = 3000;
    let broker = Mosquitto::start();
    let cfg = BusConfig::at(broker.addr());
    let (bus, mut inbox) = Bus::connect(&cfg, "echo");
    bus.subscribe("pvbus/echo/in");
    let (src, _src_inbox) = Bus::connect(&cfg, "source");
    let (sink, mut sink_inbox) = Bus::connect(&cfg, "sink");
    sink.subscribe("pvbus/echo/out");
    bus.wait_connected().await;
    src.wait_connected().await;
    sink.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    for i in 0..N {
        src.publish("pvbus/echo/in", i.to_string());
    }
    let echo = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            match next_message(&mut inbox, Duration::from_secs(20)).await {
                Some(m) => {
                    bus.publish("pvbus/echo/out", m.payload.clone());
                    n += 1;
                }
                None => break,
            }
        }
        n
    });
    let mut received = 0;
    while received < N {
        match next_message(&mut sink_inbox, Duration::from_secs(20)).await {
            Some(_) => received += 1,
            None => break,
        }
    }
    assert_eq!(echo.await.unwrap(), N, "echo task stalled");
    assert_eq!(received, N, "not every echo arrived");
}

/// The last publications before a clean shutdown reach the broker, and the status ends
/// `offline` by our own publication, not by the last will. Dropping the socket with
/// unread acknowledgements would reset the connection and lose them.
#[tokio::test(flavor = "current_thread")]
async fn last_publications_survive_shutdown() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    for round in 0..10 {
        let (bus, _inbox) = Bus::connect(&BusConfig::at(broker.addr()), "closer");
        bus.wait_connected().await;
        for i in 0..50 {
            bus.publish_retained(format!("pvbus/closer/d{i}/state"), format!("{round}"));
        }
        bus.shutdown().await;
        let r = rec.clone();
        let want = round.to_string();
        tokio::task::spawn_blocking(move || {
            for i in 0..50 {
                r.expect(
                    &format!("pvbus/closer/d{i}/state"),
                    &want,
                    Duration::from_secs(5),
                );
            }
            r.expect("pvbus/closer/status", "offline", Duration::from_secs(5));
        })
        .await
        .unwrap();
    }
    // A will would also say `offline`: check the broker saw a clean DISCONNECT by
    // counting `offline` messages: exactly one per round (ours), never a second (the will).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offline = rec
        .all()
        .iter()
        .filter(|s| s.topic == "pvbus/closer/status" && s.payload == "offline")
        .count();
    assert_eq!(offline, 10, "a last will fired: the DISCONNECT was lost");
}

/// A process that has stopped reading its inbox (it is stopping, busy stopping its
/// children) while a flood of messages arrives still gets its last publications and its
/// `offline` out. The connection stops reading the socket while the inbox is full, so
/// without [`Bus::shutdown`] discarding what arrives, they would wait forever behind it.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_gets_out_under_a_flood_nobody_reads() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/stopper/#");
    let cfg = BusConfig::at(broker.addr());
    let (bus, _inbox_never_read) = Bus::connect(&cfg, "stopper");
    bus.subscribe("pvbus/flood/in");
    let (src, _src_inbox) = Bus::connect(&cfg, "source");
    bus.wait_connected().await;
    src.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Far more than the inbox and rumqttc's buffers hold.
    for i in 0..5000 {
        src.publish("pvbus/flood/in", i.to_string());
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    bus.publish_retained("pvbus/stopper/last/state", "stopped");
    bus.shutdown().await;

    let r = rec.clone();
    tokio::task::spawn_blocking(move || {
        r.expect(
            "pvbus/stopper/last/state",
            "stopped",
            Duration::from_secs(5),
        );
        r.expect("pvbus/stopper/status", "offline", Duration::from_secs(5));
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offline = rec
        .all()
        .iter()
        .filter(|s| s.topic == "pvbus/stopper/status" && s.payload == "offline")
        .count();
    assert_eq!(offline, 1, "our own offline, and no last will");
    src.shutdown().await;
}

/// A late last will of our own previous connection (a broker that drops a half-open
/// connection only after our new one has said `online`) would leave us `offline` on the
/// bus while we run: the client answers it with `online` again. The process, which did not
/// subscribe to its own status, never sees these messages in its inbox.
#[tokio::test(flavor = "current_thread")]
async fn a_late_last_will_is_answered_with_online() {
    let broker = Mosquitto::start();
    let addr = broker.addr();
    let rec = Recorder::start(addr, "pvbus/demo/status");
    let (bus, mut inbox) = Bus::connect(&BusConfig::at(addr), "demo");
    bus.subscribe("pvbus/other/#");
    bus.wait_connected().await;
    let r = rec.clone();
    tokio::task::spawn_blocking(move || {
        r.expect("pvbus/demo/status", "online", Duration::from_secs(5))
    })
    .await
    .unwrap();
    rec.clear();
    // What the broker does with the old connection's will, retained.
    mosquitto_pub(
        addr,
        &["-r", "-q", "1", "-t", "pvbus/demo/status", "-m", "offline"],
    );
    let r = rec.clone();
    let seen = tokio::task::spawn_blocking(move || {
        r.wait_for("pvbus/demo/status", Duration::from_secs(5), |p| {
            p == "online"
        })
        .map(|_| r.all().into_iter().map(|m| m.payload).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(
        seen.as_deref(),
        Some(&["offline".to_string(), "online".to_string()][..]),
        "the late will was not answered"
    );
    // Our own status is the client's business, not the process's.
    mosquitto_pub(addr, &["-t", "pvbus/other/x", "-m", "1"]);
    let m = next_message(&mut inbox, Duration::from_secs(5))
        .await
        .expect("a message the process subscribed to");
    assert_eq!(m.topic, "pvbus/other/x");
    // A clean shutdown's own `offline` is not contradicted.
    rec.clear();
    bus.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rec.last("pvbus/demo/status").as_deref(), Some("offline"));
}

#[tokio::test(flavor = "current_thread")]
async fn unsubscribe_ends_a_subscription_for_good() {
    let mut broker = Mosquitto::start();
    let addr = broker.addr();
    let (bus, mut inbox) = Bus::connect(&BusConfig::at(addr), "demo");
    bus.subscribe("pvbus/test/census");
    bus.subscribe("pvbus/test/kept");
    bus.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    mosquitto_pub(addr, &["-t", "pvbus/test/census", "-m", "1"]);
    let m = next_message(&mut inbox, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(m.topic, "pvbus/test/census");
    bus.unsubscribe("pvbus/test/census");
    tokio::time::sleep(Duration::from_millis(200)).await;
    mosquitto_pub(addr, &["-t", "pvbus/test/census", "-m", "2"]);
    mosquitto_pub(addr, &["-t", "pvbus/test/kept", "-m", "3"]);
    let m = next_message(&mut inbox, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("pvbus/test/kept", &b"3"[..]),
        "nothing more on the ended subscription"
    );
    // Nor after a reconnect, when the others are renewed.
    broker.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bus.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mosquitto_pub(addr, &["-t", "pvbus/test/census", "-m", "4"]);
    mosquitto_pub(addr, &["-t", "pvbus/test/kept", "-m", "5"]);
    let m = next_message(&mut inbox, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("pvbus/test/kept", &b"5"[..])
    );
    bus.shutdown().await;
}
