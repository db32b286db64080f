//! Decision latency: from the last byte of a VE.Direct block written to a pty, through the
//! VE.Direct bridge, the broker, the rules and the relay bridge, to the simulated relay pin
//! changing. The pin change is read from the simulated GPIO board's log, which stamps every
//! edge with the microsecond it was written; the block's time is taken when `write`
//! returns. Both are the same wall clock.
//!
//! The rule has no deliberate delay: `on = "bmv.state_of_charge >= 50"`, `off = "... < 50"`,
//! and blocks alternate between 60 % and 40 %, so every block is one decision.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use pvbus_hardware::SimLog;
use pvbus_testkit::{DemoStack, Recorder};
use serde_json::{Value, json};
use serialport::{SerialPort, TTYPort};

use crate::report::percentile;
use crate::stack::{BrokerKind, Stack};

/// The relay's pin on the simulated board.
const PIN: u8 = 17;
const STATE: &str = "pvbus/relays/load/state";

/// The bridge reads the bench's own pty at `{link}` (no simulator: the bench writes the
/// blocks); the relay `load` is on pin [`PIN`] of the simulated board.
const CONFIG: &str = r#"
[vedirect]
auto_detect = false
[[vedirect.ports]]
path = "{link}"
[vedirect.devices]
HQ2150BENCH = "bmv"

[rules]
# No deliberate delay: by default the rules wait 30 s after a switch-on before the next.
settle = "0s"
[rules.devices]
bmv = { values = "vedirect", max_age = "2m" }

[rules.relays.load]
on = "bmv.state_of_charge >= 50"
off = "bmv.state_of_charge < 50"
"#;

/// A BMV-712 live block with the state of charge `soc_permille` (‰, as on the wire).
pub fn bmv_block(soc_permille: u32) -> Vec<u8> {
    let soc = soc_permille.to_string();
    let fields = [
        ("PID", "0xA381"),
        ("V", "12850"),
        ("VS", "12840"),
        ("I", "-1200"),
        ("P", "-15"),
        ("CE", "-20500"),
        ("SOC", soc.as_str()),
        ("TTG", "2400"),
        ("Alarm", "OFF"),
        ("Relay", "OFF"),
        ("AR", "0"),
        ("BMV", "712 Smart"),
        ("FW", "0413"),
        ("SER#", "HQ2150BENCH"),
        ("MON", "0"),
    ];
    vedirect::text::encode_block(&fields).expect("a valid block")
}

/// The BMV's other block (history): a battery monitor's reading is published once both
/// kinds were seen, as the real device alternates them.
pub fn bmv_history_block() -> Vec<u8> {
    let fields = [
        ("H1", "-60000"),
        ("H2", "-20500"),
        ("H3", "-30000"),
        ("H4", "12"),
        ("H5", "0"),
        ("H6", "-3500000"),
        ("H7", "11800"),
        ("H8", "14400"),
        ("H9", "3600"),
        ("H10", "20"),
        ("H11", "0"),
        ("H12", "0"),
        ("H17", "4200"),
        ("H18", "5100"),
    ];
    vedirect::text::encode_block(&fields).expect("a valid block")
}

fn unix_now() -> f64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since.as_micros() as f64 / 1e6
}

/// Runs `events` decisions against the `pvbus` binary; returns the JSON result.
pub fn run(pvbus: &Path, events: usize, broker: BrokerKind) -> anyhow::Result<Value> {
    let ports = tempfile::tempdir()?;
    let (mut master, slave) = TTYPort::pair().context("cannot create a pseudo-terminal")?;
    master.set_timeout(Duration::from_secs(1))?;
    let link = ports.path().join("bmv");
    std::os::unix::fs::symlink(slave.name().context("pty without a path")?, &link)?;
    let stack = Stack::start(
        DemoStack::builder(pvbus)
            .relay("load", PIN)
            .processes(&["vedirect", "relays", "rules"])
            .config(&CONFIG.replace("{link}", &link.display().to_string())),
        broker,
    )?;
    stack.wait_running(&["broker", "vedirect", "relays", "rules"])?;
    let rec = Recorder::start(stack.addr, STATE);
    // Everything on the bus during the warm-up, to say what went wrong; dropped before
    // the measurement so that it adds no load.
    let everything = Recorder::start(stack.addr, "pvbus/#");
    let log = SimLog::at(stack.path("gpio"));

    // Warm-up: blocks at 60 % until the bridge has the port open and the relay is on.
    let mut on = false;
    for _ in 0..150 {
        master.write_all(&bmv_history_block())?;
        master.write_all(&bmv_block(600))?;
        if rec
            .wait_for(STATE, Duration::from_millis(200), |p| p == "ON")
            .is_some()
        {
            on = true;
            break;
        }
    }
    if !on {
        let mut bus: Vec<_> = everything.latest().into_iter().collect();
        bus.sort();
        bail!(
            "the relay never switched on; the bus:\n{bus:#?}\n{}",
            stack.log()
        );
    }
    // Kept only when asked (PVBUS_BENCH_DEBUG=1), to show the bus if an event fails.
    let everything = std::env::var_os("PVBUS_BENCH_DEBUG").map(|_| everything);

    // Where the time goes: when a subscriber (this process) sees the bridge's reading and
    // the rules' command. Subscribers add a little work to the broker; the pin edge time
    // is not affected by when they are read.
    let readings = Recorder::start(stack.addr, "pvbus/vedirect/bmv/state");
    let commands = Recorder::start(stack.addr, "pvbus/relays/load/auto/set");
    let first_after = |rec: &Recorder, since: Instant| {
        rec.all()
            .into_iter()
            .find(|m| m.at >= since)
            .map(|m| (m.at - since).as_secs_f64() * 1e3)
    };
    let mut reading_ms = Vec::with_capacity(events);
    let mut command_ms = Vec::with_capacity(events);
    let mut latencies_ms = Vec::with_capacity(events);
    for i in 0..events {
        let (soc, expect) = if on { (400, "OFF") } else { (600, "ON") };
        let seen_before = log.pin(PIN)?.len();
        let block = bmv_block(soc);
        master.write_all(&block)?;
        master.flush()?;
        let written = unix_now();
        let written_at = Instant::now();
        if rec
            .wait_for(STATE, Duration::from_secs(5), |p| p == expect)
            .is_none()
        {
            let mut bus: Vec<_> = everything
                .as_ref()
                .map(|r| r.all().into_iter().map(|m| (m.topic, m.payload)).collect())
                .unwrap_or_default();
            bus.retain(|(t, _)| !t.contains("supervisor"));
            let tail = bus.len().saturating_sub(40);
            bail!(
                "event {i}: the relay never became {expect}; the bus (PVBUS_BENCH_DEBUG=1): {:#?}\n{}",
                &bus[tail..],
                stack.log()
            );
        }
        on = !on;
        let changes = log.pin(PIN)?;
        let edge = changes
            .get(seen_before..)
            .and_then(|new| new.first())
            .with_context(|| {
                format!("event {i}: the relay said {expect} but pin {PIN} did not change")
            })?;
        latencies_ms.push((edge.ts - written) * 1e3);
        reading_ms.extend(first_after(&readings, written_at));
        command_ms.extend(first_after(&commands, written_at));
        readings.clear();
        commands.clear();
        // Let the relay bridge's state message and the rules' decision settle, as between
        // two real blocks (a second apart).
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rec);
    stack.stop();

    let mut sorted = latencies_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
    let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({
            "seen": v.len(),
            "p50_ms": round(percentile(&v, 50.0)),
            "p99_ms": round(percentile(&v, 99.0)),
            "max_ms": round(v.last().copied()),
        })
    };
    Ok(json!({
        "bench": "decision_latency",
        "path": "last byte of a VE.Direct block written to a pty -> vedirect bridge -> broker -> rules -> broker -> relay bridge -> simulated GPIO pin edge",
        "broker": format!("{broker:?}").to_lowercase(),
        "events": sorted.len(),
        "block_bytes": bmv_block(600).len(),
        "serial_line_ms_at_19200_baud": (bmv_block(600).len() as f64 * 10.0 / 19.2 * 100.0).round() / 100.0,
        "min_ms": round(sorted.first().copied()),
        "p50_ms": round(percentile(&sorted, 50.0)),
        "p90_ms": round(percentile(&sorted, 90.0)),
        "p99_ms": round(percentile(&sorted, 99.0)),
        "max_ms": round(sorted.last().copied()),
        "mean_ms": round(Some(mean)),
        "hops_seen_by_a_subscriber": {
            "block_to_reading": summary(reading_ms),
            "block_to_rules_command": summary(command_ms),
        },
    }))
}
