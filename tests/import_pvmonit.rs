//! `pvbus import-pvmonit` with the real binary: a PvMonit user's config.yaml becomes a
//! file that `pvbus config check` accepts, whose relays the relay bridge then really
//! drives (on the simulated GPIO board, with a real broker), and bad input gets an error
//! that names the key without writing anything.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use pvbus_testkit::{Child, Mosquitto, Recorder};

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/bridges/pvmonit-import/tests/fixtures/config.yaml"
);

fn pvbus(args: &[&str]) -> Output {
    Command::new(PVBUS)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run pvbus")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_imported_file_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pvbus.toml");
    let import = pvbus(&["import-pvmonit", FIXTURE, "--output", out.to_str().unwrap()]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    assert!(
        text(&import.stderr).contains("imported 6 relays and 4 VE.Direct devices"),
        "{}",
        text(&import.stderr)
    );
    let check = pvbus(&["config", "check", out.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "config check refused the import:\n{}{}\n--- file ---\n{}",
        text(&check.stdout),
        text(&check.stderr),
        fs::read_to_string(&out).unwrap()
    );

    // Standard output gives the same file; an existing --output is not replaced.
    let stdout = pvbus(&["import-pvmonit", FIXTURE]);
    assert!(stdout.status.success());
    assert_eq!(text(&stdout.stdout), fs::read_to_string(&out).unwrap());
    let again = pvbus(&["import-pvmonit", FIXTURE, "-o", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn a_bad_file_is_refused_with_the_key_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("config.yaml");
    fs::write(&yaml, "domo:\n  relayWiringPi:\n    2: GPIO17\n").unwrap();
    let out = dir.path().join("pvbus.toml");
    let import = pvbus(&[
        "import-pvmonit",
        yaml.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!import.status.success());
    let error = text(&import.stderr);
    assert!(error.contains("domo.relayWiringPi.2"), "{error}");
    assert!(error.contains("config.yaml"), "{error}");
    assert!(!out.exists());

    let missing = pvbus(&["import-pvmonit", "/nonexistent/config.yaml"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("/nonexistent/config.yaml"));
}

/// The imported relays are the ones the relay bridge drives: run `pvbus relays` on the
/// imported file (GPIO swapped for the simulated board, broker for a real mosquitto) and
/// see every relay announce its state and mode.
#[test]
fn the_relay_bridge_runs_the_imported_relays() {
    let dir = tempfile::tempdir().unwrap();
    let import = pvbus(&["import-pvmonit", FIXTURE]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    let imported = text(&import.stdout);
    let broker = Mosquitto::start();
    let config = for_the_test(&imported, dir.path(), broker.port);
    let path = dir.path().join("pvbus.toml");
    fs::write(&path, config).unwrap();

    let recorder = Recorder::start(broker.addr(), "pvbus/relays/#");
    let _relays = Child::spawn(
        "pvbus relays",
        Command::new(PVBUS)
            .args(["relays", "--config", path.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    for id in [
        "box_internet",
        "pompe_de_relevage",
        "chauffe_eau",
        "chargeur_outils",
        "disque_de_sauvegarde",
        "relay_6",
    ] {
        recorder.expect(
            &format!("pvbus/relays/{id}/state"),
            "OFF",
            Duration::from_secs(10),
        );
        recorder.expect(
            &format!("pvbus/relays/{id}/mode"),
            "auto_off",
            Duration::from_secs(10),
        );
    }
}

/// The imported file with the broker, state and GPIO moved to the test's own.
fn for_the_test(imported: &str, dir: &Path, port: u16) -> String {
    let replaced = imported
        .replace(
            "[bus]\nbase = \"pvbus\"\n",
            &format!("[bus]\nbase = \"pvbus\"\nexternal_broker = \"127.0.0.1:{port}\"\n"),
        )
        .replace(
            "/var/lib/pvbus/relays",
            &dir.join("relays").display().to_string(),
        )
        .replace(
            "[relays.gpio]\nbackend = \"auto\"",
            &format!(
                "[relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{}\"",
                dir.join("gpio").display()
            ),
        );
    assert!(replaced.contains("external_broker") && replaced.contains("backend = \"sim\""));
    replaced
}
