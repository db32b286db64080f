//! Footprint of the full demo stack: the embedded broker, the VE.Direct bridge reading three
//! simulated devices at one block a second, the relays, the rules, Home Assistant discovery
//! and the simulated panel (TM1638 and LCD). For every child of `pvbus run` and for the
//! supervisor: resident memory, CPU seconds per real hour (and per simulated hour at the
//! simulators' time scale, see `cpu_note`) and wake-ups (context switches) per second,
//! first with data flowing, then with the simulators stopped (SIGSTOP: their ptys stay
//! open and silent, as a cable with a device switched off).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pvbus_testkit::{DemoStack, DemoStackBuilder};
use serde_json::{Value, json};
use signal::send;

use crate::procfs::{self, ProcSample};
use crate::stack::{BrokerKind, Stack};

/// What the demo has besides its devices, relays and panel (see [`demo`]).
const CONFIG: &str = r#"
[site]
timezone = "Europe/Paris"
latitude = 45.19
longitude = 5.72

[rules.devices]
bmv = { values = "vedirect", max_age = "2m" }
mppt = { values = "vedirect", max_age = "2m" }

[rules.relays.water_heater]
on = 'stable_for(mppt.charge_state == "float", 30s)'
off = "bmv.battery_power < -100 or bmv.state_of_charge < 90%"
min_on = "2m"

[rules.relays.pump]
on = "bmv.state_of_charge >= 95%"
off = "bmv.state_of_charge < 90%"

[homeassistant]
"#;

/// The demo stack: two MPPT and a BMV simulated (one block a real second each, their day
/// at `time_scale`), two relays, the rules, Home Assistant discovery, the panel.
pub fn demo(pvbus: &Path, time_scale: f64) -> DemoStackBuilder {
    DemoStack::builder(pvbus)
        .device("mppt", "mppt", "HQ2150SIM01")
        .device("mppt", "mppt_garage", "HQ2150SIM03")
        .device("bmv", "bmv", "HQ2150SIM02")
        .time_scale(time_scale)
        .relay("water_heater", 17)
        .relay("pump", 27)
        .panel()
        .config(CONFIG)
}

/// The processes every run must have, as the supervisor names them.
const PROCESSES: &[&str] = &[
    "broker",
    "vedirect",
    "relays",
    "rules",
    "homeassistant",
    "tm1638",
    "lcd",
];

/// Signals to stop and resume the simulators, through the `kill` command (no unsafe here).
mod signal {
    pub fn send(signal: &str, pid: u32) -> std::io::Result<()> {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -{signal} {pid}: {status}"
            )))
        }
    }
}

struct Proc {
    name: String,
    role: String,
    pid: u32,
}

/// Measures every process over `window`. `time_scale` is the simulators' (Some while data
/// flows, None without data, where simulated time does not pass for anything).
fn measure(
    procs: &[Proc],
    window: Duration,
    ticks: u64,
    time_scale: Option<f64>,
) -> anyhow::Result<Value> {
    // The simulators write a block every real second whatever their time scale, so a
    // simulated hour at scale N holds 1/N of a real hour's messages: dividing by N
    // flatters. Reported for what it is; the per-real-hour figure is the Pi's.
    let per_simulated_hour = |per_real_hour: f64| -> Option<f64> {
        time_scale.map(|scale| (per_real_hour / scale * 100.0).round() / 100.0)
    };
    let sample_all = || -> anyhow::Result<Vec<ProcSample>> {
        procs
            .iter()
            .map(|p| procfs::sample(p.pid).with_context(|| format!("sampling {}", p.name)))
            .collect()
    };
    let before = sample_all()?;
    let started = Instant::now();
    // Peak memory: sampled every few seconds over the window.
    let mut peak_rss: Vec<u64> = before.iter().map(|s| s.rss_kib).collect();
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_secs(5).min(window.saturating_sub(started.elapsed())));
        for (peak, s) in peak_rss.iter_mut().zip(sample_all()?) {
            *peak = (*peak).max(s.rss_kib);
        }
    }
    let after = sample_all()?;
    let secs = started.elapsed().as_secs_f64();
    let mut rows = BTreeMap::new();
    let (mut rss, mut pss, mut cpu, mut wake) = (0u64, 0u64, 0.0, 0.0);
    let (mut pvbus_rss, mut pvbus_pss, mut pvbus_cpu, mut pvbus_wake) = (0u64, 0u64, 0.0, 0.0);
    for (i, p) in procs.iter().enumerate() {
        let cpu_s_per_hour =
            (after[i].cpu_ticks - before[i].cpu_ticks) as f64 / ticks as f64 / secs * 3600.0;
        let wakeups = (after[i]
            .context_switches
            .saturating_sub(before[i].context_switches)) as f64
            / secs;
        let p_pss = after[i].pss_kib.unwrap_or(0);
        rss += after[i].rss_kib;
        pss += p_pss;
        cpu += cpu_s_per_hour;
        wake += wakeups;
        // Simulators stand in for the devices: they do not run on the target.
        if p.role != "simulator" {
            pvbus_rss += after[i].rss_kib;
            pvbus_pss += p_pss;
            pvbus_cpu += cpu_s_per_hour;
            pvbus_wake += wakeups;
        }
        rows.insert(
            p.name.clone(),
            json!({
                "role": p.role,
                "pid": p.pid,
                "rss_kib": after[i].rss_kib,
                "pss_kib": after[i].pss_kib,
                "peak_rss_kib": peak_rss[i],
                "cpu_s_per_real_hour": (cpu_s_per_hour * 10.0).round() / 10.0,
                "wakeups_per_s": (wakeups * 10.0).round() / 10.0,
            }),
        );
    }
    Ok(json!({
        "window_s": (secs * 10.0).round() / 10.0,
        "time_scale": time_scale,
        "processes": rows,
        "total_pvbus": {
            "rss_kib": pvbus_rss,
            "pss_kib": pvbus_pss,
            "cpu_s_per_real_hour": (pvbus_cpu * 10.0).round() / 10.0,
            "cpu_s_per_simulated_hour": per_simulated_hour(pvbus_cpu),
            "wakeups_per_s": (pvbus_wake * 10.0).round() / 10.0,
        },
        "total_with_simulators": {
            "rss_kib": rss,
            "pss_kib": pss,
            "cpu_s_per_real_hour": (cpu * 10.0).round() / 10.0,
            "cpu_s_per_simulated_hour": per_simulated_hour(cpu),
            "wakeups_per_s": (wake * 10.0).round() / 10.0,
        },
    }))
}

/// Starts the demo stack, lets it settle for `settle`, measures `window` with data, stops
/// the simulators, lets the devices go stale, measures `window` again.
pub fn run(
    pvbus: &Path,
    settle: Duration,
    window: Duration,
    time_scale: f64,
    broker: BrokerKind,
) -> anyhow::Result<Value> {
    if !(time_scale.is_finite() && time_scale > 0.0) {
        anyhow::bail!("--time-scale must be a number above 0, not {time_scale}");
    }
    let stack = Stack::start(demo(pvbus, time_scale), broker)?;
    let table = stack.wait_running(PROCESSES)?;
    let mut procs: Vec<Proc> = table
        .into_iter()
        .map(|(name, pid, role)| Proc { name, role, pid })
        .collect();
    if let Some(pid) = stack.mosquitto_pid() {
        procs.push(Proc {
            name: "mosquitto".into(),
            role: "broker".into(),
            pid,
        });
    }
    procs.push(Proc {
        name: "supervisor".into(),
        role: "supervisor".into(),
        pid: stack.supervisor_pid(),
    });
    let ticks = procfs::clock_ticks_per_second();
    std::thread::sleep(settle);
    let flowing = measure(&procs, window, ticks, Some(time_scale))?;

    let simulators: Vec<u32> = procs
        .iter()
        .filter(|p| p.role == "simulator")
        .map(|p| p.pid)
        .collect();
    for pid in &simulators {
        send("STOP", *pid)?;
    }
    // The bridge marks the devices offline after stale_after; what follows is the quiet.
    std::thread::sleep(settle);
    let idle = measure(&procs, window, ticks, None);
    for pid in &simulators {
        let _ = send("CONT", *pid);
    }
    let idle = idle?;
    stack.stop();
    Ok(json!({
        "bench": "footprint",
        "broker": format!("{broker:?}").to_lowercase(),
        "stack": "embedded broker, vedirect (2 MPPT + 1 BMV simulated at 1 block/s), relays (2, sim GPIO), rules (2), homeassistant, tm1638 + lcd (sim)",
        "settle_s": settle.as_secs(),
        "time_scale": time_scale,
        "cpu_note": "cpu_s_per_real_hour is CPU seconds per hour of wall-clock time with each simulated device writing one VE.Direct block per real second, as a real one does: at time_scale 1 it is what a Pi running the demo's devices for an hour spends. The simulators keep that rate at any time_scale (only their day runs faster), so cpu_s_per_simulated_hour = cpu_s_per_real_hour / time_scale counts 1/time_scale of an hour's messages and flatters; without data simulated time does not pass and only the per-real-hour figure is given.",
        "flowing": flowing,
        "no_data": idle,
    }))
}
