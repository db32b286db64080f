//! The `[plugins]` section of the configuration file.
//!
//! ```toml
//! [plugins]
//! folder = "/etc/pvbus/plugins.d"   # every executable in it runs as a plugin
//! restart_delay = "1s"              # doubles while a plugin keeps crashing...
//! restart_delay_max = "5m"          # ...up to this
//! healthy_after = "60s"             # a plugin that ran this long starts from 1 s again
//! online_timeout = "30s"            # reported when not `online` on the bus by then
//! stop_timeout = "5s"               # SIGTERM, then SIGKILL
//! log_lines_per_sec = 20            # output beyond this is dropped (and counted)
//! max_messages_per_sec = 50         # a plugin publishing more (over 10 s) is stopped
//!
//! [[plugins.exec]]                  # an old PvMonit script printing key:value lines
//! id = "cellar"
//! command = "/opt/pvmonit/bin/dht22.sh"   # a shell line, or ["program", "arg", ...]
//! interval = "60s"
//! readings = { T = "temperature", H = "humidity" }
//! [plugins.exec.units]              # units the script prints, converted to the contract's
//! T = "°F"
//!
//! [[plugins.dylib]]                 # a dynamic library, run inside this process
//! id = "energy"
//! path = "/usr/lib/pvbus/libpv_energy.so"
//! tick = "60s"
//! config = { anything = "the plugin reads" }
//!
//! [plugins.config.coldbackup]       # a folder plugin's settings (PVBUS_PLUGIN_CONFIG)
//! relay = "backup"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::ConfigError;
use pvbus_bus::config::Section;
use pvbus_bus::contract::parse_duration;
use serde::Deserialize;

use crate::exec::Unit;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// The watched folder of executables; none: no folder plugins.
    pub folder: Option<PathBuf>,
    pub restart_delay: String,
    pub restart_delay_max: String,
    pub healthy_after: String,
    pub online_timeout: String,
    pub stop_timeout: String,
    /// A plugin that publishes more than this on `<base>/<id>/...`, over 10 s, is stopped
    /// (and restarted like one that crashed).
    pub max_messages_per_sec: u32,
    pub log_lines_per_sec: u32,
    pub exec: Vec<ExecConfig>,
    pub dylib: Vec<DylibConfig>,
    /// Each folder plugin's own settings, by plugin id (`[plugins.config.coldbackup]`),
    /// handed to it as JSON in PVBUS_PLUGIN_CONFIG.
    pub config: BTreeMap<String, toml::Value>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            folder: None,
            restart_delay: "1s".into(),
            restart_delay_max: "5m".into(),
            healthy_after: "60s".into(),
            online_timeout: "30s".into(),
            stop_timeout: "5s".into(),
            log_lines_per_sec: 20,
            max_messages_per_sec: 50,
            exec: Vec::new(),
            dylib: Vec::new(),
            config: BTreeMap::new(),
        }
    }
}

/// A command line: a shell line (run by `sh -c`, as PvMonit did) or a program and its
/// arguments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

/// `[[plugins.exec]]`: a command run every `interval`; each `key:value` line of its
/// output becomes a reading of the device `device` (default: the id).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    pub id: String,
    pub command: CommandLine,
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Killed when it runs longer (default: the interval, at most 60 s).
    pub timeout: Option<String>,
    pub device: Option<String>,
    /// Printed key -> reading name (docs/topics.md); unlisted keys are published under
    /// their own name made snake_case, unless `only_listed` is set.
    #[serde(default)]
    pub readings: BTreeMap<String, String>,
    /// Printed key -> the unit the script prints it in; converted to the contract's unit.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    #[serde(default)]
    pub only_listed: bool,
}

fn default_interval() -> String {
    "60s".into()
}

/// `[[plugins.dylib]]`: a dynamic-library plugin, loaded by this process.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DylibConfig {
    pub id: String,
    pub path: PathBuf,
    #[serde(default = "default_interval")]
    pub tick: String,
    /// Handed to the plugin as JSON.
    #[serde(default)]
    pub config: Option<toml::Value>,
}

/// Durations resolved by [`PluginsConfig::timing`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    pub healthy_after: Duration,
    pub online_timeout: Duration,
    pub stop_timeout: Duration,
    pub log_lines_per_sec: u32,
    /// A plugin that publishes more than this on `<base>/<id>/...`, over 10 s, is stopped
    /// (and restarted like one that crashed).
    pub max_messages_per_sec: u32,
}

/// A duration as the contract writes them (`90s`, `5m`, `1h30m`), or milliseconds
/// (`200ms`: plugin timings can be short, and tests need them short).
pub fn parse_span(value: &str) -> Result<Duration, pvbus_bus::contract::ContractError> {
    match value.trim().strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Ok(Duration::from_millis(ms)),
        _ => parse_duration(value),
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_span(value).map_err(|e| ConfigError::invalid(key, e.to_string()))
}

fn positive(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, value)?;
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than zero"));
    }
    Ok(d)
}

impl Section for PluginsConfig {
    const NAME: &'static str = "plugins";

    fn validate(&self) -> Result<(), ConfigError> {
        self.timing().map(drop)
    }
}

impl PluginsConfig {
    /// The durations, parsed; and every check serde cannot make (the section's
    /// validation): errors name the key.
    pub fn timing(&self) -> Result<Timing, ConfigError> {
        let timing = Timing {
            restart_delay: positive("plugins.restart_delay", &self.restart_delay)?,
            restart_delay_max: positive("plugins.restart_delay_max", &self.restart_delay_max)?,
            healthy_after: positive("plugins.healthy_after", &self.healthy_after)?,
            online_timeout: positive("plugins.online_timeout", &self.online_timeout)?,
            stop_timeout: positive("plugins.stop_timeout", &self.stop_timeout)?,
            log_lines_per_sec: self.log_lines_per_sec,
            max_messages_per_sec: self.max_messages_per_sec,
        };
        if timing.restart_delay_max < timing.restart_delay {
            return Err(ConfigError::invalid(
                "plugins.restart_delay_max",
                "must not be shorter than plugins.restart_delay",
            ));
        }
        if self.max_messages_per_sec == 0 {
            return Err(ConfigError::invalid(
                "plugins.max_messages_per_sec",
                "must be at least 1",
            ));
        }
        if self.log_lines_per_sec == 0 {
            return Err(ConfigError::invalid(
                "plugins.log_lines_per_sec",
                "must be at least 1",
            ));
        }
        let mut ids: Vec<String> = Vec::new();
        let mut check_id = |key: String, id: &str| -> Result<(), ConfigError> {
            if !pvbus_plugin_abi_id_ok(id) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{id:?} is not an id: use letters, digits, `_` or `-`"),
                ));
            }
            if id == crate::PROCESS {
                return Err(ConfigError::invalid(
                    key,
                    format!("{id:?} is the plugins process itself; choose another id"),
                ));
            }
            if ids.iter().any(|seen| seen == id) {
                return Err(ConfigError::invalid(key, format!("{id:?} is used twice")));
            }
            ids.push(id.to_string());
            Ok(())
        };
        for (i, e) in self.exec.iter().enumerate() {
            check_id(format!("plugins.exec[{i}].id"), &e.id)?;
            match &e.command {
                CommandLine::Shell(s) if s.trim().is_empty() => {
                    return Err(ConfigError::invalid(
                        format!("plugins.exec[{i}].command"),
                        "is empty",
                    ));
                }
                CommandLine::Argv(v) if v.is_empty() || v[0].is_empty() => {
                    return Err(ConfigError::invalid(
                        format!("plugins.exec[{i}].command"),
                        "needs at least the program",
                    ));
                }
                _ => {}
            }
            positive(&format!("plugins.exec[{i}].interval"), &e.interval)?;
            if let Some(t) = &e.timeout {
                positive(&format!("plugins.exec[{i}].timeout"), t)?;
            }
            if let Some(d) = &e.device
                && !pvbus_plugin_abi_id_ok(d)
            {
                return Err(ConfigError::invalid(
                    format!("plugins.exec[{i}].device"),
                    format!("{d:?} is not a device name: use letters, digits, `_` or `-`"),
                ));
            }
            for (key, name) in &e.readings {
                if !crate::exec::is_reading_name(name) {
                    return Err(ConfigError::invalid(
                        format!("plugins.exec[{i}].readings.{key}"),
                        format!(
                            "{name:?} is not a reading name: use snake_case, such as `temperature`"
                        ),
                    ));
                }
            }
            for (key, unit) in &e.units {
                if unit.parse::<Unit>().is_err() {
                    return Err(ConfigError::invalid(
                        format!("plugins.exec[{i}].units.{key}"),
                        format!("unknown unit {unit:?}; known: {}", Unit::KNOWN.join(", ")),
                    ));
                }
            }
        }
        for (i, d) in self.dylib.iter().enumerate() {
            check_id(format!("plugins.dylib[{i}].id"), &d.id)?;
            positive(&format!("plugins.dylib[{i}].tick"), &d.tick)?;
            if d.path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    format!("plugins.dylib[{i}].path"),
                    "is empty",
                ));
            }
        }
        Ok(timing)
    }
}

impl ExecConfig {
    pub fn interval(&self) -> Duration {
        parse_span(&self.interval).unwrap_or(Duration::from_secs(60))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(|t| parse_span(t).ok())
            .unwrap_or_else(|| self.interval().min(Duration::from_secs(60)))
    }

    pub fn device(&self) -> &str {
        self.device.as_deref().unwrap_or(&self.id)
    }
}

impl DylibConfig {
    pub fn tick(&self) -> Duration {
        parse_span(&self.tick).unwrap_or(Duration::from_secs(60))
    }

    /// The plugin's configuration as JSON (`null` when absent).
    pub fn config_json(&self) -> serde_json::Value {
        self.config
            .as_ref()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// An id is one topic level that is also a name in the rules.
pub fn pvbus_plugin_abi_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::config::Settings;

    fn load(text: &str) -> Result<Timing, ConfigError> {
        Settings::from_toml(text)?
            .load_section::<PluginsConfig>()?
            .timing()
    }

    #[test]
    fn defaults_and_errors_that_name_the_key() {
        let t = load("[plugins]\nfolder = \"/tmp/p\"\n").unwrap();
        assert_eq!(t.restart_delay, Duration::from_secs(1));
        let cases = [
            (
                "[plugins]\nrestart_delay = \"soon\"\n",
                "plugins.restart_delay",
            ),
            (
                "[plugins]\nlog_lines_per_sec = 0\n",
                "plugins.log_lines_per_sec",
            ),
            (
                "[[plugins.exec]]\nid = \"a b\"\ncommand = \"true\"\n",
                "plugins.exec[0].id",
            ),
            (
                "[[plugins.exec]]\nid = \"a\"\ncommand = []\n",
                "plugins.exec[0].command",
            ),
            (
                "[[plugins.exec]]\nid = \"a\"\ncommand = \"x\"\nunits = { T = \"furlong\" }\n",
                "plugins.exec[0].units.T",
            ),
            (
                "[[plugins.exec]]\nid = \"a\"\ncommand = \"x\"\nreadings = { T = \"Temp C\" }\n",
                "plugins.exec[0].readings.T",
            ),
            (
                "[[plugins.exec]]\nid = \"a\"\ncommand = \"x\"\n[[plugins.dylib]]\nid = \"a\"\npath = \"/x.so\"\n",
                "plugins.dylib[0].id",
            ),
            ("[plugins]\nfolder = 3\nfoo = 1\n", "plugins"),
        ];
        for (text, key) in cases {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
