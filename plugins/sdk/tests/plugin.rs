//! The SDK against a real broker (mosquitto): a plugin connects from its environment,
//! goes online with a last will, publishes a device with `ts`, receives its commands, and
//! refuses retained ones with an answer on its error topic.

use std::time::Duration;

use pvbus_plugin_sdk::{Event, Plugin, PluginEnv};
use pvbus_testkit::{Mosquitto, Recorder, mosquitto_pub};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_in_a_few_lines() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let vars = [
        ("PVBUS_BROKER", format!("127.0.0.1:{}", broker.port)),
        ("PVBUS_PLUGIN_ID", "cellar".to_string()),
        ("PVBUS_PLUGIN_CONFIG", r#"{"probe":"dht22"}"#.to_string()),
    ];
    let env =
        PluginEnv::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .unwrap();
    #[derive(serde::Deserialize, Default)]
    struct Settings {
        probe: String,
    }
    assert_eq!(env.settings::<Settings>().unwrap().probe, "dht22");

    // A stale retained command, replayed at subscription: refused.
    mosquitto_pub(
        broker.addr(),
        &["-r", "-t", "pvbus/cellar/cellar/interval/set", "-m", "5"],
    );
    let (plugin, mut inbox) = Plugin::connect_with(&env);
    plugin.subscribe_commands();
    plugin.publish_state("cellar", json!({"temperature": 12.5, "humidity": 80}));
    let r = rec.clone();
    let state = tokio::task::spawn_blocking(move || {
        r.expect("pvbus/cellar/status", "online", WAIT);
        r.wait_for("pvbus/cellar/cellar/state", WAIT, |_| true)
    })
    .await
    .unwrap()
    .expect("the device is published");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["temperature"], 12.5);
    assert!(state["ts"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        rec.last("pvbus/cellar/cellar/availability").as_deref(),
        Some("online")
    );

    // Wait until subscribed (the connection's first event), then send commands.
    loop {
        if let Some(Event::Connected) = tokio::time::timeout(WAIT, inbox.recv()).await.unwrap() {
            break;
        }
    }
    let addr = broker.addr();
    tokio::task::spawn_blocking(move || {
        mosquitto_pub(
            addr,
            &["-t", "pvbus/cellar/cellar/interval/set", "-m", " 10 "],
        );
    })
    .await
    .unwrap();
    let command = loop {
        let event = tokio::time::timeout(WAIT, inbox.recv())
            .await
            .unwrap()
            .unwrap();
        if let Some(c) = plugin.command(&event) {
            break c;
        }
    };
    assert_eq!(
        (command.device.as_str(), command.setting.as_str()),
        ("cellar", "interval")
    );
    assert_eq!(
        command.payload, "10",
        "the retained one was refused, this one trimmed"
    );
    let r = rec.clone();
    let error =
        tokio::task::spawn_blocking(move || r.wait_for("pvbus/cellar/error", WAIT, |_| true))
            .await
            .unwrap()
            .expect("the retained command is answered");
    assert!(error.contains("retained commands are ignored"), "{error}");

    plugin.shutdown().await;
    let r = rec.clone();
    tokio::task::spawn_blocking(move || r.expect("pvbus/cellar/status", "offline", WAIT))
        .await
        .unwrap();
}
