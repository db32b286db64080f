//! The `[homeassistant]` section of the configuration file.
//!
//! ```toml
//! [homeassistant]
//! enabled = true                        # false: remove every pvbus entity from HA, then idle
//! discovery_prefix = "homeassistant"    # HA's MQTT discovery prefix
//! override_durations = ["1h", "2h", "4h"]  # one "Force on for ..." button each
//!
//! [homeassistant.names]                 # device names in HA (the id when absent)
//! mppt_roof = "Roof charger"
//! water_heater = "Water heater"
//! ```

use std::collections::BTreeMap;

use pvbus_bus::ConfigError;
use pvbus_bus::config::Section;
use pvbus_bus::contract::parse_duration;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// When false the process removes what it announced, then idles until stopped.
    pub enabled: bool,
    /// HA's discovery prefix (its MQTT integration option of the same name).
    pub discovery_prefix: String,
    /// Where HA says `online` when it (re)starts; `<discovery_prefix>/status` when absent.
    pub status_topic: Option<String>,
    /// One "Force on for …" button per duration on every relay.
    pub override_durations: Vec<String>,
    /// Names shown in HA for device and relay ids.
    pub names: BTreeMap<String, String>,
    /// The local panel, from its own sections (not a key of `[homeassistant]`).
    #[serde(skip)]
    pub panels: Panels,
}

/// The local panel as its own sections (`[tm1638]`, `[lcd]`) of the same file describe
/// it: what the bus cannot say (how many buttons a board has, how many pages the LCD
/// shows). A panel is announced only when it is configured here *and* its process has
/// been on the bus, so removing its section removes it from HA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Panels {
    pub tm1638: Option<Tm1638Panel>,
    pub lcd: Option<LcdPanel>,
}

/// A chain of TM1638 boards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm1638Panel {
    pub buttons: usize,
    pub leds: usize,
    pub digits: usize,
}

/// The 16x2 LCD plate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LcdPanel {
    pub pages: usize,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: true,
            discovery_prefix: "homeassistant".into(),
            status_topic: None,
            override_durations: vec!["1h".into(), "2h".into(), "4h".into()],
            names: BTreeMap::new(),
            panels: Panels::default(),
        }
    }
}

impl HomeAssistantConfig {
    pub fn status_topic(&self) -> String {
        self.status_topic
            .clone()
            .unwrap_or_else(|| format!("{}/status", self.discovery_prefix))
    }

    /// The name HA shows for a device or relay id.
    pub fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map(String::as_str).unwrap_or(id)
    }
}

impl Section for HomeAssistantConfig {
    const NAME: &'static str = "homeassistant";

    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.discovery_prefix;
        if p.is_empty() || p.contains(['+', '#']) || p.split('/').any(str::is_empty) {
            return Err(ConfigError::invalid(
                "homeassistant.discovery_prefix",
                format!("{p:?} is not a topic prefix: use e.g. `homeassistant`"),
            ));
        }
        if let Some(t) = &self.status_topic
            && (t.is_empty() || t.contains(['+', '#']))
        {
            return Err(ConfigError::invalid(
                "homeassistant.status_topic",
                format!("{t:?} is not a topic"),
            ));
        }
        for (i, d) in self.override_durations.iter().enumerate() {
            match parse_duration(d) {
                Ok(v) if !v.is_zero() => {}
                Ok(_) => {
                    return Err(ConfigError::invalid(
                        format!("homeassistant.override_durations[{i}]"),
                        "must be longer than 0 s",
                    ));
                }
                Err(e) => {
                    return Err(ConfigError::invalid(
                        format!("homeassistant.override_durations[{i}]"),
                        e.to_string(),
                    ));
                }
            }
        }
        for (id, name) in &self.names {
            if name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("homeassistant.names.{id}"),
                    "a name cannot be empty",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::config::Settings;

    #[test]
    fn defaults_without_a_section() {
        let s = Settings::from_toml("[bus]\n").unwrap();
        let c: HomeAssistantConfig = s.load_section().unwrap();
        assert_eq!(c, HomeAssistantConfig::default());
        assert_eq!(c.status_topic(), "homeassistant/status");
    }

    #[test]
    fn errors_name_the_key() {
        let load = |toml: &str| {
            Settings::from_toml(toml)
                .unwrap()
                .load_section::<HomeAssistantConfig>()
                .unwrap_err()
                .to_string()
        };
        let err = load("[homeassistant]\ndiscovery_prefx = \"ha\"\n");
        assert!(err.contains("discovery_prefx"), "{err}");
        let err = load("[homeassistant]\noverride_durations = [\"1h\", \"2x\"]\n");
        assert!(err.contains("homeassistant.override_durations[1]"), "{err}");
        let err = load("[homeassistant]\ndiscovery_prefix = \"ha/#\"\n");
        assert!(err.contains("homeassistant.discovery_prefix"), "{err}");
    }

    #[test]
    fn names_map_ids() {
        let s =
            Settings::from_toml("[homeassistant.names]\nmppt_roof = \"Roof charger\"\n").unwrap();
        let c: HomeAssistantConfig = s.section("homeassistant").unwrap();
        assert_eq!(c.name_of("mppt_roof"), "Roof charger");
        assert_eq!(c.name_of("bmv"), "bmv");
    }
}
