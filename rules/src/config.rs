//! The `[rules]` (and `[site]`) sections of the pvbus TOML file, and files it includes,
//! turned into a checked [`RuleSet`]; every mistake is reported with its file, line and
//! column, what was expected, and close names for a name that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::clock::Site;
use crate::eval::{BUILTIN_NAMES, HELPERS};
use crate::expr::{self, BinOp, Expr, ExprKind, Span};
use crate::script::ScriptHost;

/// One mistake in a rules file, at a precise place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the mistake has no place (a missing file).
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The line of the file, for showing with a caret.
    pub source_line: String,
    pub width: usize,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if self.line > 0 {
            let pad: String = self
                .source_line
                .chars()
                .take(self.column - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(
                f,
                "\n    {}\n    {pad}{}",
                self.source_line,
                "^".repeat(self.width.max(1))
            )?;
        }
        Ok(())
    }
}

/// A set of errors, printed one per paragraph.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A source file, kept to point at places in it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    fn error_at(&self, range: Range<usize>, message: String) -> ConfigError {
        let start = range.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |p| p + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |p| start + p);
        let line = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let end = range.end.clamp(start, line_end.max(start));
        ConfigError {
            file: self.path.clone(),
            line,
            column,
            message,
            source_line: self.text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
            width: self.text[start..end].chars().count(),
        }
    }
}

/// A condition as written, with where it was written.
#[derive(Debug, Clone)]
pub struct Cond {
    pub source: String,
    pub expr: Expr,
    /// Set when the rule is written in Rhai (`language = "rhai"`); `expr` is then unused.
    pub script: Option<Arc<rhai::AST>>,
    file: Arc<SourceFile>,
    /// Span of the TOML string (with its quotes) in the file.
    raw_span: Range<usize>,
}

impl Cond {
    /// Points at a line and column (1-based, 0 = unknown) inside a script, in the file.
    pub fn locate_script(&self, line: usize, column: usize, message: String) -> ConfigError {
        if line == 0 {
            return self.locate(
                Span {
                    start: 0,
                    end: self.source.len(),
                },
                message,
            );
        }
        let mut offset = 0;
        for (i, l) in self.source.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                offset += l
                    .char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(l.len(), |(b, _)| b);
                break;
            }
            offset += l.len();
        }
        let end = self.source[offset..]
            .chars()
            .next()
            .map_or(offset, |c| offset + c.len_utf8());
        self.locate(Span { start: offset, end }, message)
    }

    /// Points at a place inside the condition, in the file.
    pub fn locate(&self, span: Span, message: String) -> ConfigError {
        let raw = &self.file.text[self.raw_span.clone()];
        let start = self.raw_span.start + raw_offset(raw, span.start);
        let end = self.raw_span.start + raw_offset(raw, span.end);
        self.file.error_at(start..end, message)
    }
}

/// Maps a byte offset in a decoded TOML string to an offset in its raw text.
fn raw_offset(raw: &str, decoded: usize) -> usize {
    let (delim, literal) = if raw.starts_with("\"\"\"") {
        (3, false)
    } else if raw.starts_with("'''") {
        (3, true)
    } else {
        (1, raw.starts_with('\''))
    };
    let mut pos = delim;
    if delim == 3 {
        if raw[pos..].starts_with("\r\n") {
            pos += 2;
        } else if raw[pos..].starts_with('\n') {
            pos += 1;
        }
    }
    if literal {
        return (pos + decoded).min(raw.len());
    }
    let bytes = raw.as_bytes();
    let mut seen = 0;
    while seen < decoded && pos < raw.len() {
        if bytes[pos] == b'\\' && pos + 1 < raw.len() {
            let next = bytes[pos + 1];
            match next {
                b'u' => {
                    let ch = u32::from_str_radix(raw.get(pos + 2..pos + 6).unwrap_or("0"), 16)
                        .ok()
                        .and_then(char::from_u32);
                    seen += ch.map_or(1, char::len_utf8);
                    pos += 6;
                }
                b'U' => {
                    let ch = u32::from_str_radix(raw.get(pos + 2..pos + 10).unwrap_or("0"), 16)
                        .ok()
                        .and_then(char::from_u32);
                    seen += ch.map_or(1, char::len_utf8);
                    pos += 10;
                }
                b'\n' | b'\r' | b' ' | b'\t' => {
                    // Line-ending backslash: the newline and leading whitespace vanish.
                    pos += 1;
                    while pos < raw.len() && bytes[pos].is_ascii_whitespace() {
                        pos += 1;
                    }
                }
                _ => {
                    seen += 1;
                    pos += 2;
                }
            }
        } else {
            let ch_len = raw[pos..].chars().next().map_or(1, char::len_utf8);
            seen += ch_len;
            pos += ch_len;
        }
    }
    pos.min(raw.len())
}

/// What a device publishes, for checking names.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceValues {
    /// The topic contract's VE.Direct names.
    VeDirect,
    /// Exactly these names.
    Named(BTreeSet<String>),
}

#[derive(Debug, Clone)]
pub struct Device {
    pub values: DeviceValues,
    /// Seconds; `None`: values never go stale.
    pub max_age: Option<i64>,
}

/// How to estimate the off-grid surplus (see [`crate::surplus`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurplusConfig {
    /// The battery monitor's device name (gives `battery_power`).
    pub battery: String,
    /// Each solar charger's device name and its array's peak power in W.
    pub chargers: BTreeMap<String, f64>,
    /// Share of the clear-sky power an array really gives (dust, heat, angle): 0..1.
    #[serde(default = "default_derate")]
    pub derate: f64,
    /// Power the battery still takes in float, W: not counted as surplus.
    #[serde(default = "default_float_reserve")]
    pub float_reserve: f64,
    /// Where an array's potential comes from (see [`Potential`]).
    #[serde(default)]
    pub potential: Potential,
}

/// How the surplus estimate knows what an array could give now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Potential {
    /// Peak power × derate × sin(sun elevation), from the site's position and the clock.
    #[default]
    ClearSky,
    /// The charger's own `max_power_today`: the best the array really gave today. Needs
    /// no coordinates and follows the real weather, but overstates late in the day; it
    /// also follows a simulated sun (the demo).
    MaxPowerToday,
}

fn default_derate() -> f64 {
    0.7
}

fn default_float_reserve() -> f64 {
    30.0
}

/// A relay's daily budget: run at least `min_run` a day; once `after` has passed and the
/// budget is not done, run anyway while `while_` holds.
#[derive(Debug, Clone)]
pub struct Budget {
    pub min_run: i64,
    /// Seconds since local midnight.
    pub after: f64,
    pub while_: Cond,
}

/// One relay's rule, checked.
#[derive(Debug, Clone)]
pub struct RelayRule {
    pub name: String,
    pub priority: i64,
    pub load_power: Option<f64>,
    pub needs_surplus: bool,
    pub on: Cond,
    pub off: Cond,
    pub min_on: i64,
    pub min_off: i64,
    pub max_run_per_day: Option<i64>,
    pub budget: Option<Budget>,
    pub unknown_off_after: i64,
}

impl RelayRule {
    /// Every condition of the rule (for helpers with memory, numbered across them).
    pub fn conds(&self) -> impl Iterator<Item = &Cond> {
        [&self.on, &self.off]
            .into_iter()
            .chain(self.budget.as_ref().map(|b| &b.while_))
    }
}

/// The whole checked configuration of the rules process.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub site: Site,
    /// Seconds to wait after a switch-on before the next one.
    pub settle: i64,
    pub heartbeat: i64,
    pub devices: BTreeMap<String, Device>,
    pub default_max_age: Option<i64>,
    pub surplus: Option<SurplusConfig>,
    /// Sorted by priority (1 first), then name.
    pub relays: Vec<RelayRule>,
    /// Relays without rules that rules may look at.
    pub other_relays: Vec<String>,
    pub timers: Vec<TimerRule>,
}

impl RuleSet {
    /// Maximum age of a device's values, in seconds.
    pub fn max_age(&self, device: &str) -> Option<i64> {
        match self.devices.get(device) {
            Some(d) => d.max_age,
            None => self.default_max_age,
        }
    }
}

#[derive(Deserialize)]
struct FileDoc {
    site: Option<SiteSection>,
    rules: Option<RulesSection>,
}

/// `[site]`: read leniently here, other processes own other keys of it.
#[derive(Deserialize)]
struct SiteSection {
    timezone: Option<Spanned<String>>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// The `[rules]` section as written (read with spans by [`load`], which turns it into a
/// [`RuleSet`]; see docs/rules.md for every key).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    #[serde(default)]
    pub settle: Option<Spanned<String>>,
    #[serde(default)]
    pub max_age: Option<Spanned<String>>,
    #[serde(default)]
    pub unknown_off_after: Option<Spanned<String>>,
    #[serde(default)]
    pub heartbeat: Option<Spanned<String>>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub other_relays: Vec<String>,
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceDecl>,
    #[serde(default)]
    pub surplus: Option<SurplusConfig>,
    #[serde(default)]
    pub relays: BTreeMap<String, RelayDecl>,
    #[serde(default)]
    pub timers: BTreeMap<String, TimerDecl>,
}

/// `[rules.timers.NAME]`: a named timer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerDecl {
    /// Starts (again) each time this condition becomes true.
    pub start: Spanned<String>,
    pub duration: Spanned<String>,
}

/// A named timer, checked.
#[derive(Debug, Clone)]
pub struct TimerRule {
    pub name: String,
    pub start: Cond,
    pub duration: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDecl {
    values: Spanned<toml::Value>,
    max_age: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludeFile {
    #[serde(default)]
    relays: BTreeMap<String, RelayDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayDecl {
    on: Spanned<String>,
    off: Spanned<String>,
    #[serde(default = "default_priority")]
    priority: i64,
    load_power: Option<f64>,
    needs_surplus: Option<Spanned<bool>>,
    min_on: Option<Spanned<String>>,
    min_off: Option<Spanned<String>>,
    max_run_per_day: Option<Spanned<String>>,
    min_run_per_day: Option<Spanned<String>>,
    catch_up_after: Option<Spanned<String>>,
    catch_up_while: Option<Spanned<String>>,
    unknown_off_after: Option<Spanned<String>>,
    /// `"rhai"` for conditions written in Rhai (the expert escape hatch).
    language: Option<Spanned<String>>,
}

fn default_priority() -> i64 {
    100
}

/// The VE.Direct reading names of the topic contract.
pub const VEDIRECT_NAMES: &[&str] = &[
    "battery_voltage",
    "battery_voltage_2",
    "battery_voltage_3",
    "auxiliary_voltage",
    "midpoint_voltage",
    "midpoint_deviation",
    "battery_current",
    "battery_current_2",
    "battery_current_3",
    "load_current",
    "load_output",
    "battery_power",
    "pv_voltage",
    "pv_power",
    "battery_temperature",
    "consumed_charge",
    "state_of_charge",
    "time_to_go",
    "alarm",
    "relay",
    "alarm_reason",
    "off_reason",
    "warning_reason",
    "charge_state",
    "error",
    "tracker_mode",
    "device_mode",
    "ac_output_voltage",
    "ac_output_current",
    "ac_output_apparent_power",
    "yield_total",
    "yield_today",
    "max_power_today",
    "yield_yesterday",
    "max_power_yesterday",
    "deepest_discharge",
    "last_discharge",
    "average_discharge",
    "charge_cycles",
    "full_discharges",
    "cumulative_ah_drawn",
    "min_battery_voltage",
    "max_battery_voltage",
    "seconds_since_full_charge",
    "synchronisations",
    "low_voltage_alarms",
    "high_voltage_alarms",
    "low_aux_voltage_alarms",
    "high_aux_voltage_alarms",
    "min_aux_voltage",
    "max_aux_voltage",
    "discharged_energy",
    "charged_energy",
    "product_id",
    "model",
    "serial_number",
    "firmware",
    "dc_monitor_mode",
    "day_sequence_number",
];

const VEDIRECT_TEXT: &[&str] = &[
    "alarm_reason",
    "off_reason",
    "warning_reason",
    "charge_state",
    "error",
    "tracker_mode",
    "device_mode",
    "product_id",
    "model",
    "serial_number",
    "firmware",
    "dc_monitor_mode",
];

const VEDIRECT_BOOL: &[&str] = &["load_output", "alarm", "relay"];

pub use pvbus_bus::contract::CHARGE_STATES;

const SITE_NAMES: &[&str] = &["pv_power", "battery_power", "consumption", "surplus"];
const MODES: &[&str] = &["forced_off", "auto_off", "auto_on", "forced_on"];
const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Reads and checks a configuration file and the files it includes. Returns every error
/// found, not just the first.
pub fn load(path: &Path) -> Result<RuleSet, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
            source_line: String::new(),
            width: 0,
        }])
    })?;
    from_str(&text, path)
}

/// Like [`load`], from text already read (`path` names it in errors and anchors includes).
pub fn from_str(text: &str, path: &Path) -> Result<RuleSet, ConfigErrors> {
    let file = Arc::new(SourceFile {
        path: path.to_path_buf(),
        text: text.to_string(),
    });
    let mut errors = Vec::new();
    let doc: FileDoc = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let range = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            return Err(ConfigErrors(vec![file.error_at(range, message)]));
        }
    };
    let mut b = Builder {
        errors: &mut errors,
    };
    let site = doc.site.as_ref();
    let tz_name = site.and_then(|s| s.timezone.as_ref());
    let site = match Site::new(
        tz_name.map_or("UTC", |t| t.get_ref().as_str()),
        site.and_then(|s| s.latitude),
        site.and_then(|s| s.longitude),
    ) {
        Ok(s) => s,
        Err(e) => {
            let span = tz_name.map_or(0..0, |t| t.span());
            b.errors.push(file.error_at(span, format!("[site] timezone: unknown time zone ({e}); expected a name like \"Europe/Paris\"")));
            Site::new("UTC", None, None).map_err(|_| ConfigErrors(b.errors.clone()))?
        }
    };
    let rules = doc.rules.unwrap_or_default();
    // Where to point for mistakes of the section as a whole.
    let header = |name: &str| {
        text.find(&format!("[{name}]"))
            .map_or(0..0, |p| p..p + name.len() + 2)
    };
    let rules_span = if text.contains("[rules.surplus]") {
        header("rules.surplus")
    } else {
        header("rules")
    };
    let settle = b
        .duration(&file, rules.settle.as_ref(), "settle")
        .unwrap_or(Some(30))
        .unwrap_or(30);
    let heartbeat = b
        .duration(&file, rules.heartbeat.as_ref(), "heartbeat")
        .unwrap_or(Some(30))
        .unwrap_or(30);
    let default_max_age = b
        .duration(&file, rules.max_age.as_ref(), "max_age")
        .unwrap_or(Some(300));
    let unknown_off_after = b
        .duration(&file, rules.unknown_off_after.as_ref(), "unknown_off_after")
        .unwrap_or(Some(600))
        .unwrap_or(600);
    let mut devices = BTreeMap::new();
    for (name, decl) in &rules.devices {
        let values = match decl.values.get_ref() {
            toml::Value::String(s) if s == "vedirect" => DeviceValues::VeDirect,
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
                DeviceValues::Named(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                )
            }
            _ => {
                b.errors.push(file.error_at(
                    decl.values.span(),
                    format!("[rules.devices.{name}] values: expected \"vedirect\" or a list of value names like [\"done\", \"progress\"]"),
                ));
                DeviceValues::Named(BTreeSet::new())
            }
        };
        // Absent (or wrong, already reported): the default; "none": never stale.
        let max_age = b
            .duration(&file, decl.max_age.as_ref(), "max_age")
            .unwrap_or(default_max_age);
        devices.insert(name.clone(), Device { values, max_age });
    }
    if let Some(s) = &rules.surplus {
        for dev in std::iter::once(&s.battery).chain(s.chargers.keys()) {
            if !devices.contains_key(dev) {
                b.errors.push(file.error_at(
                    rules_span.clone(),
                    format!(
                        "[rules.surplus] names device `{dev}`, which is not in [rules.devices]"
                    ),
                ));
            }
        }
        if !(0.0..=1.0).contains(&s.derate) {
            b.errors.push(file.error_at(
                rules_span.clone(),
                format!(
                    "[rules.surplus] derate must be between 0 and 1, found {}",
                    s.derate
                ),
            ));
        }
        if s.potential == Potential::ClearSky
            && (site.latitude.is_none() || site.longitude.is_none())
        {
            b.errors.push(file.error_at(
                rules_span.clone(),
                "[rules.surplus] the clear-sky potential needs [site] latitude and longitude (or set potential = \"max_power_today\")".into(),
            ));
        }
    }

    // Relays from the main file, then from includes.
    let mut decls: Vec<(String, RelayDecl, Arc<SourceFile>)> = rules
        .relays
        .into_iter()
        .map(|(n, d)| (n, d, file.clone()))
        .collect();
    for inc in &rules.include {
        let base = path.parent().unwrap_or(Path::new("."));
        let target = base.join(inc.get_ref());
        let files = if target.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&target)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            found
        } else {
            vec![target.clone()]
        };
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    b.errors.push(file.error_at(
                        inc.span(),
                        format!("include: cannot read {}: {e}", f.display()),
                    ));
                    continue;
                }
            };
            let inc_file = Arc::new(SourceFile {
                path: f.clone(),
                text,
            });
            match toml::from_str::<IncludeFile>(&inc_file.text) {
                Ok(doc) => decls.extend(
                    doc.relays
                        .into_iter()
                        .map(|(n, d)| (n, d, inc_file.clone())),
                ),
                Err(e) => b.errors.push(
                    inc_file.error_at(e.span().unwrap_or(0..0), e.message().trim().to_string()),
                ),
            }
        }
    }
    let mut relay_names: BTreeSet<String> = rules.other_relays.iter().cloned().collect();
    for (name, _, f) in &decls {
        if !relay_names.insert(name.clone()) {
            b.errors.push(f.error_at(
                0..0,
                format!("relay `{name}` has two rules (or is also in other_relays)"),
            ));
        }
    }
    let mut scripts: Option<ScriptHost> = None;
    let names = NameCheck {
        devices: &devices,
        relays: &relay_names,
        surplus: rules.surplus.is_some(),
        timers: rules.timers.keys().cloned().collect(),
    };
    let mut relays = Vec::new();
    for (name, d, f) in decls {
        let mut site_counter = 0;
        let rhai = match d.language.as_ref().map(|l| l.get_ref().as_str()) {
            None | Some("expressions") => false,
            Some("rhai") => true,
            Some(other) => {
                let span = d.language.as_ref().map_or(0..0, Spanned::span);
                b.errors.push(f.error_at(span, format!("[rules.relays.{name}] language: expected \"expressions\" or \"rhai\", found \"{other}\"")));
                false
            }
        };
        let mut cond =
            |b: &mut Builder, s: &Spanned<String>, what: &str, has_load: bool| -> Option<Cond> {
                if rhai {
                    return script_cond(b, &mut scripts, &names, s, &f, &name, what, has_load);
                }
                match expr::parse(s.get_ref(), site_counter) {
                    Ok((e, next)) => {
                        site_counter = next;
                        let c = Cond {
                            source: s.get_ref().clone(),
                            expr: e,
                            script: None,
                            file: f.clone(),
                            raw_span: s.span(),
                        };
                        for (span, message) in names.check(&c.expr, has_load) {
                            b.errors.push(
                                c.locate(span, format!("[rules.relays.{name}] {what}: {message}")),
                            );
                        }
                        Some(c)
                    }
                    Err(pe) => {
                        let c = Cond {
                            source: s.get_ref().clone(),
                            expr: Expr {
                                kind: ExprKind::Bool(false),
                                span: pe.span,
                            },
                            script: None,
                            file: f.clone(),
                            raw_span: s.span(),
                        };
                        b.errors.push(c.locate(
                            pe.span,
                            format!("[rules.relays.{name}] {what}: {}", pe.message),
                        ));
                        None
                    }
                }
            };
        let has_load = d.load_power.is_some();
        let on = cond(&mut b, &d.on, "on", has_load);
        let off = cond(&mut b, &d.off, "off", has_load);
        let catch_up_while = d
            .catch_up_while
            .as_ref()
            .and_then(|s| cond(&mut b, s, "catch_up_while", has_load));
        let min_on = b
            .duration(&f, d.min_on.as_ref(), "min_on")
            .ok()
            .flatten()
            .unwrap_or(0);
        let min_off = b
            .duration(&f, d.min_off.as_ref(), "min_off")
            .ok()
            .flatten()
            .unwrap_or(0);
        let max_run_per_day = b
            .duration(&f, d.max_run_per_day.as_ref(), "max_run_per_day")
            .ok()
            .flatten();
        let min_run = b
            .duration(&f, d.min_run_per_day.as_ref(), "min_run_per_day")
            .ok()
            .flatten();
        let unknown_off = b
            .duration(&f, d.unknown_off_after.as_ref(), "unknown_off_after")
            .ok()
            .flatten()
            .unwrap_or(unknown_off_after);
        let after = d
            .catch_up_after
            .as_ref()
            .and_then(|s| match expr::parse(s.get_ref(), 0) {
                Ok((
                    Expr {
                        kind: ExprKind::TimeOfDay(t),
                        ..
                    },
                    _,
                )) => Some(t),
                _ => {
                    b.errors.push(f.error_at(
                        s.span(),
                        "catch_up_after: expected a time of day like \"17:00\"".into(),
                    ));
                    None
                }
            });
        let budget = match (min_run, after, catch_up_while) {
            (Some(min_run), Some(after), Some(while_)) => Some(Budget {
                min_run,
                after,
                while_,
            }),
            (None, None, None) => None,
            _ => {
                let span = d
                    .min_run_per_day
                    .as_ref()
                    .or(d.catch_up_after.as_ref())
                    .or(d.catch_up_while.as_ref())
                    .map_or(d.on.span(), Spanned::span);
                b.errors.push(f.error_at(span, format!("[rules.relays.{name}] a daily budget needs min_run_per_day, catch_up_after and catch_up_while together")));
                None
            }
        };
        let needs_surplus = d.needs_surplus.as_ref().is_some_and(|s| *s.get_ref());
        let needs_surplus_span = d.needs_surplus.as_ref().map_or(0..0, Spanned::span);
        if needs_surplus && d.load_power.is_none() {
            b.errors.push(f.error_at(
                needs_surplus_span.clone(),
                format!("[rules.relays.{name}] needs_surplus = true needs a load_power (W)"),
            ));
        }
        if needs_surplus && rules.surplus.is_none() {
            b.errors.push(f.error_at(
                needs_surplus_span,
                format!(
                    "[rules.relays.{name}] needs_surplus = true needs a [rules.surplus] section"
                ),
            ));
        }
        if let (Some(on), Some(off)) = (on, off) {
            relays.push(RelayRule {
                name,
                priority: d.priority,
                load_power: d.load_power,
                needs_surplus,
                on,
                off,
                min_on,
                min_off,
                max_run_per_day,
                budget,
                unknown_off_after: unknown_off,
            });
        }
    }
    let mut timers = Vec::new();
    for (name, t) in &rules.timers {
        let duration = b
            .duration(&file, Some(&t.duration), "duration")
            .ok()
            .flatten();
        match expr::parse(t.start.get_ref(), 0) {
            Ok((e, _)) => {
                let c = Cond {
                    source: t.start.get_ref().clone(),
                    expr: e,
                    script: None,
                    file: file.clone(),
                    raw_span: t.start.span(),
                };
                for (span, message) in names.check(&c.expr, false) {
                    b.errors
                        .push(c.locate(span, format!("[rules.timers.{name}] start: {message}")));
                }
                if let Some(duration) = duration {
                    timers.push(TimerRule {
                        name: name.clone(),
                        start: c,
                        duration,
                    });
                }
            }
            Err(pe) => {
                let c = Cond {
                    source: t.start.get_ref().clone(),
                    expr: Expr {
                        kind: ExprKind::Bool(false),
                        span: pe.span,
                    },
                    script: None,
                    file: file.clone(),
                    raw_span: t.start.span(),
                };
                b.errors.push(c.locate(
                    pe.span,
                    format!("[rules.timers.{name}] start: {}", pe.message),
                ));
            }
        }
    }
    relays.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(RuleSet {
        site,
        settle,
        heartbeat,
        devices,
        default_max_age,
        surplus: rules.surplus,
        relays,
        other_relays: rules.other_relays,
        timers,
    })
}

/// A condition written in Rhai: compiled (syntax errors located in the file), and the
/// value names it reads (`value("bmv.state_of_charge")`) checked like an expression's.
#[allow(clippy::too_many_arguments)]
fn script_cond(
    b: &mut Builder,
    scripts: &mut Option<ScriptHost>,
    names: &NameCheck,
    s: &Spanned<String>,
    f: &Arc<SourceFile>,
    relay: &str,
    what: &str,
    has_load: bool,
) -> Option<Cond> {
    let host = scripts.get_or_insert_with(ScriptHost::new);
    let mut c = Cond {
        source: s.get_ref().clone(),
        expr: Expr {
            kind: ExprKind::Bool(false),
            span: Span { start: 0, end: 0 },
        },
        script: None,
        file: f.clone(),
        raw_span: s.span(),
    };
    match host.compile(s.get_ref()) {
        Ok(ast) => c.script = Some(Arc::new(ast)),
        Err(e) => {
            b.errors.push(c.locate_script(
                e.line,
                e.column,
                format!("[rules.relays.{relay}] {what} (rhai): {}", e.message),
            ));
            return None;
        }
    }
    let src = s.get_ref();
    let mut from = 0;
    while let Some(p) = src[from..].find("value(\"") {
        let start = from + p + 7;
        let Some(len) = src[start..].find('"') else {
            break;
        };
        let mut found = Vec::new();
        names.name_type(
            &src[start..start + len],
            Span {
                start,
                end: start + len,
            },
            has_load,
            &mut found,
        );
        for (span, message) in found {
            b.errors.push(c.locate(
                span,
                format!("[rules.relays.{relay}] {what} (rhai): {message}"),
            ));
        }
        from = start + len;
    }
    Some(c)
}

struct Builder<'a> {
    errors: &'a mut Vec<ConfigError>,
}

impl Builder<'_> {
    /// A duration setting such as "20m"; `Ok(None)` for "none" (never), `Err` after
    /// recording an error.
    fn duration(
        &mut self,
        file: &SourceFile,
        s: Option<&Spanned<String>>,
        key: &str,
    ) -> Result<Option<i64>, ()> {
        let Some(s) = s else { return Err(()) };
        if s.get_ref() == "none" {
            return Ok(None);
        }
        match expr::parse(s.get_ref(), 0) {
            Ok((
                Expr {
                    kind: ExprKind::Duration(d),
                    ..
                },
                _,
            )) => Ok(Some(d.round() as i64)),
            _ => {
                self.errors.push(file.error_at(
                    s.span(),
                    format!(
                        "{key}: expected a duration like \"30s\", \"20m\", \"2h\" or \"1h30m\""
                    ),
                ));
                Err(())
            }
        }
    }
}

/// Static types, as far as they are known before any reading arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Number,
    Bool,
    Text,
    Duration,
    TimeOfDay,
    List,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Number => "a number",
            Ty::Bool => "true/false",
            Ty::Text => "a text",
            Ty::Duration => "a duration",
            Ty::TimeOfDay => "a time of day",
            Ty::List => "a list",
        }
    }
}

struct NameCheck<'a> {
    devices: &'a BTreeMap<String, Device>,
    relays: &'a BTreeSet<String>,
    surplus: bool,
    timers: BTreeSet<String>,
}

impl NameCheck<'_> {
    fn all_names(&self) -> Vec<String> {
        let mut all: Vec<String> = BUILTIN_NAMES.iter().map(|(n, _)| n.to_string()).collect();
        all.extend(SITE_NAMES.iter().map(|n| format!("site.{n}")));
        for r in self.relays {
            all.push(format!("relays.{r}.on"));
            all.push(format!("relays.{r}.mode"));
        }
        for (d, dev) in self.devices {
            match &dev.values {
                DeviceValues::VeDirect => {
                    all.extend(VEDIRECT_NAMES.iter().map(|n| format!("{d}.{n}")))
                }
                DeviceValues::Named(ns) => all.extend(ns.iter().map(|n| format!("{d}.{n}"))),
            }
        }
        all
    }

    fn check(&self, e: &Expr, has_load: bool) -> Vec<(Span, String)> {
        let mut out = Vec::new();
        self.infer(e, has_load, &mut out);
        out
    }

    /// The static type of an expression (None when only a reading will tell), recording
    /// every mistake found.
    fn infer(&self, e: &Expr, has_load: bool, out: &mut Vec<(Span, String)>) -> Option<Ty> {
        match &e.kind {
            ExprKind::Number(_) => Some(Ty::Number),
            ExprKind::Duration(_) => Some(Ty::Duration),
            ExprKind::TimeOfDay(_) => Some(Ty::TimeOfDay),
            ExprKind::Str(_) => Some(Ty::Text),
            ExprKind::Bool(_) => Some(Ty::Bool),
            ExprKind::List(items) => {
                for i in items {
                    self.infer(i, has_load, out);
                }
                Some(Ty::List)
            }
            ExprKind::Name(n) => self.name_type(n, e.span, has_load, out),
            ExprKind::Not(inner) => {
                self.expect(inner, Ty::Bool, "`not`", has_load, out);
                Some(Ty::Bool)
            }
            ExprKind::Neg(inner) => self.infer(inner, has_load, out),
            ExprKind::Call { name, args, .. } => self.call_type(name, args, e.span, has_load, out),
            ExprKind::Binary { op, lhs, rhs } => {
                let (l, r) = (
                    self.infer(lhs, has_load, out),
                    self.infer(rhs, has_load, out),
                );
                match op {
                    BinOp::And | BinOp::Or => {
                        for (t, side) in [(l, lhs), (r, rhs)] {
                            if let Some(t) = t
                                && t != Ty::Bool
                            {
                                out.push((
                                    side.span,
                                    format!(
                                        "`{}` needs true/false on both sides, this is {}",
                                        op.symbol(),
                                        t.name()
                                    ),
                                ));
                            }
                        }
                        Some(Ty::Bool)
                    }
                    BinOp::In | BinOp::NotIn => {
                        if let Some(t) = r
                            && t != Ty::List
                        {
                            out.push((rhs.span, format!("`{}` needs a list on its right, e.g. [\"absorption\", \"float\"]", op.symbol())));
                        }
                        if let ExprKind::List(items) = &rhs.kind {
                            for item in items {
                                self.compare_check(lhs, l, item, has_load, out);
                            }
                        }
                        Some(Ty::Bool)
                    }
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => match (l, r) {
                        (Some(Ty::TimeOfDay), _) | (_, Some(Ty::TimeOfDay)) => Some(Ty::TimeOfDay),
                        (Some(Ty::Duration), _) | (_, Some(Ty::Duration)) => Some(Ty::Duration),
                        (Some(a), Some(b)) if a == b => Some(a),
                        _ => None,
                    },
                    _ => {
                        self.compare_check(lhs, l, rhs, has_load, out);
                        Some(Ty::Bool)
                    }
                }
            }
        }
    }

    fn expect(
        &self,
        e: &Expr,
        want: Ty,
        what: &str,
        has_load: bool,
        out: &mut Vec<(Span, String)>,
    ) {
        if let Some(t) = self.infer(e, has_load, out)
            && t != want
        {
            out.push((
                e.span,
                format!("{what} needs {}, this is {}", want.name(), t.name()),
            ));
        }
    }

    fn compare_check(
        &self,
        lhs: &Expr,
        l: Option<Ty>,
        rhs: &Expr,
        has_load: bool,
        out: &mut Vec<(Span, String)>,
    ) {
        let mut silent = Vec::new();
        let r = self.infer(rhs, has_load, &mut silent);
        if let (Some(a), Some(b)) = (l, r)
            && a != b
        {
            let hint = if matches!(
                (a, b),
                (Ty::Number, Ty::Duration) | (Ty::Duration, Ty::Number)
            ) {
                " (write durations with a unit: 5m, 2h)"
            } else {
                ""
            };
            out.push((
                lhs.span.join(rhs.span),
                format!("cannot compare {} with {}{hint}", a.name(), b.name()),
            ));
            return;
        }
        // A text compared with a known set of words must be one of them.
        if let (ExprKind::Name(n), ExprKind::Str(s)) = (&lhs.kind, &rhs.kind) {
            let words: &[&str] = if n.ends_with(".charge_state") {
                CHARGE_STATES
            } else if n.ends_with(".mode") && n.starts_with("relays.") {
                MODES
            } else if n == "weekday" {
                WEEKDAYS
            } else {
                &[]
            };
            if !words.is_empty() && !words.contains(&s.as_str()) {
                out.push((
                    rhs.span,
                    format!(
                        "`{s}` is not a value of {n}{}",
                        close_names(s, words.iter().copied())
                    ),
                ));
            }
        }
    }

    fn name_type(
        &self,
        n: &str,
        span: Span,
        has_load: bool,
        out: &mut Vec<(Span, String)>,
    ) -> Option<Ty> {
        let unknown = |out: &mut Vec<(Span, String)>, what: String| {
            let all = self.all_names();
            out.push((
                span,
                format!("{what}{}", close_names(n, all.iter().map(String::as_str))),
            ));
            None
        };
        match n {
            "hour" | "minute" | "month" | "day" => return Some(Ty::Number),
            "time" | "sunrise" | "sunset" => return Some(Ty::TimeOfDay),
            "weekday" => return Some(Ty::Text),
            "surplus" | "site.surplus" => {
                if !self.surplus {
                    out.push((span, "`surplus` needs a [rules.surplus] section (which devices to estimate it from)".into()));
                }
                return Some(Ty::Number);
            }
            "load_power" => {
                if !has_load {
                    out.push((
                        span,
                        "`load_power` needs this relay to declare load_power = <W>".into(),
                    ));
                }
                return Some(Ty::Number);
            }
            _ => {}
        }
        if let Some(rest) = n.strip_prefix("relays.") {
            let (relay, field) = rest.split_once('.').unwrap_or((rest, ""));
            if !self.relays.contains(relay) {
                return unknown(
                    out,
                    format!("no relay named `{relay}` (relays with rules or in other_relays)"),
                );
            }
            return match field {
                "on" => Some(Ty::Bool),
                "mode" => Some(Ty::Text),
                _ => unknown(out, format!("relays have `.on` and `.mode`, not `{field}`")),
            };
        }
        let Some((device, field)) = n.split_once('.') else {
            return unknown(out, format!("unknown value `{n}`"));
        };
        if device == "site" {
            return if SITE_NAMES.contains(&field) {
                Some(Ty::Number)
            } else {
                unknown(out, format!("unknown value `{n}`"))
            };
        }
        let Some(dev) = self.devices.get(device) else {
            return unknown(
                out,
                format!("unknown value `{n}`: no device `{device}` in [rules.devices]"),
            );
        };
        match &dev.values {
            DeviceValues::VeDirect => {
                if !VEDIRECT_NAMES.contains(&field) {
                    return unknown(out, format!("unknown value `{n}`"));
                }
                Some(if VEDIRECT_TEXT.contains(&field) {
                    Ty::Text
                } else if VEDIRECT_BOOL.contains(&field) {
                    Ty::Bool
                } else {
                    Ty::Number
                })
            }
            DeviceValues::Named(names) => {
                if !names.contains(field) {
                    return unknown(out, format!("unknown value `{n}`"));
                }
                None
            }
        }
    }

    fn call_type(
        &self,
        name: &str,
        args: &[Expr],
        span: Span,
        has_load: bool,
        out: &mut Vec<(Span, String)>,
    ) -> Option<Ty> {
        let Some((_, min, max, help)) = HELPERS.iter().find(|h| h.0 == name) else {
            out.push((
                span,
                format!(
                    "unknown helper `{name}`{}",
                    close_names(name, HELPERS.iter().map(|h| h.0))
                ),
            ));
            return None;
        };
        if args.len() < *min || args.len() > *max {
            out.push((span, format!("wrong number of arguments: {help}")));
            return None;
        }
        match name {
            "timer_running" | "timer_done" => {
                match &args[0].kind {
                    ExprKind::Str(t) if self.timers.contains(t) => {}
                    ExprKind::Str(t) => out.push((
                        args[0].span,
                        format!(
                            "no timer named `{t}` in [rules.timers]{}",
                            close_names(t, self.timers.iter().map(String::as_str))
                        ),
                    )),
                    _ => out.push((
                        args[0].span,
                        format!("{name} takes a timer name in quotes, e.g. {name}(\"boost\")"),
                    )),
                }
                Some(Ty::Bool)
            }
            "stable_for" | "hold" => {
                self.expect(&args[0], Ty::Bool, name, has_load, out);
                if !matches!(args[1].kind, ExprKind::Duration(_)) {
                    out.push((
                        args[1].span,
                        format!("{name} needs a duration here, e.g. 5m"),
                    ));
                }
                Some(Ty::Bool)
            }
            "between" => {
                for a in args {
                    self.expect(a, Ty::TimeOfDay, name, has_load, out);
                }
                Some(Ty::Bool)
            }
            _ => {
                if let Some(a) = args.first() {
                    match &a.kind {
                        ExprKind::Str(r) if self.relays.contains(r) => {}
                        ExprKind::Str(r) => out.push((
                            a.span,
                            format!(
                                "no relay named `{r}`{}",
                                close_names(r, self.relays.iter().map(String::as_str))
                            ),
                        )),
                        _ => out.push((
                            a.span,
                            format!("{name} takes a relay name in quotes, e.g. {name}(\"pump\")"),
                        )),
                    }
                }
                Some(if matches!(name, "ran_today" | "cycle_done_today") {
                    Ty::Bool
                } else {
                    Ty::Duration
                })
            }
        }
    }
}

/// "; close names: a, b" for the names nearest to `wanted`, or "" when none is close.
pub fn close_names<'a>(wanted: &str, names: impl Iterator<Item = &'a str>) -> String {
    let mut scored: Vec<(usize, &str)> = names
        .map(|n| (edit_distance(wanted, n), n))
        .filter(|(d, n)| {
            *d <= (wanted.len().max(n.len()) / 3).max(2)
                || n.ends_with(wanted)
                || n.contains(wanted)
        })
        .collect();
    scored.sort();
    scored.dedup();
    if scored.is_empty() {
        return String::new();
    }
    let best: Vec<&str> = scored.iter().take(3).map(|(_, n)| *n).collect();
    format!("; close names: {}", best.join(", "))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
