//! Runs every scenario of examples/rules/ against its rules file and checks the decisions
//! it expects (`expect` lines), both ways: each expected decision happens at its time with
//! its reason, and nothing else is decided.

use std::path::{Path, PathBuf};

use pvbus_rules::simulate::{SimOptions, simulate};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules")
}

/// `name.scenario` and `name.variant.scenario` run against `name.toml`.
fn config_for(scenario: &Path) -> PathBuf {
    let file = scenario
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let stem = file.split('.').next().unwrap_or_default();
    scenario.with_file_name(format!("{stem}.toml"))
}

#[test]
fn every_example_scenario_decides_what_it_expects() {
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/rules exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    scenarios.sort();
    assert!(
        scenarios.len() >= 12,
        "expected the 12 examples, found {}",
        scenarios.len()
    );
    let mut problems = Vec::new();
    for sc in &scenarios {
        let text = std::fs::read_to_string(sc).unwrap();
        assert!(
            text.contains("\nexpect "),
            "{} has no expect line",
            sc.display()
        );
        let mut out = Vec::new();
        match simulate(&config_for(sc), sc, SimOptions::default(), &mut out) {
            Ok(summary) => {
                problems.extend(summary.failures);
                problems.extend(summary.faults);
                // The JSON lines are the same decisions.
                let lines = String::from_utf8(out).unwrap();
                assert_eq!(lines.lines().count(), summary.decisions.len());
                for line in lines.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert!(
                        v["reason"].as_str().is_some_and(|r| !r.is_empty()),
                        "{line}"
                    );
                }
            }
            Err(e) => problems.push(format!("{}: {e}", sc.display())),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
