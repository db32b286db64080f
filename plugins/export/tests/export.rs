//! `pvbus-export` as a real process: readings from mosquitto are batched while the
//! services are unreachable (the internet is down), wait on disk, and reach a real HTTP
//! server (standing in for InfluxDB and emoncms) in order once it is up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Mosquitto, Recorder, free_port, mosquitto_pub};

const WAIT: Duration = Duration::from_secs(15);

/// One request seen by the server: its request line and body.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A minimal HTTP server answering 204 to everything.
fn serve(port: u16) -> Seen {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            s.lock().unwrap().push((
                request_line.trim().to_string(),
                String::from_utf8(body).unwrap(),
            ));
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    seen
}

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
    let _export = Child::spawn(
        "pvbus-export",
        Command::new(env!("CARGO_BIN_EXE_pvbus-export"))
            .env("PVBUS_BROKER", format!("127.0.0.1:{}", broker.port))
            .env("PVBUS_PLUGIN_ID", "export")
            .env("PVBUS_PLUGIN_CONFIG", settings.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
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
    let seen = serve(http);
    rec.wait_for("pvbus/export/spool/state", WAIT, |p| {
        p.contains("\"queued_batches\":0")
    })
    .expect("the spool empties");
    let seen = seen.lock().unwrap().clone();
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
