//! The `[vedirect]` section of the configuration file.
//!
//! ```toml
//! [vedirect]
//! stale_after = 10          # seconds without a valid block before a device goes offline
//! auto_detect = true        # also open the VE.Direct USB cables under /dev/serial/by-id
//! [[vedirect.ports]]
//! path = "/dev/ttyUSB0"
//! name = "bmv"              # optional: id of the device on this port when SER# has none
//! [vedirect.devices]        # SER# -> id used in topics (PvMonit's deviceCorrespondance)
//! HQ2150ABCDE = "mppt_roof"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::ConfigError;
use pvbus_bus::config::Section;
use pvbus_bus::contract::validate_id;
use serde::Deserialize;

/// `[vedirect]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VedirectConfig {
    /// Serial ports to read, in addition to the auto-detected ones.
    pub ports: Vec<PortConfig>,
    /// Serial number (`SER#`) to device id, the topic level of the device.
    pub devices: BTreeMap<String, String>,
    /// Seconds without a valid block on a port before its device goes `offline`.
    pub stale_after: u64,
    /// Open every VE.Direct USB cable found in `detect_dir`.
    pub auto_detect: bool,
    /// Where auto-detection looks (the udev by-id links, stable across renumbering).
    pub detect_dir: PathBuf,
    /// Seconds between two writes of a volatile setting (the charge current limit),
    /// which the device forgets about a minute after the last write.
    pub volatile_refresh: u64,
    /// Milliseconds to wait for the reply to a HEX request before sending it again.
    pub hex_timeout_ms: u64,
    /// Attempts of a HEX request before the command is reported as failed.
    pub hex_attempts: u32,
}

/// One `[[vedirect.ports]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub path: PathBuf,
    /// Id of the device on this port when its serial number is not in `devices` (old
    /// BMV-70x do not send `SER#`).
    #[serde(default)]
    pub name: Option<String>,
}

impl Default for VedirectConfig {
    fn default() -> Self {
        VedirectConfig {
            ports: Vec::new(),
            devices: BTreeMap::new(),
            stale_after: 10,
            auto_detect: true,
            detect_dir: PathBuf::from("/dev/serial/by-id"),
            volatile_refresh: 30,
            hex_timeout_ms: 500,
            hex_attempts: 3,
        }
    }
}

impl VedirectConfig {
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.stale_after)
    }

    pub fn volatile_refresh(&self) -> Duration {
        Duration::from_secs(self.volatile_refresh)
    }

    pub fn hex_timeout(&self) -> Duration {
        Duration::from_millis(self.hex_timeout_ms)
    }
}

impl Section for VedirectConfig {
    const NAME: &'static str = "vedirect";

    fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=3600).contains(&self.stale_after) {
            return Err(ConfigError::invalid(
                "vedirect.stale_after",
                format!(
                    "{} s: devices send a block every second, use 2..3600",
                    self.stale_after
                ),
            ));
        }
        if !(1..=50).contains(&self.volatile_refresh) {
            return Err(ConfigError::invalid(
                "vedirect.volatile_refresh",
                format!(
                    "{} s: the device forgets a volatile setting after about 60 s, use 1..50",
                    self.volatile_refresh
                ),
            ));
        }
        if !(50..=5000).contains(&self.hex_timeout_ms) {
            return Err(ConfigError::invalid(
                "vedirect.hex_timeout_ms",
                format!("{} ms: use 50..5000", self.hex_timeout_ms),
            ));
        }
        if !(1..=10).contains(&self.hex_attempts) {
            return Err(ConfigError::invalid(
                "vedirect.hex_attempts",
                format!("{}: use 1..10", self.hex_attempts),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            if port.path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    format!("vedirect.ports[{i}].path"),
                    "empty path",
                ));
            }
            if !paths.insert(&port.path) {
                return Err(ConfigError::invalid(
                    format!("vedirect.ports[{i}].path"),
                    format!("{} is listed twice", port.path.display()),
                ));
            }
            if let Some(name) = &port.name {
                let key = format!("vedirect.ports[{i}].name");
                validate_id(name).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
                if !ids.insert(name.as_str()) {
                    return Err(ConfigError::invalid(key, format!("{name:?} is used twice")));
                }
            }
        }
        for (serial, id) in &self.devices {
            let key = format!("vedirect.devices.{serial}");
            if serial.is_empty()
                || serial.len() > 32
                || !serial.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ConfigError::invalid(
                    key,
                    "a serial number (SER#) is 1..32 printable characters",
                ));
            }
            validate_id(id).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
            if !ids.insert(id.as_str()) {
                return Err(ConfigError::invalid(key, format!("{id:?} is used twice")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::config::Settings;

    fn load(toml: &str) -> Result<VedirectConfig, ConfigError> {
        Settings::from_toml(toml)?.load_section()
    }

    #[test]
    fn a_full_section_loads() {
        let c = load(
            "[vedirect]\nstale_after = 5\nauto_detect = false\n\
             [[vedirect.ports]]\npath = \"/dev/ttyUSB0\"\nname = \"bmv\"\n\
             [[vedirect.ports]]\npath = \"/dev/ttyUSB1\"\n\
             [vedirect.devices]\nHQ2150ABCDE = \"mppt_roof\"\n",
        )
        .unwrap();
        assert_eq!(c.stale_after, 5);
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].name.as_deref(), Some("bmv"));
        assert_eq!(c.devices["HQ2150ABCDE"], "mppt_roof");
        assert_eq!(load("").unwrap(), VedirectConfig::default());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[vedirect]\nstale_after = 1\n", "vedirect.stale_after"),
            (
                "[vedirect]\nvolatile_refresh = 70\n",
                "vedirect.volatile_refresh",
            ),
            ("[vedirect]\nstale = 3\n", "stale"),
            (
                "[[vedirect.ports]]\npath = \"/a\"\nname = \"Roof MPPT\"\n",
                "vedirect.ports[0].name",
            ),
            (
                "[[vedirect.ports]]\npath = \"/a\"\n[[vedirect.ports]]\npath = \"/a\"\n",
                "vedirect.ports[1].path",
            ),
            (
                "[[vedirect.ports]]\npath = \"/a\"\nname = \"x\"\n[vedirect.devices]\nHQ1 = \"x\"\n",
                "vedirect.devices.HQ1",
            ),
            (
                "[vedirect.devices]\nHQ1 = \"a-b\"\n",
                "vedirect.devices.HQ1",
            ),
            ("[[vedirect.ports]]\nname = \"x\"\n", "vedirect.ports[0]"),
        ];
        for (toml, key) in cases {
            let err = load(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?}: {err}");
        }
    }
}
