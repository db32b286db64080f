//! The `[relays]` section of the configuration file.
//!
//! ```toml
//! [relays]
//! state_dir = "/var/lib/pvbus/relays"   # modes, overrides and history live here
//! stale_after = "10m"                   # or seconds: 600
//!
//! [relays.gpio]
//! backend = "auto"                      # auto | rppal | gpiochip | sim
//!
//! [[relays.relay]]
//! id = "water_heater"                   # the topic level; numbers allowed (id = 3)
//! pin = 17                              # BCM number (see docs/wiringpi-to-bcm.md)
//! active_low = true                     # most relay boards: a low input energises the coil
//! on_stale = "off"                      # or "keep": ignore the stale-data safety
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::ConfigError;
use pvbus_bus::config::Section;
use pvbus_bus::contract::validate_id;
use pvbus_hardware::GpioConfig;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaysConfig {
    /// Where modes, running overrides and the event history are kept.
    pub state_dir: PathBuf,
    /// Auto-on relays go off when neither an `auto/set` nor a rules heartbeat has
    /// arrived for this long.
    #[serde(deserialize_with = "pvbus_bus::config::duration")]
    pub stale_after: Duration,
    /// The history file is rotated past this size (one older file is kept).
    pub history_max_bytes: u64,
    pub gpio: GpioConfig,
    pub relay: Vec<RelayConfig>,
    /// The site's time zone (`[site] timezone`, read by [`site_zone`]): `until` times,
    /// the midnight reset of the daily stats and the times in reasons; the system's
    /// when unset.
    #[serde(skip)]
    pub zone: Option<jiff::tz::TimeZone>,
}

/// The `[site]` keys the relays use; the section belongs to the rules, which check it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SiteClock {
    timezone: Option<String>,
}

/// `[site] timezone`, if set: the day and the clock of the house, the same for the
/// relays as for the rules, whatever the machine's own time zone.
pub fn site_zone(
    settings: &pvbus_bus::config::Settings,
) -> Result<Option<jiff::tz::TimeZone>, ConfigError> {
    let site: SiteClock = settings.section("site")?;
    site.timezone
        .map(|name| {
            jiff::tz::TimeZone::get(&name).map_err(|e| {
                ConfigError::invalid(
                    "site.timezone",
                    format!(
                        "unknown time zone {name:?} ({e}); expected a name like \"Europe/Paris\""
                    ),
                )
            })
        })
        .transpose()
}

impl Default for RelaysConfig {
    fn default() -> Self {
        RelaysConfig {
            state_dir: PathBuf::from("/var/lib/pvbus/relays"),
            stale_after: Duration::from_secs(600),
            history_max_bytes: 256 * 1024,
            gpio: GpioConfig::default(),
            relay: Vec::new(),
            zone: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    #[serde(deserialize_with = "relay_id")]
    pub id: String,
    /// A name for people (Home Assistant, the LCD); the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// BCM GPIO number.
    pub pin: u8,
    #[serde(default = "active_low_default")]
    pub active_low: bool,
    #[serde(default)]
    pub on_stale: OnStale,
}

fn active_low_default() -> bool {
    true
}

/// What the stale-data safety does to an auto-on relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    /// Switch it to auto-off (fail safe).
    #[default]
    Off,
    /// Leave it on (a load that must not stop when the rules do, e.g. the internet box).
    Keep,
}

impl RelayConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

impl Section for RelaysConfig {
    const NAME: &'static str = "relays";

    /// Checks what serde cannot; errors name the key (`relays.relay[1].pin`).
    fn validate(&self) -> Result<(), ConfigError> {
        if self.stale_after.is_zero() {
            return Err(ConfigError::invalid(
                "relays.stale_after",
                "must be longer than 0 s",
            ));
        }
        if self.history_max_bytes < 4096 {
            return Err(ConfigError::invalid(
                "relays.history_max_bytes",
                "must be at least 4096",
            ));
        }
        if self.gpio.backend == pvbus_hardware::BackendKind::Sim && self.gpio.sim_dir.is_none() {
            return Err(ConfigError::invalid(
                "relays.gpio.sim_dir",
                "the sim backend needs a directory for its pin state and log",
            ));
        }
        let mut ids = HashSet::new();
        let mut pins = HashSet::new();
        for (index, relay) in self.relay.iter().enumerate() {
            let key = |leaf: &str| format!("relays.relay[{index}].{leaf}");
            validate_id(&relay.id).map_err(|e| ConfigError::invalid(key("id"), e.to_string()))?;
            if !ids.insert(relay.id.as_str()) {
                return Err(ConfigError::invalid(
                    key("id"),
                    format!("relay id {:?} is used twice", relay.id),
                ));
            }
            if !pins.insert(relay.pin) {
                return Err(ConfigError::invalid(
                    key("pin"),
                    format!("GPIO {} drives two relays", relay.pin),
                ));
            }
        }
        Ok(())
    }
}

/// Relay ids are topic levels; PvMonit numbered its relays, so numbers are allowed.
fn relay_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::config::Settings;

    fn load(toml: &str) -> Result<RelaysConfig, ConfigError> {
        Settings::from_toml(toml)?.load_section()
    }

    #[test]
    fn a_full_section_loads_with_numbers_as_ids_and_durations_as_text() {
        let config = load(
            "[relays]\nstale_after = \"5m\"\n[[relays.relay]]\nid = \"water_heater\"\npin = 17\n\
             [[relays.relay]]\nid = 3\npin = 27\nactive_low = false\non_stale = \"keep\"\n",
        )
        .unwrap();
        assert_eq!(config.stale_after, Duration::from_secs(300));
        assert_eq!(config.relay[1].id, "3");
        assert!(config.relay[0].active_low);
        assert_eq!(config.relay[1].on_stale, OnStale::Keep);
    }

    #[test]
    fn defaults_are_ten_minutes_and_fail_safe() {
        let config = load("").unwrap();
        assert_eq!(config.stale_after, Duration::from_secs(600));
        assert!(config.relay.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[[relays.relay]]\nid = \"a\"\npin = 1\n[[relays.relay]]\nid = \"b\"\npin = 1\n",
                "relays.relay[1].pin",
            ),
            (
                "[[relays.relay]]\nid = \"Water Heater\"\npin = 1\n",
                "relays.relay[0].id",
            ),
            (
                "[[relays.relay]]\nid = \"a\"\npin = 1\n[[relays.relay]]\nid = \"a\"\npin = 2\n",
                "relays.relay[1].id",
            ),
            ("[relays]\nstale_after = \"-3m\"\n", "relays.stale_after"),
            ("[relays]\nstale_after = 0\n", "relays.stale_after"),
            (
                "[[relays.relay]]\nid = \"a\"\npin = 1\non_stale = \"maybe\"\n",
                "relays.relay[0].on_stale",
            ),
            ("[relays.gpio]\nbackend = \"sim\"\n", "relays.gpio.sim_dir"),
            ("[relays]\nstale = 3\n", "stale"),
        ];
        for (toml, key) in cases {
            let error = load(toml).unwrap_err().to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
    }
}
