//! The `[tm1638]` and `[lcd]` sections of the configuration file.
//!
//! ```toml
//! [tm1638]
//! stb = [16]              # one STB line per board (BCM); CLK and DIO are shared
//! clk = 21
//! dio = 20
//! board = "led_and_key"   # or "keys16" (QYF-TM1638: 16 buttons, no LEDs)
//! brightness = 2          # 0..7
//! relays = []             # relay n = button/LED/digit n; default: the [[relays.relay]] order
//! apply_after = "2s"      # a mode chosen with the buttons is sent this long after the last press
//! scan_every = "100ms"    # key scan period while the panel is in use (no interrupt line)
//! idle_scan_every = "150ms" # ...and when no key was pressed for active_for: a press
//!                         # shorter than this can fall between two scans
//! active_for = "30s"      # "in use": a key pressed this recently
//! mode_digits = "0123"    # what a digit shows for forced_off, auto_off, auto_on, forced_on
//! [tm1638.gpio]
//! backend = "auto"        # auto | rppal | gpiochip | sim
//!
//! [lcd]
//! backend = "auto"        # auto | i2cdev | rppal | sim
//! i2c_bus = 1
//! address = 0x20
//! soc = "bmv.state_of_charge"
//! green_from = 94         # backlight green at or above this SOC (%)
//! red_at_or_below = 85    # red at or below; yellow in between
//! night = "22:00-07:00"  # backlight off between these hours (local time); "" = never
//! wake_for = "30s"        # a button lights it this long at night
//! poll_every = "100ms"    # button poll period while in use (the plate does not wire INT)
//! idle_poll_every = "250ms" # ...and when idle; no press is lost at any period (the
//!                         # expander latches the first change), this is only the delay
//! active_for = "30s"      # "in use": a button pressed this recently
//! # int_pin = 25          # BCM pin wired to the expander's INTA: wait for it, no polling
//! pages = [["BA:{bmv.state_of_charge:0}%  P:{site.battery_power:0}W", "..."], ...]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::ConfigError;
use pvbus_bus::config::{Section, Settings};
use pvbus_bus::contract::{parse_duration, validate_id};
use pvbus_hardware::{BackendKind, GpioConfig};
use serde::{Deserialize, Deserializer};
use tm1638::BoardKind;

use crate::template::Template;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).or_else(|e| {
            // Sub-second periods (scan and poll rates) are written in ms.
            t.trim()
                .strip_suffix("ms")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
                .ok_or_else(|| serde::de::Error::custom(format!("{e}, or milliseconds: 100ms")))
        }),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardName {
    #[default]
    LedAndKey,
    Keys16,
}

impl BoardName {
    pub fn kind(self) -> BoardKind {
        match self {
            BoardName::LedAndKey => BoardKind::LedAndKey,
            BoardName::Keys16 => BoardKind::Keys16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tm1638Config {
    pub stb: Vec<u8>,
    pub clk: u8,
    pub dio: u8,
    pub board: BoardName,
    pub brightness: u8,
    pub relays: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub apply_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub scan_every: Duration,
    /// The scan period when no key was pressed for `active_for`.
    #[serde(deserialize_with = "duration")]
    pub idle_scan_every: Duration,
    #[serde(deserialize_with = "duration")]
    pub active_for: Duration,
    pub mode_digits: String,
    /// What the digits show until the bus is reached.
    pub boot_text: String,
    /// What the digits show while the bus is unreachable.
    pub offline_text: String,
    pub gpio: GpioConfig,
}

impl Default for Tm1638Config {
    fn default() -> Self {
        Tm1638Config {
            stb: vec![16],
            clk: 21,
            dio: 20,
            board: BoardName::LedAndKey,
            brightness: 2,
            relays: Vec::new(),
            apply_after: Duration::from_secs(2),
            scan_every: Duration::from_millis(100),
            // A deliberate press lasts 100-200 ms; 150 ms catches every press from the
            // middle of that range up, at 6.7 scans a second instead of 10.
            idle_scan_every: Duration::from_millis(150),
            active_for: Duration::from_secs(30),
            mode_digits: "0123".into(),
            boot_text: "boot".into(),
            offline_text: "no bus".into(),
            gpio: GpioConfig::default(),
        }
    }
}

impl Tm1638Config {
    pub fn digits(&self) -> usize {
        self.stb.len() * BoardKind::DIGITS
    }

    pub fn buttons(&self) -> usize {
        self.stb.len() * self.board.kind().buttons()
    }

    pub fn leds(&self) -> usize {
        self.stb.len() * self.board.kind().leds()
    }
}

impl Section for Tm1638Config {
    const NAME: &'static str = "tm1638";

    fn validate(&self) -> Result<(), ConfigError> {
        if self.stb.is_empty() {
            return Err(ConfigError::invalid(
                "tm1638.stb",
                "needs one STB pin per board, at least one",
            ));
        }
        let mut pins: Vec<u8> = self.stb.clone();
        pins.extend([self.clk, self.dio]);
        for (i, pin) in pins.iter().enumerate() {
            if *pin > 53 {
                return Err(ConfigError::invalid(
                    "tm1638",
                    format!("GPIO {pin} does not exist (0..53)"),
                ));
            }
            if pins[..i].contains(pin) {
                return Err(ConfigError::invalid(
                    "tm1638",
                    format!("GPIO {pin} is used twice among stb, clk and dio"),
                ));
            }
        }
        if self.brightness > 7 {
            return Err(ConfigError::invalid("tm1638.brightness", "must be 0..7"));
        }
        check_periods(
            ("tm1638.scan_every", self.scan_every),
            ("tm1638.idle_scan_every", self.idle_scan_every),
        )?;
        let glyphs: Vec<char> = self.mode_digits.chars().collect();
        if glyphs.len() != 4 {
            return Err(ConfigError::invalid(
                "tm1638.mode_digits",
                "needs 4 characters: forced_off, auto_off, auto_on, forced_on",
            ));
        }
        for c in glyphs {
            tm1638::font::encode(&c.to_string(), 1)
                .map_err(|e| ConfigError::invalid("tm1638.mode_digits", e.to_string()))?;
        }
        for (key, text) in [
            ("tm1638.boot_text", &self.boot_text),
            ("tm1638.offline_text", &self.offline_text),
        ] {
            tm1638::font::encode(text, self.digits())
                .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        }
        if self.relays.len() > self.buttons().max(self.digits()) {
            return Err(ConfigError::invalid(
                "tm1638.relays",
                format!(
                    "{} relays for {} buttons",
                    self.relays.len(),
                    self.buttons()
                ),
            ));
        }
        for (i, id) in self.relays.iter().enumerate() {
            validate_id(id)
                .map_err(|e| ConfigError::invalid(format!("tm1638.relays[{i}]"), e.to_string()))?;
        }
        if self.gpio.backend == BackendKind::Sim && self.gpio.sim_dir.is_none() {
            return Err(ConfigError::invalid(
                "tm1638.gpio.sim_dir",
                "the sim backend needs a directory",
            ));
        }
        Ok(())
    }
}

/// How the LCD plate is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LcdBackend {
    /// rppal on a Raspberry Pi, Linux i2c-dev elsewhere.
    #[default]
    Auto,
    I2cdev,
    Rppal,
    Sim,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LcdConfig {
    pub backend: LcdBackend,
    pub i2c_bus: u8,
    pub address: u8,
    pub sim_dir: Option<PathBuf>,
    pub pages: Vec<Vec<String>>,
    /// The reading that colours the backlight, as `device.field`.
    pub soc: String,
    pub green_from: f64,
    pub red_at_or_below: f64,
    /// `"22:00-07:00"`: backlight off between these local hours; empty: never.
    pub night: String,
    #[serde(deserialize_with = "duration")]
    pub wake_for: Duration,
    #[serde(deserialize_with = "duration")]
    pub poll_every: Duration,
    /// The poll period when no button was pressed for `active_for`.
    #[serde(deserialize_with = "duration")]
    pub idle_poll_every: Duration,
    #[serde(deserialize_with = "duration")]
    pub active_for: Duration,
    /// The BCM pin a user wired to the MCP23017's INTA (the plate leaves it
    /// unconnected): buttons are then read when it falls, never polled.
    pub int_pin: Option<u8>,
    /// Relays of the relay page, in order; default: the [[relays.relay]] order.
    pub relays: Vec<String>,
}

impl Default for LcdConfig {
    fn default() -> Self {
        LcdConfig {
            backend: LcdBackend::Auto,
            i2c_bus: 1,
            address: hd44780_mcp23017::plate::DEFAULT_ADDRESS,
            sim_dir: None,
            pages: vec![
                vec![
                    "BA:{bmv.state_of_charge:0}%  P:{site.battery_power:0}W".into(),
                    "U:{bmv.battery_voltage:2}V {bmv.charge_state}".into(),
                ],
                vec![
                    "PV:{site.pv_power:0}W".into(),
                    "Conso:{site.consumption:0}W".into(),
                ],
                vec![
                    "Relays {relay_states}".into(),
                    "Modes  {relay_modes}".into(),
                ],
            ],
            soc: "bmv.state_of_charge".into(),
            green_from: 94.0,
            red_at_or_below: 85.0,
            night: "22:00-07:00".into(),
            wake_for: Duration::from_secs(30),
            poll_every: Duration::from_millis(100),
            // The expander latches the first change, so a slow poll loses no press;
            // a quarter second is the most a first press waits.
            idle_poll_every: Duration::from_millis(250),
            active_for: Duration::from_secs(30),
            int_pin: None,
            relays: Vec::new(),
        }
    }
}

/// A local time of day, minutes since midnight.
pub fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl LcdConfig {
    /// The pages, parsed; errors name `lcd.pages[i][j]`.
    pub fn templates(&self) -> Result<Vec<[Template; 2]>, ConfigError> {
        let mut pages = Vec::new();
        for (i, page) in self.pages.iter().enumerate() {
            if page.is_empty() || page.len() > 2 {
                return Err(ConfigError::invalid(
                    format!("lcd.pages[{i}]"),
                    "a page has 1 or 2 lines",
                ));
            }
            let parse = |j: usize| -> Result<Template, ConfigError> {
                let text = page.get(j).map_or("", String::as_str);
                Template::parse(text).map_err(|e| {
                    ConfigError::invalid(format!("lcd.pages[{i}][{j}]"), e.to_string())
                })
            };
            pages.push([parse(0)?, parse(1)?]);
        }
        Ok(pages)
    }

    pub fn night_minutes(&self) -> Option<(u16, u16)> {
        let (from, until) = self.night.split_once('-')?;
        Some((parse_hhmm(from)?, parse_hhmm(until)?))
    }
}

impl Section for LcdConfig {
    const NAME: &'static str = "lcd";

    fn validate(&self) -> Result<(), ConfigError> {
        if self.pages.is_empty() {
            return Err(ConfigError::invalid("lcd.pages", "needs at least one page"));
        }
        self.templates()?;
        if self.address > 0x7F {
            return Err(ConfigError::invalid(
                "lcd.address",
                "an I2C address is 7 bits (0x03..0x77)",
            ));
        }
        if self
            .soc
            .split_once('.')
            .is_none_or(|(d, f)| d.is_empty() || f.is_empty())
        {
            return Err(ConfigError::invalid(
                "lcd.soc",
                "expected device.field, e.g. bmv.state_of_charge",
            ));
        }
        if self.red_at_or_below >= self.green_from {
            return Err(ConfigError::invalid(
                "lcd.red_at_or_below",
                "must be below lcd.green_from",
            ));
        }
        if !self.night.trim().is_empty() && self.night_minutes().is_none() {
            return Err(ConfigError::invalid(
                "lcd.night",
                "expected \"22:00-07:00\" (from-until, local time), or \"\" for never",
            ));
        }
        check_periods(
            ("lcd.poll_every", self.poll_every),
            ("lcd.idle_poll_every", self.idle_poll_every),
        )?;
        if let Some(pin) = self.int_pin
            && pin > 53
        {
            return Err(ConfigError::invalid(
                "lcd.int_pin",
                format!("GPIO {pin} does not exist (0..53)"),
            ));
        }
        for (i, id) in self.relays.iter().enumerate() {
            validate_id(id)
                .map_err(|e| ConfigError::invalid(format!("lcd.relays[{i}]"), e.to_string()))?;
        }
        if self.backend == LcdBackend::Sim && self.sim_dir.is_none() {
            return Err(ConfigError::invalid(
                "lcd.sim_dir",
                "the sim backend needs a directory",
            ));
        }
        Ok(())
    }
}

/// A fast (in use) and an idle scan period: each 20ms..1s, the idle one no faster.
fn check_periods(
    (fast_key, fast): (&str, Duration),
    (idle_key, idle): (&str, Duration),
) -> Result<(), ConfigError> {
    for (key, period) in [(fast_key, fast), (idle_key, idle)] {
        if period < Duration::from_millis(20) || period > Duration::from_secs(1) {
            return Err(ConfigError::invalid(key, "must be between 20ms and 1s"));
        }
    }
    if idle < fast {
        return Err(ConfigError::invalid(
            idle_key,
            format!("must not be shorter than {fast_key}"),
        ));
    }
    Ok(())
}

/// The relay ids of `[[relays.relay]]`, in order: the panel's default relay order, as
/// PvMonit numbered its relays.
pub fn relay_order(settings: &Settings) -> Vec<String> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Relays {
        relay: Vec<Relay>,
    }
    #[derive(Deserialize)]
    struct Relay {
        id: serde_json::Value,
    }
    let relays: Relays = settings.section("relays").unwrap_or_default();
    relays
        .relay
        .into_iter()
        .map(|r| match r.id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(text: &str) -> Result<Tm1638Config, ConfigError> {
        Settings::from_toml(text).unwrap().load_section()
    }

    fn lcd(text: &str) -> Result<LcdConfig, ConfigError> {
        Settings::from_toml(text).unwrap().load_section()
    }

    #[test]
    fn defaults_are_pvmonit_s() {
        let config = tm("[tm1638]\n").unwrap();
        assert_eq!(config.apply_after, Duration::from_secs(2));
        assert_eq!(config.scan_every, Duration::from_millis(100));
        assert_eq!(config.idle_scan_every, Duration::from_millis(150));
        assert_eq!(config.active_for, Duration::from_secs(30));
        let config = lcd("[lcd]\n").unwrap();
        assert_eq!(config.pages.len(), 3);
        assert_eq!(config.night_minutes(), Some((22 * 60, 7 * 60)));
        assert_eq!(config.green_from, 94.0);
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (tm("[tm1638]\nstb = []\n").err(), "tm1638.stb"),
            (tm("[tm1638]\nstb = [20]\n").err(), "used twice"),
            (tm("[tm1638]\nbrightness = 9\n").err(), "tm1638.brightness"),
            (
                tm("[tm1638]\nmode_digits = \"0WW3\"\n").err(),
                "tm1638.mode_digits",
            ),
            (
                tm("[tm1638]\nscan_every = \"5ms\"\n").err(),
                "tm1638.scan_every",
            ),
            (
                tm("[tm1638]\nidle_scan_every = \"50ms\"\n").err(),
                "tm1638.idle_scan_every",
            ),
            (
                lcd("[lcd]\nidle_poll_every = \"2s\"\n").err(),
                "lcd.idle_poll_every",
            ),
            (
                tm("[tm1638]\napply_after = \"soon\"\n").err(),
                "tm1638.apply_after",
            ),
            (
                tm("[tm1638]\nrelays = [\"Pump\"]\n").err(),
                "tm1638.relays[0]",
            ),
            (tm("[tm1638]\nbogus = 1\n").err(), "bogus"),
            (
                lcd("[lcd]\npages = [[\"{bmv.soc\"]]\n").err(),
                "lcd.pages[0][0]",
            ),
            (lcd("[lcd]\nnight = \"25:00-07:00\"\n").err(), "lcd.night"),
            (
                lcd("[lcd]\nred_at_or_below = 95\n").err(),
                "lcd.red_at_or_below",
            ),
            (lcd("[lcd]\nsoc = \"soc\"\n").err(), "lcd.soc"),
            (lcd("[lcd]\nint_pin = 60\n").err(), "lcd.int_pin"),
            (lcd("[lcd]\nbackend = \"sim\"\n").err(), "lcd.sim_dir"),
        ];
        for (error, key) in cases {
            let message = error.expect("must fail").to_string();
            assert!(message.contains(key), "{message} should name {key}");
        }
    }

    #[test]
    fn relay_order_follows_the_relays_section() {
        let settings = Settings::from_toml(
            "[[relays.relay]]\nid = \"water_heater\"\npin = 17\n[[relays.relay]]\nid = 3\npin = 27\n",
        )
        .unwrap();
        assert_eq!(relay_order(&settings), ["water_heater", "3"]);
        assert!(relay_order(&Settings::from_toml("").unwrap()).is_empty());
    }
}
