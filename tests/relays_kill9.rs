//! kill -9 of `pvbus relays` in the middle of a storm of commands loses no
//! acknowledged mode change: whatever `override` (published only after the
//! state is on disk) a subscriber saw before the kill is what comes back.

mod relays_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pvbus_testkit::mosquitto_pub;
use relays_common::{RelaysSetup, WAIT};

const RELAYS: [&str; 3] = ["heater", "pump", "charger"];
const ROUNDS: u64 = 5;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// Sends overrides as fast as the broker takes them until `stop`; each has a
/// unique `until`, which identifies it in what the relays publish.
fn storm(port: u16, first: u64, base: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut options =
                rumqttc::MqttOptions::new(format!("storm-{first}"), "127.0.0.1", port);
            options.set_keep_alive(Duration::from_secs(5));
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
            let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
            let mut seq = first;
            while !stop.load(Ordering::Relaxed) {
                let (relay, mode) = command(seq);
                let payload = format!(r#"{{"mode":"{mode}","until":{}}}"#, base + seq);
                client
                    .publish(
                        format!("pvbus/relays/{relay}/mode/set"),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .unwrap();
                seq += 1;
                // Let the event loop write: a storm, not a memory test.
                tokio::task::yield_now().await;
            }
            let _ = client.disconnect().await;
            driver.abort();
            seq
        })
    })
}

fn command(seq: u64) -> (&'static str, &'static str) {
    let relay = RELAYS[(seq % 3) as usize];
    let mode = if (seq / 3).is_multiple_of(2) {
        "forced_on"
    } else {
        "forced_off"
    };
    (relay, mode)
}

#[test]
fn kill9_during_a_storm_of_commands_loses_no_acknowledged_mode_change() {
    let relays_toml: String = RELAYS
        .iter()
        .enumerate()
        .map(|(i, id)| format!("[[relays.relay]]\nid = \"{id}\"\npin = {}\n\n", 17 + i))
        .collect();
    let setup = RelaysSetup::new("600", &relays_toml);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let base = now.as_secs() + 86_400;
    let mut seq = 0;
    let mut acked_total = 0;

    for round in 0..ROUNDS {
        let mut relays = setup.start();
        let acks = setup.recorder("pvbus/relays/+/override");
        acks.clear();
        let stop = Arc::new(AtomicBool::new(false));
        let storm = storm(setup.broker.port, seq, base, stop.clone());
        // Kill somewhere between 150 and 650 ms into the storm.
        let jitter = u64::from(now.subsec_nanos() / 7 + round as u32 * 97) % 500;
        std::thread::sleep(Duration::from_millis(150 + jitter));
        relays.kill9();
        stop.store(true, Ordering::Relaxed);
        seq = storm.join().unwrap();
        // Acknowledgements still in flight from the dead process are still acks.
        std::thread::sleep(Duration::from_millis(100));

        let mut acked: HashMap<String, u64> = HashMap::new();
        for seen in acks.all() {
            if seen.payload.is_empty() {
                continue;
            }
            let relay = seen.topic.split('/').nth(2).unwrap().to_string();
            let until = json(&seen.payload)["until"].as_u64().unwrap();
            let best = acked.entry(relay).or_default();
            *best = (*best).max(until);
        }
        acked_total += acks.all().len();
        drop(acks);

        // Forget what the killed process left retained on the broker, so that what we
        // read next can only come from the restarted process, i.e. from its disk.
        for relay in RELAYS {
            for leaf in ["override", "reason", "mode"] {
                mosquitto_pub(
                    setup.broker.addr(),
                    &["-r", "-n", "-t", &format!("pvbus/relays/{relay}/{leaf}")],
                );
            }
        }

        let _relays = setup.start();
        let seen = setup.recorder("pvbus/relays/#");
        for relay in RELAYS {
            let reason = format!("pvbus/relays/{relay}/reason");
            seen.wait_for(&reason, WAIT, |r| !r.is_empty() && json(r)["by"] == "boot")
                .unwrap_or_else(|| panic!("round {round}: {relay} did not boot"));
            let Some(&acked_until) = acked.get(relay) else {
                continue;
            };
            let restored = seen
                .wait_for(&format!("pvbus/relays/{relay}/override"), WAIT, |o| {
                    !o.is_empty()
                })
                .unwrap_or_else(|| panic!("round {round}: {relay} lost its override"));
            let restored_until = json(&restored)["until"].as_u64().unwrap();
            assert!(
                restored_until >= acked_until,
                "round {round}: {relay} came back with override #{} but #{} was acknowledged",
                restored_until - base,
                acked_until - base
            );
            let (sent_relay, sent_mode) = command(restored_until - base);
            assert_eq!(sent_relay, relay, "round {round}");
            seen.expect(&format!("pvbus/relays/{relay}/mode"), sent_mode, WAIT);
        }
        drop(seen);
        let mut relays = _relays;
        relays.terminate(WAIT).expect("stops on SIGTERM");
        let acked: HashMap<&String, u64> = acked.iter().map(|(r, u)| (r, u - base)).collect();
        eprintln!("round {round}: {seq} commands sent so far; last acknowledged #: {acked:?}");
    }
    assert!(seq > 50 * ROUNDS, "a storm, not a drizzle: {seq} commands");
    assert!(
        acked_total > 10,
        "the storm was acknowledged: {acked_total}"
    );

    let out = setup.pvbus(&["relays", "history", "--last", "5"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 5);
}
