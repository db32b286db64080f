//! The pass scheduler: on each reading (or when a time-based answer is due), evaluate every
//! relay's rule, switch off whatever must go off, switch on at most one relay (the highest
//! priority), then wait the settle delay before the next switch-on; and say, for every
//! relay, what it is waiting for.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Cond, ConfigError, RelayRule, RuleSet};
use crate::eval::{Ev, Scope, SiteMemory, Timer};
use crate::history::{DayFigures, Mode, RelayHistory};
use crate::script::ScriptHost;
use crate::surplus::{self, SurplusEstimate};
use crate::value::{ReadingError, Readings, Value, show_duration, show_time_of_day};

/// What rules ask of a relay (published as `ON`/`OFF` on its `auto/set` topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Command {
    #[serde(rename = "ON")]
    On,
    #[serde(rename = "OFF")]
    Off,
}

impl Command {
    pub fn payload(self) -> &'static str {
        match self {
            Command::On => "ON",
            Command::Off => "OFF",
        }
    }
}

/// One change decided by the rules, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Unix seconds.
    pub ts: i64,
    /// Local civil time (ISO 8601 with offset).
    pub time: String,
    pub relay: String,
    pub command: Command,
    pub reason: String,
}

/// A mistake found while evaluating a rule, located in its file.
#[derive(Debug, Clone)]
pub struct RuleFault {
    pub relay: String,
    pub error: ConfigError,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    pub decisions: Vec<Decision>,
    /// `(relay, status)` for each relay whose status text changed.
    pub statuses: Vec<(String, String)>,
    /// New faults (each reported once until it goes away).
    pub faults: Vec<RuleFault>,
    /// When to run the next pass if no reading comes first.
    pub next_wake: Option<i64>,
    pub surplus: Option<SurplusEstimate>,
}

#[derive(Debug, Default)]
struct Runtime {
    memory: BTreeMap<usize, SiteMemory>,
    unknown_since: Option<i64>,
    on_by_catch_up: bool,
    status: String,
    fault: Option<String>,
}

/// What a relay's rule wants in this pass.
enum Want {
    Stay(String),
    On { reason: String, catch_up: bool },
    Off(String),
}

/// The rules engine: readings and relay states in, decisions and statuses out. It does no
/// I/O and reads no clock: the caller passes `now`, so simulations are exact.
pub struct Engine {
    rules: RuleSet,
    readings: Readings,
    relays: BTreeMap<String, RelayHistory>,
    runtime: BTreeMap<String, Runtime>,
    last_switch_on: Option<(i64, String)>,
    surplus: Result<SurplusEstimate, String>,
    /// The Rhai host, made on first use (most configurations have no script).
    scripts: Option<ScriptHost>,
    timers: BTreeMap<String, Timer>,
    timer_memory: BTreeMap<String, BTreeMap<usize, SiteMemory>>,
    timer_faults: BTreeMap<String, String>,
    /// The last local time computed (the time zone is asked once a day).
    local: Option<crate::clock::LocalTime>,
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        let mut relays = BTreeMap::new();
        let mut runtime = BTreeMap::new();
        for r in &rules.relays {
            relays.insert(r.name.clone(), RelayHistory::default());
            runtime.insert(r.name.clone(), Runtime::default());
        }
        for r in &rules.other_relays {
            relays.insert(r.clone(), RelayHistory::default());
        }
        let surplus = Err("no [rules.surplus] section".to_string());
        let timers = rules
            .timers
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Timer {
                        duration: t.duration,
                        ..Timer::default()
                    },
                )
            })
            .collect();
        Engine {
            rules,
            readings: Readings::default(),
            relays,
            runtime,
            last_switch_on: None,
            surplus,
            scripts: None,
            local: None,
            timers,
            timer_memory: BTreeMap::new(),
            timer_faults: BTreeMap::new(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn relay(&self, name: &str) -> Option<&RelayHistory> {
        self.relays.get(name)
    }

    /// Takes a device state (`{"ts":..,"name":value,..}`).
    pub fn reading(
        &mut self,
        device: &str,
        state: &serde_json::Value,
        received: i64,
    ) -> Result<usize, ReadingError> {
        self.readings.update(device, state, received)
    }

    /// Takes a relay's real state (its `state` topic).
    pub fn relay_state(&mut self, relay: &str, on: bool, now: i64) {
        self.relays
            .entry(relay.to_string())
            .or_default()
            .set_on(on, now);
    }

    /// Takes the relay bridge's figures for today (its `stats` topic), used after a restart
    /// (see [`RelayHistory::seed`]).
    pub fn relay_day_figures(&mut self, relay: &str, figures: DayFigures) {
        let day_start = self.rules.site.local(figures.ts.max(0)).day_start;
        // Only the figures of today, by the clock of the figures themselves.
        if let Some(h) = self.relays.get_mut(relay) {
            h.seed(figures, day_start);
        }
    }

    /// Takes a relay's mode (its `mode` topic).
    pub fn relay_mode(&mut self, relay: &str, mode: Mode) {
        self.relays.entry(relay.to_string()).or_default().mode = Some(mode);
    }

    /// Records that a decision was carried out (what the relay bridge does with `auto/set`
    /// in auto mode); the real state topic confirms it later.
    pub fn apply(&mut self, d: &Decision) {
        let h = self.relays.entry(d.relay.clone()).or_default();
        if !h.mode.is_some_and(Mode::is_auto) {
            return;
        }
        let on = d.command == Command::On;
        h.mode = Some(if on { Mode::AutoOn } else { Mode::AutoOff });
        h.set_on(on, d.ts);
    }

    /// The current status text of a relay's rule.
    pub fn status(&self, relay: &str) -> Option<&str> {
        self.runtime.get(relay).map(|r| r.status.as_str())
    }

    /// Runs one pass at `now` (unix seconds).
    pub fn pass(&mut self, now: i64) -> PassReport {
        let local = match self.local.as_ref().and_then(|l| l.advance(now)) {
            Some(l) => l,
            None => self.rules.site.local(now),
        };
        self.local = Some(local.clone());
        let mut report = PassReport::default();
        let mut wake: Option<i64> = None;
        for h in self.relays.values_mut() {
            h.prune(local.day_start - 86400);
        }
        let rules = &self.rules;
        let max_age = |device: &str| rules.max_age(device);
        if let Some(cfg) = &rules.surplus {
            let coords = rules.site.latitude.zip(rules.site.longitude);
            self.surplus = surplus::estimate(cfg, &self.readings, &max_age, coords, now);
            report.surplus = self.surplus.as_ref().ok().cloned();
            // A reading going stale changes the estimate.
            for dev in std::iter::once(&cfg.battery).chain(cfg.chargers.keys()) {
                if let (Some(age), Some(r)) = (
                    max_age(dev),
                    self.readings
                        .get(dev, "battery_power")
                        .or_else(|| self.readings.get(dev, "pv_power")),
                ) {
                    push_wake(&mut wake, now, r.ts + age + 1);
                }
            }
        }
        let surplus_w = self
            .surplus
            .as_ref()
            .map(|s| s.surplus)
            .map_err(Clone::clone);

        // Named timers first: relays may look at them.
        for t in &rules.timers {
            let memory = self.timer_memory.entry(t.name.clone()).or_default();
            let mut scope = Scope {
                local: &local,
                readings: &self.readings,
                max_age: &max_age,
                relays: &self.relays,
                this: "",
                load_power: None,
                surplus: surplus_w.clone(),
                memory,
                wake: &mut wake,
                timers: &self.timers,
            };
            let (start, fault) = match scope.eval(&t.start.expr) {
                Ok(ev) => (ev.truth(), None),
                Err(e) => (None, Some(t.start.locate(e.span, e.message))),
            };
            // Each fault is reported once, until it goes away.
            let text = fault.as_ref().map(ToString::to_string);
            if self.timer_faults.get(&t.name) != text.as_ref() {
                if let Some(error) = fault {
                    report.faults.push(RuleFault {
                        relay: format!("timer {}", t.name),
                        error,
                    });
                }
                match text {
                    Some(text) => self.timer_faults.insert(t.name.clone(), text),
                    None => self.timer_faults.remove(&t.name),
                };
            }
            if let Some(timer) = self.timers.get_mut(&t.name) {
                timer.update(start, now);
                if let Some(end) = timer.end() {
                    push_wake(&mut wake, now, end);
                }
            }
        }

        let mut wants: Vec<(usize, Want)> = Vec::new();
        for (idx, rule) in rules.relays.iter().enumerate() {
            let rt = self.runtime.get_mut(&rule.name).expect("runtime per rule");
            let unseen = RelayHistory::default();
            let h = self.relays.get(&rule.name).unwrap_or(&unseen);
            let mut scope = Scope {
                local: &local,
                readings: &self.readings,
                max_age: &max_age,
                relays: &self.relays,
                this: &rule.name,
                load_power: rule.load_power,
                surplus: surplus_w.clone(),
                memory: &mut rt.memory,
                wake: &mut wake,
                timers: &self.timers,
            };
            // Every condition is evaluated on every pass, so that helpers with memory
            // (stable_for, hold) see every change.
            let mut faults = Vec::new();
            let scripts = &mut self.scripts;
            let mut run = |scope: &mut Scope, c: &Cond| -> Ev {
                if let Some(ast) = &c.script {
                    let host = scripts.get_or_insert_with(ScriptHost::new);
                    let result = host.eval(
                        ast,
                        scope.local,
                        scope.readings,
                        scope.max_age,
                        scope.relays,
                        scope.timers,
                        scope.this,
                        &scope.surplus,
                        scope.load_power,
                        scope.wake,
                    );
                    return match result {
                        Ok(ev) => ev,
                        Err(e) => {
                            let text = format!("error: {}", e.message);
                            faults.push(c.locate_script(e.line, e.column, e.message));
                            Ev {
                                value: None,
                                rate: 0.0,
                                text,
                            }
                        }
                    };
                }
                match scope.eval(&c.expr) {
                    Ok(ev) if ev.value.is_none() || ev.truth().is_some() => ev,
                    Ok(ev) => {
                        let found = ev.value.as_ref().map_or("?", Value::type_name);
                        faults.push(c.locate(
                            c.expr.span,
                            format!("a condition must be true/false, this is {found}"),
                        ));
                        Ev {
                            value: None,
                            rate: 0.0,
                            text: format!("error: condition is {found}"),
                        }
                    }
                    Err(e) => {
                        let text = format!("error: {}", e.message);
                        faults.push(c.locate(e.span, e.message));
                        Ev {
                            value: None,
                            rate: 0.0,
                            text,
                        }
                    }
                }
            };
            let on_ev = run(&mut scope, &rule.on);
            let off_ev = run(&mut scope, &rule.off);
            let cu_ev = rule.budget.as_ref().map(|b| run(&mut scope, &b.while_));
            let fault_text = faults.first().map(ToString::to_string);
            if fault_text != rt.fault {
                if fault_text.is_some() {
                    report
                        .faults
                        .extend(faults.into_iter().map(|error| RuleFault {
                            relay: rule.name.clone(),
                            error,
                        }));
                }
                rt.fault = fault_text;
            }
            let want = decide(
                rule,
                rt,
                h,
                &local,
                now,
                &on_ev,
                &off_ev,
                cu_ev.as_ref(),
                &surplus_w,
                &mut wake,
            );
            wants.push((idx, want));
        }

        // Switch-offs all go; one switch-on, the first by priority, once settled.
        let mut switched_on: Option<String> = None;
        let mut new_status: Vec<(usize, String)> = Vec::new();
        for (idx, want) in wants {
            let rule = &self.rules.relays[idx];
            match want {
                Want::Stay(s) => new_status.push((idx, s)),
                Want::Off(reason) => {
                    report.decisions.push(Decision {
                        ts: now,
                        time: self.rules.site.iso(now),
                        relay: rule.name.clone(),
                        command: Command::Off,
                        reason: reason.clone(),
                    });
                    new_status.push((idx, format!("switched off: {reason}")));
                }
                Want::On { reason, catch_up } => {
                    let settled_at = self
                        .last_switch_on
                        .as_ref()
                        .map(|(t, who)| (t + self.rules.settle, who.clone()));
                    if let Some(first) = &switched_on {
                        new_status.push((
                            idx,
                            format!(
                                "waiting: one switch-on per pass, {first} went first ({reason})"
                            ),
                        ));
                    } else if let Some((at, who)) = settled_at.filter(|(at, _)| *at > now) {
                        push_wake(&mut wake, now, at);
                        new_status.push((
                            idx,
                            format!(
                                "waiting: settle {} after {who} came on ({reason})",
                                show_duration((at - now) as f64)
                            ),
                        ));
                    } else {
                        report.decisions.push(Decision {
                            ts: now,
                            time: self.rules.site.iso(now),
                            relay: rule.name.clone(),
                            command: Command::On,
                            reason: reason.clone(),
                        });
                        new_status.push((idx, format!("switched on: {reason}")));
                        switched_on = Some(rule.name.clone());
                        self.last_switch_on = Some((now, rule.name.clone()));
                        if let Some(rt) = self.runtime.get_mut(&rule.name) {
                            rt.on_by_catch_up = catch_up;
                        }
                    }
                }
            }
        }
        for d in &report.decisions {
            self.apply(d);
            if d.command == Command::Off
                && let Some(rt) = self.runtime.get_mut(&d.relay)
            {
                rt.on_by_catch_up = false;
                rt.unknown_since = None;
            }
        }
        if !report.decisions.is_empty() {
            // The new states change the answers (min on time, on_for...): look again soon.
            push_wake(&mut wake, now, now + 1);
        }
        for (idx, status) in new_status {
            let name = &self.rules.relays[idx].name;
            if let Some(rt) = self.runtime.get_mut(name)
                && rt.status != status
            {
                rt.status = status.clone();
                report.statuses.push((name.clone(), status));
            }
        }
        report.next_wake = wake;
        report
    }
}

fn push_wake(wake: &mut Option<i64>, now: i64, at: i64) {
    if at > now {
        *wake = Some(wake.map_or(at, |w| w.min(at)));
    }
}

#[allow(clippy::too_many_arguments)]
fn decide(
    rule: &RelayRule,
    rt: &mut Runtime,
    h: &RelayHistory,
    local: &crate::clock::LocalTime,
    now: i64,
    on_ev: &Ev,
    off_ev: &Ev,
    cu_ev: Option<&Ev>,
    surplus: &Result<f64, String>,
    wake: &mut Option<i64>,
) -> Want {
    let (Some(mode), Some(is_on)) = (h.mode, h.on) else {
        return Want::Stay("waiting for the relay's state and mode".into());
    };
    if !mode.is_auto() {
        rt.unknown_since = None;
        return Want::Stay(format!("{mode} by the user: rules act again in auto mode"));
    }
    let since = h.since.unwrap_or(now);
    let run_today = h.run_since(local.day_start, now);
    let budget_text = rule.budget.as_ref().map(|b| {
        format!(
            "budget: {} of {} today",
            show_duration(run_today as f64),
            show_duration(b.min_run as f64)
        )
    });
    let catching_up = rule
        .budget
        .as_ref()
        .is_some_and(|b| local.second_of_day >= b.after && run_today < b.min_run);
    if let Some(b) = &rule.budget {
        if is_on && run_today < b.min_run {
            push_wake(wake, now, now + (b.min_run - run_today));
        }
        if local.second_of_day < b.after {
            push_wake(wake, now, local.day_start + b.after as i64);
        }
    }
    let cu_true = cu_ev.is_some_and(|e| e.truth() == Some(true));
    let with_budget = |s: String| match &budget_text {
        Some(b) => format!("{s}; {b}"),
        None => s,
    };

    if is_on {
        if let Some(max) = rule.max_run_per_day {
            if run_today >= max {
                return Want::Off(format!(
                    "max run time {} reached today",
                    show_duration(max as f64)
                ));
            }
            push_wake(wake, now, now + (max - run_today));
        }
        let held = rule.min_on > 0 && now - since < rule.min_on;
        let min_on_left = format!(
            "min on time: {} left",
            show_duration((since + rule.min_on - now) as f64)
        );
        if held {
            push_wake(wake, now, since + rule.min_on);
        }
        if catching_up && cu_true {
            rt.unknown_since = None;
            let cu = cu_ev.map_or(String::new(), |e| e.text.clone());
            return Want::Stay(with_budget(format!(
                "on, catching up the budget while {cu}"
            )));
        }
        // Switched on only to complete the budget: off once done, or once the catch-up
        // condition fails, unless the normal rule wants it on.
        if rt.on_by_catch_up && on_ev.truth() != Some(true) && !held {
            if let Some(b) = &rule.budget
                && run_today >= b.min_run
            {
                return Want::Off(format!(
                    "budget done: {} of {} today",
                    show_duration(run_today as f64),
                    show_duration(b.min_run as f64)
                ));
            }
            if catching_up && !cu_true {
                return Want::Off(format!(
                    "budget catch-up stopped: {}",
                    cu_ev.map_or("", |e| e.text.as_str())
                ));
            }
        }
        match off_ev.truth() {
            None => {
                let start = *rt.unknown_since.get_or_insert(now);
                if now - start >= rule.unknown_off_after {
                    return Want::Off(format!(
                        "unknown for {}: {}",
                        show_duration((now - start) as f64),
                        off_ev.text
                    ));
                }
                push_wake(wake, now, start + rule.unknown_off_after);
                let left = show_duration((start + rule.unknown_off_after - now) as f64);
                return Want::Stay(with_budget(format!(
                    "off: unknown ({}), off in {left} if it stays unknown",
                    off_ev.text
                )));
            }
            Some(true) => {
                rt.unknown_since = None;
                if held {
                    return Want::Stay(with_budget(format!(
                        "{min_on_left} (off: {})",
                        off_ev.text
                    )));
                }
                return Want::Off(format!("off: {}", off_ev.text));
            }
            Some(false) => rt.unknown_since = None,
        }
        if held {
            return Want::Stay(with_budget(min_on_left));
        }
        return Want::Stay(with_budget(format!("off: {}", off_ev.text)));
    }

    rt.unknown_since = None;
    let off_for = now - since;
    if rule.min_off > 0 && off_for < rule.min_off {
        push_wake(wake, now, since + rule.min_off);
        return Want::Stay(with_budget(format!(
            "min off time: {} left (on: {})",
            show_duration((rule.min_off - off_for) as f64),
            on_ev.text
        )));
    }
    if let Some(max) = rule.max_run_per_day
        && run_today >= max
    {
        push_wake(wake, now, local.next_day_start);
        return Want::Stay(format!(
            "max run time {} reached today",
            show_duration(max as f64)
        ));
    }
    let (reason, catch_up) = if on_ev.truth() == Some(true) {
        (format!("on: {}", on_ev.text), false)
    } else if catching_up && cu_true {
        let b = rule.budget.as_ref().map_or(0.0, |b| b.after);
        (
            format!(
                "{} after {}, catching up while {}",
                budget_text.clone().unwrap_or_default(),
                show_time_of_day(b),
                cu_ev.map_or("", |e| e.text.as_str())
            ),
            true,
        )
    } else {
        let mut s = format!("on: {}", on_ev.text);
        if let (Some(b), Some(cu)) = (&rule.budget, cu_ev) {
            if catching_up {
                s = format!("{s}; catch-up: {}", cu.text);
            } else if run_today < b.min_run {
                s = format!("{s}; catch-up after {}", show_time_of_day(b.after));
            }
        }
        return Want::Stay(with_budget(s));
    };
    if rule.needs_surplus {
        let load = rule.load_power.unwrap_or(0.0);
        match surplus {
            Ok(w) if *w >= load => {}
            Ok(w) => {
                return Want::Stay(with_budget(format!(
                    "surplus {w:.0} W < load {load:.0} W ({reason})"
                )));
            }
            Err(why) => {
                return Want::Stay(with_budget(format!("surplus unknown: {why} ({reason})")));
            }
        }
    }
    Want::On { reason, catch_up }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;
    use crate::scenario;
    use crate::simulate::{SimOptions, run};

    fn simulate(rules: &str, scenario: &str) -> (Vec<Decision>, Vec<String>, Vec<String>) {
        let rules =
            config::from_str(rules, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        let sc = scenario::parse(scenario, Path::new("test.scenario"), &rules.site).unwrap();
        let mut out = Vec::new();
        let s = run(rules, &sc, SimOptions { statuses: true }, &mut out).unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        (s.decisions, s.faults, lines)
    }

    const SOC_RULE: &str = r#"
[rules.devices]
bmv = { values = "vedirect" }
[rules.relays.pump]
on = "bmv.state_of_charge >= 95"
off = "bmv.state_of_charge < 90"
min_off = "15m"
"#;

    #[test]
    fn min_off_holds_after_a_stop() {
        let (d, _, _) = simulate(
            SOC_RULE,
            "start 2026-06-21 10:00\nend 11:00\nrelay pump auto_off\nevery 1m 10:00..10:19 bmv state_of_charge=96\nevery 1m 10:20..10:21 bmv state_of_charge=80\nevery 1m 10:22..11:00 bmv state_of_charge=97\n",
        );
        let at: Vec<(i64, Command)> = d.iter().map(|d| (d.ts % 86400 / 60, d.command)).collect();
        // What happened before the start is not known: it counts as just switched off, so
        // min_off holds until 10:15. Off at 10:20, then on again only at 10:35 although
        // the condition is true from 10:22.
        assert_eq!(
            at,
            vec![
                (10 * 60 + 15, Command::On),
                (10 * 60 + 20, Command::Off),
                (10 * 60 + 35, Command::On)
            ],
            "{d:?}"
        );
    }

    #[test]
    fn forced_relays_are_left_alone_and_say_so() {
        let (d, _, lines) = simulate(
            SOC_RULE,
            "start 2026-06-21 10:00\nend 11:00\nrelay pump forced_off\nevery 1m 10:00..11:00 bmv state_of_charge=99\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert!(
            lines.iter().any(|l| l.contains("forced_off by the user")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_type_error_is_located_and_never_switches_on() {
        let rules = r#"
[rules.devices]
plug = { values = ["power"] }
[rules.relays.pump]
on = "plug.power > 100"
off = "plug.power < 50"
"#;
        let (d, faults, lines) = simulate(
            rules,
            "start 2026-06-21 10:00\nend 10:05\nrelay pump auto_off\n10:00 plug power=\"high\"\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert!(
            faults.iter().any(|f| f.starts_with("test.toml:5:7:")
                && f.contains("cannot compare a text with a number")),
            "{faults:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("error: cannot compare")),
            "{lines:?}"
        );
    }

    #[test]
    fn needs_surplus_waits_for_a_known_estimate() {
        let rules = r#"
[site]
timezone = "UTC"
latitude = 0.0      # at 10:00 UTC it is night there: the sun adds nothing
longitude = 179.9
[rules.devices]
bmv = { values = "vedirect" }
mppt = { values = "vedirect" }
[rules.surplus]
battery = "bmv"
chargers = { mppt = 1000 }
[rules.relays.heater]
load_power = 500
needs_surplus = true
on = 'mppt.charge_state == "float"'
off = 'mppt.charge_state != "float"'
"#;
        // No battery reading: the surplus is unknown, the heater stays off and says why;
        // float at night with 200 W into the battery: 170 W < 500 W; 600 W: on.
        let (d, _, lines) = simulate(
            rules,
            "start 2026-06-21 10:00\nend 11:00\nrelay heater auto_off\nevery 1m 10:00..11:00 mppt charge_state=float pv_power=300\nevery 1m 10:10..10:19 bmv battery_power=200\nevery 1m 10:20..11:00 bmv battery_power=600\n",
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("surplus unknown: bmv.battery_power missing")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("surplus 170 W < load 500 W")),
            "{lines:?}"
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].ts % 86400, 10 * 3600 + 20 * 60);
    }
}
