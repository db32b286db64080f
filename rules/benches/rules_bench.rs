//! Benchmark of the rules engine, written as JSON on stdout:
//! - the time of one pass (one reading in, 8 relays evaluated) with realistic rules;
//! - the time to simulate one day of readings every 10 s.
//!
//! Run: `cargo run --release -p pvbus-rules --bin rules-bench`

use std::path::Path;
use std::time::Instant;

use pvbus_rules::config;
use pvbus_rules::engine::Engine;
use pvbus_rules::history::Mode;
use pvbus_rules::scenario;
use pvbus_rules::simulate::{SimOptions, run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let rules = config::load(&dir.join("house.toml"))?;
    let relays = rules.relays.len();

    // Passes: alternate two readings at noon in float, one pass per reading.
    let mut engine = Engine::new(rules.clone());
    for r in &rules.relays {
        engine.relay_mode(&r.name, Mode::AutoOff);
        engine.relay_state(&r.name, false, 0);
    }
    let start = 1_782_036_000; // 2026-06-21 12:00 CEST
    let passes = 50_000;
    let t0 = Instant::now();
    let mut decisions = 0;
    for i in 0..passes {
        let ts = start + i as i64;
        let reading = if i % 2 == 0 {
            serde_json::json!({"ts": ts, "charge_state": "float", "pv_power": 600 + (i % 50)})
        } else {
            serde_json::json!({"ts": ts, "state_of_charge": 99.5, "battery_power": 60 + (i % 7)})
        };
        engine.reading(if i % 2 == 0 { "mppt_roof" } else { "bmv" }, &reading, ts)?;
        decisions += engine.pass(ts).decisions.len();
    }
    let pass_ns = t0.elapsed().as_nanos() as f64 / passes as f64;

    // A simulated day.
    let sc = scenario::load(&dir.join("house.scenario"), &rules.site)?;
    let mut best_ms = f64::MAX;
    let mut summary = None;
    for _ in 0..5 {
        let t0 = Instant::now();
        let s = run(
            rules.clone(),
            &sc,
            SimOptions::default(),
            &mut std::io::sink(),
        )?;
        best_ms = best_ms.min(t0.elapsed().as_secs_f64() * 1000.0);
        summary = Some(s);
    }
    let summary = summary.expect("ran");
    let out = serde_json::json!({
        "relays": relays,
        "pass_with_reading_us": (pass_ns / 10.0).round() / 100.0,
        "passes_measured": passes,
        "decisions_during_pass_bench": decisions,
        "simulated_day_ms": (best_ms * 100.0).round() / 100.0,
        "day_events": sc.events.len(),
        "day_passes": summary.passes,
        "day_decisions": summary.decisions.len(),
        "day_faults": summary.faults.len(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
