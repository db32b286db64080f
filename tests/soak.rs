//! Soak: the demo stack (`pvbus run` with the embedded broker, a simulated MPPT and BMV on
//! ptys, relays on the simulated GPIO board, the rules and the simulated panel) through
//! simulated days in accelerated time, with what must hold over the whole run:
//! - memory flat: after a warm-up (the first 20 % of the run) no process's resident memory
//!   grows by more than [`RSS_GROWTH_MAX_KIB`], and no process restarts;
//! - no lost relay decision: every `auto/set` the rules publish is followed within 1 s by
//!   the relay's retained `state` matching it, and the simulated board's pin log agrees
//!   with the final states;
//! - no growing files: the relay history rotates and stays under twice its maximum, the
//!   broker's retained file and the panel's files stay flat after the warm-up.
//!
//! The traffic is not accelerated (a VE.Direct block per real second), so the memory
//! check covers minutes of real traffic, not a week of it.
//!
//! One simulated day takes `PVBUS_SOAK_DAY_SECS` real seconds (default 60, time scale
//! 1440); `PVBUS_SOAK_DAYS` days (default 1 for CI; the week is 7):
//! `PVBUS_SOAK_DAYS=7 cargo test --release --test soak -- --nocapture` (docs/performance.md).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use pvbus_bus::contract::AutoSet;
use pvbus_hardware::{Level, SimLog};
use pvbus_testkit::{DemoStack, Seen, rss_kib};
use serde_json::Value;

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");
const WAIT: Duration = Duration::from_secs(30);

/// Growth allowed per process after the warm-up. Accelerated time speeds up the simulated
/// day (decisions, rotation) but not the traffic: blocks still come once per real second,
/// about 6.6 messages a second on `pvbus/#`. A leak of ~1 KiB per message would pass
/// 2 MiB only in runs shorter than ~5 min; an unbounded cache of readings or decisions
/// fails it within the week. Seen in practice: 0-12 KiB for the processes; for the broker
/// 124 KiB in a day, 520 KiB in the week, with rumqttd's per-filter logs (bounded by
/// `segment_size` x `segment_count` per filter) made small below so that they fill early.
const RSS_GROWTH_MAX_KIB: u64 = 2048;

/// The relay history rotates at this size (the smallest `relays.history_max_bytes` allows).
const HISTORY_MAX_BYTES: u64 = 4096;

/// The rules of the demo's shape: relays that switch on the simulated day with no settle
/// time and no minimum on-time, so that decisions happen every day. The rest of the stack
/// is built in the test (see [`pvbus_testkit::DemoStack`]).
const RULES: &str = r#"
[rules]
settle = "0s"
[rules.devices]
bmv = { values = "vedirect", max_age = "2m" }
mppt = { values = "vedirect", max_age = "2m" }
[rules.relays.water_heater]
on = "mppt.pv_power > 150"
off = "mppt.pv_power < 50"
[rules.relays.pump]
on = "bmv.state_of_charge >= 95%"
off = "bmv.state_of_charge < 90%"
[rules.relays.fan]
on = "mppt.pv_power > 400"
off = "mppt.pv_power < 300"
[rules.relays.charger]
on = "bmv.battery_power > 200"
off = "bmv.battery_power < 0"
"#;

const PROCESSES: [&str; 6] = ["broker", "vedirect", "relays", "rules", "tm1638", "lcd"];
const RELAYS: [(&str, u8); 4] = [
    ("water_heater", 17),
    ("pump", 27),
    ("fan", 22),
    ("charger", 23),
];

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

/// Every regular file under `dir` with its size, by path relative to `dir`.
fn file_sizes(dir: &Path) -> BTreeMap<String, u64> {
    let mut sizes = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                sizes.insert(name, meta.len());
            }
        }
    }
    sizes
}

struct Sample {
    at: Instant,
    rss: BTreeMap<String, (u32, u64)>,
    files: BTreeMap<String, u64>,
}

/// The value of `topic` as of `at` (the last message on it no later than `at`).
fn as_of<'a>(seen: &'a [Seen], topic: &str, at: Instant) -> Option<&'a str> {
    seen.iter()
        .rfind(|m| m.topic == topic && m.at <= at)
        .map(|m| m.payload.as_str())
}

#[test]
fn the_demo_stack_through_simulated_days_keeps_memory_flat_loses_no_decision_and_bounds_files() {
    let days = env_f64("PVBUS_SOAK_DAYS", 1.0);
    let day_secs = env_f64("PVBUS_SOAK_DAY_SECS", 60.0);
    let scale = 86_400.0 / day_secs;
    let run_for = Duration::from_secs_f64(days * day_secs);

    let mut builder = DemoStack::builder(PVBUS)
        // rumqttd's per-filter logs (bounded by `segment_size` x `segment_count` per
        // filter) made small so that they fill early.
        .broker_config("retained_flush_secs = 2\nsegment_size = 16384\nsegment_count = 2")
        .device("mppt", "mppt", "HQ2150SIM01")
        .device("bmv", "bmv", "HQ2150SIM02")
        .start_time("06:00")
        .time_scale(scale)
        .relays_config(&format!("history_max_bytes = {HISTORY_MAX_BYTES}"))
        .active_low(false)
        .panel()
        .processes(&["vedirect", "relays", "rules", "tm1638", "lcd"])
        .supervisor_config(
            "restart_delay_secs = 1\nrestart_delay_max_secs = 5\nstop_timeout_secs = 3",
        )
        .log_level("warn")
        .config(RULES);
    for (relay, pin) in RELAYS {
        builder = builder.relay(relay, pin);
    }
    let mut stack = builder.start().unwrap_or_else(|e| panic!("{e}"));
    let dir = stack.dir.path().to_path_buf();
    let log_path = stack.path("run.log");
    let logs = || fs::read_to_string(&log_path).unwrap_or_default();
    let rec = stack.recorder().clone();
    let table = |pred: &dyn Fn(&Value) -> bool| -> Value {
        let found = rec
            .wait_for("pvbus/supervisor/processes", WAIT, |p| {
                serde_json::from_str::<Value>(p).is_ok_and(|v| pred(&v["processes"]))
            })
            .unwrap_or_else(|| {
                panic!(
                    "the process table never got there; last: {:?}\n{}",
                    rec.last("pvbus/supervisor/processes"),
                    logs()
                )
            });
        serde_json::from_str::<Value>(&found).unwrap()["processes"].clone()
    };
    let pids = |t: &Value| -> BTreeMap<String, u32> {
        PROCESSES
            .iter()
            .filter_map(|p| Some((p.to_string(), t[p]["pid"].as_u64()? as u32)))
            .collect()
    };
    let first = table(&|t| {
        PROCESSES
            .iter()
            .all(|p| t[p]["state"] == "running" && t[p]["pid"].is_u64())
    });
    let started_pids = pids(&first);
    for device in ["mppt", "bmv"] {
        let topic = format!("pvbus/vedirect/{device}/availability");
        assert!(
            rec.wait_for(&topic, WAIT, |p| p == "online").is_some(),
            "{topic} never online\n{}",
            logs()
        );
    }

    // The run itself: a sample every 2 s (at least 30 per run).
    let start = Instant::now();
    let every = (run_for / 30).min(Duration::from_secs(2));
    let mut samples: Vec<Sample> = Vec::new();
    loop {
        let now_pids = pids(&table(&|_| true));
        let rss = now_pids
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), (*pid, rss_kib(*pid)?))))
            .collect();
        samples.push(Sample {
            at: Instant::now(),
            rss,
            files: file_sizes(&dir),
        });
        if start.elapsed() >= run_for {
            break;
        }
        std::thread::sleep(every.min(run_for.saturating_sub(start.elapsed())));
    }
    // The last decisions get their second to be obeyed.
    std::thread::sleep(Duration::from_millis(1500));
    let seen = rec.all();
    let end = Instant::now();
    let warm = start + run_for / 5;
    let after_warmup: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm).collect();
    assert!(after_warmup.len() >= 2, "too few samples after the warm-up");
    let (w0, wn) = (after_warmup[0], after_warmup[after_warmup.len() - 1]);

    eprintln!(
        "soak: {days} simulated day(s) in {:.0} s (time scale {scale}), {} samples, {} messages",
        run_for.as_secs_f64(),
        samples.len(),
        seen.len()
    );

    // (a) Memory flat, nobody restarted.
    let mut failures = Vec::new();
    for name in PROCESSES {
        let (Some((pid0, kib0)), Some((pidn, kibn))) = (w0.rss.get(name), wn.rss.get(name)) else {
            failures.push(format!("{name}: no memory sample"));
            continue;
        };
        let peak = after_warmup
            .iter()
            .filter_map(|s| s.rss.get(name).map(|r| r.1))
            .max()
            .unwrap_or(0);
        eprintln!(
            "soak: rss {name:<9} {kib0} KiB after warm-up -> {kibn} KiB at the end \
             ({:+} KiB, peak {peak} KiB)",
            *kibn as i64 - *kib0 as i64
        );
        if Some(pidn) != started_pids.get(name) || pid0 != pidn {
            failures.push(format!(
                "{name} restarted: pid {:?} -> {pidn}",
                started_pids.get(name)
            ));
        }
        if kibn.saturating_sub(*kib0) > RSS_GROWTH_MAX_KIB {
            failures.push(format!(
                "{name} grew {} KiB after the warm-up (max {RSS_GROWTH_MAX_KIB})",
                kibn - kib0
            ));
        }
    }

    // (b) No lost relay decision.
    let mut checked = 0;
    let mut superseded = 0;
    let mut per_relay = BTreeMap::new();
    for (relay, _) in RELAYS {
        let set_topic = format!("pvbus/relays/{relay}/auto/set");
        let state_topic = format!("pvbus/relays/{relay}/state");
        let mode_topic = format!("pvbus/relays/{relay}/mode");
        let sets: Vec<&Seen> = seen
            .iter()
            .filter(|m| m.topic == set_topic && !m.retain)
            .collect();
        for (i, set) in sets.iter().enumerate() {
            let on = AutoSet::parse(&set.payload)
                .unwrap_or_else(|e| panic!("{set_topic} {:?}: {e}", set.payload))
                .on;
            let by = set.at + Duration::from_secs(1);
            let mode = as_of(&seen, &mode_topic, set.at).unwrap_or("");
            if !mode.starts_with("auto") {
                failures.push(format!("{relay} was {mode:?}, not auto, at a decision"));
                continue;
            }
            // A later decision within the second takes over; it is checked itself.
            if sets.get(i + 1).is_some_and(|next| next.at <= by) {
                superseded += 1;
                continue;
            }
            let want = if on { "ON" } else { "OFF" };
            let state = as_of(&seen, &state_topic, by.min(end));
            if state != Some(want) {
                failures.push(format!(
                    "{relay}: auto/set {:?} at +{:.1} s, state {state:?} 1 s later",
                    set.payload,
                    set.at.duration_since(start).as_secs_f64()
                ));
            }
            checked += 1;
        }
        let switches = seen
            .iter()
            .filter(|m| m.topic == state_topic && !m.retain)
            .count();
        per_relay.insert(relay, (sets.len(), switches));
    }
    eprintln!(
        "soak: {checked} relay decisions checked ({superseded} superseded within 1 s); \
         per relay (auto/set, state changes): {per_relay:?}"
    );
    for (relay, (sets, _)) in &per_relay {
        // At least one on and one off per simulated day, or the run proved nothing.
        if (*sets as f64) < days.floor() * 2.0 {
            failures.push(format!("{relay}: only {sets} decisions in {days} day(s)"));
        }
    }
    let pins = SimLog::at(dir.join("gpio")).read().unwrap();
    for (relay, pin) in RELAYS {
        let level = pins.iter().rfind(|e| e.pin == pin).map(|e| e.level);
        let state = rec.last(&format!("pvbus/relays/{relay}/state"));
        let want = if state.as_deref() == Some("ON") {
            Level::High
        } else {
            Level::Low
        };
        if level.unwrap_or(Level::Low) != want {
            failures.push(format!(
                "{relay}: pin {pin} last {level:?} in the board's log, state {state:?}"
            ));
        }
    }

    // (c) No growing files.
    let all_files: Vec<&String> = wn.files.keys().collect();
    for name in all_files {
        let before = w0.files.get(name).copied().unwrap_or(0);
        let after = wn.files[name];
        let peak = samples
            .iter()
            .filter_map(|s| s.files.get(name))
            .max()
            .copied()
            .unwrap_or(0);
        eprintln!("soak: file {name:<28} {before} B after warm-up -> {after} B (peak {peak} B)");
    }
    let history_peak: u64 = samples
        .iter()
        .map(|s| {
            s.files
                .iter()
                .filter(|(n, _)| n.starts_with("relays/history"))
                .map(|(_, v)| v)
                .sum()
        })
        .max()
        .unwrap_or(0);
    let rotated = wn.files.contains_key("relays/history.1.jsonl");
    eprintln!(
        "soak: relay history peak {history_peak} B for a {HISTORY_MAX_BYTES} B maximum \
         (rotated: {rotated})"
    );
    if history_peak > 2 * HISTORY_MAX_BYTES + 1024 {
        failures.push(format!("relay history reached {history_peak} B"));
    }
    // Files rewritten in place (the broker's retained messages, the panel's drawings, the
    // relay state, the board's levels) may change by the length of the numbers in them,
    // not more.
    for name in [
        "broker/retained.bin",
        "tm1638/tm1638.txt",
        "lcd/lcd.txt",
        "relays/state.json",
        "gpio/pins.json",
    ] {
        let (Some(before), Some(after)) = (w0.files.get(name), wn.files.get(name)) else {
            failures.push(format!("{name} missing"));
            continue;
        };
        if *after > before + before / 10 + 512 {
            failures.push(format!("{name} grew from {before} B to {after} B"));
        }
    }

    drop(rec);
    stack.supervisor().terminate(Duration::from_secs(10));
    assert!(failures.is_empty(), "{failures:#?}\n{}", logs());
}
