//! `pvbus status`: a live view of the bus in the terminal — processes, site totals,
//! devices and their main values, relays with mode, state and reason, rule status —
//! built only from what travels on MQTT (`<base>/#`), so it shows the same truth as Home
//! Assistant or `mosquitto_sub`, wherever it runs.
//!
//! It reads but never joins the bus: it connects as a tool (`Bus::connect_tool`: no last
//! will, no `<base>/status/status` topic, a client id of its own so that two viewers do not
//! throw each other off).
//!
//! Layout: [`View`] is the picture of the bus (`apply` one message at a time); `render`
//! turns it into lines that fit the terminal; `run` connects, redraws on change (at most
//! four times a second, and not at all while nothing changes) or, with `--once`, prints one
//! picture after the retained messages have arrived.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use pvbus_bus::config::Settings;
use pvbus_bus::{Bus, Event, Shutdown, Topics};
use pvbus_cli::session::Session;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::supervisor::report::{ChildState, ProcessesReport};

/// Redraws at most this often.
const MIN_REDRAW: Duration = Duration::from_millis(250);
/// While disconnected, how often the header's reason is brought up to date.
const RETRY_SHOWN: Duration = Duration::from_secs(1);

/// The values shown first for a device, in this order, with their labels and units.
const MAIN_VALUES: &[(&str, &str, &str)] = &[
    ("state_of_charge", "SOC ", " %"),
    ("battery_voltage", "", " V"),
    ("battery_current", "", " A"),
    ("battery_power", "", " W"),
    ("pv_power", "PV ", " W"),
    ("charge_state", "", ""),
];

/// Keys that say what a device is, not how it is: left out of the compact line.
const IDENTITY: &[&str] = &["ts", "product_id", "model", "serial_number", "firmware"];

/// The picture of the bus.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct View {
    /// `<base>/<process>/status`
    pub processes: BTreeMap<String, String>,
    pub supervisor: Option<ProcessesReport>,
    pub site: Option<Map<String, Value>>,
    pub surplus: Option<String>,
    /// `(bridge, device)`
    pub devices: BTreeMap<(String, String), Device>,
    pub relays: BTreeMap<String, Relay>,
    /// `<base>/rules/<relay>/status`
    pub rules: BTreeMap<String, String>,
    /// The last `<base>/<process>/error` of each process: which command was refused, why.
    pub errors: BTreeMap<String, String>,
    /// `<base>/cloud/remote`: whether the link to the remote broker is up, and why not.
    pub cloud: Option<Map<String, Value>>,
    /// What the local panel shows, as the panel processes publish it.
    pub panel: Panel,
    /// Payloads that could not be understood: topic → what was wrong.
    pub problems: BTreeMap<String, String>,
}

/// The TM1638 board and the LCD, from `<base>/tm1638/...` and `<base>/lcd/...`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Panel {
    pub digits: Option<String>,
    /// LED n (from 1) lit or not.
    pub leds: BTreeMap<u32, bool>,
    pub brightness: Option<String>,
    /// LCD line n (from 1).
    pub lines: BTreeMap<u32, String>,
    pub backlight: Option<String>,
}

impl Panel {
    fn is_empty(&self) -> bool {
        *self == Panel::default()
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Device {
    pub state: Option<Map<String, Value>>,
    pub availability: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Relay {
    pub state: Option<String>,
    pub mode: Option<String>,
    pub reason: Option<String>,
    pub override_: Option<String>,
}

impl View {
    /// Takes one message into the picture; returns whether anything shown changed. An empty
    /// payload (a retained message being cleared) removes the value.
    pub fn apply(&mut self, topics: &Topics, topic: &str, payload: &[u8]) -> bool {
        let Some(rest) = topic
            .strip_prefix(topics.base())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let text = String::from_utf8_lossy(payload).trim().to_string();
        let levels: Vec<&str> = rest.split('/').collect();
        let before = self.clone();
        self.problems.remove(topic);
        match levels.as_slice() {
            ["supervisor", "processes"] => {
                self.supervisor = if text.is_empty() {
                    None
                } else {
                    match serde_json::from_str::<ProcessesReport>(&text) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.problems.insert(topic.into(), e.to_string());
                            None
                        }
                    }
                };
            }
            ["site", "state"] => self.site = self.json_object(topic, &text),
            ["site", "surplus"] => self.surplus = non_empty(text),
            ["cloud", "remote"] => self.cloud = self.json_object(topic, &text),
            ["rules", "heartbeat" | "decisions"] => return false,
            ["rules", relay, "status"] => set_or_remove(&mut self.rules, relay, text),
            ["relays", id, leaf] => {
                let relay = self.relays.entry(id.to_string()).or_default();
                let slot = match *leaf {
                    "state" => &mut relay.state,
                    "mode" => &mut relay.mode,
                    "reason" => &mut relay.reason,
                    "override" => &mut relay.override_,
                    _ => return false,
                };
                *slot = non_empty(text);
            }
            // What the digits show, blanks included (the payload untrimmed).
            ["tm1638", "display"] => {
                self.panel.digits = non_empty(String::from_utf8_lossy(payload).into_owned());
            }
            ["tm1638", "brightness"] => self.panel.brightness = non_empty(text),
            ["tm1638", "led", n] => {
                let Ok(n) = n.parse::<u32>() else {
                    return false;
                };
                match text.as_str() {
                    "" => self.panel.leds.remove(&n),
                    lit => self.panel.leds.insert(n, lit == "ON"),
                };
            }
            ["lcd", "line", n] => {
                let Ok(n) = n.parse::<u32>() else {
                    return false;
                };
                // Spaces are what the screen shows: keep them (payload untrimmed).
                let line = String::from_utf8_lossy(payload).into_owned();
                if line.is_empty() {
                    self.panel.lines.remove(&n);
                } else {
                    self.panel.lines.insert(n, line);
                }
            }
            ["lcd", "backlight"] => self.panel.backlight = non_empty(text),
            [process, "status"] => set_or_remove(&mut self.processes, process, text),
            [process, "error"] => set_or_remove(&mut self.errors, process, error_text(&text)),
            [bridge, device, "state"] => {
                let state = self.json_object(topic, &text);
                self.device(bridge, device).state = state;
                self.forget_empty_device(bridge, device);
            }
            [bridge, device, "availability"] => {
                self.device(bridge, device).availability = non_empty(text);
                self.forget_empty_device(bridge, device);
            }
            _ => return false,
        }
        *self != before
    }

    fn json_object(&mut self, topic: &str, text: &str) -> Option<Map<String, Value>> {
        if text.is_empty() {
            return None;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Some(m),
            Ok(_) => {
                self.problems
                    .insert(topic.into(), "not a JSON object".into());
                None
            }
            Err(e) => {
                self.problems.insert(topic.into(), format!("not JSON: {e}"));
                None
            }
        }
    }

    fn device(&mut self, bridge: &str, device: &str) -> &mut Device {
        self.devices
            .entry((bridge.to_string(), device.to_string()))
            .or_default()
    }

    fn forget_empty_device(&mut self, bridge: &str, device: &str) {
        let key = (bridge.to_string(), device.to_string());
        if self
            .devices
            .get(&key)
            .is_some_and(|d| d.state.is_none() && d.availability.is_none())
        {
            self.devices.remove(&key);
        }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn set_or_remove(map: &mut BTreeMap<String, String>, key: &str, text: String) {
    if text.is_empty() {
        map.remove(key);
    } else {
        map.insert(key.to_string(), text);
    }
}

// --- rendering ---------------------------------------------------------------------------

/// How to draw: terminal width, and whether to use colours.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub width: usize,
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn good(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn bad(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn warn(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn title(&self, t: &str) -> String {
        self.paint("1", t)
    }
}

/// The picture as lines, each at most `style.width` visible characters.
pub fn render(view: &View, header: &str, style: Style) -> Vec<String> {
    let mut lines = vec![style.title(header)];

    // Processes: those on the bus, and the supervisor's children that are not (yet).
    lines.push(style.title("Processes"));
    let mut names: Vec<&String> = view.processes.keys().collect();
    if let Some(report) = &view.supervisor {
        for name in report.processes.keys() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names.sort();
    }
    if names.is_empty() {
        lines.push("  (none seen)".into());
    }
    let w = column(names.iter().map(|n| n.chars().count()), 10, 16);
    for name in names {
        let status = view.processes.get(name).map(String::as_str);
        let mut line = format!("  {name:<w$}  ");
        match status {
            Some("online") => line += &style.good("● online "),
            Some("offline") => line += &style.bad("○ offline"),
            Some(other) => line += &style.warn(&format!("? {other:<7}")),
            None => line += "  -      ",
        }
        if let Some(child) = view.supervisor.as_ref().and_then(|r| r.processes.get(name)) {
            let state = serde_json::to_value(child.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let state = match child.state {
                ChildState::Running => state,
                ChildState::CrashLoop => style.bad(&state),
                _ => style.warn(&state),
            };
            let _ = write!(line, "  {state}");
            if let Some(pid) = child.pid {
                let _ = write!(line, " pid {pid}");
            }
            if child.restarts > 0 {
                let _ = write!(line, ", {} restarts", child.restarts);
            }
            if let Some(retry) = child.retry_in_secs {
                let _ = write!(line, ", retry in {retry:.0} s");
            }
            if let Some(exit) = &child.last_exit
                && child.state != ChildState::Running
            {
                match (&exit.code, &exit.signal) {
                    (Some(code), _) => {
                        let _ = write!(line, ", exit code {code}");
                    }
                    (None, Some(sig)) => {
                        let _ = write!(line, ", {sig}");
                    }
                    _ => {}
                }
            }
        }
        if name == "cloud"
            && let Some(link) = &view.cloud
        {
            line += &cloud_link_text(link, style);
        }
        lines.push(line);
    }

    if view.site.is_some() || view.surplus.is_some() {
        let mut line = style.title("Site") + " ";
        if let Some(site) = &view.site {
            for (key, label) in [
                ("pv_power", "PV"),
                ("battery_power", "battery"),
                ("consumption", "consumption"),
            ] {
                if let Some(v) = site.get(key).filter(|v| !v.is_null()) {
                    let _ = write!(line, "  {label} {} W", number(v));
                }
            }
        }
        if let Some(surplus) = &view.surplus {
            let shown = match serde_json::from_str::<Value>(surplus) {
                Ok(Value::Number(n)) => format!("{} W", number(&Value::Number(n))),
                Ok(Value::Object(m)) => m
                    .get("surplus")
                    .or_else(|| m.get("power"))
                    .map(|v| format!("{} W", number(v)))
                    .unwrap_or_else(|| surplus.clone()),
                _ => surplus.clone(),
            };
            let _ = write!(line, "  surplus {shown}");
        }
        lines.push(line);
    }

    if !view.devices.is_empty() {
        lines.push(style.title("Devices"));
    }
    let w = column(
        view.devices
            .keys()
            .map(|(b, d)| b.chars().count() + 1 + d.chars().count()),
        16,
        28,
    );
    for ((bridge, device), d) in &view.devices {
        let mut line = format!("  {:<w$}  ", format!("{bridge}/{device}"));
        match d.availability.as_deref() {
            Some("online") | None => {}
            Some("offline") => line += &style.bad("offline "),
            Some(other) => line += &style.warn(&format!("{other} ")),
        }
        let Some(state) = &d.state else {
            lines.push(line + "(no reading)");
            continue;
        };
        let mut main = Vec::new();
        for (key, label, unit) in MAIN_VALUES {
            if let Some(v) = state.get(*key)
                && !v.is_null()
            {
                main.push(format!("{label}{}{unit}", text_of(v)));
            }
        }
        line += &main.join("  ");
        lines.push(line);
        let others: Vec<String> = state
            .iter()
            .filter(|(k, _)| {
                !IDENTITY.contains(&k.as_str()) && !MAIN_VALUES.iter().any(|(m, _, _)| m == k)
            })
            .map(|(k, v)| format!("{k}={}", text_of(v)))
            .collect();
        if !others.is_empty() {
            lines.push(format!("      {}", others.join(" ")));
        }
    }

    if !view.relays.is_empty() {
        lines.push(style.title("Relays"));
    }
    let w = column(
        view.relays
            .keys()
            .chain(view.rules.keys())
            .map(|k| k.chars().count()),
        8,
        20,
    );
    for (id, relay) in &view.relays {
        let state = match relay.state.as_deref() {
            Some("ON") => style.good("ON "),
            Some("OFF") => "OFF".to_string(),
            Some(other) => style.warn(other),
            None => "-  ".to_string(),
        };
        let mode = relay.mode.as_deref().unwrap_or("-");
        let mut line = format!("  {id:<w$}  {state}  {mode:<10}");
        if let Some(reason) = &relay.reason {
            line += "  ";
            line += &reason_text(reason);
        }
        lines.push(line);
        if let Some(o) = relay.override_.as_deref().filter(|o| !o.is_empty()) {
            lines.push(format!("      {}", override_text(o)));
        }
    }

    if !view.rules.is_empty() {
        lines.push(style.title("Rules"));
    }
    for (relay, status) in &view.rules {
        lines.push(format!("  {relay:<w$}  {}", rule_text(status)));
    }

    if !view.panel.is_empty() {
        lines.push(style.title("Panel"));
        let p = &view.panel;
        if p.digits.is_some() || !p.leds.is_empty() {
            let mut line = format!("  tm1638  [{}]", p.digits.as_deref().unwrap_or("        "));
            if !p.leds.is_empty() {
                let leds: Vec<&str> = p
                    .leds
                    .values()
                    .map(|&on| if on { "*" } else { "." })
                    .collect();
                let _ = write!(line, "  LEDs {}", leds.join(" "));
            }
            if let Some(b) = &p.brightness {
                let _ = write!(line, "  brightness {b}");
            }
            lines.push(line);
        }
        for (i, (_, text)) in p.lines.iter().enumerate() {
            let mut line = format!("  {:<6}  |{text:<16}|", if i == 0 { "lcd" } else { "" });
            if i == 0
                && let Some(b) = &p.backlight
            {
                let _ = write!(line, "  backlight {b}");
            }
            lines.push(line);
        }
    }

    if !view.errors.is_empty() {
        lines.push(style.title("Last errors"));
    }
    for (process, error) in &view.errors {
        lines.push(format!("  {process}: {}", style.warn(error)));
    }

    for (topic, problem) in &view.problems {
        lines.push(style.warn(&format!("! {topic}: {problem}")));
    }

    lines.into_iter().map(|l| fit(&l, style.width)).collect()
}

/// Width of a name column: the longest name, within `min..=max` (longer names push the
/// rest of their line to the right rather than lose characters).
/// `  link up to host:port` or `  link down: why` (from `<base>/cloud/remote`).
fn cloud_link_text(link: &Map<String, Value>, style: Style) -> String {
    let remote = link.get("remote").map(text_of).unwrap_or_default();
    if link.get("connected") == Some(&Value::Bool(true)) {
        format!("  {}", style.good(&format!("link up to {remote}")))
    } else {
        let why = link
            .get("error")
            .filter(|e| !e.is_null())
            .map(text_of)
            .unwrap_or_else(|| "not connected".into());
        format!("  {}", style.bad(&format!("link down to {remote}: {why}")))
    }
}

fn column(widths: impl Iterator<Item = usize>, min: usize, max: usize) -> usize {
    widths.max().unwrap_or(0).clamp(min, max)
}

/// `{"ts":..,"by":"rules","text":".."}` as `rules 14:02: ..`; other payloads as they are.
fn reason_text(reason: &str) -> String {
    match serde_json::from_str::<Value>(reason) {
        Ok(Value::Object(m)) => {
            let by = m.get("by").and_then(Value::as_str).unwrap_or("?");
            let text = m.get("text").and_then(Value::as_str).unwrap_or("");
            match m.get("ts").and_then(Value::as_i64) {
                Some(ts) => format!("{by} {}: {text}", clock(ts)),
                None => format!("{by}: {text}"),
            }
        }
        _ => reason.to_string(),
    }
}

/// `{"mode":"forced_on","until":..,"then":"auto_off",..}` as
/// `override forced_on until 18:00, then auto_off`; other payloads as they are.
fn override_text(payload: &str) -> String {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(m)) => {
            let mode = m.get("mode").and_then(Value::as_str).unwrap_or("?");
            let mut text = format!("override {mode}");
            if let Some(until) = m.get("until").and_then(Value::as_i64) {
                text += &format!(" until {}", clock(until));
            }
            if let Some(then) = m.get("then").and_then(Value::as_str) {
                text += &format!(", then {then}");
            }
            text
        }
        _ => format!("override {payload}"),
    }
}

/// `{"ts":..,"topic":"<command topic>","error":".."}` as `HH:MM <topic>: <error>`.
fn error_text(report: &str) -> String {
    match serde_json::from_str::<Value>(report) {
        Ok(Value::Object(m)) => {
            let topic = m.get("topic").and_then(Value::as_str).unwrap_or("?");
            let error = m.get("error").and_then(Value::as_str).unwrap_or("");
            match m.get("ts").and_then(Value::as_i64) {
                Some(ts) => format!("{} {topic}: {error}", clock(ts)),
                None => format!("{topic}: {error}"),
            }
        }
        _ => report.to_string(),
    }
}

/// A rule status may be plain text or JSON with a `text` (or `waiting_for`) member.
fn rule_text(status: &str) -> String {
    match serde_json::from_str::<Value>(status) {
        Ok(Value::Object(m)) => ["text", "waiting_for", "status"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string()),
        Ok(Value::String(s)) => s,
        _ => status.to_string(),
    }
}

/// Local `HH:MM` of a unix timestamp.
fn clock(ts: i64) -> String {
    match jiff::Timestamp::from_second(ts) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%H:%M")
            .to_string(),
        Err(_) => ts.to_string(),
    }
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.1}"),
        None => text_of(v),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Number(n) => {
            // Short numbers: two decimals at most, no trailing zeros.
            match n.as_f64() {
                Some(f) if f.fract() != 0.0 => {
                    let s = format!("{f:.2}");
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                }
                _ => n.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// Cuts a line to `width` visible characters (ANSI colour codes take no room).
fn fit(line: &str, width: usize) -> String {
    if visible_len(line) <= width {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut visible = 0;
    let mut in_escape = false;
    for c in line.chars() {
        if in_escape || c == '\x1b' {
            out.push(c);
            in_escape = !(c != '\x1b' && c.is_ascii_alphabetic());
            continue;
        }
        if visible + 1 == width {
            break;
        }
        out.push(c);
        visible += 1;
    }
    out.push('…');
    if line.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

fn visible_len(line: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in line.chars() {
        if in_escape || c == '\x1b' {
            in_escape = !(c != '\x1b' && c.is_ascii_alphabetic());
            continue;
        }
        n += 1;
    }
    n
}

// --- the connection ----------------------------------------------------------------------

/// `pvbus status [--config FILE] [--once]`.
pub async fn run(config: Option<&Path>, once: bool) -> Result<()> {
    let settings = Settings::load(config)?;
    let bus_config = settings.bus()?;
    let topics = Topics::new(bus_config.base.clone());
    let (host, port) = bus_config.endpoint();
    let header = format!("pvbus status — {host}:{port}, {}/#", topics.base());
    let mut view = View::default();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let style = Style {
        width: terminal_width(),
        color,
    };

    if once {
        // One shell command: the CLI's session, which fails at once when the broker is not
        // there and knows when every retained message has arrived.
        let mut session = Session::connect(&bus_config).await?;
        for m in session.subscribe_and_sync(&[topics.all()]).await? {
            view.apply(&topics, &m.topic, &m.payload);
        }
        session.close().await;
        let mut out = String::new();
        for line in render(&view, &header, style) {
            out.push_str(&line);
            out.push('\n');
        }
        std::io::stdout().write_all(out.as_bytes())?;
        return Ok(());
    }

    // A viewer waits for the broker, and comes back with it, like a process does.
    let (bus, mut inbox) = Bus::connect_tool(&bus_config, "status");
    bus.subscribe(topics.all());
    let (mut shutdown, _trigger) = Shutdown::on_signals();
    let mut screen = Screen::enter();
    // What the header says about the connection.
    let mut link = String::from(" — connecting");
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    loop {
        let link_now = match (bus.is_connected(), bus.link_error()) {
            (true, _) => String::new(),
            (false, Some(e)) => format!(" — disconnected ({e}), retrying"),
            (false, None) => " — connecting".into(),
        };
        if link_now != link {
            link = link_now;
            dirty = true;
        }
        let draw_at = dirty.then(|| match last_draw {
            Some(t) => t + MIN_REDRAW,
            None => Instant::now(),
        });
        tokio::select! {
            event = inbox.recv() => match event {
                Some(Event::Message(m)) => dirty |= view.apply(&topics, &m.topic, &m.payload),
                Some(Event::Connected | Event::Disconnected) => {}
                None => break,
            },
            // While disconnected, the reason of each failed attempt is shown.
            _ = tokio::time::sleep(RETRY_SHOWN), if !bus.is_connected() => {}
            _ = sleep_until(draw_at) => {
                screen.draw(&render(&view, &format!("{header}{link}"), style));
                last_draw = Some(Instant::now());
                dirty = false;
            }
            _ = shutdown.wait() => break,
        }
    }
    screen.leave();
    bus.shutdown().await;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `COLUMNS` when the shell exports it, else 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(80)
}

/// The alternate screen, left as it was found on exit.
struct Screen {
    active: bool,
}

impl Screen {
    fn enter() -> Screen {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\x1b[?1049h\x1b[?25l");
        let _ = out.flush();
        Screen { active: true }
    }

    /// Overwrites in place (no full clear, so no flicker) and clears what is left below.
    fn draw(&mut self, lines: &[String]) {
        let mut buf = String::from("\x1b[H");
        for l in lines {
            buf.push_str(l);
            buf.push_str("\x1b[K\r\n");
        }
        buf.push_str("\x1b[J");
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
    }

    fn leave(&mut self) {
        if self.active {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
            let _ = out.flush();
            self.active = false;
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(messages: &[(&str, &str)]) -> View {
        let topics = Topics::default();
        let mut v = View::default();
        for (t, p) in messages {
            v.apply(&topics, t, p.as_bytes());
        }
        v
    }

    const PLAIN: Style = Style {
        width: 80,
        color: false,
    };

    #[test]
    fn topics_land_in_their_place() {
        let v = view_of(&[
            ("pvbus/relays/status", "online"),
            ("pvbus/relays/pump/state", "ON"),
            ("pvbus/relays/pump/mode", "auto_on"),
            ("pvbus/rules/pump/status", "waiting for surplus"),
            (
                "pvbus/vedirect/bmv/state",
                r#"{"ts":1,"state_of_charge":87.5}"#,
            ),
            ("pvbus/vedirect/bmv/availability", "online"),
            ("pvbus/site/state", r#"{"pv_power":245}"#),
            (
                "pvbus/relays/error",
                r#"{"ts":1,"topic":"pvbus/relays/pump/mode/set","error":"unknown mode \"of\""}"#,
            ),
            ("other/relays/status", "online"),
        ]);
        assert_eq!(
            v.processes.get("relays").map(String::as_str),
            Some("online")
        );
        assert_eq!(v.processes.len(), 1);
        assert_eq!(v.relays["pump"].state.as_deref(), Some("ON"));
        assert_eq!(v.relays["pump"].mode.as_deref(), Some("auto_on"));
        assert_eq!(v.rules["pump"], "waiting for surplus");
        let bmv = &v.devices[&("vedirect".to_string(), "bmv".to_string())];
        assert_eq!(bmv.state.as_ref().unwrap()["state_of_charge"], 87.5);
        assert!(
            !v.relays.contains_key("status"),
            "a process status is not a relay"
        );
        assert!(
            v.errors["relays"].ends_with("pvbus/relays/pump/mode/set: unknown mode \"of\""),
            "{:?}",
            v.errors
        );
    }

    #[test]
    fn cleared_retained_values_disappear_and_garbage_is_reported() {
        let topics = Topics::default();
        let mut v = view_of(&[("pvbus/vedirect/mppt/state", r#"{"pv_power":10}"#)]);
        assert!(v.apply(&topics, "pvbus/vedirect/mppt/state", b""));
        assert!(v.devices.is_empty());
        assert!(v.apply(&topics, "pvbus/vedirect/mppt/state", b"{oops"));
        assert!(v.problems["pvbus/vedirect/mppt/state"].contains("not JSON"));
        assert!(!v.apply(&topics, "pvbus/rules/heartbeat", b"123"));
        assert!(v.apply(&topics, "pvbus/relays/status", b"offline"));
        assert!(
            !v.apply(&topics, "pvbus/relays/status", b"offline"),
            "no change"
        );
    }

    #[test]
    fn renders_main_values_first_and_fits_80_columns() {
        let v = view_of(&[
            ("pvbus/vedirect/status", "online"),
            ("pvbus/relays/status", "offline"),
            (
                "pvbus/vedirect/mppt_roof/state",
                r#"{"ts":1764040000,"battery_voltage":13.54,"pv_power":245,"charge_state":"float","yield_today":1.25,"pv_voltage":38.123,"serial_number":"HQ1"}"#,
            ),
            (
                "pvbus/relays/water_heater_with_a_long_name/reason",
                r#"{"ts":1764040000,"by":"rules","text":"surplus 820 W above 800 W for 5 min, and the battery is above 90 % since the morning"}"#,
            ),
            ("pvbus/relays/water_heater_with_a_long_name/state", "ON"),
            (
                "pvbus/relays/pump/override",
                r#"{"mode":"forced_on","until":1764040000,"until_local":"04:06","then":"auto_off"}"#,
            ),
        ]);
        let lines = render(&v, "pvbus status", PLAIN);
        let text = lines.join("\n");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
        let mppt = lines
            .iter()
            .find(|l| l.contains("vedirect/mppt_roof"))
            .unwrap();
        assert!(mppt.contains("13.54 V  PV 245 W  float"), "{mppt}");
        assert!(text.contains("pv_voltage=38.12 yield_today=1.25"), "{text}");
        assert!(!text.contains("HQ1"), "{text}");
        assert!(text.contains("  vedirect    ● online"), "{text}");
        assert!(text.contains("  relays      ○ offline"), "{text}");
        assert!(text.contains("ON   -           rules "), "{text}");
        assert!(text.contains('…'), "the long reason is cut: {text}");
        let o = lines.iter().find(|l| l.contains("override")).unwrap();
        assert!(
            o.contains("override forced_on until ") && o.ends_with(", then auto_off"),
            "{o}"
        );
    }

    #[test]
    fn the_panel_is_drawn_as_the_panel_processes_publish_it() {
        let v = view_of(&[
            ("pvbus/tm1638/display", "31      "),
            ("pvbus/tm1638/led/1", "ON"),
            ("pvbus/tm1638/led/2", "OFF"),
            ("pvbus/tm1638/led/10", "ON"),
            ("pvbus/tm1638/brightness", "2"),
            ("pvbus/lcd/line/1", "BA:87%  P:-120W"),
            ("pvbus/lcd/line/2", "PV 245W C 365W"),
            ("pvbus/lcd/backlight", "yellow"),
        ]);
        let text = render(&v, "pvbus status", PLAIN).join("\n");
        assert!(
            text.contains("Panel\n  tm1638  [31      ]  LEDs * . *  brightness 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "  lcd     |BA:87%  P:-120W |  backlight yellow\n          |PV 245W C 365W  |"
            ),
            "{text}"
        );
        assert!(view_of(&[("pvbus/tm1638/led/x", "ON")]).panel.is_empty());
    }

    #[test]
    fn the_cloud_link_is_shown_on_its_process_line() {
        let remote = "pvbus/cloud/remote";
        let mut v = view_of(&[
            ("pvbus/cloud/status", "online"),
            (
                remote,
                r#"{"ts":1,"connected":false,"remote":"hub.example:8883","error":"TLS: unknown CA"}"#,
            ),
        ]);
        let line = |v: &View| {
            render(v, "pvbus status", PLAIN)
                .into_iter()
                .find(|l| l.starts_with("  cloud"))
                .unwrap()
        };
        assert!(
            line(&v).ends_with("link down to hub.example:8883: TLS: unknown CA"),
            "{}",
            line(&v)
        );
        let up = br#"{"ts":2,"connected":true,"remote":"hub.example:8883","error":null}"#;
        assert!(v.apply(&Topics::default(), remote, up));
        assert!(
            line(&v).ends_with("link up to hub.example:8883"),
            "{}",
            line(&v)
        );
    }

    #[test]
    fn fit_ignores_colour_codes() {
        let s = Style {
            width: 10,
            color: true,
        };
        let line = s.good("0123456789abc");
        let cut = fit(&line, 10);
        assert!(cut.ends_with("…\x1b[0m"), "{cut:?}");
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("0123456789", 10), "0123456789");
        assert_eq!(fit("0123456789x", 10), "012345678…");
    }
}
