//! `pvbus-export` as a real process: readings from mosquitto are batched while the
//! services are unreachable (the internet is down), wait on disk, and reach a real HTTP
//! server (standing in for InfluxDB and emoncms) in order once it is up.

mod common;

use std::time::{Duration, Instant};

use common::{Server, export, reading};
use pvbus_testkit::{Mosquitto, Recorder, free_port, mosquitto_pub};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn history_waits_on_disk_while_the_internet_is_down() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/export/#");
    let spool = tempfile::tempdir().unwrap();
    let http = free_port(); // nobody listens yet: the internet is down
    let settings = serde_json::json!({
        "interval": "300ms",
        "spool_dir": spool.path(),
        "influx": {"url": format!("http://127.0.0.1:{http}/api/v2/write?org=home&bucket=pv&precision=s"), "token": "secret"},
        "emoncms": {"url": format!("http://127.0.0.1:{http}"), "apikey": "KEY"},
    });
    let _export = export(&broker, &settings);
    rec.expect("pvbus/export/status", "online", WAIT);

    // Three readings, one per batch interval, while the services are unreachable.
    for (n, (ts, watts)) in [(1000, 100), (1060, 150), (1120, 200)]
        .into_iter()
        .enumerate()
    {
        mosquitto_pub(
            broker.addr(),
            &[
                "-t",
                "pvbus/vedirect/mppt/state",
                "-m",
                &format!(r#"{{"ts":{ts},"pv_power":{watts},"charge_state":"bulk"}}"#),
            ],
        );
        let deadline = Instant::now() + WAIT;
        // Each reading is in its own batch: wait until the spool has grown.
        while std::fs::read_dir(spool.path().join("influx")).map_or(0, |d| d.count()) <= n {
            assert!(
                Instant::now() < deadline,
                "the batch of {ts} never reached the spool"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let state = rec
        .wait_for("pvbus/export/spool/state", WAIT, |p| {
            p.contains("\"queued_batches\":6")
        })
        .expect("six batches (3 per service) wait on disk");
    assert!(state.contains("cannot reach"), "{state}");

    // The internet comes back: everything arrives, oldest first, and the spool empties.
    let server = Server::plain(http);
    rec.wait_for("pvbus/export/spool/state", WAIT, |p| {
        p.contains("\"queued_batches\":0")
    })
    .expect("the spool empties");
    let seen: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.line, r.body))
        .collect();
    let influx: Vec<&(String, String)> = seen
        .iter()
        .filter(|(l, _)| l.contains("/api/v2/write"))
        .collect();
    let bodies: Vec<&str> = influx.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "mppt,source=vedirect pv_power=100 1000\n",
            "mppt,source=vedirect pv_power=150 1060\n",
            "mppt,source=vedirect pv_power=200 1120\n"
        ]
    );
    let emoncms: Vec<&(String, String)> = seen
        .iter()
        .filter(|(l, _)| l.contains("/input/bulk"))
        .collect();
    assert_eq!(emoncms.len(), 3);
    assert!(
        emoncms[0].0.starts_with("POST /input/bulk?apikey=KEY "),
        "{:?}",
        emoncms[0]
    );
    assert_eq!(
        emoncms[0].1,
        "data=%5B%5B1000%2C%22mppt%22%2C%7B%22pv_power%22%3A100.0%7D%5D%5D"
    );
}

/// The newest batch waiting for `sink`, if any.
fn newest_batch(spool: &std::path::Path, sink: &str) -> Option<String> {
    let mut files: Vec<_> = std::fs::read_dir(spool.join(sink))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "batch"))
        .collect();
    files.sort();
    std::fs::read_to_string(files.last()?).ok()
}

#[test]
fn a_full_spool_drops_the_oldest_batches_counts_them_and_keeps_the_newest() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/export/#");
    let spool = tempfile::tempdir().unwrap();
    let http = free_port(); // the internet is down
    // Each batch is one 39-byte line: two fit in 80 bytes.
    let settings = serde_json::json!({
        "interval": "300ms",
        "spool_dir": spool.path(),
        "max_spool_bytes": 80,
        "influx": {"url": format!("http://127.0.0.1:{http}/write?db=pv&precision=s")},
    });
    let _export = export(&broker, &settings);
    rec.expect("pvbus/export/status", "online", WAIT);
    let line = |ts: u64, watts: u32| format!("mppt,source=vedirect pv_power={watts} {ts}\n");
    assert_eq!(line(1000, 100).len(), 39);
    for (ts, watts) in [
        (1000, 100),
        (1060, 110),
        (1120, 120),
        (1180, 130),
        (1240, 140),
    ] {
        reading(&broker, ts, watts);
        let deadline = Instant::now() + WAIT;
        while newest_batch(spool.path(), "influx") != Some(line(ts, watts)) {
            assert!(
                Instant::now() < deadline,
                "the batch of {ts} never reached the spool"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let state = rec
        .wait_for("pvbus/export/spool/state", WAIT, |p| {
            p.contains("\"dropped_batches\":3")
        })
        .expect("three batches dropped, and counted");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        (
            state["queued_batches"].as_u64(),
            state["queued_bytes"].as_u64()
        ),
        (Some(2), Some(78)),
        "{state}"
    );

    // Back online: the two newest arrive, in order; the three oldest are gone for good.
    let server = Server::plain(http);
    let state = rec
        .wait_for("pvbus/export/spool/state", WAIT, |p| {
            p.contains("\"queued_batches\":0")
        })
        .expect("the spool empties");
    assert!(state.contains("\"dropped_batches\":3"), "{state}");
    let bodies: Vec<String> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [line(1180, 130), line(1240, 140)]);
}
