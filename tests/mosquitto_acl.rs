//! The mosquitto configuration we ship for users who want topic ACLs
//! (packaging/mosquitto/pvbus.acl): run against a real mosquitto, each user may do
//! exactly what docs/security.md says, and nothing more.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, free_port, wait_for_listener};

const USERS: [&str; 4] = ["pvbus", "homeassistant", "script", "viewer"];

fn password(user: &str) -> String {
    format!("{user}-secret")
}

fn publish(port: u16, user: &str, topic: &str, payload: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args([
            "-u",
            user,
            "-P",
            &password(user),
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
        .expect("mosquitto_pub");
    // mosquitto (MQTT 3.1.1) accepts a forbidden publish and drops it: success either way.
    assert!(status.success(), "{user} could not even connect");
}

#[test]
fn the_shipped_acl_lets_each_user_do_only_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/mosquitto/pvbus.acl");
    let passwd = dir.path().join("pvbus.passwd");
    for (i, user) in USERS.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(&passwd)
            .args([user.to_string(), password(user)])
            .stderr(Stdio::null())
            .status()
            .expect("mosquitto_passwd (package mosquitto)");
        assert!(status.success());
    }
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\nlistener {port} 127.0.0.1\nset_tcp_nodelay true\n",
            passwd.display(),
            shipped.display()
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
    assert!(wait_for_listener(
        ([127, 0, 0, 1], port).into(),
        Duration::from_secs(5)
    ));

    // Anonymous clients are refused.
    let anonymous = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "pvbus/relays/pump/mode/set", "-m", "forced_on"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!anonymous.success(), "an anonymous client was let in");

    // Everything that reaches the bus, as the pvbus processes see it.
    let seen_file = dir.path().join("seen.txt");
    let _watch = Child::spawn(
        "mosquitto_sub",
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"])
            .args(["-u", "pvbus", "-P", &password("pvbus"), "-t", "pvbus/#"])
            .stdout(std::fs::File::create(&seen_file).unwrap()),
    );
    std::thread::sleep(Duration::from_millis(300));

    let allowed = [
        ("homeassistant", "pvbus/relays/pump/mode/set", "forced_on"),
        ("homeassistant", "pvbus/lcd/line/1/set", "hello"),
        (
            "script",
            "pvbus/script/cellar/state",
            r#"{"ts":1,"temperature":12.5}"#,
        ),
        ("pvbus", "pvbus/relays/pump/auto/set", "ON"),
    ];
    let refused = [
        ("homeassistant", "pvbus/relays/pump/auto/set", "ON"),
        ("homeassistant", "pvbus/relays/pump/state", "ON"),
        ("script", "pvbus/relays/pump/mode/set", "forced_on"),
        ("viewer", "pvbus/relays/pump/mode/set", "forced_off"),
        ("viewer", "pvbus/script/x/state", "{}"),
    ];
    for (user, topic, payload) in refused.iter().chain(allowed.iter()) {
        publish(port, user, topic, &format!("{user}:{payload}"));
    }
    publish(port, "pvbus", "pvbus/test/done", "marker");

    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let seen = std::fs::read_to_string(&seen_file).unwrap_or_default();
        if seen.contains("pvbus/test/done") || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        seen.contains("pvbus/test/done"),
        "the marker never arrived: {seen}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let seen = std::fs::read_to_string(&seen_file).unwrap();
    for (user, topic, payload) in allowed {
        let line = format!("{topic} {user}:{payload}");
        assert!(seen.contains(&line), "{user} may publish {topic}: {seen}");
    }
    for (user, topic, payload) in refused {
        let line = format!("{topic} {user}:{payload}");
        assert!(
            !seen.contains(&line),
            "{user} must not publish {topic}: {seen}"
        );
    }
}
