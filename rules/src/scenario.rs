//! Scenario files: timed readings and relay events to replay in virtual time, and the
//! decisions expected from them. One statement per line, `#` starts a comment:
//!
//! ```text
//! start 2026-06-21 06:00              # local date and time (the site's time zone)
//! end 20:00                           # when the simulation stops (same day, or a date first)
//! relay water_heater auto_off         # a relay's mode at the start (state follows: auto_off = off)
//! 06:00 bmv state_of_charge=80 battery_power=-50      # a device state at a time
//! every 1m 06:00..12:00 bmv state_of_charge=80..95    # repeated; a..b ramps linearly
//! 10:30 relay pump forced_on          # the user changes a mode (state follows)
//! 10:31 relay pump state=off          # the relay's real state changes
//! expect 10:05 water_heater ON        # a decision expected at that time
//! expect 12:00 water_heater OFF "battery_power"   # ... whose reason contains this text
//! ```
//! Times are `HH:MM` or `HH:MM:SS`, optionally preceded by a date `YYYY-MM-DD`; a time
//! without a date is on the date of the last date given (the start's at first). Values are
//! numbers, `true`/`false`, `null` (missing), or text (bare words or in double quotes).

use std::fmt;
use std::path::{Path, PathBuf};

use jiff::civil::Date;

use crate::clock::Site;
use crate::history::Mode;

/// What happens at a moment of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Reading {
        device: String,
        state: serde_json::Value,
    },
    Mode {
        relay: String,
        mode: Mode,
    },
    State {
        relay: String,
        on: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: i64,
    pub line: usize,
    pub action: Action,
}

/// A decision the scenario expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub ts: i64,
    pub line: usize,
    pub relay: String,
    pub on: bool,
    pub reason_contains: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub start: i64,
    pub end: i64,
    /// Relay modes at the start.
    pub initial: Vec<(String, Mode)>,
    /// Sorted by time (then by line).
    pub events: Vec<Event>,
    pub expectations: Vec<Expectation>,
}

/// A mistake in a scenario file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ScenarioError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Splits a line into words, keeping "quoted text" (and key="quoted text") as one word.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // An escaped quote inside quotes stays in the text (kept as \u{1} until unquoted).
            '\\' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('\u{1}');
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
                cur.push(c);
            }
            '#' if !quoted => break,
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn parse_time_of_day(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str| {
        p.parse::<i64>()
            .ok()
            .filter(|_| p.len() == 2 || p.len() == 1)
    };
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return None,
    };
    (h < 24 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

/// The text inside "quotes", with escaped quotes restored.
fn unquote(s: &str) -> Option<String> {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map(|inner| inner.replace('\u{1}', "\""))
}

fn parse_value(s: &str) -> serde_json::Value {
    if let Some(inner) = unquote(s) {
        return serde_json::Value::String(inner);
    }
    match s {
        "true" => return serde_json::Value::Bool(true),
        "false" => return serde_json::Value::Bool(false),
        "null" => return serde_json::Value::Null,
        _ => {}
    }
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() => serde_json::json!(n),
        _ => serde_json::Value::String(s.to_string()),
    }
}

fn parse_duration(s: &str) -> Option<i64> {
    match crate::expr::parse(s, 0) {
        Ok((
            crate::expr::Expr {
                kind: crate::expr::ExprKind::Duration(d),
                ..
            },
            _,
        )) if d >= 1.0 => Some(d as i64),
        _ => None,
    }
}

struct Cursor<'a> {
    site: &'a Site,
    date: Option<Date>,
}

impl Cursor<'_> {
    /// Reads `[DATE] TIME` at `words[i..]`; returns the timestamp and the next index.
    fn moment(&mut self, w: &[String], i: usize) -> Result<(i64, usize), String> {
        let mut i = i;
        if let Some(d) = w.get(i).and_then(|s| s.parse::<Date>().ok()) {
            self.date = Some(d);
            i += 1;
        }
        let date = self
            .date
            .ok_or("the first line must be `start YYYY-MM-DD HH:MM`")?;
        let t = w.get(i).ok_or("expected a time HH:MM")?;
        let sod = parse_time_of_day(t)
            .ok_or_else(|| format!("`{t}` is not a time (HH:MM or HH:MM:SS)"))?;
        let ts = self
            .site
            .at(date, sod)
            .map_err(|e| format!("{date} {t}: {e}"))?;
        Ok((ts, i + 1))
    }
}

/// Reads a scenario file; times are read in the site's time zone.
pub fn load(path: &Path, site: &Site) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        path: path.into(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path, site)
}

pub fn parse(text: &str, path: &Path, site: &Site) -> Result<Scenario, ScenarioError> {
    let mut sc = Scenario {
        path: path.into(),
        start: 0,
        end: 0,
        initial: Vec::new(),
        events: Vec::new(),
        expectations: Vec::new(),
    };
    let mut cur = Cursor { site, date: None };
    let mut end = None;
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        let fail = |message: String| ScenarioError {
            path: path.into(),
            line: lineno,
            message,
        };
        let w = words(line).map_err(fail)?;
        let Some(first) = w.first() else { continue };
        if cur.date.is_none() && first != "start" {
            return Err(fail(
                "the first statement must be `start YYYY-MM-DD HH:MM`".into(),
            ));
        }
        match first.as_str() {
            "start" => {
                if cur.date.is_some() {
                    return Err(fail("`start` given twice".into()));
                }
                if w.get(1).and_then(|s| s.parse::<Date>().ok()).is_none() {
                    return Err(fail("expected `start YYYY-MM-DD HH:MM`".into()));
                }
                let (ts, _) = cur.moment(&w, 1).map_err(fail)?;
                sc.start = ts;
            }
            "end" => {
                // `end` may sit anywhere; its date does not move the lines after it.
                let date = cur.date;
                end = Some(cur.moment(&w, 1).map_err(fail)?.0);
                cur.date = date;
            }
            "relay" => {
                let (Some(relay), Some(mode), None) = (w.get(1), w.get(2), w.get(3)) else {
                    return Err(fail(
                        "expected `relay NAME MODE` (forced_off, auto_off, auto_on, forced_on)"
                            .into(),
                    ));
                };
                let mode = Mode::parse(mode).ok_or_else(|| {
                    fail(format!(
                        "`{mode}` is not a mode (forced_off, auto_off, auto_on, forced_on)"
                    ))
                })?;
                sc.initial.push((relay.clone(), mode));
            }
            "expect" => {
                let (ts, i) = cur.moment(&w, 1).map_err(fail)?;
                let (Some(relay), Some(cmd)) = (w.get(i), w.get(i + 1)) else {
                    return Err(fail(
                        "expected `expect TIME RELAY ON|OFF [\"reason text\"]`".into(),
                    ));
                };
                let on = match cmd.as_str() {
                    "ON" => true,
                    "OFF" => false,
                    _ => return Err(fail(format!("expected ON or OFF, found `{cmd}`"))),
                };
                let reason_contains = w
                    .get(i + 2)
                    .map(|s| unquote(s).unwrap_or_else(|| s.clone()));
                sc.expectations.push(Expectation {
                    ts,
                    line: lineno,
                    relay: relay.clone(),
                    on,
                    reason_contains,
                });
            }
            "every" => {
                let step = w.get(1).and_then(|s| parse_duration(s)).ok_or_else(|| {
                    fail("expected `every DURATION FROM..TO DEVICE name=value ...`".into())
                })?;
                let mut i = 2;
                if let Some(d) = w.get(i).and_then(|s| s.parse::<Date>().ok()) {
                    cur.date = Some(d);
                    i += 1;
                }
                let range = w
                    .get(i)
                    .ok_or_else(|| fail("expected a time range FROM..TO".into()))?;
                let (a, b) = range
                    .split_once("..")
                    .ok_or_else(|| fail(format!("`{range}` is not a time range FROM..TO")))?;
                let (from, _) = cur.moment(&[a.to_string()], 0).map_err(fail)?;
                let (to, _) = cur.moment(&[b.to_string()], 0).map_err(fail)?;
                if to < from {
                    return Err(fail(
                        "the range ends before it starts (split it at midnight)".into(),
                    ));
                }
                let device = w
                    .get(i + 1)
                    .ok_or_else(|| fail("expected a device name".into()))?;
                let fields = &w[i + 2..];
                let mut t = from;
                while t <= to {
                    let frac = if to > from {
                        (t - from) as f64 / (to - from) as f64
                    } else {
                        0.0
                    };
                    let mut state = serde_json::Map::new();
                    state.insert("ts".into(), serde_json::json!(t));
                    for f in fields {
                        let (k, v) = f
                            .split_once('=')
                            .ok_or_else(|| fail(format!("`{f}` is not name=value")))?;
                        let value = match v.split_once("..") {
                            Some((x, y)) => {
                                let (x, y) = (x.parse::<f64>(), y.parse::<f64>());
                                let (Ok(x), Ok(y)) = (x, y) else {
                                    return Err(fail(format!("`{v}`: a ramp is NUMBER..NUMBER")));
                                };
                                serde_json::json!(((x + (y - x) * frac) * 100.0).round() / 100.0)
                            }
                            None => parse_value(v),
                        };
                        state.insert(k.to_string(), value);
                    }
                    sc.events.push(Event {
                        ts: t,
                        line: lineno,
                        action: Action::Reading {
                            device: device.clone(),
                            state: serde_json::Value::Object(state),
                        },
                    });
                    t += step;
                }
            }
            _ => {
                let (ts, i) = cur.moment(&w, 0).map_err(fail)?;
                let subject = w.get(i).ok_or_else(|| {
                    fail("expected a device name or `relay` after the time".into())
                })?;
                if subject == "relay" {
                    let (Some(relay), Some(what)) = (w.get(i + 1), w.get(i + 2)) else {
                        return Err(fail(
                            "expected `TIME relay NAME MODE` or `TIME relay NAME state=on|off`"
                                .into(),
                        ));
                    };
                    let action = match what.strip_prefix("state=") {
                        Some("on") => Action::State { relay: relay.clone(), on: true },
                        Some("off") => Action::State { relay: relay.clone(), on: false },
                        Some(other) => return Err(fail(format!("state is on or off, found `{other}`"))),
                        None => Action::Mode {
                            relay: relay.clone(),
                            mode: Mode::parse(what).ok_or_else(|| fail(format!("`{what}` is not a mode (forced_off, auto_off, auto_on, forced_on)")))?,
                        },
                    };
                    sc.events.push(Event {
                        ts,
                        line: lineno,
                        action,
                    });
                    continue;
                }
                let mut state = serde_json::Map::new();
                state.insert("ts".into(), serde_json::json!(ts));
                for f in &w[i + 1..] {
                    let (k, v) = f
                        .split_once('=')
                        .ok_or_else(|| fail(format!("`{f}` is not name=value")))?;
                    state.insert(k.to_string(), parse_value(v));
                }
                sc.events.push(Event {
                    ts,
                    line: lineno,
                    action: Action::Reading {
                        device: subject.clone(),
                        state: serde_json::Value::Object(state),
                    },
                });
            }
        }
    }
    if cur.date.is_none() {
        return Err(ScenarioError {
            path: path.into(),
            line: 1,
            message: "empty scenario: it needs `start YYYY-MM-DD HH:MM`".into(),
        });
    }
    sc.end = end.unwrap_or_else(|| {
        sc.events
            .iter()
            .map(|e| e.ts)
            .chain(sc.expectations.iter().map(|e| e.ts))
            .max()
            .unwrap_or(sc.start)
            .max(sc.start)
    });
    sc.events.sort_by_key(|e| (e.ts, e.line));
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_readings_ramps_relays_and_expectations() {
        let site = Site::new("Europe/Paris", None, None).unwrap();
        let text = "start 2026-06-21 06:00\nrelay heater auto_off\n06:00 bmv state_of_charge=80 charge_state=float note=\"a b\"\nevery 30m 06:00..07:00 bmv state_of_charge=80..86 # ramp\n06:10 relay heater forced_on\nexpect 06:30 heater ON \"soc\"\nend 2026-06-22 01:00\n";
        let sc = parse(text, Path::new("t.scenario"), &site).unwrap();
        assert_eq!(sc.start, 1_782_014_400); // 2026-06-21 04:00 UTC
        assert_eq!(sc.end - sc.start, 19 * 3600);
        assert_eq!(sc.events.len(), 1 + 3 + 1);
        let Action::Reading { state, .. } = &sc.events[3].action else {
            panic!()
        };
        assert_eq!(state["state_of_charge"], serde_json::json!(83.0));
        let Action::Reading { state, .. } = &sc.events[0].action else {
            panic!()
        };
        assert_eq!(state["note"], serde_json::json!("a b"));
        assert_eq!(sc.expectations[0].reason_contains.as_deref(), Some("soc"));
    }

    #[test]
    fn errors_name_the_line() {
        let site = Site::new("UTC", None, None).unwrap();
        let e = parse(
            "start 2026-06-21 06:00\n\n06:61 bmv x=1\n",
            Path::new("s"),
            &site,
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not a time"), "{e}");
        let e = parse("06:00 bmv x=1\n", Path::new("s"), &site).unwrap_err();
        assert!(e.message.contains("start"), "{e}");
        let e = parse(
            "start 2026-06-21 06:00\nexpect 07:00 pump MAYBE\n",
            Path::new("s"),
            &site,
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
    }
}
