//! `rules check` and `rules simulate` as library functions.
//!
//! A simulation replays a scenario in virtual time through the real [`Engine`]: passes run
//! at each scenario event and at each wake-up the engine asks for, exactly as the running
//! process does; the relay bridge is stood in for by applying each decision to a relay in
//! auto mode (forced relays ignore rules). Every decision is written as one JSON line.

use std::io::Write;
use std::path::Path;

use crate::clock::Clock;
use crate::config::{self, ConfigErrors, RuleSet};
use crate::engine::{Command, Decision, Engine};
use crate::history::Mode;
use crate::scenario::{self, Action, ScenarioError};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What a simulation produced.
#[derive(Debug, Default)]
pub struct SimSummary {
    pub decisions: Vec<Decision>,
    /// Expectations not met and decisions not expected, one sentence each (empty when the
    /// scenario has no `expect` lines and decisions were not checked).
    pub failures: Vec<String>,
    pub passes: usize,
    /// Rule faults (type errors found while evaluating), located in the rules file.
    pub faults: Vec<String>,
}

/// Checks a configuration file and its includes.
pub fn check(config_path: &Path) -> Result<RuleSet, ConfigErrors> {
    config::load(config_path)
}

/// Options of a simulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimOptions {
    /// Also write each status change as a JSON line (`{"status":..}`).
    pub statuses: bool,
}

/// Runs a scenario against the rules of a configuration file.
pub fn simulate(
    config_path: &Path,
    scenario_path: &Path,
    options: SimOptions,
    out: &mut dyn Write,
) -> Result<SimSummary, SimError> {
    let rules = config::load(config_path)?;
    let sc = scenario::load(scenario_path, &rules.site)?;
    run(rules, &sc, options, out)
}

/// Runs a parsed scenario.
pub fn run(
    rules: RuleSet,
    sc: &scenario::Scenario,
    options: SimOptions,
    out: &mut dyn Write,
) -> Result<SimSummary, SimError> {
    let mut engine = Engine::new(rules);
    let mut summary = SimSummary::default();
    for (relay, mode) in &sc.initial {
        engine.relay_mode(relay, *mode);
        engine.relay_state(
            relay,
            matches!(mode, Mode::AutoOn | Mode::ForcedOn),
            sc.start,
        );
    }
    let mut i = 0;
    let mut clock = Clock::Virtual(sc.start);
    let mut wake: Option<i64> = Some(sc.start);
    loop {
        let next_event = sc.events.get(i).map(|e| e.ts);
        let next = match (next_event, wake) {
            (Some(e), Some(w)) => e.min(w),
            (Some(e), None) => e,
            (None, Some(w)) => w,
            (None, None) => break,
        };
        if next > sc.end {
            break;
        }
        clock.advance_to(next);
        let now = clock.now();
        while let Some(e) = sc.events.get(i).filter(|e| e.ts <= now) {
            match &e.action {
                Action::Reading { device, state } => {
                    if let Err(err) = engine.reading(device, state, e.ts) {
                        summary
                            .faults
                            .push(format!("{}:{}: {err}", sc.path.display(), e.line));
                    }
                }
                Action::Mode { relay, mode } => {
                    engine.relay_mode(relay, *mode);
                    // The relay bridge makes a forced mode real at once.
                    match mode {
                        Mode::ForcedOn | Mode::AutoOn => engine.relay_state(relay, true, e.ts),
                        Mode::ForcedOff | Mode::AutoOff => engine.relay_state(relay, false, e.ts),
                    }
                }
                Action::State { relay, on } => engine.relay_state(relay, *on, e.ts),
            }
            i += 1;
        }
        let report = engine.pass(now);
        summary.passes += 1;
        for d in &report.decisions {
            serde_json::to_writer(&mut *out, d).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        if options.statuses {
            for (relay, status) in &report.statuses {
                serde_json::to_writer(
                    &mut *out,
                    &serde_json::json!({"ts": now, "relay": relay, "status": status}),
                )
                .map_err(std::io::Error::from)?;
                writeln!(out)?;
            }
        }
        summary
            .faults
            .extend(report.faults.iter().map(|f| f.error.to_string()));
        summary.decisions.extend(report.decisions);
        wake = report.next_wake.filter(|w| *w > now);
    }
    if !sc.expectations.is_empty() {
        summary.failures = compare(sc, &summary.decisions, &engine);
    }
    Ok(summary)
}

/// Matches decisions with expectations, both ways.
fn compare(sc: &scenario::Scenario, decisions: &[Decision], engine: &Engine) -> Vec<String> {
    let mut failures = Vec::new();
    let mut used = vec![false; decisions.len()];
    let site = &engine.rules().site;
    for x in &sc.expectations {
        let cmd = if x.on { Command::On } else { Command::Off };
        let found = decisions
            .iter()
            .enumerate()
            .position(|(j, d)| !used[j] && d.ts == x.ts && d.relay == x.relay && d.command == cmd);
        match found {
            Some(j) => {
                used[j] = true;
                if let Some(text) = &x.reason_contains
                    && !decisions[j].reason.contains(text.as_str())
                {
                    failures.push(format!(
                        "{}:{}: {} {} at {}: reason \"{}\" does not contain \"{text}\"",
                        sc.path.display(),
                        x.line,
                        x.relay,
                        cmd.payload(),
                        site.iso(x.ts),
                        decisions[j].reason
                    ));
                }
            }
            None => {
                let near: Vec<String> = decisions
                    .iter()
                    .filter(|d| d.relay == x.relay && d.command == cmd)
                    .map(|d| site.iso(d.ts))
                    .collect();
                failures.push(format!(
                    "{}:{}: expected {} {} at {}, not decided then (its {} decisions: {})",
                    sc.path.display(),
                    x.line,
                    x.relay,
                    cmd.payload(),
                    site.iso(x.ts),
                    cmd.payload(),
                    if near.is_empty() {
                        "none".into()
                    } else {
                        near.join(", ")
                    }
                ));
            }
        }
    }
    for (d, used) in decisions.iter().zip(used) {
        if !used {
            failures.push(format!(
                "{}: unexpected decision {} {} at {}: {}",
                sc.path.display(),
                d.relay,
                d.command.payload(),
                d.time,
                d.reason
            ));
        }
    }
    failures
}
