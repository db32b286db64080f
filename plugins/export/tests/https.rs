//! `pvbus-export` over HTTPS, as emoncms.org and InfluxDB Cloud need it: a real process
//! posting to a real TLS server (rustls) whose certificate a CA of the test's own signed
//! (rcgen), trusted through `ca_file`. A server signed by another CA is refused with
//! words that say so, and the batch waits on disk until it can be delivered; `post`
//! names what is wrong with a server (a certificate for another name, no TLS at all).

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{Ca, Server, export, reading};
use pvbus_plugin_export::{Endpoint, post};
use pvbus_testkit::{Mosquitto, Recorder, free_port};

const WAIT: Duration = Duration::from_secs(15);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn history_reaches_influxdb_and_emoncms_over_https() {
    let ca = Ca::new("pvbus test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file);
    let port = free_port();
    let server = Server::tls(port, ca.server_config(&["localhost", "127.0.0.1"]));
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/export/#");
    let settings = serde_json::json!({
        "interval": "300ms",
        "spool_dir": dir.path().join("spool"),
        // By address for one, by name for the other: both are checked against the
        // certificate's names.
        "influx": {
            "url": format!("https://127.0.0.1:{port}/api/v2/write?org=home&bucket=pv&precision=s"),
            "token": "s3cret",
            "ca_file": ca_file,
        },
        "emoncms": {"url": format!("https://localhost:{port}/"), "apikey": "KEY", "ca_file": ca_file},
    });
    let _export = export(&broker, &settings);
    rec.expect("pvbus/export/status", "online", WAIT);
    reading(&broker, 1000, 245);
    wait_until("both requests", || server.requests().len() >= 2);
    rec.wait_for("pvbus/export/spool/state", WAIT, |p| {
        p.contains("\"queued_batches\":0") && p.contains("\"last_error\":null")
    })
    .expect("the spool empties, without an error");

    let requests = server.requests();
    let influx = requests
        .iter()
        .find(|r| r.line.contains("/api/v2/write"))
        .expect("the InfluxDB request");
    assert_eq!(
        influx.line,
        "POST /api/v2/write?org=home&bucket=pv&precision=s HTTP/1.1"
    );
    assert_eq!(influx.header("authorization"), Some("Token s3cret"));
    assert_eq!(
        influx.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        influx.header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(influx.body, "mppt,source=vedirect pv_power=245 1000\n");

    let emoncms = requests
        .iter()
        .find(|r| r.line.contains("/input/bulk"))
        .expect("the emoncms request");
    assert_eq!(emoncms.line, "POST /input/bulk?apikey=KEY HTTP/1.1");
    assert_eq!(
        emoncms.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        emoncms.header("host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert_eq!(emoncms.header("authorization"), None);
    assert_eq!(
        emoncms.body,
        "data=%5B%5B1000%2C%22mppt%22%2C%7B%22pv_power%22%3A245.0%7D%5D%5D"
    );
    assert_eq!(server.failures(), Vec::<String>::new());
}

#[test]
fn a_server_signed_by_another_ca_is_refused_and_the_batch_waits_on_disk() {
    let real_ca = Ca::new("the server's CA");
    let other_ca = Ca::new("another CA");
    let dir = tempfile::tempdir().unwrap();
    let (real_file, other_file) = (dir.path().join("real.pem"), dir.path().join("other.pem"));
    real_ca.write(&real_file);
    other_ca.write(&other_file);
    let port = free_port();
    let server = Server::tls(port, real_ca.server_config(&["127.0.0.1"]));
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/export/#");
    let spool = dir.path().join("spool");
    let settings = |ca_file: &std::path::Path| {
        serde_json::json!({
            "interval": "300ms",
            "spool_dir": spool,
            "influx": {
                "url": format!("https://127.0.0.1:{port}/api/v2/write?org=home&bucket=pv&precision=s"),
                "token": "s3cret",
                "ca_file": ca_file,
            },
        })
    };

    let mut wrong = export(&broker, &settings(&other_file));
    rec.expect("pvbus/export/status", "online", WAIT);
    reading(&broker, 2000, 100);
    let state = rec
        .wait_for("pvbus/export/spool/state", WAIT, |p| {
            p.contains("\"queued_batches\":1") && p.contains("not signed")
        })
        .expect("the refusal is reported and the batch waits");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        state["last_error"],
        format!(
            "influx: https://127.0.0.1:{port}/api/v2/write: TLS: the server's certificate is not signed by a CA we trust (ca_file {})",
            other_file.display()
        )
    );
    assert!(server.requests().is_empty(), "nothing was sent in clear");
    wait_until("the server sees the handshake fail", || {
        !server.failures().is_empty()
    });
    let batches: Vec<_> = std::fs::read_dir(spool.join("influx"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".batch"))
        .collect();
    assert_eq!(batches.len(), 1, "the batch is on disk");
    assert!(wrong.terminate(WAIT).is_some_and(|s| s.success()));

    // The right CA (after a restart): the batch that waited is delivered.
    rec.clear();
    let _right = export(&broker, &settings(&real_file));
    wait_until("the batch that waited", || !server.requests().is_empty());
    assert_eq!(
        server.requests()[0].body,
        "mppt,source=vedirect pv_power=100 2000\n"
    );
    rec.wait_for("pvbus/export/spool/state", WAIT, |p| {
        p.contains("\"queued_batches\":0")
    })
    .expect("the spool empties");
}

#[tokio::test]
async fn post_names_what_is_wrong_with_the_server() {
    let ca = Ca::new("pvbus test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write(&ca_file);
    let timeout = Duration::from_secs(5);

    // A certificate for another name.
    let port = free_port();
    let _server = Server::tls(port, ca.server_config(&["backup.example.org"]));
    let endpoint = Endpoint::new(
        &format!("https://127.0.0.1:{port}/write?db=pv&u=me&p=SECRET"),
        Some(&ca_file),
    )
    .unwrap();
    let e = post(&endpoint, &[], "text/plain", "x 1 1\n", timeout)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "https://127.0.0.1:{port}/write: TLS: the server's certificate is not valid for the name \"127.0.0.1\" (the URL must use a name the certificate lists)"
        )
    );

    // A plain HTTP server behind an https:// URL.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in plain.incoming() {
            let _ = stream
                .unwrap()
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let endpoint = Endpoint::new(&format!("https://127.0.0.1:{plain_port}/"), None).unwrap();
    let e = post(&endpoint, &[], "text/plain", "x", timeout)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("https://127.0.0.1:{plain_port}/: TLS: "))
            && e.contains("is this an http:// port?"),
        "{e}"
    );

    // The same server over https, trusted: accepted.
    let port = free_port();
    let server = Server::tls(port, ca.server_config(&["127.0.0.1"]));
    let endpoint = Endpoint::new(&format!("https://127.0.0.1:{port}/x"), Some(&ca_file)).unwrap();
    post(
        &endpoint,
        &[("X-Test", "1")],
        "text/plain",
        "hello",
        timeout,
    )
    .await
    .unwrap();
    assert_eq!(server.requests()[0].body, "hello");
}
