//! `pvbus rules check` and `pvbus rules simulate` as a user runs them: the real binary,
//! its exit status, what it prints on stdout (the decisions, as JSON lines) and on stderr
//! (each error with its file, line and column). The rule engine itself is tested in
//! rules/tests; this is the command line around it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn rules(config: &Path, args: &[&str]) -> Output {
    Command::new(PVBUS)
        .args(["rules", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_says_ok_or_points_at_the_error() {
    let out = rules(&repo("examples/rules/soc_threshold.toml"), &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok, 1 relay rule(s): tool_charger"),
        "{}",
        text(&out.stdout)
    );

    let broken = repo("rules/tests/broken/misspelled_value.toml");
    let out = rules(&broken, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:11:1:", broken.display())),
        "no file:line:col in {err}"
    );
    assert!(
        err.contains("unknown value `bmv.state_of_chrge`")
            && err.contains("close names: bmv.state_of_charge"),
        "{err}"
    );
    assert!(err.contains("1 error(s)"), "{err}");
}

#[test]
fn simulate_prints_each_decision_as_a_json_line_the_same_every_time() {
    let config = repo("examples/rules/soc_threshold.toml");
    let scenario = repo("examples/rules/soc_threshold.scenario");
    let run = || {
        rules(
            &config,
            &["simulate", "--scenario", scenario.to_str().unwrap()],
        )
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let seen: Vec<(String, String, String)> = lines
        .iter()
        .map(|d| {
            (
                d["time"].as_str().unwrap().to_string(),
                d["relay"].as_str().unwrap().to_string(),
                d["command"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The scenario's story (see its comments), in local time (Europe/Paris, summer).
    let at = |t: &str| format!("2026-06-21T{t}+02:00");
    assert_eq!(
        seen,
        [
            (at("09:30:00"), "tool_charger".into(), "ON".into()),
            (at("10:30:00"), "tool_charger".into(), "OFF".into()),
            (at("11:00:00"), "tool_charger".into(), "ON".into()),
            (at("11:25:01"), "tool_charger".into(), "OFF".into()),
        ]
    );
    assert!(
        lines
            .iter()
            .all(|d| d["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );
    assert_eq!(run().stdout, out.stdout, "two runs differ");
}

#[test]
fn simulate_fails_on_an_unmet_expectation_and_on_a_rule_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo("examples/rules/soc_threshold.toml");
    let scenario = fs::read_to_string(repo("examples/rules/soc_threshold.scenario")).unwrap();
    // The charger was expected to come on at 09:30; say 09:20 instead.
    let wrong = dir.path().join("wrong.scenario");
    fs::write(
        &wrong,
        scenario.replace(
            "expect 09:30 tool_charger ON",
            "expect 09:20 tool_charger ON",
        ),
    )
    .unwrap();
    let out = rules(
        &config,
        &["simulate", "--scenario", wrong.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("expectation(s)") && err.contains("09:20"),
        "{err}"
    );

    // A script comparing a number with a text: it compiles (the types of values are only
    // known when they arrive), but fails when evaluated.
    let typed = dir.path().join("typed.toml");
    fs::write(
        &typed,
        r#"[site]
timezone = "Europe/Paris"
[rules.devices]
bmv = { values = "vedirect" }
[rules.relays.tool_charger]
language = "rhai"
on = 'value("bmv.state_of_charge") >= 95.0'
off = 'value("bmv.state_of_charge") < value("bmv.charge_state")'
"#,
    )
    .unwrap();
    let plain = dir.path().join("plain.scenario");
    fs::write(
        &plain,
        "start 2026-06-21 08:00\nend 08:10\nrelay tool_charger auto_off\nevery 1m 08:00..08:10 bmv state_of_charge=94 charge_state=\"float\"\n",
    )
    .unwrap();
    let out = rules(&typed, &["simulate", "--scenario", plain.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a rule error passed: {err}");
    assert!(err.contains("rule error"), "{err}");
    assert!(err.contains(&format!("{}:", typed.display())), "{err}");
}
