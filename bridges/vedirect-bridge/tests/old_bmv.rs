//! A real BMV-700 byte stream (capture `bmv700_two_blocks`) replayed into a pty by a
//! device that, like old firmware, sends no `SER#` and answers no HEX: the bridge asks
//! for the serial number, gives up after its retries, names the device after its port,
//! and publishes the union of the two blocks and the battery power of the site.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvbus_bus::{Bus, BusConfig, Shutdown};
use pvbus_testkit::{Mosquitto, Recorder};
use pvbus_vedirect_bridge::Bridge;
use pvbus_vedirect_bridge::config::{PortConfig, VedirectConfig};
use serialport::{SerialPort, TTYPort};

#[test]
fn an_old_bmv_without_serial_is_named_by_its_port() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let capture = pvbus_testkit::shared_dir(env!("CARGO_MANIFEST_DIR"))
        .join("vedirect/captures/bmv700_two_blocks.bin");
    let bytes = std::fs::read(capture).unwrap();

    let (master, slave) = TTYPort::pair().unwrap();
    let path = slave.name().unwrap();
    let master = Arc::new(Mutex::new(master));
    let stop = Arc::new(AtomicBool::new(false));
    // The device: the capture again and again, one block pair per second.
    let device = {
        let (master, stop) = (master.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = master.lock().unwrap().write_all(&bytes);
                std::thread::sleep(Duration::from_millis(1000));
            }
        })
    };

    let (shutdown, trigger) = Shutdown::manual();
    let addr = broker.addr();
    let bridge = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = VedirectConfig {
                ports: vec![PortConfig {
                    path: path.into(),
                    name: Some("house_bmv".into()),
                }],
                auto_detect: false,
                hex_timeout_ms: 200,
                ..VedirectConfig::default()
            };
            let (bus, inbox) = Bus::connect(&BusConfig::at(addr), "vedirect");
            let (bridge, events) = Bridge::new(cfg, bus.clone()).unwrap();
            bridge.run(events, inbox, shutdown).await.unwrap();
            bus.shutdown().await;
        });
    });

    let state = rec
        .wait_for(
            "pvbus/vedirect/house_bmv/state",
            Duration::from_secs(15),
            |p| p.contains("deepest_discharge") && p.contains("state_of_charge"),
        )
        .expect("the BMV state under the port's name");
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["model"], "BMV-700");
    assert_eq!(v["deepest_discharge"], serde_json::json!(-149.322));
    assert_eq!(v["battery_power"], serde_json::json!(-92));
    rec.expect(
        "pvbus/vedirect/house_bmv/availability",
        "online",
        Duration::from_secs(5),
    );
    let site = rec
        .wait_for("pvbus/site/state", Duration::from_secs(5), |p| {
            p.contains("\"battery_power\":-92")
        })
        .expect("site totals with the BMV's battery power");
    assert!(site.contains("\"pv_power\":null"), "{site}");

    // The bridge did ask for the serial number (HEX Get 0x010A) on the wire.
    let mut asked = Vec::new();
    {
        let mut m = master.lock().unwrap();
        m.set_timeout(Duration::from_millis(300)).unwrap();
        let mut buf = [0u8; 256];
        while let Ok(n) = m.read(&mut buf) {
            asked.extend_from_slice(&buf[..n]);
        }
    }
    let get_serial = vedirect::hex::Request::Get { register: 0x010A }.encode();
    assert!(
        asked
            .windows(get_serial.len())
            .any(|w| w == get_serial.as_slice()),
        "no serial-number request on the wire: {:?}",
        String::from_utf8_lossy(&asked)
    );

    stop.store(true, Ordering::Relaxed);
    trigger.fire();
    bridge.join().unwrap();
    device.join().unwrap();
    drop(slave);
}
