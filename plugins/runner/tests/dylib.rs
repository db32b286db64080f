//! The dynamic-library host against a real broker (mosquitto), with the example plugins
//! of the workspace built as real `cdylib`s: the example loads and works through the bus,
//! a panicking plugin is contained (marked failed, the others go on), a library of
//! another ABI version and a missing file are refused with a clear message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pvbus_bus::config::Settings;
use pvbus_bus::{BusConfig, Shutdown};
use pvbus_plugins::PluginsConfig;
use pvbus_testkit::{Mosquitto, Recorder, mosquitto_pub};

const WAIT: Duration = Duration::from_secs(10);

/// Builds the example plugins (cargo is idle while tests run) and returns the folder
/// where the libraries are: the target profile folder of this test binary.
fn build_examples() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "pvbus-plugin-example-dylib",
            "-p",
            "pvbus-plugin-example-dylib-panic",
            "-p",
            "pvbus-plugin-example-dylib-wrong-abi",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example plugins failed");
    // target/debug/deps/dylib-<hash> -> target/debug
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libraries_load_panics_are_contained_and_wrong_abis_refused() {
    let libs = build_examples();
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let lib = |name: &str| libs.join(format!("libpvbus_plugin_{name}.so"));
    let text = format!(
        r#"
[[plugins.dylib]]
id = "energy"
path = "{energy}"
tick = "1h"

[[plugins.dylib]]
id = "fragile"
path = "{panic}"
tick = "300ms"

[[plugins.dylib]]
id = "old"
path = "{wrong}"

[[plugins.dylib]]
id = "ghost"
path = "/nonexistent/libghost.so"
"#,
        energy = lib("example_dylib").display(),
        panic = lib("example_dylib_panic").display(),
        wrong = lib("example_dylib_wrong_abi").display(),
    );
    let settings = Settings::from_toml(&text).unwrap();
    let config: PluginsConfig = settings.section("plugins").unwrap();
    let (shutdown, trigger) = Shutdown::manual();
    let process = tokio::spawn(pvbus_plugins::run(
        config,
        BusConfig::at(broker.addr()),
        shutdown,
    ));

    let health = |id: &str| format!("pvbus/plugins/{id}/health");
    let wait = |topic: String, pred: fn(&str) -> bool| {
        let rec = rec.clone();
        tokio::task::spawn_blocking(move || rec.wait_for(&topic, WAIT, pred))
    };

    // Refused with a message that says why and what to do.
    let old = wait(health("old"), |p| p.contains("\"failed\""))
        .await
        .unwrap();
    let old = old.expect("the wrong-ABI library is reported");
    assert!(
        old.contains(
            "refused: the library speaks plugin ABI version 2, this pvbus speaks version 1"
        ),
        "{old}"
    );
    let ghost = wait(health("ghost"), |p| p.contains("\"failed\""))
        .await
        .unwrap();
    assert!(
        ghost
            .expect("the missing library is reported")
            .contains("cannot load the library")
    );

    // The panicking plugin published at start, then panicked at its first tick: failed,
    // with the panic's message; the host lives on.
    let fragile = wait(health("fragile"), |p| p.contains("panicked"))
        .await
        .unwrap();
    let fragile = fragile.expect("the panic is reported");
    assert!(fragile.contains("\"state\":\"failed\""), "{fragile}");
    assert!(
        fragile.contains("the example plugin panics on purpose"),
        "{fragile}"
    );
    assert!(
        rec.last("pvbus/fragile/fragile/state")
            .unwrap()
            .contains("\"alive\":true")
    );

    // The example works through the bus after the panic: it integrates the site's PV power
    // (100 W then 300 W over 360 s = 20 Wh) and answers its reset command.
    wait(health("energy"), |p| p.contains("\"running\""))
        .await
        .unwrap()
        .expect("energy runs");
    wait("pvbus/plugins/status".into(), |p| p == "online")
        .await
        .unwrap()
        .expect("online");
    mosquitto_pub(
        broker.addr(),
        &[
            "-t",
            "pvbus/site/state",
            "-m",
            r#"{"ts":1000,"pv_power":100}"#,
        ],
    );
    mosquitto_pub(
        broker.addr(),
        &[
            "-t",
            "pvbus/site/state",
            "-m",
            r#"{"ts":1360,"pv_power":300}"#,
        ],
    );
    let state = wait("pvbus/energy/pv_energy/state".into(), |p| {
        p.contains("\"energy\":0.02")
    })
    .await
    .unwrap();
    let state: serde_json::Value = serde_json::from_str(&state.expect("20 Wh integrated")).unwrap();
    assert_eq!(state["pv_power"], 300.0);
    assert!(state["ts"].as_u64().unwrap() > 1_700_000_000, "{state}");
    assert_eq!(
        rec.last("pvbus/energy/pv_energy/availability").as_deref(),
        Some("online")
    );

    // A bad payload is the plugin's error: logged and reported, the plugin keeps running.
    mosquitto_pub(broker.addr(), &["-t", "pvbus/site/state", "-m", "not json"]);
    let h = wait(health("energy"), |p| p.contains("not JSON"))
        .await
        .unwrap();
    assert!(
        h.expect("the error is reported")
            .contains("\"state\":\"running\"")
    );
    mosquitto_pub(
        broker.addr(),
        &["-t", "pvbus/energy/pv_energy/reset/set", "-m", "1"],
    );
    wait("pvbus/energy/pv_energy/state".into(), |p| {
        p.contains("\"energy\":0.0")
    })
    .await
    .unwrap()
    .expect("reset to zero");

    trigger.fire();
    tokio::time::timeout(WAIT, process)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let status = wait("pvbus/plugins/status".into(), |p| p == "offline")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("offline"));
}
