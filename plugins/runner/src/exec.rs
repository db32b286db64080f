//! The `exec` kind: PvMonit's contract for sensor scripts. A command runs every
//! `interval`; each `key:value` line it prints becomes a reading of one device, named and
//! converted as the configuration says, so that an old script works unchanged.
//!
//! Parsing (pure, [`parse_output`]) is apart from running ([`run_exec`]).

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use pvbus_bus::Bus;
use pvbus_bus::contract::{OFFLINE, ONLINE, now_ts};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{CommandLine, ExecConfig};
use crate::health::{self, Health};
use crate::logs::LineBudget;

/// More output than this from one run is cut: a sensor script prints a few lines.
const MAX_OUTPUT: u64 = 64 * 1024;

/// A unit a script may print a value in, and how to reach the contract's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    factor: f64,
    offset: f64,
}

impl Unit {
    pub const KNOWN: &[&str] = &[
        "V", "mV", "A", "mA", "W", "mW", "kW", "Wh", "kWh", "°C", "C", "°F", "F", "K", "%", "s",
        "ms", "min", "h", "Ah", "VA", "Hz", "ppm", "hPa", "lx",
    ];

    /// `value` in the contract's unit.
    pub fn convert(self, value: f64) -> f64 {
        value * self.factor + self.offset
    }
}

impl FromStr for Unit {
    type Err = ();

    fn from_str(s: &str) -> Result<Unit, ()> {
        let (factor, offset) = match s.trim() {
            "mV" | "mA" | "mW" | "Wh" | "ms" => (0.001, 0.0),
            "kW" => (1000.0, 0.0),
            "min" => (60.0, 0.0),
            "h" => (3600.0, 0.0),
            "°F" | "F" => (5.0 / 9.0, -32.0 * 5.0 / 9.0),
            "K" => (1.0, -273.15),
            // Already the contract's unit.
            "V" | "A" | "W" | "kWh" | "°C" | "C" | "%" | "s" | "Ah" | "VA" | "Hz" | "ppm"
            | "hPa" | "lx" => (1.0, 0.0),
            _ => return Err(()),
        };
        Ok(Unit { factor, offset })
    }
}

/// Whether `name` is a snake_case reading name.
pub fn is_reading_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('_')
        && !name.ends_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `Temp Cave` -> `temp_cave`.
pub fn snake_case(key: &str) -> String {
    let mut out = String::new();
    for c in key.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// A value as printed: a number (a decimal comma is accepted: scripts run in French
/// locales), `true`/`false`, or text.
pub fn parse_value(raw: &str) -> Value {
    let t = raw.trim();
    let number = if t.contains(',') && !t.contains('.') && t.matches(',').count() == 1 {
        t.replace(',', ".").parse::<f64>().ok()
    } else {
        t.parse::<f64>().ok()
    };
    if let Some(n) = number.filter(|n| n.is_finite()) {
        if n.fract() == 0.0 && n.abs() < 1e15 && !t.contains(['.', ',', 'e', 'E']) {
            return Value::from(n as i64);
        }
        return Value::from(n);
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(t.to_string()),
    }
}

/// What one run's output gave.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub readings: Map<String, Value>,
    /// Lines that were not readings, each with its line number.
    pub problems: Vec<String>,
}

/// Reads `key:value` lines (blank lines and `#` comments skipped).
pub fn parse_output(cfg: &ExecConfig, output: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in output.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once(':') else {
            parsed
                .problems
                .push(format!("line {n}: {line:?} is not key:value"));
            continue;
        };
        let key = key.trim();
        let name = match cfg.readings.get(key) {
            Some(name) => name.clone(),
            None if cfg.only_listed => continue,
            None => snake_case(key),
        };
        if !is_reading_name(&name) || name == "ts" {
            parsed.problems.push(format!(
                "line {n}: key {key:?} gives no usable reading name"
            ));
            continue;
        }
        let mut value = parse_value(raw);
        if let Some(unit) = cfg.units.get(key).and_then(|u| u.parse::<Unit>().ok()) {
            match value.as_f64() {
                Some(v) => {
                    // Rounded to 6 significant decimals: conversions should not invent
                    // precision (0.1 mV is 0.0001 V, not 0.00010000000000000002).
                    let converted = (unit.convert(v) * 1e6).round() / 1e6;
                    value = Value::from(converted);
                }
                None => {
                    parsed.problems.push(format!(
                        "line {n}: {key} has a unit ({}) but {:?} is not a number",
                        cfg.units[key],
                        raw.trim()
                    ));
                    continue;
                }
            }
        }
        parsed.readings.insert(name, value);
    }
    parsed
}

/// Why a run gave no readings.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RunError {
    #[error("cannot start: {0}")]
    Spawn(String),
    #[error("killed after running {0:?} (timeout)")]
    Timeout(Duration),
    #[error("exited with {0}")]
    Failed(String),
    #[error("printed no key:value line")]
    NoReadings,
}

/// Runs the command once; its stdout, or why not.
pub async fn run_once(cfg: &ExecConfig, budget: &LineBudget) -> Result<String, RunError> {
    let mut cmd = match &cfg.command {
        CommandLine::Shell(line) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        CommandLine::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::child::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| RunError::Spawn(e.to_string()))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let id = cfg.id.clone();
    let budget = budget.clone();
    let mut stderr_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            budget.log(&id, "stderr", &line);
        }
    });
    let work = async {
        let mut out = Vec::new();
        let _ = stdout.take(MAX_OUTPUT).read_to_end(&mut out).await;
        let status = child.wait().await;
        (out, status)
    };
    let timeout = cfg.timeout();
    let result = tokio::time::timeout(timeout, work).await;
    // The pipe closes when the command exits; a grandchild that keeps it open is cut off.
    if tokio::time::timeout(Duration::from_millis(200), &mut stderr_task)
        .await
        .is_err()
    {
        stderr_task.abort();
    }
    let (out, status) = match result {
        Ok(done) => done,
        Err(_) => {
            if let Some(pid) = pid {
                crate::child::kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
            return Err(RunError::Timeout(timeout));
        }
    };
    let status = status.map_err(|e| RunError::Failed(e.to_string()))?;
    if !status.success() {
        return Err(RunError::Failed(crate::child::describe_exit(status)));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs one `[[plugins.exec]]` until `stop` fires: every `interval`, run, parse, publish
/// `<base>/<id>/<device>/state` (and `availability`), report on the health topic.
pub async fn run_exec(
    cfg: ExecConfig,
    bus: Bus,
    budget: LineBudget,
    mut stop: watch::Receiver<bool>,
) {
    let device = cfg.device().to_string();
    let topics = bus.topics().clone();
    let mut health = Health::new("exec", None);
    let mut last_problems: Vec<String> = Vec::new();
    health.state = health::State::Running;
    let mut ticks = tokio::time::interval(cfg.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(plugin = %cfg.id, "exec every {:?}: {:?}", cfg.interval(), cfg.command);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::child::stopped(&mut stop) => break,
        }
        health.runs += 1;
        let outcome = match run_once(&cfg, &budget).await {
            Ok(output) => {
                let parsed = parse_output(&cfg, &output);
                // The same bad lines at every run are logged once, not every minute.
                if parsed.problems != last_problems {
                    for p in &parsed.problems {
                        warn!(plugin = %cfg.id, "output {p}");
                    }
                    last_problems = parsed.problems.clone();
                }
                if parsed.readings.is_empty() {
                    Err(RunError::NoReadings)
                } else {
                    Ok(parsed.readings)
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(mut readings) => {
                readings.insert("ts".into(), Value::from(now_ts()));
                bus.publish_retained(
                    topics.device_state(&cfg.id, &device),
                    Value::Object(readings).to_string(),
                );
                bus.publish_retained(topics.device_availability(&cfg.id, &device), ONLINE);
                if health.failures_in_a_row > 0 {
                    info!(plugin = %cfg.id, "works again");
                }
                health.failures_in_a_row = 0;
                health.problem = None;
            }
            Err(e) => {
                warn!(plugin = %cfg.id, "run failed: {e}");
                health.failures_in_a_row += 1;
                health.problem = Some(e.to_string());
                bus.publish_retained(topics.device_availability(&cfg.id, &device), OFFLINE);
            }
        }
        health.publish(&bus, &cfg.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CommandLine;

    fn cfg(readings: &[(&str, &str)], units: &[(&str, &str)], only: bool) -> ExecConfig {
        ExecConfig {
            id: "cellar".into(),
            command: CommandLine::Shell("true".into()),
            interval: "60s".into(),
            timeout: None,
            device: None,
            readings: readings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            units: units
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            only_listed: only,
        }
    }

    #[test]
    fn pvmonit_output_becomes_readings() {
        let c = cfg(
            &[("T", "temperature"), ("H", "humidity")],
            &[("T", "°F"), ("P", "mW")],
            false,
        );
        let out =
            "T:68\r\nH: 54,5\n# comment\n\nP:1500\nStatus : OK ready\nCO2 ppm:415\ngarbage\n:3\n";
        let p = parse_output(&c, out);
        assert_eq!(p.readings["temperature"], Value::from(20.0));
        assert_eq!(p.readings["humidity"], Value::from(54.5));
        assert_eq!(p.readings["p"], Value::from(1.5));
        assert_eq!(p.readings["status"], Value::from("OK ready"));
        assert_eq!(p.readings["co2_ppm"], Value::from(415));
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        assert!(p.problems[0].starts_with("line 8:"), "{:?}", p.problems);
        assert!(p.problems[1].starts_with("line 9:"), "{:?}", p.problems);

        let only = cfg(&[("T", "temperature")], &[("T", "mV")], true);
        let p = parse_output(&only, "T:abc\nX:1\n");
        assert!(p.readings.is_empty());
        assert!(p.problems[0].contains("not a number"), "{:?}", p.problems);
    }

    // Real commands: output, a failure with its exit code, a hung script killed.
    #[tokio::test]
    async fn runs_fail_clearly() {
        let budget = LineBudget::new(10);
        let mut c = cfg(&[], &[], false);
        c.command = CommandLine::Argv(vec!["/bin/echo".into(), "T:1".into()]);
        assert_eq!(run_once(&c, &budget).await, Ok("T:1\n".to_string()));
        c.command = CommandLine::Shell("echo T:1; exit 4".into());
        assert_eq!(
            run_once(&c, &budget).await,
            Err(RunError::Failed("exit code 4".into()))
        );
        c.command = CommandLine::Shell("sleep 30".into());
        c.timeout = Some("200ms".into());
        let started = std::time::Instant::now();
        assert_eq!(
            run_once(&c, &budget).await,
            Err(RunError::Timeout(Duration::from_millis(200)))
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        c.command = CommandLine::Argv(vec!["/nonexistent/probe".into()]);
        assert!(matches!(
            run_once(&c, &budget).await,
            Err(RunError::Spawn(_))
        ));
    }

    #[test]
    fn values_and_units() {
        assert_eq!(parse_value("12"), Value::from(12));
        assert_eq!(parse_value("12.0"), Value::from(12.0));
        assert_eq!(parse_value("-3,25"), Value::from(-3.25));
        assert_eq!(parse_value("1,234,5"), Value::from("1,234,5"));
        assert_eq!(parse_value("TRUE"), Value::Bool(true));
        assert_eq!(parse_value("nan"), Value::from("nan"));
        assert_eq!("kW".parse::<Unit>().unwrap().convert(1.5), 1500.0);
        assert!((("K".parse::<Unit>().unwrap().convert(300.0)) - 26.85).abs() < 1e-9);
        assert!("furlong".parse::<Unit>().is_err());
        for u in Unit::KNOWN {
            assert!(u.parse::<Unit>().is_ok(), "{u}");
        }
        assert_eq!(snake_case(" Temp-Cave (°C) "), "temp_cave_c");
    }
}
