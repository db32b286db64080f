//! `pvbus cloud` end to end, all real: a remote mosquitto with a TLS listener (a CA and a
//! server certificate made here with rcgen) that requires a password, a local mosquitto
//! (or the embedded broker under `pvbus run`), the real `pvbus relays` on a simulated
//! board, the real `pvbus cloud`, and mosquitto_pub/mosquitto_sub over TLS on the remote.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Mosquitto, Recorder, free_port, mosquitto_pub, wait_for_listener};

const WAIT: Duration = Duration::from_secs(15);
const USER: &str = "cabin";
const PASSWORD: &str = "s3cret-over-4g";
const REMOTE_BASE: &str = "sites/cabin";

/// A CA and a server certificate for `localhost` signed by it, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A client certificate signed by the same CA (AWS IoT style login), and its key.
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("pvbus test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cabin");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-server.pem")),
        key: dir.join(format!("{name}-server.key")),
        client_cert: dir.join(format!("{name}-client.pem")),
        client_key: dir.join(format!("{name}-client.key")),
    };
    std::fs::write(&pki.client_cert, client.pem()).unwrap();
    std::fs::write(&pki.client_key, client_key.serialize_pem()).unwrap();
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, server.pem()).unwrap();
    std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
    pki
}

/// The remote broker: mosquitto with only a TLS listener, and a password file.
struct Remote {
    port: u16,
    conf: PathBuf,
    child: Child,
}

impl Remote {
    fn start(dir: &Path, pki: &Pki) -> Remote {
        Remote::start_with(dir, pki, "")
    }

    /// `extra`: more mosquitto settings for the TLS listener.
    fn start_with(dir: &Path, pki: &Pki, extra: &str) -> Remote {
        let passwd = dir.join("remote.passwd");
        let status = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args([USER, PASSWORD])
            .status()
            .expect("mosquitto_passwd (package mosquitto) must be installed");
        assert!(status.success());
        let port = free_port();
        let conf = dir.join(format!("remote-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 persistence false\nset_tcp_nodelay true\n{extra}",
                passwd = passwd.display(),
                ca = pki.ca.display(),
                cert = pki.cert.display(),
                key = pki.key.display(),
            ),
        )
        .unwrap();
        // mosquitto started as root reads its files as the `mosquitto` user.
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let _ = Command::new("chmod").arg("a+r").arg(&path).status();
        }
        let _ = Command::new("chmod").arg("a+rx").arg(dir).status();
        let child = Remote::spawn(&conf, port);
        Remote { port, conf, child }
    }

    fn spawn(conf: &Path, port: u16) -> Child {
        let child = Child::spawn(
            "remote mosquitto",
            Command::new("mosquitto")
                .arg("-c")
                .arg(conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_for_listener(SocketAddr::from(([127, 0, 0, 1], port)), WAIT),
            "the remote mosquitto did not listen on {port}"
        );
        child
    }

    /// SIGKILL and start again on the same port: it has forgotten everything.
    fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    fn kill(&mut self) {
        self.child.kill9();
    }

    fn start_again(&mut self) {
        self.child = Remote::spawn(&self.conf, self.port);
    }

    fn tls_args(&self, ca: &Path) -> Vec<String> {
        vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            ca.display().to_string(),
            "-u".into(),
            USER.into(),
            "-P".into(),
            PASSWORD.into(),
        ]
    }

    /// mosquitto_pub over TLS with the right CA; `args` are -t, -m, -r ...
    fn publish(&self, ca: &Path, args: &[&str]) {
        let status = Command::new("mosquitto_pub")
            .args(self.tls_args(ca))
            .args(["-q", "1"])
            .args(args)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mosquitto_pub {args:?} on the remote failed"
        );
    }

    /// A mosquitto_sub over TLS on the remote, recording what it gets.
    fn subscribe(&self, ca: &Path, filter: &str) -> RemoteSub {
        self.subscribe_args(self.tls_args(ca), filter)
    }

    /// The same, logging in with the client certificate too.
    fn subscribe_with_cert(&self, pki: &Pki, filter: &str) -> RemoteSub {
        let mut args = self.tls_args(&pki.ca);
        args.extend([
            "--cert".to_string(),
            pki.client_cert.display().to_string(),
            "--key".to_string(),
            pki.client_key.display().to_string(),
        ]);
        self.subscribe_args(args, filter)
    }

    fn subscribe_args(&self, args: Vec<String>, filter: &str) -> RemoteSub {
        let mut child = Command::new("mosquitto_sub")
            .args(args)
            .args(["-q", "1", "-t", filter, "-F", "%r %t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lines = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(3, ' ');
                let retain = parts.next() == Some("1");
                let topic = parts.next().unwrap_or("").to_string();
                let payload = parts.next().unwrap_or("").to_string();
                lines.lock().unwrap().push(Got {
                    retain,
                    topic,
                    payload,
                });
            }
        });
        RemoteSub {
            _child: KilledOnDrop(child),
            seen,
        }
    }
}

#[derive(Debug, Clone)]
struct Got {
    retain: bool,
    topic: String,
    payload: String,
}

/// A child we spawned with a piped stdout, killed when the test is done with it.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct RemoteSub {
    _child: KilledOnDrop,
    seen: Arc<Mutex<Vec<Got>>>,
}

impl RemoteSub {
    fn all(&self) -> Vec<Got> {
        self.seen.lock().unwrap().clone()
    }

    fn on(&self, topic: &str) -> Vec<Got> {
        self.all()
            .into_iter()
            .filter(|g| g.topic == topic)
            .collect()
    }

    /// Waits until the latest message on `topic` satisfies `pred`.
    fn wait(&self, topic: &str, pred: impl Fn(&Got) -> bool) -> Got {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(got) = self.on(topic).last().filter(|g| pred(g)) {
                return got.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{topic} on the remote never matched; seen: {:?}",
                self.on(topic)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The `[cloud]` section for `remote`, with the password in a file of its own.
fn cloud_section(dir: &Path, remote: &str, ca: &Path, extra: &str) -> String {
    let password_file = dir.join("cloud.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    format!(
        "[cloud]\nremote = \"{remote}\"\nremote_base = \"{REMOTE_BASE}\"\nca_file = \"{ca}\"\n\
         username = \"{USER}\"\npassword_file = \"{pw}\"\nstate_interval = \"2s\"\n{extra}\n",
        ca = ca.display(),
        pw = password_file.display(),
    )
}

fn relays_section(dir: &Path) -> String {
    format!(
        "[relays]\nstate_dir = \"{d}/relays\"\n[relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{d}/board\"\n\
         [[relays.relay]]\nid = \"water_heater\"\npin = 17\n\n[[relays.relay]]\nid = \"pump\"\npin = 27\n\n",
        d = dir.display()
    )
}

fn spawn(subcommand: &str, config: &Path) -> Child {
    Child::spawn(
        &format!("pvbus {subcommand}"),
        Command::new(env!("CARGO_BIN_EXE_pvbus"))
            .args([subcommand, "--config"])
            .arg(config)
            .env("PVBUS_LOG", "warn"),
    )
}

/// Waits until `<base>/cloud/remote` satisfies `pred`; returns it as JSON.
fn link_report(local: &Recorder, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let got = local.wait_for("pvbus/cloud/remote", WAIT, |p| pred(&json(p)));
    json(&got.unwrap_or_else(|| {
        panic!(
            "pvbus/cloud/remote never matched; last: {:?}",
            local.last("pvbus/cloud/remote")
        )
    }))
}

/// `section` with each `key = value` line of `lines` replacing the line of the same key,
/// or added.
fn with_lines(section: &str, lines: &str) -> String {
    let mut out: Vec<String> = section.lines().map(str::to_string).collect();
    for line in lines.lines() {
        let key = line.split(" =").next().unwrap();
        match out.iter_mut().find(|l| l.split(" =").next() == Some(key)) {
            Some(existing) => *existing = line.to_string(),
            None => out.push(line.to_string()),
        }
    }
    out.join("\n") + "\n"
}

/// Waits until the link was reported down and then up again.
fn wait_for_reconnect(local: &Recorder) {
    let deadline = Instant::now() + WAIT;
    loop {
        let reports: Vec<serde_json::Value> = local
            .all()
            .iter()
            .filter(|s| s.topic == "pvbus/cloud/remote")
            .map(|s| json(&s.payload))
            .collect();
        let down = reports.iter().position(|r| r["connected"] == false);
        if let Some(down) = down
            && reports[down..].iter().any(|r| r["connected"] == true)
        {
            assert!(reports[down]["error"].is_string(), "{reports:?}");
            return;
        }
        assert!(Instant::now() < deadline, "no reconnect seen: {reports:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn states_go_out_commands_come_in_and_the_link_survives_a_remote_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "site");
    let mut remote = Remote::start(dir.path(), &pki);
    let local = Mosquitto::start();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\nexternal_broker = \"127.0.0.1:{}\"\n\n{}{}",
            local.port,
            relays_section(dir.path()),
            cloud_section(
                dir.path(),
                &format!("localhost:{}", remote.port),
                &pki.ca,
                ""
            )
        ),
    )
    .unwrap();

    // A retained command left on the remote: replayed to the bridge when it subscribes,
    // it must never switch anything.
    remote.publish(
        &pki.ca,
        &[
            "-r",
            "-t",
            "sites/cabin/relays/pump/mode/set",
            "-m",
            "forced_on",
        ],
    );

    let seen = Recorder::start(local.addr(), "pvbus/#");
    let _relays = spawn("relays", &config);
    seen.expect("pvbus/relays/status", "online", WAIT);
    let mut cloud = spawn("cloud", &config);
    let report = link_report(&seen, |r| {
        r["connected"] == true && r["ignored_retained_commands"] == 1
    });
    assert_eq!(report["remote"], format!("localhost:{}", remote.port));
    assert!(report.get("error").is_none(), "{report}");
    assert_eq!(seen.last("pvbus/cloud/status").as_deref(), Some("online"));

    // A late subscriber on the remote gets the relays' state, mode and reason, retained.
    let late = remote.subscribe(&pki.ca, "sites/cabin/relays/#");
    for leaf in ["state", "mode", "reason"] {
        let got = late.wait(&format!("sites/cabin/relays/water_heater/{leaf}"), |_| true);
        assert!(got.retain, "{leaf} not retained on the remote: {got:?}");
    }
    late.wait("sites/cabin/relays/water_heater/state", |g| {
        g.payload == "OFF"
    });
    late.wait("sites/cabin/relays/pump/mode", |g| g.payload == "auto_off");
    // The retained command was not obeyed, and never came through.
    assert_eq!(
        seen.last("pvbus/relays/pump/mode").as_deref(),
        Some("auto_off")
    );
    assert!(seen.last("pvbus/relays/pump/mode/set").is_none());
    // Commands never go out: nothing under .../set reached the remote from us.
    assert!(
        late.all()
            .iter()
            .all(|g| !g.topic.ends_with("/set") || g.topic == "sites/cabin/relays/pump/mode/set"),
        "{:?}",
        late.all()
    );
    remote.publish(
        &pki.ca,
        &["-r", "-n", "-t", "sites/cabin/relays/pump/mode/set"],
    );

    // A command from the remote switches the relay; the new state comes back out.
    let live = remote.subscribe(&pki.ca, "sites/cabin/#");
    live.wait("sites/cabin/cloud/status", |g| g.payload == "online");
    remote.publish(
        &pki.ca,
        &["-t", "sites/cabin/relays/pump/auto/set", "-m", "ON"],
    );
    remote.publish(
        &pki.ca,
        &[
            "-t",
            "sites/cabin/relays/water_heater/mode/set",
            "-m",
            "forced_on",
        ],
    );
    seen.expect("pvbus/relays/water_heater/state", "ON", WAIT);
    live.wait("sites/cabin/relays/water_heater/state", |g| {
        g.payload == "ON"
    });
    live.wait("sites/cabin/relays/water_heater/mode", |g| {
        g.payload == "forced_on"
    });
    let reason = live.wait("sites/cabin/relays/water_heater/reason", |g| {
        g.payload.contains("user")
    });
    assert!(!reason.payload.is_empty());
    // auto/set is not in `accept`: it never reached the local bus.
    assert!(seen.last("pvbus/relays/pump/auto/set").is_none());
    assert_eq!(seen.last("pvbus/relays/pump/state").as_deref(), Some("OFF"));

    // An invalid command: the relay bridge's error comes back out to the remote user.
    remote.publish(
        &pki.ca,
        &[
            "-t",
            "sites/cabin/relays/water_heater/mode/set",
            "-m",
            "turbo",
        ],
    );
    let error = live.wait("sites/cabin/relays/error", |_| true);
    let error_json = json(&error.payload);
    assert_eq!(error_json["topic"], "pvbus/relays/water_heater/mode/set");
    assert!(
        error_json["error"].as_str().unwrap().contains("turbo"),
        "{error_json}"
    );
    assert!(!error.retain);

    // Readings published fast go out at most once per state_interval (2 s), latest
    // value winning: the first at once, then the latest when the interval has passed.
    let lines: String = (1..=40)
        .map(|n| format!("{{\"ts\":1764040000,\"power\":{n}}}\n"))
        .collect();
    let started = Instant::now();
    let mut feeder = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &local.port.to_string()])
        .args(["-q", "1", "-r", "-t", "pvbus/meter/grid/state", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = feeder.stdin.take().unwrap();
        for line in lines.lines() {
            writeln!(stdin, "{line}").unwrap();
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    assert!(feeder.wait().unwrap().success());
    let fed_in = started.elapsed();
    seen.expect(
        "pvbus/meter/grid/state",
        "{\"ts\":1764040000,\"power\":40}",
        WAIT,
    );
    let last = live.wait("sites/cabin/meter/grid/state", |g| {
        g.payload.contains("\"power\":40}")
    });
    assert!(!last.payload.is_empty());
    let got = live.on("sites/cabin/meter/grid/state");
    // 40 readings over `fed_in` (about 1 s): one at once, then one per 2 s interval.
    let allowed = 1 + (fed_in.as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        got.len() <= allowed,
        "{} readings reached the remote for 40 sent in {fed_in:?} (at most {allowed}): {got:?}",
        got.len()
    );
    eprintln!(
        "coalescing: 40 readings in {fed_in:?} -> {} on the remote",
        got.len()
    );

    // The remote dies and comes back empty: the bridge reconnects and puts every
    // retained state back.
    seen.clear();
    remote.restart();
    wait_for_reconnect(&seen);

    // Down for a while: a state change is remembered (and sent when the link is back),
    // an event is dropped and counted, not queued.
    seen.clear();
    remote.kill();
    let down = link_report(&seen, |r| r["connected"] == false);
    assert!(down["error"].is_string(), "{down}");
    mosquitto_pub(
        local.addr(),
        &[
            "-q",
            "1",
            "-t",
            "pvbus/relays/pump/mode/set",
            "-m",
            "forced_on",
        ],
    );
    mosquitto_pub(
        local.addr(),
        &["-q", "1", "-t", "pvbus/relays/pump/mode/set", "-m", "turbo"],
    );
    seen.expect("pvbus/relays/pump/state", "ON", WAIT);
    seen.wait_for("pvbus/relays/error", WAIT, |p| p.contains("pump"))
        .expect("the relay bridge answered the bad command");
    remote.start_again();
    let up = link_report(&seen, |r| r["connected"] == true);
    assert_eq!(up["dropped_events"], 1, "{up}");
    let after = remote.subscribe(&pki.ca, "sites/cabin/#");
    after.wait("sites/cabin/relays/pump/state", |g| {
        g.payload == "ON" && g.retain
    });
    let state = after.wait("sites/cabin/relays/water_heater/state", |g| {
        g.payload == "ON"
    });
    assert!(state.retain);
    after.wait("sites/cabin/relays/water_heater/mode", |g| {
        g.payload == "forced_on"
    });
    after.wait("sites/cabin/meter/grid/state", |g| {
        g.payload.contains("\"power\":40}")
    });
    after.wait("sites/cabin/cloud/status", |g| g.payload == "online");
    // The relay bridge's error was an event: it is not replayed.
    assert!(after.on("sites/cabin/relays/error").is_empty());

    // SIGTERM: `offline` on the remote by our own publication, exactly once, exit 0.
    let status_watch = remote.subscribe(&pki.ca, "sites/cabin/cloud/status");
    status_watch.wait("sites/cabin/cloud/status", |g| g.payload == "online");
    let exit = cloud.terminate(WAIT).expect("pvbus cloud did not stop");
    assert!(exit.success(), "{exit:?}");
    status_watch.wait("sites/cabin/cloud/status", |g| g.payload == "offline");
    std::thread::sleep(Duration::from_millis(300));
    let offlines = status_watch
        .on("sites/cabin/cloud/status")
        .iter()
        .filter(|g| g.payload == "offline")
        .count();
    assert_eq!(offlines, 1, "{:?}", status_watch.all());
    let report = link_report(&seen, |r| r["connected"] == false);
    assert_eq!(report["error"], "stopped");
    seen.expect("pvbus/cloud/status", "offline", WAIT);
}

#[test]
fn tls_and_login_errors_are_named_and_nothing_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "site");
    let other = make_pki(dir.path(), "other");
    let remote = Remote::start(dir.path(), &pki);
    let local = Mosquitto::start();
    let seen = Recorder::start(local.addr(), "pvbus/#");
    let watch = remote.subscribe(&pki.ca, "#");
    mosquitto_pub(
        local.addr(),
        &["-r", "-t", "pvbus/relays/pump/state", "-m", "ON"],
    );
    let no_cert = dir.path().join("empty.pem");
    std::fs::write(&no_cert, "not a certificate\n").unwrap();
    let wrong_password = dir.path().join("wrong.password");
    std::fs::write(&wrong_password, "guess\n").unwrap();
    let localhost = format!("localhost:{}", remote.port);
    let by_ip = format!("127.0.0.1:{}", remote.port);

    let cases: [(&str, &str, &Path, String, &str); 7] = [
        (
            "a CA that did not sign the remote's certificate",
            &localhost,
            &other.ca,
            String::new(),
            "not signed by a CA we trust",
        ),
        (
            "a name the certificate does not list",
            &by_ip,
            &pki.ca,
            String::new(),
            "not valid for the name \"127.0.0.1\"",
        ),
        (
            "a CA file with no certificate",
            &localhost,
            &no_cert,
            String::new(),
            "no certificate in it",
        ),
        (
            "an unreadable CA file",
            &localhost,
            &dir.path().join("missing.pem"),
            String::new(),
            "cannot read",
        ),
        (
            "a refused password",
            &localhost,
            &pki.ca,
            format!("password_file = \"{}\"\n", wrong_password.display()),
            "refused the login",
        ),
        (
            "a client key that does not go with the client certificate",
            &localhost,
            &pki.ca,
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                pki.client_cert.display(),
                other.client_key.display()
            ),
            "does not go with cloud.client_cert_file",
        ),
        (
            "a client key file with no key",
            &localhost,
            &pki.ca,
            format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                pki.client_cert.display(),
                pki.client_cert.display()
            ),
            "no private key in it",
        ),
    ];
    for (what, remote_addr, ca, extra, expected) in cases {
        let config = dir.path().join("pvbus.toml");
        let section = with_lines(&cloud_section(dir.path(), remote_addr, ca, ""), &extra);
        std::fs::write(
            &config,
            format!(
                "[bus]\nexternal_broker = \"127.0.0.1:{}\"\n\n{section}",
                local.port
            ),
        )
        .unwrap();
        seen.clear();
        let mut cloud = spawn("cloud", &config);
        let report = link_report(&seen, |r| r["error"].is_string());
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "{what}: expected {expected:?} in {error:?}"
        );
        if ca == no_cert.as_path() || ca.ends_with("missing.pem") {
            assert!(error.contains("cloud.ca_file"), "{what}: {error}");
        }
        assert_eq!(report["connected"], false, "{what}");
        // Alive, the local side up, retrying.
        std::thread::sleep(Duration::from_millis(300));
        assert!(cloud.is_running(), "{what}: pvbus cloud exited");
        assert_eq!(seen.last("pvbus/cloud/status").as_deref(), Some("online"));
        assert_eq!(cloud.terminate(WAIT).map(|s| s.success()), Some(true));
    }
    assert!(
        watch.all().is_empty(),
        "something reached the remote: {:?}",
        watch.all()
    );
}

#[test]
fn works_with_the_embedded_broker_under_pvbus_run() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "site");
    let remote = Remote::start(dir.path(), &pki);
    let port = free_port();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{d}/broker\"\n\n{relays}{cloud}\
             [supervisor]\nstop_timeout_secs = 5\n",
            d = dir.path().display(),
            relays = relays_section(dir.path()),
            cloud = cloud_section(
                dir.path(),
                &format!("localhost:{}", remote.port),
                &pki.ca,
                ""
            ),
        ),
    )
    .unwrap();
    let live = remote.subscribe(&pki.ca, "sites/cabin/#");
    let mut run = spawn("run", &config);
    live.wait("sites/cabin/cloud/status", |g| g.payload == "online");
    live.wait("sites/cabin/relays/pump/mode", |g| g.payload == "auto_off");
    // The supervisor's table reaches the remote too (and says cloud is running).
    live.wait("sites/cabin/supervisor/processes", |g| {
        json(&g.payload)["processes"]["cloud"]["state"] == "running"
    });
    remote.publish(
        &pki.ca,
        &["-t", "sites/cabin/relays/pump/mode/set", "-m", "forced_on"],
    );
    live.wait("sites/cabin/relays/pump/state", |g| g.payload == "ON");
    let exit = run.terminate(WAIT).expect("pvbus run did not stop");
    assert!(exit.success(), "{exit:?}");
    live.wait("sites/cabin/cloud/status", |g| g.payload == "offline");
}

#[test]
fn config_check_names_the_cloud_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        "[cloud]\nremote = \"mqtt.example.org:8883\"\nremote_base = \"sites/cabin\"\n\
         accept = [\"relays/+/mode/set\", \"relays/+/state\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cloud.accept[1]") && stderr.contains("/set"),
        "{stderr}"
    );

    std::fs::write(&config, "[cloud]\nremote_base = \"sites/cabin\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cloud.remote") && stderr.contains("required"),
        "{stderr}"
    );

    // Without a [cloud] section there is nothing to check (the bridge is not wanted).
    std::fs::write(&config, "[bus]\nbase = \"pvbus\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// packaging/mosquitto/pvbus-bridge.conf, as shipped but for its SITE lines, in a local
/// mosquitto bridged to the TLS remote: a relay state crosses out, a mode command in.
#[test]
fn the_shipped_mosquitto_bridge_config_works() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "site");
    let remote = Remote::start(dir.path(), &pki);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/mosquitto/pvbus-bridge.conf"
    ))
    .unwrap();
    let mut replaced = 0;
    let bridge: String = shipped
        .lines()
        .map(|line| {
            let site = match line.split_whitespace().next() {
                Some("address") => Some(format!("address localhost:{}", remote.port)),
                Some("remote_password") => Some(format!("remote_password {PASSWORD}")),
                Some("bridge_cafile") => Some(format!("bridge_cafile {}", pki.ca.display())),
                _ => None,
            };
            replaced += usize::from(site.is_some());
            site.unwrap_or_else(|| line.to_string()) + "\n"
        })
        .collect();
    assert_eq!(replaced, 3, "the SITE lines of pvbus-bridge.conf changed");
    let port = free_port();
    let conf = dir.path().join("local.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             set_tcp_nodelay true\n\n{bridge}"
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("a+r").arg(&conf).status();
    let live = remote.subscribe(&pki.ca, "sites/cabin/#");
    let _local = Remote::spawn(&conf, port);
    // The bridge is up on the remote (mosquitto's notification: 1).
    live.wait("sites/cabin/cloud/status", |g| g.payload == "1");

    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\nexternal_broker = \"127.0.0.1:{port}\"\n\n{}",
            relays_section(dir.path())
        ),
    )
    .unwrap();
    let _relays = spawn("relays", &config);
    live.wait("sites/cabin/relays/pump/mode", |g| g.payload == "auto_off");
    live.wait("sites/cabin/relays/status", |g| g.payload == "online");
    remote.publish(
        &pki.ca,
        &["-t", "sites/cabin/relays/pump/mode/set", "-m", "forced_on"],
    );
    live.wait("sites/cabin/relays/pump/state", |g| g.payload == "ON");
    live.wait("sites/cabin/relays/pump/mode", |g| g.payload == "forced_on");
    // The remote restarts empty: mosquitto's bridge reconnects and sends the retained
    // states again (what docs/cloud.md says of it).
    drop(live);
    let mut remote = remote;
    remote.restart();
    let back = remote.subscribe(&pki.ca, "sites/cabin/relays/#");
    back.wait("sites/cabin/relays/pump/state", |g| g.payload == "ON");
    // …retained: a subscriber that comes after it gets it.
    let late = remote.subscribe(&pki.ca, "sites/cabin/relays/#");
    let state = late.wait("sites/cabin/relays/pump/state", |g| g.payload == "ON");
    assert!(state.retain, "{state:?}");
    // States do not come in: a state written on the remote never reaches the local bus.
    let local = Recorder::start(SocketAddr::from(([127, 0, 0, 1], port)), "pvbus/#");
    remote.publish(
        &pki.ca,
        &["-t", "sites/cabin/relays/water_heater/state", "-m", "ON"],
    );
    remote.publish(
        &pki.ca,
        &[
            "-t",
            "sites/cabin/relays/water_heater/mode/set",
            "-m",
            "forced_off",
        ],
    );
    local.expect("pvbus/relays/water_heater/mode", "forced_off", WAIT);
    assert!(
        local
            .all()
            .iter()
            .all(|s| !(s.topic == "pvbus/relays/water_heater/state" && s.payload == "ON")),
        "a state from the remote came in: {:?}",
        local.all()
    );
}

/// A remote that requires a client certificate (AWS IoT style): refused without one, with
/// an error that says so; connected with the one its CA signed.
#[test]
fn a_client_certificate_logs_in_where_one_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "site");
    let remote = Remote::start_with(dir.path(), &pki, "require_certificate true\n");
    let local = Mosquitto::start();
    let seen = Recorder::start(local.addr(), "pvbus/#");
    let config = dir.path().join("pvbus.toml");
    let section = cloud_section(
        dir.path(),
        &format!("localhost:{}", remote.port),
        &pki.ca,
        "",
    );
    let bus = format!("[bus]\nexternal_broker = \"127.0.0.1:{}\"\n\n", local.port);

    std::fs::write(&config, format!("{bus}{section}")).unwrap();
    let mut cloud = spawn("cloud", &config);
    let report = link_report(&seen, |r| r["error"].is_string());
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("requires a client certificate"), "{error}");
    cloud.terminate(WAIT);

    let with_cert = with_lines(
        &section,
        &format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    std::fs::write(&config, format!("{bus}{with_cert}")).unwrap();
    seen.clear();
    let mut cloud = spawn("cloud", &config);
    link_report(&seen, |r| r["connected"] == true);
    let late = remote.subscribe_with_cert(&pki, "sites/cabin/cloud/status");
    late.wait("sites/cabin/cloud/status", |g| g.payload == "online");
    assert_eq!(cloud.terminate(WAIT).map(|s| s.success()), Some(true));
}

/// `tls = false` (a remote inside a VPN) and `state_interval = 0`: every reading goes
/// out as it comes, in order.
#[test]
fn plain_tcp_and_no_holding_back() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Mosquitto::start();
    let local = Mosquitto::start();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\nexternal_broker = \"127.0.0.1:{}\"\n\n[cloud]\nremote = \"127.0.0.1:{}\"\n\
             remote_base = \"sites/van\"\ntls = false\nstate_interval = 0\n",
            local.port, remote.port
        ),
    )
    .unwrap();
    let seen = Recorder::start(local.addr(), "pvbus/#");
    let out = Recorder::start(remote.addr(), "sites/van/#");
    let mut cloud = spawn("cloud", &config);
    link_report(&seen, |r| r["connected"] == true);
    out.expect("sites/van/cloud/status", "online", WAIT);
    for n in 1..=20 {
        mosquitto_pub(
            local.addr(),
            &[
                "-q",
                "1",
                "-t",
                "pvbus/meter/grid/state",
                "-m",
                &n.to_string(),
            ],
        );
    }
    out.expect("sites/van/meter/grid/state", "20", WAIT);
    let got: Vec<String> = out
        .all()
        .into_iter()
        .filter(|s| s.topic == "sites/van/meter/grid/state")
        .map(|s| s.payload)
        .collect();
    let expected: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    assert_eq!(got, expected);
    assert_eq!(cloud.terminate(WAIT).map(|s| s.success()), Some(true));
    out.expect("sites/van/cloud/status", "offline", WAIT);
}
