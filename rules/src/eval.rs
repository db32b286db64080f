//! Evaluation of a condition: three-valued (true, false, unknown), typed (comparing a
//! number with a text is an error, never a silent false), explained (every result carries
//! the text of why), and aware of time (it tells when its answer could next change, so the
//! engine wakes exactly then instead of on a fixed clock).

use std::collections::BTreeMap;

use crate::clock::LocalTime;
use crate::expr::{BinOp, Expr, ExprKind, Span};
use crate::history::RelayHistory;
use crate::value::{Readings, Value, show_duration, show_number, show_time_of_day, unit_of};

/// A mistake in a rule found while evaluating it (a type mismatch, a bad argument).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub span: Span,
    pub message: String,
}

/// The result of evaluating a sub-expression.
#[derive(Debug, Clone)]
pub struct Ev {
    /// `None` when unknown (a value stale or missing).
    pub value: Option<Value>,
    /// How fast the value grows per second (1 for `on_for()` of a relay that is on, or
    /// for `time`), so a comparison can tell when it will flip.
    pub rate: f64,
    /// Why: the value with its name, or the reason it is unknown.
    pub text: String,
}

impl Ev {
    fn known(value: Value, text: String) -> Ev {
        Ev {
            value: Some(value),
            rate: 0.0,
            text,
        }
    }

    fn unknown(text: String) -> Ev {
        Ev {
            value: None,
            rate: 0.0,
            text,
        }
    }

    /// Some(true/false) for a known boolean.
    pub fn truth(&self) -> Option<bool> {
        match self.value {
            Some(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }
}

/// Memory of a helper that looks back in time, one per place it is written.
#[derive(Debug, Clone, Default)]
pub struct SiteMemory {
    /// `stable_for`: since when the condition has been true.
    true_since: Option<i64>,
    /// `hold`: when the condition was last true.
    last_true: Option<i64>,
}

/// Everything a condition may look at.
pub struct Scope<'a> {
    pub local: &'a LocalTime,
    pub readings: &'a Readings,
    /// Maximum age of a device's values in seconds (`None`: never stale).
    pub max_age: &'a dyn Fn(&str) -> Option<i64>,
    pub relays: &'a BTreeMap<String, RelayHistory>,
    /// The relay whose rule this is (history helpers default to it).
    pub this: &'a str,
    pub load_power: Option<f64>,
    /// The surplus estimate, or why there is none.
    pub surplus: Result<f64, String>,
    pub memory: &'a mut BTreeMap<usize, SiteMemory>,
    /// Earliest time at which a result could change without a new reading.
    pub wake: &'a mut Option<i64>,
    pub timers: &'a BTreeMap<String, Timer>,
}

/// A named timer: it starts when its `start` condition becomes true, and runs for its
/// duration (PvMonit's "timer start / is finished").
#[derive(Debug, Clone, Default)]
pub struct Timer {
    pub duration: i64,
    pub started: Option<i64>,
    /// The start condition at the last pass (a start is a change to true).
    pub was_true: bool,
}

impl Timer {
    /// Takes the start condition's value at `now`; true when the timer (re)started.
    pub fn update(&mut self, start: Option<bool>, now: i64) -> bool {
        let now_true = start == Some(true);
        let rising = now_true && !self.was_true;
        self.was_true = now_true;
        if rising {
            self.started = Some(now);
        }
        rising
    }

    pub fn end(&self) -> Option<i64> {
        self.started.map(|s| s + self.duration)
    }
}

/// Helpers of the language: name, the number of arguments accepted, one line of help.
pub const HELPERS: &[(&str, usize, usize, &str)] = &[
    (
        "timer_running",
        1,
        1,
        "timer_running(\"name\"): the named timer ([rules.timers.name]) is running",
    ),
    (
        "timer_done",
        1,
        1,
        "timer_done(\"name\"): the named timer ran to its end since it last started",
    ),
    (
        "on_for",
        0,
        1,
        "on_for(\"relay\"): how long the relay has been on (0 s when off)",
    ),
    (
        "off_for",
        0,
        1,
        "off_for(\"relay\"): how long the relay has been off (0 s when on)",
    ),
    (
        "run_today",
        0,
        1,
        "run_today(\"relay\"): time on since local midnight",
    ),
    (
        "ran_today",
        0,
        1,
        "ran_today(\"relay\"): came on today (or is on)",
    ),
    (
        "cycle_done_today",
        0,
        1,
        "cycle_done_today(\"relay\"): was on, then went off, today",
    ),
    (
        "stable_for",
        2,
        2,
        "stable_for(condition, 5m): the condition has been true for 5 min",
    ),
    (
        "hold",
        2,
        2,
        "hold(condition, 60s): true while the condition is, and 60 s after",
    ),
    (
        "between",
        2,
        2,
        "between(08:00, 18:00): the local time is in the window (may cross midnight)",
    ),
];

/// Values known without a device: name and one line of help.
pub const BUILTIN_NAMES: &[(&str, &str)] = &[
    ("hour", "local hour, 0..23"),
    ("minute", "local minute, 0..59"),
    ("time", "local time of day, compare with 17:30"),
    ("weekday", "\"mon\" .. \"sun\""),
    ("month", "1..12"),
    ("day", "day of the month, 1..31"),
    ("sunrise", "today's sunrise (local time of day)"),
    ("sunset", "today's sunset (local time of day)"),
    (
        "surplus",
        "estimated off-grid surplus, W (also site.surplus)",
    ),
    ("load_power", "this relay's declared load power, W"),
];

impl Scope<'_> {
    fn hint(&mut self, at: i64) {
        if at > self.local.ts {
            *self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        }
    }

    pub fn eval(&mut self, e: &Expr) -> Result<Ev, EvalError> {
        let err = |message: String| {
            Err(EvalError {
                span: e.span,
                message,
            })
        };
        Ok(match &e.kind {
            ExprKind::Number(n) => Ev::known(Value::Number(*n), show_number(*n)),
            ExprKind::Duration(d) => Ev::known(Value::Duration(*d), show_duration(*d)),
            ExprKind::TimeOfDay(t) => Ev::known(Value::TimeOfDay(*t), show_time_of_day(*t)),
            ExprKind::Str(s) => Ev::known(Value::Text(s.clone()), format!("\"{s}\"")),
            ExprKind::Bool(b) => Ev::known(Value::Bool(*b), b.to_string()),
            ExprKind::List(items) => {
                let mut values = Vec::new();
                let mut texts = Vec::new();
                for item in items {
                    let ev = self.eval(item)?;
                    match ev.value {
                        Some(v) => values.push(v),
                        None => return Ok(ev),
                    }
                    texts.push(ev.text);
                }
                Ev::known(Value::List(values), format!("[{}]", texts.join(", ")))
            }
            ExprKind::Name(name) => self.name(name, e.span)?,
            ExprKind::Call { name, args, site } => self.call(name, args, *site, e.span)?,
            ExprKind::Not(inner) => {
                let ev = self.eval(inner)?;
                match &ev.value {
                    None => ev,
                    // The inner text already states the fact that holds ("pump is off").
                    Some(Value::Bool(b)) => Ev::known(Value::Bool(!b), ev.text),
                    Some(v) => {
                        return err(format!(
                            "`not` needs true/false, but this is {}",
                            v.type_name()
                        ));
                    }
                }
            }
            ExprKind::Neg(inner) => {
                let ev = self.eval(inner)?;
                match ev.value {
                    None => ev,
                    Some(Value::Number(n)) => Ev {
                        value: Some(Value::Number(-n)),
                        rate: -ev.rate,
                        text: format!("-{}", ev.text),
                    },
                    Some(Value::Duration(d)) => Ev {
                        value: Some(Value::Duration(-d)),
                        rate: -ev.rate,
                        text: format!("-{}", ev.text),
                    },
                    Some(v) => return err(format!("cannot negate {}", v.type_name())),
                }
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs, e.span)?,
        })
    }

    fn name(&mut self, name: &str, span: Span) -> Result<Ev, EvalError> {
        let l = self.local;
        let next_minute = l.ts + 60 - (l.second_of_day as i64 % 60);
        let known = |v: Value, text: String| Ok(Ev::known(v, text));
        match name {
            "hour" => {
                self.hint(l.ts + 3600 - (l.second_of_day as i64 % 3600));
                return known(Value::Number(l.hour as f64), format!("hour {}", l.hour));
            }
            "minute" => {
                self.hint(next_minute);
                return known(
                    Value::Number(l.minute as f64),
                    format!("minute {}", l.minute),
                );
            }
            "time" => {
                self.hint(l.next_day_start);
                return Ok(Ev {
                    value: Some(Value::TimeOfDay(l.second_of_day)),
                    rate: 1.0,
                    text: format!("time {}", show_time_of_day(l.second_of_day)),
                });
            }
            "weekday" | "month" | "day" | "sunrise" | "sunset" => {
                self.hint(l.next_day_start);
                return match name {
                    "weekday" => known(
                        Value::Text(l.weekday.into()),
                        format!("weekday {}", l.weekday),
                    ),
                    "month" => known(Value::Number(l.month as f64), format!("month {}", l.month)),
                    "day" => known(Value::Number(l.day as f64), format!("day {}", l.day)),
                    "sunrise" => Ok(l.sunrise.map_or_else(
                        || {
                            Ev::unknown(
                                "sunrise unknown (no latitude/longitude, or polar day/night)"
                                    .into(),
                            )
                        },
                        |t| {
                            Ev::known(
                                Value::TimeOfDay(t),
                                format!("sunrise {}", show_time_of_day(t)),
                            )
                        },
                    )),
                    _ => Ok(l.sunset.map_or_else(
                        || {
                            Ev::unknown(
                                "sunset unknown (no latitude/longitude, or polar day/night)".into(),
                            )
                        },
                        |t| {
                            Ev::known(
                                Value::TimeOfDay(t),
                                format!("sunset {}", show_time_of_day(t)),
                            )
                        },
                    )),
                };
            }
            "surplus" | "site.surplus" => {
                return Ok(match &self.surplus {
                    Ok(w) => Ev::known(
                        Value::Number(*w),
                        format!("surplus {}", Value::Number(*w).show("W")),
                    ),
                    Err(why) => Ev::unknown(format!("surplus unknown: {why}")),
                });
            }
            "load_power" => {
                return match self.load_power {
                    Some(w) => known(
                        Value::Number(w),
                        format!("load_power {}", Value::Number(w).show("W")),
                    ),
                    None => Err(EvalError {
                        span,
                        message: format!("relay `{}` declares no load_power", self.this),
                    }),
                };
            }
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("relays.") {
            let (relay, field) = rest.split_once('.').unwrap_or((rest, ""));
            let Some(h) = self.relays.get(relay) else {
                return Err(EvalError {
                    span,
                    message: format!("no relay named `{relay}`"),
                });
            };
            return Ok(match field {
                "on" => match h.on {
                    Some(on) => Ev::known(
                        Value::Bool(on),
                        format!("{relay} is {}", if on { "on" } else { "off" }),
                    ),
                    None => Ev::unknown(format!("state of relay {relay} not yet known")),
                },
                "mode" => match h.mode {
                    Some(m) => Ev::known(
                        Value::Text(m.name().into()),
                        format!("{relay} mode {}", m.name()),
                    ),
                    None => Ev::unknown(format!("mode of relay {relay} not yet known")),
                },
                _ => {
                    return Err(EvalError {
                        span,
                        message: format!("relays have `.on` and `.mode`, not `{field}`"),
                    });
                }
            });
        }
        let Some((device, field)) = name.split_once('.') else {
            return Err(EvalError {
                span,
                message: format!("unknown name `{name}`"),
            });
        };
        let unit = unit_of(field);
        let Some(reading) = self.readings.get(device, field) else {
            return Ok(Ev::unknown(format!("{name} missing")));
        };
        if let Some(max_age) = (self.max_age)(device) {
            let age = self.local.ts - reading.ts;
            if age > max_age {
                return Ok(Ev::unknown(format!(
                    "{name} stale ({} old, max {})",
                    show_duration(age as f64),
                    show_duration(max_age as f64)
                )));
            }
            self.hint(reading.ts + max_age + 1);
        }
        Ok(Ev::known(
            reading.value.clone(),
            format!("{name} {}", reading.value.show(unit)),
        ))
    }

    fn relay_arg(
        &mut self,
        args: &[Expr],
        helper: &str,
    ) -> Result<(String, RelayHistory), EvalError> {
        let name = match args.first() {
            None => self.this.to_string(),
            Some(Expr {
                kind: ExprKind::Str(s),
                ..
            }) => s.clone(),
            Some(other) => {
                return Err(EvalError {
                    span: other.span,
                    message: format!(
                        "{helper} takes a relay name in quotes, e.g. {helper}(\"pump\")"
                    ),
                });
            }
        };
        match self.relays.get(&name) {
            Some(h) => Ok((name, h.clone())),
            None => Err(EvalError {
                span: args[0].span,
                message: format!("no relay named `{name}`"),
            }),
        }
    }

    fn duration_arg(&mut self, e: &Expr, helper: &str) -> Result<f64, EvalError> {
        match self.eval(e)?.value {
            Some(Value::Duration(d)) if d >= 0.0 => Ok(d),
            other => Err(EvalError {
                span: e.span,
                message: format!(
                    "{helper} needs a duration here (e.g. 5m), found {}",
                    other.map_or("an unknown value", |v| v.type_name())
                ),
            }),
        }
    }

    fn bool_arg(&mut self, e: &Expr, helper: &str) -> Result<Ev, EvalError> {
        let ev = self.eval(e)?;
        match &ev.value {
            None | Some(Value::Bool(_)) => Ok(ev),
            Some(v) => Err(EvalError {
                span: e.span,
                message: format!(
                    "{helper} needs a condition (true/false), found {}",
                    v.type_name()
                ),
            }),
        }
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Expr],
        site: usize,
        span: Span,
    ) -> Result<Ev, EvalError> {
        let Some((_, min, max, help)) = HELPERS.iter().find(|h| h.0 == name) else {
            return Err(EvalError {
                span,
                message: format!("unknown helper `{name}`"),
            });
        };
        if args.len() < *min || args.len() > *max {
            return Err(EvalError {
                span,
                message: format!("wrong number of arguments: {help}"),
            });
        }
        let now = self.local.ts;
        let day_start = self.local.day_start;
        match name {
            "on_for" | "off_for" | "run_today" => {
                let (relay, h) = self.relay_arg(args, name)?;
                let (secs, growing) = match name {
                    "on_for" => (h.on_for(now), h.on == Some(true)),
                    "off_for" => (h.off_for(now), h.on == Some(false)),
                    _ => (
                        h.on.map(|_| h.run_since(day_start, now)),
                        h.on == Some(true),
                    ),
                };
                let Some(secs) = secs else {
                    return Ok(Ev::unknown(format!("state of relay {relay} not yet known")));
                };
                if name == "run_today" {
                    self.hint(self.local.next_day_start);
                }
                let text = match name {
                    "on_for" if !growing => format!("{relay} is off"),
                    "off_for" if !growing => format!("{relay} is on"),
                    "on_for" => format!("{relay} on for {}", show_duration(secs as f64)),
                    "off_for" => format!("{relay} off for {}", show_duration(secs as f64)),
                    _ => format!("{relay} ran {} today", show_duration(secs as f64)),
                };
                Ok(Ev {
                    value: Some(Value::Duration(secs as f64)),
                    rate: if growing { 1.0 } else { 0.0 },
                    text,
                })
            }
            "ran_today" | "cycle_done_today" => {
                let (relay, h) = self.relay_arg(args, name)?;
                if h.on.is_none() {
                    return Ok(Ev::unknown(format!("state of relay {relay} not yet known")));
                }
                self.hint(self.local.next_day_start);
                let (b, yes, no) = if name == "ran_today" {
                    (h.ran_since(day_start), "ran today", "has not run today")
                } else {
                    (
                        h.cycle_done_since(day_start),
                        "ran then stopped today",
                        "has not run then stopped today",
                    )
                };
                Ok(Ev::known(
                    Value::Bool(b),
                    format!("{relay} {}", if b { yes } else { no }),
                ))
            }
            "stable_for" => {
                let cond = self.bool_arg(&args[0], name)?;
                let need = self.duration_arg(&args[1], name)?;
                let mem = self.memory.entry(site).or_default();
                match cond.truth() {
                    Some(true) => {
                        let since = *mem.true_since.get_or_insert(now);
                        let held = (now - since) as f64;
                        if held >= need {
                            Ok(Ev::known(
                                Value::Bool(true),
                                format!("{} for {}", cond.text, show_duration(held)),
                            ))
                        } else {
                            self.hint(since + need.ceil() as i64);
                            Ok(Ev::known(
                                Value::Bool(false),
                                format!(
                                    "{} for only {} of {}",
                                    cond.text,
                                    show_duration(held),
                                    show_duration(need)
                                ),
                            ))
                        }
                    }
                    _ => {
                        mem.true_since = None;
                        Ok(cond)
                    }
                }
            }
            "hold" => {
                let cond = self.bool_arg(&args[0], name)?;
                let keep = self.duration_arg(&args[1], name)?;
                let mem = self.memory.entry(site).or_default();
                if cond.truth() == Some(true) {
                    mem.last_true = Some(now);
                    return Ok(cond);
                }
                if let Some(last) = mem.last_true {
                    let ago = (now - last) as f64;
                    if ago < keep {
                        let until = last + keep.ceil() as i64;
                        let text = format!(
                            "held {} more ({}; {})",
                            show_duration(keep - ago),
                            show_duration(keep),
                            cond.text
                        );
                        self.hint(until);
                        return Ok(Ev::known(Value::Bool(true), text));
                    }
                }
                Ok(cond)
            }
            "timer_running" | "timer_done" => {
                let timer = match &args[0].kind {
                    ExprKind::Str(t) => t.clone(),
                    _ => {
                        return Err(EvalError {
                            span: args[0].span,
                            message: format!(
                                "{name} takes a timer name in quotes, e.g. {name}(\"boost\")"
                            ),
                        });
                    }
                };
                let Some(t) = self.timers.get(&timer) else {
                    return Err(EvalError {
                        span: args[0].span,
                        message: format!("no timer named `{timer}`"),
                    });
                };
                let end = t.end();
                let running = end.is_some_and(|e| now < e);
                if let Some(e) = end.filter(|_| running) {
                    self.hint(e);
                }
                let text = match (running, end) {
                    (true, Some(e)) => format!(
                        "timer {timer} running, {} left",
                        show_duration((e - now) as f64)
                    ),
                    (false, Some(_)) => format!("timer {timer} done"),
                    _ => format!("timer {timer} not started"),
                };
                let value = if name == "timer_running" {
                    running
                } else {
                    end.is_some() && !running
                };
                Ok(Ev::known(Value::Bool(value), text))
            }
            "between" => {
                let (a, b) = (self.eval(&args[0])?, self.eval(&args[1])?);
                let (Some(Value::TimeOfDay(a)), Some(Value::TimeOfDay(b))) = (&a.value, &b.value)
                else {
                    if a.value.is_none() {
                        return Ok(a);
                    }
                    if b.value.is_none() {
                        return Ok(b);
                    }
                    return Err(EvalError {
                        span,
                        message: "between needs two times of day, e.g. between(08:00, 18:30)"
                            .into(),
                    });
                };
                let t = self.local.second_of_day;
                let inside = if a <= b {
                    t >= *a && t < *b
                } else {
                    t >= *a || t < *b
                };
                for edge in [*a, *b] {
                    if edge > t {
                        self.hint(self.local.ts + (edge - t).ceil() as i64);
                    }
                }
                self.hint(self.local.next_day_start);
                let window = format!("{}-{}", show_time_of_day(*a), show_time_of_day(*b));
                let text = if inside {
                    format!("time {} in {window}", show_time_of_day(t))
                } else {
                    format!("time {} outside {window}", show_time_of_day(t))
                };
                Ok(Ev::known(Value::Bool(inside), text))
            }
            _ => Err(EvalError {
                span,
                message: format!("unknown helper `{name}`"),
            }),
        }
    }

    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr, span: Span) -> Result<Ev, EvalError> {
        // Both sides are always evaluated: helpers with memory must see every pass.
        let (l, r) = (self.eval(lhs)?, self.eval(rhs)?);
        match op {
            BinOp::And | BinOp::Or => {
                for (side, e) in [(&l, lhs), (&r, rhs)] {
                    if let Some(v) = &side.value
                        && !matches!(v, Value::Bool(_))
                    {
                        return Err(EvalError {
                            span: e.span,
                            message: format!(
                                "`{}` needs true/false on both sides, this is {}",
                                op.symbol(),
                                v.type_name()
                            ),
                        });
                    }
                }
                let decisive = op == BinOp::Or; // the value that settles the result alone
                let (lt, rt) = (l.truth(), r.truth());
                let value = match (lt, rt) {
                    (Some(a), _) if a == decisive => Some(decisive),
                    (_, Some(b)) if b == decisive => Some(decisive),
                    (Some(_), Some(_)) => Some(!decisive),
                    _ => None,
                };
                let text = match value {
                    Some(v) if v == decisive => {
                        // Name only the side(s) that settle it.
                        let mut parts = Vec::new();
                        if lt == Some(decisive) {
                            parts.push(l.text.clone());
                        }
                        if rt == Some(decisive) {
                            parts.push(r.text.clone());
                        }
                        parts.join(if decisive { " or " } else { ", " })
                    }
                    Some(_) => format!(
                        "{}{}{}",
                        l.text,
                        if decisive { ", " } else { " and " },
                        r.text
                    ),
                    None => {
                        let mut parts = Vec::new();
                        if lt.is_none() {
                            parts.push(l.text.clone());
                        }
                        if rt.is_none() {
                            parts.push(r.text.clone());
                        }
                        parts.join(", ")
                    }
                };
                Ok(Ev {
                    value: value.map(Value::Bool),
                    rate: 0.0,
                    text,
                })
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                let (Some(a), Some(b)) = (&l.value, &r.value) else {
                    return Ok(if l.value.is_none() { l } else { r });
                };
                let sym = op.symbol();
                let mismatch = || EvalError {
                    span,
                    message: format!(
                        "cannot compute {} {sym} {} ({} {sym} {})",
                        l.text,
                        r.text,
                        a.type_name(),
                        b.type_name()
                    ),
                };
                let (value, rate) = match (op, a, b) {
                    (BinOp::Add, Value::Number(x), Value::Number(y)) => {
                        (Value::Number(x + y), l.rate + r.rate)
                    }
                    (BinOp::Sub, Value::Number(x), Value::Number(y)) => {
                        (Value::Number(x - y), l.rate - r.rate)
                    }
                    (BinOp::Mul, Value::Number(x), Value::Number(y)) => {
                        (Value::Number(x * y), l.rate * y + r.rate * x)
                    }
                    (BinOp::Div, Value::Number(_), Value::Number(y))
                    | (BinOp::Div, Value::Duration(_), Value::Number(y))
                        if *y == 0.0 =>
                    {
                        return Ok(Ev::unknown(format!("{} is zero (division)", r.text)));
                    }
                    (BinOp::Div, Value::Number(x), Value::Number(y)) => {
                        (Value::Number(x / y), l.rate / y)
                    }
                    (BinOp::Add, Value::Duration(x), Value::Duration(y)) => {
                        (Value::Duration(x + y), l.rate + r.rate)
                    }
                    (BinOp::Sub, Value::Duration(x), Value::Duration(y)) => {
                        (Value::Duration(x - y), l.rate - r.rate)
                    }
                    (BinOp::Mul, Value::Duration(x), Value::Number(y)) => {
                        (Value::Duration(x * y), l.rate * y)
                    }
                    (BinOp::Mul, Value::Number(x), Value::Duration(y)) => {
                        (Value::Duration(x * y), r.rate * x)
                    }
                    (BinOp::Div, Value::Duration(x), Value::Number(y)) => {
                        (Value::Duration(x / y), l.rate / y)
                    }
                    (BinOp::Add, Value::TimeOfDay(x), Value::Duration(y)) => {
                        (Value::TimeOfDay(x + y), l.rate + r.rate)
                    }
                    (BinOp::Sub, Value::TimeOfDay(x), Value::Duration(y)) => {
                        (Value::TimeOfDay(x - y), l.rate - r.rate)
                    }
                    (BinOp::Add, Value::Duration(x), Value::TimeOfDay(y)) => {
                        (Value::TimeOfDay(x + y), l.rate + r.rate)
                    }
                    _ => return Err(mismatch()),
                };
                let text = format!("{} {sym} {} (= {})", l.text, r.text, value.show(""));
                Ok(Ev {
                    value: Some(value),
                    rate,
                    text,
                })
            }
            BinOp::In | BinOp::NotIn => {
                let (Some(a), Some(b)) = (&l.value, &r.value) else {
                    return Ok(if l.value.is_none() { l } else { r });
                };
                let Value::List(items) = b else {
                    return Err(EvalError {
                        span: rhs.span,
                        message: format!(
                            "`{}` needs a list on its right, e.g. [\"absorption\", \"float\"]",
                            op.symbol()
                        ),
                    });
                };
                let mut found = false;
                for item in items {
                    found |= compare_values(BinOp::Eq, a, item).map_err(|m| EvalError {
                        span,
                        message: format!("{m}: {} in {}", l.text, r.text),
                    })?;
                }
                let result = found == (op == BinOp::In);
                let shown = if found { "in" } else { "not in" };
                Ok(Ev::known(
                    Value::Bool(result),
                    format!("{} {shown} {}", l.text, r.text),
                ))
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let (Some(a), Some(b)) = (&l.value, &r.value) else {
                    return Ok(if l.value.is_none() { l } else { r });
                };
                let result = compare_values(op, a, b).map_err(|m| EvalError {
                    span,
                    message: format!("{m}: {} {} {}", l.text, op.symbol(), r.text),
                })?;
                // When will it flip? Only values that grow with time can.
                let rate = l.rate - r.rate;
                if rate != 0.0
                    && let (Some(x), Some(y)) = (scalar(a), scalar(b))
                {
                    let cross = self.local.ts as f64 + (y - x) / rate;
                    let strict = matches!(op, BinOp::Lt | BinOp::Gt);
                    let at = if strict || cross.fract() != 0.0 {
                        cross.floor() as i64 + 1
                    } else {
                        cross as i64
                    };
                    self.hint(at);
                }
                let shown = if result {
                    op
                } else {
                    op.negated().unwrap_or(op)
                };
                Ok(Ev::known(
                    Value::Bool(result),
                    format!("{} {} {}", l.text, shown.symbol(), r.text),
                ))
            }
        }
    }
}

fn scalar(v: &Value) -> Option<f64> {
    match v {
        Value::Number(x) | Value::Duration(x) | Value::TimeOfDay(x) => Some(*x),
        _ => None,
    }
}

/// Compares two known values of the same type; different types are an error.
pub fn compare_values(op: BinOp, a: &Value, b: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Value::Number(x), Value::Number(y))
        | (Value::Duration(x), Value::Duration(y))
        | (Value::TimeOfDay(x), Value::TimeOfDay(y)) => x.partial_cmp(y),
        (Value::Text(x), Value::Text(y)) => {
            if !matches!(op, BinOp::Eq | BinOp::Ne) {
                return Err("texts can only be compared with == or !=".into());
            }
            Some(x.cmp(y))
        }
        (Value::Bool(x), Value::Bool(y)) => {
            if !matches!(op, BinOp::Eq | BinOp::Ne) {
                return Err("true/false can only be compared with == or !=".into());
            }
            Some(x.cmp(y))
        }
        _ => {
            let hint = match (a, b) {
                (Value::Number(_), Value::Duration(_)) | (Value::Duration(_), Value::Number(_)) => {
                    " (write durations with a unit: 5m, 2h)"
                }
                _ => "",
            };
            return Err(format!(
                "cannot compare {} with {}{hint}",
                a.type_name(),
                b.type_name()
            ));
        }
    };
    let Some(ord) = ord else { return Ok(false) };
    Ok(match op {
        BinOp::Eq => ord == Ordering::Equal,
        BinOp::Ne => ord != Ordering::Equal,
        BinOp::Lt => ord == Ordering::Less,
        BinOp::Le => ord != Ordering::Greater,
        BinOp::Gt => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Site;
    use crate::expr::parse;

    struct World {
        local: LocalTime,
        readings: Readings,
        relays: BTreeMap<String, RelayHistory>,
        memory: BTreeMap<usize, SiteMemory>,
    }

    impl World {
        fn new(ts: i64) -> World {
            let site = Site::new("UTC", None, None).unwrap();
            let mut relays = BTreeMap::new();
            let mut pump = RelayHistory::default();
            pump.set_on(false, 0);
            relays.insert("pump".to_string(), pump);
            World {
                local: site.local(ts),
                readings: Readings::default(),
                relays,
                memory: BTreeMap::new(),
            }
        }

        fn eval(&mut self, src: &str) -> (Result<Ev, EvalError>, Option<i64>) {
            let (e, _) = parse(src, 0).unwrap();
            let mut wake = None;
            let max_age = |_: &str| Some(300);
            let timers = BTreeMap::new();
            let mut scope = Scope {
                timers: &timers,
                local: &self.local,
                readings: &self.readings,
                max_age: &max_age,
                relays: &self.relays,
                this: "pump",
                load_power: Some(1500.0),
                surplus: Err("not configured".into()),
                memory: &mut self.memory,
                wake: &mut wake,
            };
            (scope.eval(&e), wake)
        }
    }

    #[test]
    fn three_valued_logic_and_reasons() {
        let mut w = World::new(1000);
        w.readings
            .update(
                "bmv",
                &serde_json::json!({"ts": 990, "state_of_charge": 93.5}),
                990,
            )
            .unwrap();
        let (ev, _) = w.eval("bmv.state_of_charge >= 95");
        let ev = ev.unwrap();
        assert_eq!(ev.truth(), Some(false));
        assert_eq!(ev.text, "bmv.state_of_charge 93.5 % < 95");
        // missing and false is false; missing or false is unknown; missing or true is true
        assert_eq!(
            w.eval("mppt.pv_power > 5 and bmv.state_of_charge > 99")
                .0
                .unwrap()
                .truth(),
            Some(false)
        );
        let u = w
            .eval("mppt.pv_power > 5 or bmv.state_of_charge > 99")
            .0
            .unwrap();
        assert_eq!(u.truth(), None);
        assert_eq!(u.text, "mppt.pv_power missing");
        assert_eq!(
            w.eval("mppt.pv_power > 5 or bmv.state_of_charge > 90")
                .0
                .unwrap()
                .truth(),
            Some(true)
        );
        // stale after max_age (300 s)
        w.local = Site::new("UTC", None, None).unwrap().local(1291);
        let u = w.eval("bmv.state_of_charge > 90").0.unwrap();
        assert_eq!(u.truth(), None, "{}", u.text);
        assert!(u.text.contains("stale"), "{}", u.text);
    }

    #[test]
    fn type_mismatch_is_an_error() {
        let mut w = World::new(1000);
        w.readings
            .update(
                "mppt",
                &serde_json::json!({"ts": 1000, "charge_state": "float"}),
                1000,
            )
            .unwrap();
        let e = w.eval("mppt.charge_state > 3").0.unwrap_err();
        assert!(
            e.message.contains("cannot compare a text with a number"),
            "{}",
            e.message
        );
        let e = w.eval("on_for() > 5").0.unwrap_err();
        assert!(
            e.message.contains("write durations with a unit"),
            "{}",
            e.message
        );
        assert_eq!(
            w.eval("mppt.charge_state in [\"absorption\", \"float\"]")
                .0
                .unwrap()
                .truth(),
            Some(true)
        );
    }

    #[test]
    fn growing_durations_tell_when_they_flip() {
        let mut w = World::new(1000);
        w.relays.get_mut("pump").unwrap().set_on(true, 900);
        let (ev, wake) = w.eval("on_for(\"pump\") >= 5m");
        assert_eq!(ev.unwrap().truth(), Some(false));
        assert_eq!(wake, Some(1200));
        let (_, wake) = w.eval("time > 00:30");
        assert_eq!(wake, Some(1801));
    }

    #[test]
    fn stable_for_and_hold_remember() {
        let mut w = World::new(1000);
        let site = Site::new("UTC", None, None).unwrap();
        w.readings
            .update("m", &serde_json::json!({"ts": 1000, "cs": "float"}), 1000)
            .unwrap();
        let (ev, wake) = w.eval("stable_for(m.cs == \"float\", 60s)");
        assert_eq!(ev.unwrap().truth(), Some(false));
        assert_eq!(wake, Some(1060));
        w.local = site.local(1060);
        assert_eq!(
            w.eval("stable_for(m.cs == \"float\", 60s)")
                .0
                .unwrap()
                .truth(),
            Some(true)
        );
        w.readings
            .update("m", &serde_json::json!({"ts": 1060, "cs": "bulk"}), 1060)
            .unwrap();
        // hold: true, then false, but held for 60 s
        w.local = site.local(1070);
        w.readings
            .update("m", &serde_json::json!({"ts": 1070, "cs": "float"}), 1070)
            .unwrap();
        assert_eq!(
            w.eval("hold(m.cs == \"float\", 60s)").0.unwrap().truth(),
            Some(true)
        );
        w.readings
            .update("m", &serde_json::json!({"ts": 1080, "cs": "bulk"}), 1080)
            .unwrap();
        w.local = site.local(1100);
        let (ev, wake) = w.eval("hold(m.cs == \"float\", 60s)");
        assert_eq!(ev.unwrap().truth(), Some(true));
        assert_eq!(wake, Some(1130));
        w.local = site.local(1130);
        assert_eq!(
            w.eval("hold(m.cs == \"float\", 60s)").0.unwrap().truth(),
            Some(false)
        );
    }
}
