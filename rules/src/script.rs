//! The expert escape hatch: a condition written in Rhai, with the same values and helpers,
//! in a sandbox (operation, depth, size limits; no modules, no `eval`, no file or network
//! access, `print` goes to the log). Comparing values of different types is an error, as
//! in the rule language (Rhai's own default is a silent `false`).
//!
//! In a script: `value("bmv.state_of_charge")` (a number, text or true/false; `()` when
//! unknown), `relay_on("pump")`, `relay_mode("pump")`, `on_for("pump")`, `off_for(..)`,
//! `run_today(..)` (seconds; without argument: this relay), `ran_today(..)`,
//! `cycle_done_today(..)`, `stable_for("key", cond, seconds)`, `hold("key", cond, seconds)`,
//! `timer_running("name")`, `timer_done("name")`, `between("08:00", "18:30")` (or seconds
//! since midnight, e.g. `between(sunrise, sunset)`);
//! constants `hour`, `minute`, `time` (seconds since local midnight), `weekday`, `month`,
//! `day`, `sunrise`, `sunset` (seconds since midnight, `()` if unknown), `surplus` (W or
//! `()`), `load_power`. The script's last value is the answer: `true`, `false`, or `()`
//! for unknown; anything that touches an unknown value is unknown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{AST, Dynamic, EvalAltResult, ImmutableString, Position};

use crate::clock::LocalTime;
use crate::eval::{Ev, Timer};
use crate::history::RelayHistory;
use crate::value::{Readings, Value, show_duration};

/// A script error with its place inside the script (1-based line and column).
#[derive(Debug, Clone)]
pub struct ScriptError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What the helpers of one evaluation see, shared with the registered functions.
#[derive(Default)]
struct State {
    local: Option<LocalTime>,
    readings: Readings,
    ages: BTreeMap<String, Option<i64>>,
    default_max_age: Option<i64>,
    relays: BTreeMap<String, RelayHistory>,
    /// The named timers ([rules.timers]), as the engine has them at this pass.
    timers: BTreeMap<String, Timer>,
    this: String,
    /// Per relay, per key of `stable_for`/`hold`.
    memory: BTreeMap<(String, String), SiteMemory2>,
    /// What the script read, for the reason.
    read: Vec<String>,
    /// Why something was unknown.
    unknown: Vec<String>,
    wake: Option<i64>,
}

#[derive(Debug, Default, Clone)]
struct SiteMemory2 {
    true_since: Option<i64>,
    last_true: Option<i64>,
}

/// The sandboxed Rhai engine with the rule helpers registered.
pub struct ScriptHost {
    engine: rhai::Engine,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptHost")
    }
}

const UNKNOWN: &str = "unknown value";
const CONSTANTS: &[&str] = &[
    "hour",
    "minute",
    "time",
    "weekday",
    "month",
    "day",
    "sunrise",
    "sunset",
    "surplus",
    "load_power",
];

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Number(n) | Value::Duration(n) | Value::TimeOfDay(n) => Dynamic::from_float(*n),
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Text(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::List(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
    }
}

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(message: String) -> Fallible<T> {
    Err(message.into())
}

impl ScriptHost {
    pub fn new() -> ScriptHost {
        let state = Arc::new(Mutex::new(State::default()));
        let mut engine = rhai::Engine::new_raw();
        engine.set_max_operations(20_000);
        engine.set_max_expr_depths(32, 16);
        engine.set_max_call_levels(8);
        engine.set_max_string_size(1024);
        engine.set_max_array_size(64);
        engine.set_max_map_size(64);
        engine.set_max_variables(64);
        engine.set_max_functions(16);
        engine.set_strict_variables(true);
        // The clock constants are only known at evaluation: the optimizer must not fold
        // the placeholders of the compile-time scope into the script.
        engine.set_optimization_level(rhai::OptimizationLevel::None);
        engine.disable_symbol("eval");
        engine.on_print(|s| tracing::info!(script = s, "rule script print"));
        engine.on_debug(|s, _, _| tracing::debug!(script = s, "rule script debug"));
        // Registered comparisons are tried before Rhai's built-in ones only without the
        // fast-operator shortcut; they turn mixed-type comparisons into errors.
        engine.set_fast_operators(false);
        register_strict_comparisons(&mut engine);

        let st = state.clone();
        engine.register_fn("value", move |name: &str| -> Fallible<Dynamic> {
            let mut s = lock(&st);
            let Some((device, field)) = name.split_once('.') else {
                return fail(format!("`{name}` is not a value name (device.value)"));
            };
            let now = s.local.as_ref().map_or(0, |l| l.ts);
            let max_age = s.ages.get(device).copied().unwrap_or(s.default_max_age);
            match s.readings.get(device, field).cloned() {
                None => {
                    s.unknown.push(format!("{name} missing"));
                    Ok(Dynamic::UNIT)
                }
                Some(r) if max_age.is_some_and(|a| now - r.ts > a) => {
                    s.unknown.push(format!("{name} stale"));
                    Ok(Dynamic::UNIT)
                }
                Some(r) => {
                    if let Some(a) = max_age {
                        push_wake(&mut s, r.ts + a + 1);
                    }
                    let shown = format!("{name} {}", r.value.show(crate::value::unit_of(field)));
                    if !s.read.contains(&shown) {
                        s.read.push(shown);
                    }
                    Ok(to_dynamic(&r.value))
                }
            }
        });
        let relay_fn = |state: &Arc<Mutex<State>>, what: &'static str| {
            let st = state.clone();
            move |relay: &str| -> Fallible<Dynamic> { relay_helper(&st, what, relay) }
        };
        let self_fn = |state: &Arc<Mutex<State>>, what: &'static str| {
            let st = state.clone();
            move || -> Fallible<Dynamic> {
                let this = lock(&st).this.clone();
                relay_helper(&st, what, &this)
            }
        };
        for what in [
            "relay_on",
            "relay_mode",
            "on_for",
            "off_for",
            "run_today",
            "ran_today",
            "cycle_done_today",
        ] {
            engine.register_fn(what, relay_fn(&state, what));
            if what != "relay_on" && what != "relay_mode" {
                engine.register_fn(what, self_fn(&state, what));
            }
        }
        let st = state.clone();
        engine.register_fn(
            "stable_for",
            move |key: &str, cond: bool, secs: f64| -> Fallible<bool> {
                let mut s = lock(&st);
                let now = s.local.as_ref().map_or(0, |l| l.ts);
                let k = (s.this.clone(), key.to_string());
                let mem = s.memory.entry(k).or_default();
                if !cond {
                    mem.true_since = None;
                    return Ok(false);
                }
                let since = *mem.true_since.get_or_insert(now);
                let ok = (now - since) as f64 >= secs;
                if !ok {
                    push_wake(&mut s, since + secs.ceil() as i64);
                }
                Ok(ok)
            },
        );
        let st = state.clone();
        engine.register_fn(
            "hold",
            move |key: &str, cond: bool, secs: f64| -> Fallible<bool> {
                let mut s = lock(&st);
                let now = s.local.as_ref().map_or(0, |l| l.ts);
                let k = (s.this.clone(), key.to_string());
                let mem = s.memory.entry(k).or_default();
                if cond {
                    mem.last_true = Some(now);
                    return Ok(true);
                }
                match mem.last_true {
                    Some(t) if ((now - t) as f64) < secs => {
                        push_wake(&mut s, t + secs.ceil() as i64);
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            },
        );
        for what in ["timer_running", "timer_done"] {
            let st = state.clone();
            engine.register_fn(what, move |name: &str| -> Fallible<bool> {
                timer_helper(&st, what, name)
            });
        }
        register_between(&mut engine, &state);
        ScriptHost { engine, state }
    }

    fn constants_scope(
        &self,
        local: Option<&LocalTime>,
        surplus: &Result<f64, String>,
        load_power: Option<f64>,
    ) -> rhai::Scope<'static> {
        let mut scope = rhai::Scope::new();
        let l = local.cloned();
        let f = |x: Option<f64>| x.map_or(Dynamic::UNIT, Dynamic::from_float);
        scope.push_constant("hour", l.as_ref().map_or(0, |l| l.hour));
        scope.push_constant("minute", l.as_ref().map_or(0, |l| l.minute));
        scope.push_constant("time", l.as_ref().map_or(0.0, |l| l.second_of_day));
        scope.push_constant(
            "weekday",
            ImmutableString::from(l.as_ref().map_or("mon", |l| l.weekday)),
        );
        scope.push_constant("month", l.as_ref().map_or(1, |l| l.month));
        scope.push_constant("day", l.as_ref().map_or(1, |l| l.day));
        scope.push_constant_dynamic("sunrise", f(l.as_ref().and_then(|l| l.sunrise)));
        scope.push_constant_dynamic("sunset", f(l.as_ref().and_then(|l| l.sunset)));
        scope.push_constant_dynamic("surplus", f(surplus.as_ref().ok().copied()));
        scope.push_constant_dynamic("load_power", f(load_power));
        debug_assert_eq!(scope.len(), CONSTANTS.len());
        scope
    }

    /// Compiles a script (for `rules check` and at load), with the place of an error.
    pub fn compile(&self, source: &str) -> Result<AST, ScriptError> {
        let scope = self.constants_scope(None, &Err(String::new()), None);
        self.engine.compile_with_scope(&scope, source).map_err(|e| {
            let (line, column) = position(e.position());
            ScriptError {
                line,
                column,
                message: e.err_type().to_string(),
            }
        })
    }

    /// Evaluates a compiled script.
    #[allow(clippy::too_many_arguments)]
    pub fn eval(
        &self,
        ast: &AST,
        local: &LocalTime,
        readings: &Readings,
        max_age: &dyn Fn(&str) -> Option<i64>,
        relays: &BTreeMap<String, RelayHistory>,
        timers: &BTreeMap<String, Timer>,
        this: &str,
        surplus: &Result<f64, String>,
        load_power: Option<f64>,
        wake: &mut Option<i64>,
    ) -> Result<Ev, ScriptError> {
        {
            let mut s = lock(&self.state);
            s.local = Some(local.clone());
            s.readings = readings.clone();
            s.ages = readings_devices(readings)
                .into_iter()
                .map(|d| {
                    let a = max_age(&d);
                    (d, a)
                })
                .collect();
            s.default_max_age = max_age("");
            s.relays = relays.clone();
            s.timers = timers.clone();
            s.this = this.to_string();
            s.read.clear();
            s.unknown.clear();
            s.wake = None;
        }
        let mut scope = self.constants_scope(Some(local), surplus, load_power);
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast);
        let s = lock(&self.state);
        // Clock values can change the answer at any minute.
        let next_minute = local.ts + 60 - (local.second_of_day as i64 % 60);
        for at in s.wake.into_iter().chain([next_minute]) {
            if at > local.ts {
                *wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        let read = if s.read.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.read.join(", "))
        };
        match result {
            Ok(d) if d.is_bool() => {
                let b = d.as_bool().unwrap_or(false);
                Ok(Ev {
                    value: Some(Value::Bool(b)),
                    rate: 0.0,
                    text: format!("script: {b}{read}"),
                })
            }
            Ok(d) if d.is_unit() => Ok(Ev {
                value: None,
                rate: 0.0,
                text: unknown_text(&s.unknown),
            }),
            Ok(d) => Err(ScriptError {
                line: 0,
                column: 0,
                message: format!(
                    "the script must end with true or false, not {}",
                    d.type_name()
                ),
            }),
            Err(e) if !s.unknown.is_empty() && e.to_string().contains(UNKNOWN) => Ok(Ev {
                value: None,
                rate: 0.0,
                text: unknown_text(&s.unknown),
            }),
            Err(e) => {
                let (line, column) = position(e.position());
                let mut message = e.to_string();
                if let Some(cut) = message.find(" (line ") {
                    message.truncate(cut);
                }
                Err(ScriptError {
                    line,
                    column,
                    message,
                })
            }
        }
    }
}

impl Default for ScriptHost {
    fn default() -> Self {
        ScriptHost::new()
    }
}

fn readings_devices(readings: &Readings) -> Vec<String> {
    readings.devices().map(str::to_string).collect()
}

fn unknown_text(unknown: &[String]) -> String {
    if unknown.is_empty() {
        "script: unknown".into()
    } else {
        format!("script: unknown ({})", unknown.join(", "))
    }
}

fn push_wake(s: &mut State, at: i64) {
    s.wake = Some(s.wake.map_or(at, |w| w.min(at)));
}

fn position(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(0), p.position().unwrap_or(0))
}

/// `timer_running("boost")`, `timer_done("boost")`: as in the rule language.
fn timer_helper(st: &Mutex<State>, what: &str, name: &str) -> Fallible<bool> {
    let mut s = lock(st);
    let Some(timer) = s.timers.get(name) else {
        let names: Vec<&str> = s.timers.keys().map(String::as_str).collect();
        return fail(format!(
            "no timer named `{name}`{}",
            crate::config::close_names(name, names.into_iter())
        ));
    };
    let now = s.local.as_ref().map_or(0, |l| l.ts);
    let end = timer.end();
    let running = end.is_some_and(|e| now < e);
    if let Some(e) = end.filter(|_| running) {
        push_wake(&mut s, e);
    }
    let value = if what == "timer_running" {
        running
    } else {
        end.is_some() && !running
    };
    s.read.push(format!("{what}({name}) {value}"));
    Ok(value)
}

/// A time of day for `between`: text `"HH:MM"` or `"HH:MM:SS"`, or a number of seconds
/// since midnight (the unit of `time`, `sunrise` and `sunset`); `None` for `()` (unknown,
/// e.g. `sunrise` without a position).
fn day_time(value: &Dynamic) -> Fallible<Option<f64>> {
    if value.is_unit() {
        return Ok(None);
    }
    if let Ok(n) = value.as_float() {
        return Ok(Some(n));
    }
    if let Ok(n) = value.as_int() {
        return Ok(Some(n as f64));
    }
    let text = value.clone().into_string().unwrap_or_default();
    let numbers: Option<Vec<u32>> = text.trim().split(':').map(|p| p.parse().ok()).collect();
    match numbers.as_deref() {
        Some([h, m]) if *h < 24 && *m < 60 => Ok(Some(f64::from(h * 3600 + m * 60))),
        Some([h, m, sec]) if *h < 24 && *m < 60 && *sec < 60 => {
            Ok(Some(f64::from(h * 3600 + m * 60 + sec)))
        }
        _ => fail(format!(
            "between needs times of day as \"HH:MM\" or seconds since midnight, not {value}"
        )),
    }
}

/// `between(a, b)`: the local time is in [a, b) (across midnight when b < a); unknown when
/// a or b is.
fn register_between(engine: &mut rhai::Engine, state: &Arc<Mutex<State>>) {
    let st = state.clone();
    engine.register_fn(
        "between",
        move |a: Dynamic, b: Dynamic| -> Fallible<Dynamic> {
            let (a, b) = (day_time(&a)?, day_time(&b)?);
            let mut s = lock(&st);
            let (Some(a), Some(b)) = (a, b) else {
                s.unknown.push("between: a time of day is unknown".into());
                return Ok(Dynamic::UNIT);
            };
            let Some(local) = s.local.clone() else {
                return Ok(Dynamic::UNIT);
            };
            let t = local.second_of_day;
            let inside = if a <= b {
                t >= a && t < b
            } else {
                t >= a || t < b
            };
            for edge in [a, b] {
                if edge > t {
                    push_wake(&mut s, local.ts + (edge - t).ceil() as i64);
                }
            }
            push_wake(&mut s, local.next_day_start);
            Ok(Dynamic::from_bool(inside))
        },
    );
}

fn relay_helper(st: &Mutex<State>, what: &str, relay: &str) -> Fallible<Dynamic> {
    let mut s = lock(st);
    let Some(h) = s.relays.get(relay).cloned() else {
        let names: Vec<&str> = s.relays.keys().map(String::as_str).collect();
        return fail(format!(
            "no relay named `{relay}`{}",
            crate::config::close_names(relay, names.into_iter())
        ));
    };
    let (now, day_start) = s.local.as_ref().map_or((0, 0), |l| (l.ts, l.day_start));
    let Some(on) = h.on else {
        s.unknown
            .push(format!("state of relay {relay} not yet known"));
        return Ok(Dynamic::UNIT);
    };
    let shown = |x: i64| Dynamic::from_float(x as f64);
    Ok(match what {
        "relay_on" => Dynamic::from_bool(on),
        "relay_mode" => h.mode.map_or(Dynamic::UNIT, |m| {
            Dynamic::from(ImmutableString::from(m.name()))
        }),
        "on_for" => shown(h.on_for(now).unwrap_or(0)),
        "off_for" => shown(h.off_for(now).unwrap_or(0)),
        "run_today" => shown(h.run_since(day_start, now)),
        "ran_today" => Dynamic::from_bool(h.ran_since(day_start)),
        _ => Dynamic::from_bool(h.cycle_done_since(day_start)),
    })
    .inspect(|d| {
        let text = if d.is_float() {
            show_duration(d.as_float().unwrap_or(0.0))
        } else {
            d.to_string()
        };
        s.read.push(format!("{what}({relay}) {text}"));
    })
}

/// Makes `==`, `!=`, `<`, `<=`, `>`, `>=` between different kinds of values an error
/// (numbers compare with numbers, integer or not); with `()` (unknown) the error says so,
/// and the condition is unknown.
fn register_strict_comparisons(engine: &mut rhai::Engine) {
    macro_rules! forbid {
        ($a:ty, $an:expr, $b:ty, $bn:expr) => {
            for op in ["==", "!=", "<", "<=", ">", ">="] {
                engine.register_fn(op, move |_: $a, _: $b| -> Fallible<bool> {
                    if $an == "()" || $bn == "()" {
                        return fail(UNKNOWN.to_string());
                    }
                    fail(format!("cannot compare {} with {}", $an, $bn))
                });
            }
        };
    }
    macro_rules! forbid_both {
        ($a:ty, $an:expr, $b:ty, $bn:expr) => {
            forbid!($a, $an, $b, $bn);
            forbid!($b, $bn, $a, $an);
        };
    }
    forbid_both!(rhai::INT, "a number", ImmutableString, "a text");
    forbid_both!(rhai::FLOAT, "a number", ImmutableString, "a text");
    forbid_both!(rhai::INT, "a number", bool, "true/false");
    forbid_both!(rhai::FLOAT, "a number", bool, "true/false");
    forbid_both!(ImmutableString, "a text", bool, "true/false");
    forbid_both!((), "()", rhai::INT, "a number");
    forbid_both!((), "()", rhai::FLOAT, "a number");
    forbid_both!((), "()", ImmutableString, "a text");
    forbid_both!((), "()", bool, "true/false");
    forbid!((), "()", (), "()");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Site;

    fn run(src: &str, readings: &Readings) -> Result<Ev, ScriptError> {
        let host = ScriptHost::new();
        let ast = host.compile(src)?;
        let local = Site::new("UTC", None, None).unwrap().local(1000);
        let mut relays = BTreeMap::new();
        let mut pump = RelayHistory::default();
        pump.set_on(true, 700);
        relays.insert("pump".to_string(), pump);
        let mut wake = None;
        // At 1000: "boost" started at 900 for 5 min runs; "rinse" ran from 100 to 160.
        let timers = BTreeMap::from([
            (
                "boost".to_string(),
                Timer {
                    duration: 300,
                    started: Some(900),
                    was_true: true,
                },
            ),
            (
                "rinse".to_string(),
                Timer {
                    duration: 60,
                    started: Some(100),
                    was_true: false,
                },
            ),
            ("idle".to_string(), Timer::default()),
        ]);
        host.eval(
            &ast,
            &local,
            readings,
            &|_| Some(300),
            &relays,
            &timers,
            "pump",
            &Err("none".into()),
            None,
            &mut wake,
        )
    }

    fn readings() -> Readings {
        let mut r = Readings::default();
        r.update(
            "bmv",
            &serde_json::json!({"ts": 990, "state_of_charge": 96.0, "charge_state": "float"}),
            990,
        )
        .unwrap();
        r
    }

    #[test]
    fn values_helpers_and_reasons() {
        let ev = run(
            r#"let soc = value("bmv.state_of_charge"); soc >= 95 && on_for("pump") >= 300.0"#,
            &readings(),
        )
        .unwrap();
        assert_eq!(ev.truth(), Some(true));
        assert_eq!(
            ev.text,
            "script: true (bmv.state_of_charge 96 %, on_for(pump) 5 min)"
        );
    }

    #[test]
    fn timers_as_in_the_rule_language() {
        let yes = |src: &str| run(src, &readings()).unwrap().truth();
        assert_eq!(yes(r#"timer_running("boost")"#), Some(true));
        assert_eq!(yes(r#"timer_done("boost")"#), Some(false));
        assert_eq!(yes(r#"timer_done("rinse")"#), Some(true));
        assert_eq!(yes(r#"timer_running("rinse")"#), Some(false));
        // Never started: neither running nor done.
        assert_eq!(
            yes(r#"timer_running("idle") || timer_done("idle")"#),
            Some(false)
        );
        let err = run(r#"timer_running("bost")"#, &readings()).unwrap_err();
        assert!(
            err.message.contains("no timer named `bost`") && err.message.contains("boost"),
            "{}",
            err.message
        );
    }

    #[test]
    fn between_takes_text_or_seconds_and_wraps_midnight() {
        // Site time 1000 s after the epoch, UTC: 00:16:40.
        let yes = |src: &str| run(src, &readings()).unwrap().truth();
        assert_eq!(yes(r#"between("00:10", "00:20")"#), Some(true));
        assert_eq!(yes(r#"between("00:17", "00:20")"#), Some(false));
        assert_eq!(yes(r#"between("23:00", "00:20")"#), Some(true));
        assert_eq!(yes(r#"between("23:00", "00:10")"#), Some(false));
        assert_eq!(yes("between(600, 1200.0)"), Some(true));
        assert_eq!(yes(r#"between(time - 60.0, "00:16:41")"#), Some(true));
        // No position configured: sunrise is unknown, so is the answer.
        assert_eq!(yes("between(sunrise, sunset)"), None);
        let err = run(r#"between("8h", "18:00")"#, &readings()).unwrap_err();
        assert!(err.message.contains("HH:MM"), "{}", err.message);
    }

    #[test]
    fn unknown_values_make_the_script_unknown() {
        let ev = run(r#"value("bmv.battery_power") > 0"#, &readings()).unwrap();
        assert_eq!(ev.truth(), None);
        assert_eq!(ev.text, "script: unknown (bmv.battery_power missing)");
    }

    #[test]
    fn mixed_types_are_errors_not_false() {
        let e = run(r#"value("bmv.charge_state") == 3"#, &readings()).unwrap_err();
        assert!(
            e.message.contains("cannot compare a text with a number"),
            "{}",
            e.message
        );
        let e = run(r#"value("bmv.state_of_charge") > "90""#, &readings()).unwrap_err();
        assert!(
            e.message.contains("cannot compare a number with a text"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_sandbox_holds() {
        let e = run("let x = 0; loop { x += 1; } true", &readings()).unwrap_err();
        assert!(
            e.message.to_lowercase().contains("too many operations"),
            "{}",
            e.message
        );
        let e = run("let s = \"x\"; loop { s += s; } true", &readings()).unwrap_err();
        assert!(
            e.message.to_lowercase().contains("length")
                || e.message.to_lowercase().contains("too large"),
            "{}",
            e.message
        );
        let e = run("eval(\"true\")", &readings()).unwrap_err();
        assert!(e.line == 1, "{e:?}");
        let e = run("import \"os\" as os; true", &readings()).unwrap_err();
        assert!(e.line == 1, "{e:?}");
        let local = Site::new("UTC", None, None).unwrap().local(1000); // a Thursday
        assert_eq!(local.weekday, "thu");
        assert_eq!(
            run(r#"weekday == "thu" && hour == 0"#, &readings())
                .unwrap()
                .truth(),
            Some(true)
        );
        let e = run("nosuchvar > 1", &readings()).unwrap_err();
        assert_eq!((e.line, e.column), (1, 1), "{e:?}");
    }
}
