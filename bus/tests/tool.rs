//! The bus client as a tool (`Bus::connect_tool`), against a real mosquitto over TCP: no
//! trace on the bus (no `online`, no last will), two runs side by side, and a failure that
//! comes at once and says why.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_bus::{Bus, BusConfig, Event, Inbox, LinkError};
use pvbus_testkit::{Child, Mosquitto, Recorder, free_port, mosquitto_pub, wait_for_listener};

const WAIT: Duration = Duration::from_secs(5);

/// The next message, skipping connection events.
async fn next_message(inbox: &mut Inbox) -> pvbus_bus::Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(Event::Message(m))) => return m,
            Ok(Some(_)) => continue,
            other => panic!("no message within {WAIT:?}: {other:?}"),
        }
    }
}

async fn next_event(inbox: &mut Inbox) -> Event {
    tokio::time::timeout(Duration::from_secs(15), inbox.recv())
        .await
        .expect("no event within 15 s")
        .expect("inbox closed")
}

#[tokio::test(flavor = "current_thread")]
async fn tools_leave_no_trace_and_run_side_by_side() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "#");
    let cfg = BusConfig::at(broker.addr());
    let (a, _a_inbox) = Bus::connect_tool_or_fail(&cfg, "cli", WAIT).await.unwrap();
    let (b, mut b_inbox) = Bus::connect_tool_or_fail(&cfg, "cli", WAIT).await.unwrap();
    assert!(a.client_id().starts_with("pvbus-cli-"), "{}", a.client_id());
    assert_ne!(a.client_id(), b.client_id());

    // b hears its own message: its subscription is in place.
    b.subscribe("pvbus/test/#");
    b.publish("pvbus/test/b", "ready");
    assert_eq!(&next_message(&mut b_inbox).await.payload[..], b"ready");
    // a, connected after b with the same tool name, did not throw b off.
    a.publish("pvbus/test/a", "hello");
    let m = next_message(&mut b_inbox).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("pvbus/test/a", &b"hello"[..])
    );
    assert!(a.is_connected() && b.is_connected());

    // A clean end and an abrupt one (the handles dropped: the socket closes without
    // DISCONNECT, which is when a last will would go out).
    a.shutdown().await;
    drop((b, b_inbox));
    tokio::time::sleep(Duration::from_millis(300)).await;
    mosquitto_pub(broker.addr(), &["-t", "pvbus/test/end", "-m", "1"]);
    let r = rec.clone();
    tokio::task::spawn_blocking(move || r.expect("pvbus/test/end", "1", WAIT))
        .await
        .unwrap();
    let statuses: Vec<String> = rec
        .all()
        .into_iter()
        .filter(|s| s.topic.ends_with("/status"))
        .map(|s| format!("{} {}", s.topic, s.payload))
        .collect();
    assert!(statuses.is_empty(), "a tool announced itself: {statuses:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_broker_fails_at_once() {
    let port = free_port();
    let cfg = BusConfig::at(([127, 0, 0, 1], port).into());
    let started = Instant::now();
    let err = Bus::connect_tool_or_fail(&cfg, "cli", WAIT)
        .await
        .err()
        .expect("connected to nothing");
    assert!(matches!(err, LinkError::Unreachable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_broker_times_out() {
    // Accepts TCP (the kernel's backlog) and never answers MQTT.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = BusConfig::at(listener.local_addr().unwrap());
    let within = Duration::from_millis(300);
    let err = Bus::connect_tool_or_fail(&cfg, "status", within)
        .await
        .err()
        .expect("connected to a silent listener");
    assert_eq!(err, LinkError::TimedOut(within));
    assert_eq!(err.to_string(), "no answer within 0.3 s");
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_that_wants_a_login_refuses_without_retrying() {
    let port = free_port();
    let dir = std::env::temp_dir();
    let passwd = dir.join(format!("pvbus-bus-tool-{port}.passwd"));
    let made = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwd)
        .args(["pvbus", "secret"])
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(made.success());
    let conf = dir.join(format!("pvbus-bus-tool-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    )
    .unwrap();
    let _broker = Child::spawn(
        "mosquitto",
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let addr = ([127, 0, 0, 1], port).into();
    assert!(wait_for_listener(addr, WAIT));

    let mut cfg = BusConfig::at(addr);
    cfg.username = Some("pvbus".into());
    cfg.password = Some("wrong".into());
    let err = Bus::connect_tool_or_fail(&cfg, "cli", WAIT)
        .await
        .err()
        .expect("a wrong password was accepted");
    assert!(matches!(err, LinkError::Refused(_)), "{err:?}");

    cfg.password = Some("secret".into());
    let (bus, _inbox) = Bus::connect_tool_or_fail(&cfg, "cli", WAIT).await.unwrap();
    bus.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_tool_says_why_it_lost_the_broker_and_comes_back() {
    let mut broker = Mosquitto::start();
    let addr = broker.addr();
    let (bus, mut inbox) = Bus::connect_tool(&BusConfig::at(addr), "status");
    assert_eq!(next_event(&mut inbox).await, Event::Connected);
    assert_eq!(bus.link_error(), None);
    bus.subscribe("pvbus/#");

    broker.kill();
    assert_eq!(next_event(&mut inbox).await, Event::Disconnected);
    assert!(bus.link_error().is_some());
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    assert_eq!(next_event(&mut inbox).await, Event::Connected);
    assert_eq!(bus.link_error(), None);
    // Subscribed again by itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    mosquitto_pub(broker.addr(), &["-t", "pvbus/x", "-m", "back"]);
    assert_eq!(&next_message(&mut inbox).await.payload[..], b"back");
    bus.shutdown().await;
}
