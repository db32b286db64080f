//! `pvbus rules` as a real process against a real broker (mosquitto): readings in, an
//! `auto/set` command, its decision with its reason, the retained status, the heartbeat and
//! the surplus estimate out; bad payloads change nothing; SIGTERM leaves `offline`.

#[path = "support/brokers.rs"]
mod brokers;

use pvbus_bus::contract::{AutoSet, on_off};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brokers::{BrokerKind, BrokerProcess};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: String,
    retain: bool,
}

async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<Got>,
    what: &str,
    f: impl Fn(&Got) -> bool,
) -> Got {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(g)) if f(&g) => return g,
            Ok(Some(_)) => {}
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_switch_on_and_off_with_reasons_on_the_bus() {
    let broker = BrokerProcess::start(BrokerKind::Mosquitto);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bus]
external_broker = "{addr}"

[site]
timezone = "UTC"
latitude = 45.19
longitude = 5.72

[rules]
heartbeat = "1s"

[rules.devices]
bmv = {{ values = "vedirect" }}
mppt = {{ values = "vedirect" }}

[rules.surplus]
battery = "bmv"
chargers = {{ mppt = 1000 }}

[rules.relays.backup_server]
on = "not ran_today() and bmv.state_of_charge > 50"
off = "on_for() >= 1h"

[rules.relays.water_heater]
on = 'mppt.charge_state == "float" and bmv.battery_power > 0'
off = "bmv.battery_power < -200"
"#,
            addr = broker.addr
        ),
    )
    .unwrap();

    // An observer (and stand-in for the relay bridge and the VE.Direct bridge).
    let mut options = MqttOptions::new(
        "rules-test-observer",
        broker.addr.ip().to_string(),
        broker.addr.port(),
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Every command and status seen, whatever the test was waiting for at the time.
    let commands = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = commands.clone();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                if p.topic.ends_with("/auto/set") {
                    // The command with its reason: keep the state for the record.
                    let set = AutoSet::parse(&String::from_utf8_lossy(&p.payload))
                        .expect("rules publish a valid auto/set");
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {}", p.topic, on_off(set.on)));
                } else if p.topic.ends_with("/status") {
                    seen.lock().unwrap().push(format!(
                        "{} {}",
                        p.topic,
                        String::from_utf8_lossy(&p.payload)
                    ));
                }
                let _ = tx.send(Got {
                    topic: p.topic.clone(),
                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                    retain: p.retain,
                });
            }
        }
    });
    client.subscribe("pvbus/#", QoS::AtLeastOnce).await.unwrap();
    client
        .publish(
            "pvbus/relays/water_heater/mode",
            QoS::AtLeastOnce,
            true,
            "auto_off",
        )
        .await
        .unwrap();
    // The backup server already ran today: the relay bridge's day figures say so, and a
    // freshly started rules process must not run it again.
    client
        .publish(
            "pvbus/relays/backup_server/mode",
            QoS::AtLeastOnce,
            true,
            "auto_off",
        )
        .await
        .unwrap();
    client
        .publish(
            "pvbus/relays/backup_server/state",
            QoS::AtLeastOnce,
            true,
            "OFF",
        )
        .await
        .unwrap();
    let t = now();
    client
        .publish(
            "pvbus/relays/backup_server/stats",
            QoS::AtLeastOnce,
            true,
            format!(r#"{{"ts":{t},"day":"today","on_time_today":50,"switch_count_today":2,"last_on":{},"last_off":{},"on_since":null}}"#, t - 100, t - 50),
        )
        .await
        .unwrap();
    client
        .publish(
            "pvbus/relays/water_heater/state",
            QoS::AtLeastOnce,
            true,
            "OFF",
        )
        .await
        .unwrap();

    // A status left by an earlier run for a relay that has no rule any more.
    client
        .publish(
            "pvbus/rules/old_pump/status",
            QoS::AtLeastOnce,
            true,
            "on: bmv.state_of_charge >= 95",
        )
        .await
        .unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["rules", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pvbus rules starts");
    let child = Kill(child);

    next_matching(&mut rx, "rules online", |g| {
        g.topic == "pvbus/rules/status" && g.payload == "online"
    })
    .await;
    next_matching(&mut rx, "first status", |g| {
        g.topic == "pvbus/rules/water_heater/status"
    })
    .await;
    next_matching(
        &mut rx,
        "the stale status of a relay without a rule cleared",
        |g| g.topic == "pvbus/rules/old_pump/status" && g.payload.is_empty(),
    )
    .await;
    next_matching(&mut rx, "heartbeat", |g| {
        g.topic == "pvbus/rules/heartbeat"
            && g.payload
                .parse::<i64>()
                .is_ok_and(|t| (t - now()).abs() < 5)
    })
    .await;

    // Garbage first: the process reports nothing new and keeps running.
    client
        .publish(
            "pvbus/vedirect/bmv/state",
            QoS::AtLeastOnce,
            false,
            "not json",
        )
        .await
        .unwrap();
    client
        .publish(
            "pvbus/vedirect/mppt/state",
            QoS::AtLeastOnce,
            true,
            format!(
                r#"{{"ts":{},"charge_state":"float","pv_power":300}}"#,
                now()
            ),
        )
        .await
        .unwrap();
    client
        .publish(
            "pvbus/vedirect/bmv/state",
            QoS::AtLeastOnce,
            true,
            format!(
                r#"{{"ts":{},"battery_power":120,"state_of_charge":99}}"#,
                now()
            ),
        )
        .await
        .unwrap();

    let on = next_matching(&mut rx, "auto/set ON", |g| {
        g.topic == "pvbus/relays/water_heater/auto/set"
    })
    .await;
    let on = AutoSet::parse(&on.payload).unwrap();
    assert!(on.on);
    let decision = next_matching(&mut rx, "decision", |g| g.topic == "pvbus/rules/decisions").await;
    let d: serde_json::Value = serde_json::from_str(&decision.payload).unwrap();
    // The command carries the decision's reason, so the relay's reason can say why.
    assert_eq!(on.reason.as_deref(), d["reason"].as_str());
    assert_eq!(d["relay"], "water_heater");
    assert_eq!(d["command"], "ON");
    assert_eq!(
        d["reason"],
        "on: mppt.charge_state \"float\" == \"float\" and bmv.battery_power 120 W > 0"
    );
    next_matching(&mut rx, "status after on", |g| {
        g.topic == "pvbus/rules/water_heater/status" && g.payload.starts_with("switched on")
    })
    .await;
    let surplus = next_matching(&mut rx, "surplus", |g| g.topic == "pvbus/site/surplus").await;
    let s: serde_json::Value = serde_json::from_str(&surplus.payload).unwrap();
    assert!(s["surplus"].as_f64().is_some_and(|w| w >= 0.0), "{s}");

    assert!(
        commands
            .lock()
            .unwrap()
            .iter()
            .any(|c| c == "pvbus/rules/backup_server/status on: backup_server ran today"),
        "{:?}",
        commands.lock().unwrap()
    );

    // The relay bridge obeys.
    client
        .publish(
            "pvbus/relays/water_heater/mode",
            QoS::AtLeastOnce,
            true,
            "auto_on",
        )
        .await
        .unwrap();
    client
        .publish(
            "pvbus/relays/water_heater/state",
            QoS::AtLeastOnce,
            true,
            "ON",
        )
        .await
        .unwrap();

    // A cloud: the battery discharges.
    client
        .publish(
            "pvbus/vedirect/bmv/state",
            QoS::AtLeastOnce,
            true,
            format!(
                r#"{{"ts":{},"battery_power":-500,"state_of_charge":98}}"#,
                now()
            ),
        )
        .await
        .unwrap();
    let off = next_matching(&mut rx, "auto/set OFF", |g| {
        g.topic == "pvbus/relays/water_heater/auto/set"
    })
    .await;
    assert!(!AutoSet::parse(&off.payload).unwrap().on);
    let decision = next_matching(&mut rx, "decision off", |g| {
        g.topic == "pvbus/rules/decisions"
    })
    .await;
    let d: serde_json::Value = serde_json::from_str(&decision.payload).unwrap();
    assert_eq!(d["command"], "OFF");
    assert_eq!(d["reason"], "off: bmv.battery_power -500 W < -200");

    // The status is retained: a newcomer gets it at once.
    let mut options = MqttOptions::new(
        "rules-test-late",
        broker.addr.ip().to_string(),
        broker.addr.port(),
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (late, mut late_loop) = AsyncClient::new(options, 10);
    let (late_tx, mut late_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = late_loop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = late_tx.send(Got {
                    topic: p.topic.clone(),
                    payload: String::from_utf8_lossy(&p.payload).into_owned(),
                    retain: p.retain,
                });
            }
        }
    });
    late.subscribe("pvbus/rules/water_heater/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = next_matching(&mut late_rx, "retained status", |g| g.retain).await;
    assert_eq!(
        retained.payload,
        "switched off: off: bmv.battery_power -500 W < -200"
    );

    // Exactly two commands, both for the water heater: the backup server was left off.
    let sent: Vec<String> = commands
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.contains("/auto/set"))
        .cloned()
        .collect();
    assert_eq!(
        sent,
        vec![
            "pvbus/relays/water_heater/auto/set ON",
            "pvbus/relays/water_heater/auto/set OFF"
        ]
    );

    // SIGTERM: a clean exit that leaves `offline`.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    next_matching(&mut rx, "rules offline", |g| {
        g.topic == "pvbus/rules/status" && g.payload == "offline"
    })
    .await;
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pvbus rules did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rule that fails while evaluating (a script comparing a number with a text) is
/// reported on `pvbus/rules/error` with its place in the file, once, not at every reading;
/// the process keeps running and the relay's decision waits (unknown).
#[test]
fn a_failing_rule_is_reported_once_with_its_place_not_at_every_reading() {
    use pvbus_testkit::{Child as Proc, Mosquitto, Recorder, mosquitto_pub};
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        format!(
            r#"[bus]
external_broker = "{addr}"
[site]
timezone = "UTC"
[rules.devices]
bmv = {{ values = "vedirect" }}
[rules.relays.heater]
language = "rhai"
on = 'value("bmv.state_of_charge") >= 95.0'
off = 'value("bmv.state_of_charge") < value("bmv.charge_state")'
"#,
            addr = broker.addr()
        ),
    )
    .unwrap();
    let mut rules = Proc::spawn(
        "pvbus rules",
        Command::new(env!("CARGO_BIN_EXE_pvbus"))
            .args(["rules", "--config"])
            .arg(&config)
            .env("PVBUS_LOG", "warn")
            .stderr(Stdio::null()),
    );
    rec.expect("pvbus/rules/status", "online", Duration::from_secs(10));
    for soc in 80..90 {
        mosquitto_pub(
            broker.addr(),
            &[
                "-t",
                "pvbus/vedirect/bmv/state",
                "-m",
                &format!(
                    r#"{{"ts":{},"state_of_charge":{soc},"charge_state":"float"}}"#,
                    now()
                ),
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let error = rec
        .wait_for("pvbus/rules/error", Duration::from_secs(10), |_| true)
        .expect("the rule error reaches the bus");
    assert!(
        error.contains(&format!("{}:", config.display()))
            && error.contains("pvbus/rules/heater/status"),
        "{error}"
    );
    // Ten readings, ten passes, one report.
    std::thread::sleep(Duration::from_millis(500));
    let reports = rec
        .all()
        .iter()
        .filter(|m| m.topic == "pvbus/rules/error")
        .count();
    assert_eq!(reports, 1, "the same error reported {reports} times");
    assert!(rules.is_running());
    assert!(rec.last("pvbus/relays/heater/auto/set").is_none());
}
