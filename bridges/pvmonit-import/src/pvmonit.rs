//! Reading a PvMonit `config.yaml` into the settings pvbus can carry over.
//!
//! PvMonit read `config-default.yaml`, then the user's `config.yaml` over it, key by key:
//! users keep only what they changed. So every setting read here falls back to PvMonit's
//! own default (the values of its `config-default.yaml`), and the settings that exist only
//! in the user's file are also listed, with what pvbus does instead, in
//! [`PvmonitConfig::left_out`].

use yaml_rust2::{Yaml, YamlLoader};

use crate::ImportError;

/// PvMonit's defaults for the settings that are carried over.
mod default {
    pub const RELAY_COUNT: u32 = 8;
    /// `domo.relayWiringPi`, relays 1..8.
    pub const RELAY_WIRING_PI: [u8; 8] = [4, 5, 10, 21, 22, 27, 28, 29];
    /// The name PvMonit gives a relay nobody named ("to be defined").
    pub const RELAY_NAME: &str = "aDefinir";
    pub const LCD_ON_AT: u8 = 8;
    pub const LCD_OFF_AT: u8 = 21;
    pub const LCD_ON_TIMER_SECS: u64 = 60;
    pub const TM1638_ACTION_BUTTON_DELAY_SECS: f64 = 2.0;
    pub const SECU_DOWN_NO_DATA_SECS: u64 = 600;
}

/// What pvbus takes from a PvMonit configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PvmonitConfig {
    /// Relays 1..`domo.relayNb`, in PvMonit's order (the TM1638 buttons follow it).
    pub relays: Vec<Relay>,
    /// `deviceCorrespondance`: serial number (SER#) → name, in the file's order.
    pub devices: Vec<(String, String)>,
    /// `vedirect.by`: `usb` (pvbus reads the cables) or `arduino`.
    pub vedirect_by: String,
    /// `domo.relay.secuDownNoData`: seconds without data before every relay goes off.
    pub secu_down_no_data_secs: u64,
    pub lcd: Lcd,
    pub tm1638: Tm1638,
    /// Settings of the user's file that pvbus does not carry over, and why.
    pub left_out: Vec<LeftOut>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relay {
    /// PvMonit's relay number, from 1.
    pub number: u32,
    /// `domo.relayName.<n>`; `None` for PvMonit's placeholder `aDefinir`.
    pub name: Option<String>,
    /// `domo.relayWiringPi.<n>`.
    pub wiring_pi: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lcd {
    /// Whether the LCD plate was in use: `lcd.daemon: true`, or an `lcd:` section in the
    /// user's file without `daemon: false` (older PvMonit had no `daemon` key).
    pub in_use: bool,
    /// `lcd.onAt`: hour (0..23) the backlight comes on.
    pub on_at: u8,
    /// `lcd.offAt`: hour (0..23) it goes off.
    pub off_at: u8,
    /// `lcd.onTimer`: seconds a button lights it at night.
    pub on_timer_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tm1638 {
    /// `domo.tm1638.daemon: true`, or a `domo.tm1638:` section without `daemon: false`.
    pub in_use: bool,
    /// `domo.tm1638.actionButtonDelay`: seconds from the last press to the mode change.
    pub action_button_delay_secs: f64,
}

/// A setting of the user's file that the import does not carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// Its path in the YAML file, e.g. `domo.relay.scriptDir`.
    pub key: String,
    /// Why, and what pvbus offers instead.
    pub why: String,
}

impl PvmonitConfig {
    /// Reads a PvMonit `config.yaml`. Errors name the key (`domo.relayWiringPi.3`) or the
    /// line and column of a YAML syntax error.
    pub fn from_yaml(text: &str) -> Result<PvmonitConfig, ImportError> {
        let documents = YamlLoader::load_from_str(text).map_err(|e| ImportError::Yaml {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let empty = Yaml::Hash(Default::default());
        let root = documents.first().unwrap_or(&empty);
        let root = match root {
            Yaml::Hash(_) => root,
            // An empty file: everything is PvMonit's default.
            Yaml::Null => &empty,
            _ => {
                return Err(ImportError::Value {
                    key: "(top level)".into(),
                    expected: "a mapping of PvMonit settings (printMessage:, domo:, ...)",
                    found: describe(root),
                });
            }
        };
        let file = Node {
            path: String::new(),
            yaml: root,
        };

        let domo = file.get("domo");
        let relay_count = match domo.get("relayNb").u64_opt()? {
            Some(n) if (1..=64).contains(&n) => n as u32,
            Some(n) => {
                return Err(ImportError::Value {
                    key: "domo.relayNb".into(),
                    expected: "a number of relays, 1..64",
                    found: n.to_string(),
                });
            }
            None => default::RELAY_COUNT,
        };
        let names = domo.get("relayName");
        let pins = domo.get("relayWiringPi");
        names.expect_mapping_or_absent()?;
        pins.expect_mapping_or_absent()?;
        let mut relays = Vec::new();
        for number in 1..=relay_count {
            let name = match names.get_numbered(number).string_opt()? {
                Some(name) => Some(name),
                None if number <= 8 => Some(default::RELAY_NAME.to_string()),
                None => None,
            }
            .filter(|name| name.trim() != default::RELAY_NAME && !name.trim().is_empty());
            let pin_node = pins.get_numbered(number);
            let wiring_pi = match pin_node
                .u64_opt()
                .map_err(|_| pin_node.bad("a wiringPi pin, 0..31"))?
            {
                Some(pin) => {
                    u8::try_from(pin).map_err(|_| pin_node.bad("a wiringPi pin, 0..31"))?
                }
                None => match default::RELAY_WIRING_PI.get(number as usize - 1) {
                    Some(pin) => *pin,
                    None => {
                        return Err(ImportError::Value {
                            key: pin_node.path.clone(),
                            expected: "the wiringPi pin of every relay up to domo.relayNb",
                            found: "nothing".into(),
                        });
                    }
                },
            };
            relays.push(Relay {
                number,
                name,
                wiring_pi,
            });
        }

        let correspondance = file.get("deviceCorrespondance");
        correspondance.expect_mapping_or_absent()?;
        let mut devices = Vec::new();
        for (serial, name) in correspondance.entries() {
            let name = name.string_opt()?.unwrap_or_default();
            devices.push((serial, name));
        }

        let vedirect_by = file
            .get("vedirect")
            .get("by")
            .string_opt()?
            .unwrap_or_else(|| "usb".into());

        let secu_down_no_data_secs = domo
            .get("relay")
            .get("secuDownNoData")
            .u64_opt()?
            .unwrap_or(default::SECU_DOWN_NO_DATA_SECS);

        let lcd_node = file.get("lcd");
        let hour = |key: &str, default: u8| -> Result<u8, ImportError> {
            let node = lcd_node.get(key);
            match node.u64_opt()? {
                Some(h) if h <= 24 => Ok((h % 24) as u8),
                Some(_) => Err(node.bad("an hour of the day, 0..23")),
                None => Ok(default),
            }
        };
        let lcd = Lcd {
            in_use: lcd_node.in_use()?,
            on_at: hour("onAt", default::LCD_ON_AT)?,
            off_at: hour("offAt", default::LCD_OFF_AT)?,
            on_timer_secs: lcd_node
                .get("onTimer")
                .u64_opt()?
                .unwrap_or(default::LCD_ON_TIMER_SECS),
        };

        let tm_node = domo.get("tm1638");
        let tm1638 = Tm1638 {
            in_use: tm_node.in_use()?,
            action_button_delay_secs: tm_node
                .get("actionButtonDelay")
                .f64_opt()?
                .unwrap_or(default::TM1638_ACTION_BUTTON_DELAY_SECS),
        };

        let mut left_out = Vec::new();
        list_left_out(&file, &mut left_out);

        Ok(PvmonitConfig {
            relays,
            devices,
            vedirect_by,
            secu_down_no_data_secs,
            lcd,
            tm1638,
            left_out,
        })
    }
}

/// A place in the YAML tree, with its path for error messages.
struct Node<'a> {
    path: String,
    yaml: &'a Yaml,
}

static ABSENT: Yaml = Yaml::BadValue;

impl<'a> Node<'a> {
    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Node<'a> {
        let yaml = match self.yaml {
            Yaml::Hash(hash) => hash.get(&Yaml::String(key.into())).unwrap_or(&ABSENT),
            _ => &ABSENT,
        };
        Node {
            path: self.child_path(key),
            yaml,
        }
    }

    /// `1:` or `"1":`: PvMonit numbered its relays both ways over the years.
    fn get_numbered(&self, number: u32) -> Node<'a> {
        let yaml = match self.yaml {
            Yaml::Hash(hash) => hash
                .get(&Yaml::Integer(number.into()))
                .or_else(|| hash.get(&Yaml::String(number.to_string())))
                .unwrap_or(&ABSENT),
            _ => &ABSENT,
        };
        Node {
            path: self.child_path(&number.to_string()),
            yaml,
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self.yaml, Yaml::BadValue | Yaml::Null)
    }

    fn bad(&self, expected: &'static str) -> ImportError {
        ImportError::Value {
            key: self.path.clone(),
            expected,
            found: describe(self.yaml),
        }
    }

    fn expect_mapping_or_absent(&self) -> Result<(), ImportError> {
        if self.is_absent() || matches!(self.yaml, Yaml::Hash(_)) {
            Ok(())
        } else {
            Err(self.bad("a mapping (key: value lines)"))
        }
    }

    /// Key/value pairs of a mapping, keys written as text (numbers and booleans too).
    fn entries(&self) -> Vec<(String, Node<'a>)> {
        let Yaml::Hash(hash) = self.yaml else {
            return Vec::new();
        };
        hash.iter()
            .map(|(k, v)| {
                let key = scalar_text(k).unwrap_or_else(|| describe(k));
                let path = self.child_path(&key);
                (key, Node { path, yaml: v })
            })
            .collect()
    }

    fn string_opt(&self) -> Result<Option<String>, ImportError> {
        if self.is_absent() {
            return Ok(None);
        }
        scalar_text(self.yaml)
            .map(Some)
            .ok_or_else(|| self.bad("a text value"))
    }

    fn u64_opt(&self) -> Result<Option<u64>, ImportError> {
        match self.yaml {
            _ if self.is_absent() => Ok(None),
            Yaml::Integer(n) if *n >= 0 => Ok(Some(*n as u64)),
            Yaml::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.bad("a whole number")),
            _ => Err(self.bad("a whole number")),
        }
    }

    fn f64_opt(&self) -> Result<Option<f64>, ImportError> {
        match self.yaml {
            _ if self.is_absent() => Ok(None),
            Yaml::Integer(n) if *n >= 0 => Ok(Some(*n as f64)),
            Yaml::Real(_) => match self.yaml.as_f64() {
                Some(x) if x >= 0.0 && x.is_finite() => Ok(Some(x)),
                _ => Err(self.bad("a number of seconds")),
            },
            Yaml::String(s) => match s.trim().parse::<f64>() {
                Ok(x) if x >= 0.0 && x.is_finite() => Ok(Some(x)),
                _ => Err(self.bad("a number of seconds")),
            },
            _ => Err(self.bad("a number of seconds")),
        }
    }

    /// A daemon section: used when `daemon: true`, or present without `daemon: false`.
    fn in_use(&self) -> Result<bool, ImportError> {
        if self.is_absent() {
            return Ok(false);
        }
        let daemon = self.get("daemon");
        match daemon.yaml {
            Yaml::Boolean(on) => Ok(*on),
            _ if daemon.is_absent() => Ok(matches!(self.yaml, Yaml::Hash(_))),
            _ => Err(daemon.bad("true or false")),
        }
    }
}

fn scalar_text(yaml: &Yaml) -> Option<String> {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(yaml: &Yaml) -> String {
    match yaml {
        Yaml::Hash(_) => "a mapping".into(),
        Yaml::Array(_) => "a list".into(),
        Yaml::Null | Yaml::BadValue => "nothing".into(),
        Yaml::Alias(_) => "an alias".into(),
        other => format!("{:?}", scalar_text(other).unwrap_or_default()),
    }
}

/// What the import does with each PvMonit setting: carried over (`None`) or left out,
/// and why. Keys are paths; a path covers everything below it.
const WHAT_BECOMES_OF: &[(&str, Option<&str>)] = &[
    (
        "printMessage",
        Some("logs go to the journal (journalctl -u pvbus); PVBUS_LOG=debug for more"),
    ),
    (
        "printMessageLogfile",
        Some("logs go to the journal (journalctl -u pvbus)"),
    ),
    (
        "urlDataXml",
        Some("no XML: every reading is a retained MQTT topic (docs/topics.md)"),
    ),
    (
        "tmpFileDataXml",
        Some("no XML: every reading is a retained MQTT topic (docs/topics.md)"),
    ),
    (
        "scriptDataXml",
        Some("no XML: every reading is a retained MQTT topic (docs/topics.md)"),
    ),
    (
        "dir",
        Some("PvMonit's install folders; pvbus is one binary (/usr/bin/pvbus)"),
    ),
    ("bin", Some("PvMonit's helper programs; pvbus needs none")),
    (
        "data",
        Some("pvbus always sums the chargers and computes consumption: pvbus/site/state"),
    ),
    (
        "dataCheck",
        Some("the rules ignore stale values and skip when one is missing: [rules.devices] max_age"),
    ),
    (
        "cache",
        Some("no cache: the broker keeps the last value of every topic"),
    ),
    ("vedirect.by", None),
    (
        "vedirect.usb",
        Some("pvbus reads the VE.Direct USB cables itself ([vedirect] auto_detect)"),
    ),
    (
        "vedirect.arduino",
        Some(
            "pvbus reads VE.Direct cables on the Pi itself; the Arduino relay of the serial lines is not supported",
        ),
    ),
    (
        "vedirect.data_ok",
        Some("pvbus publishes every field a device sends"),
    ),
    (
        "wks",
        Some("WKS/Voltronic inverters: a plugin (docs/plugins.md)"),
    ),
    ("deviceCorrespondance", None),
    (
        "consoPlafond",
        Some("no consumption ceiling; a plugin or rule can flag implausible values"),
    ),
    (
        "tensionNorme",
        Some("not needed: AC values come from the devices"),
    ),
    (
        "emoncms",
        Some(
            "history graphs: Home Assistant (docs/homeassistant.md) or a plugin that posts to emoncms (docs/plugins.md); the API key is not copied",
        ),
    ),
    (
        "www",
        Some(
            "no web page: Home Assistant discovers everything (docs/homeassistant.md), `pvbus status` shows the bus; passwords are not copied",
        ),
    ),
    ("lcd.daemon", None),
    ("lcd.onAt", None),
    ("lcd.offAt", None),
    ("lcd.onTimer", None),
    (
        "lcd.rafraichissement",
        Some("pvbus reads the LCD buttons every [lcd] poll_every (100 ms)"),
    ),
    (
        "lcd.dataUpdate",
        Some("the LCD redraws when a value changes on the bus"),
    ),
    (
        "lcd.estCeLaNuitTimer",
        Some("the backlight follows [lcd] night to the minute"),
    ),
    (
        "lcd.dataPrint",
        Some("pages are templates: [lcd] pages (docs/panel.md)"),
    ),
    (
        "domo.daemon",
        Some("`pvbus run` starts every process whose section is in the file"),
    ),
    ("domo.relayNb", None),
    ("domo.relayName", None),
    ("domo.relayWiringPi", None),
    ("domo.relay.secuDownNoData", None),
    (
        "domo.relay.scriptDir",
        Some(
            "each relay's script becomes [rules.relays.<id>] on/off conditions (docs/rules.md, docs/pvmonit.md)",
        ),
    ),
    (
        "domo.relay.scriptExecInterval",
        Some("rules are evaluated when readings arrive, not every N seconds"),
    ),
    (
        "domo.relay.dataFreq",
        Some("relay states are published when they change"),
    ),
    ("domo.tm1638.daemon", None),
    ("domo.tm1638.actionButtonDelay", None),
    (
        "domo.tm1638.refresh",
        Some("pvbus scans the TM1638 keys every [tm1638] scan_every (100 ms)"),
    ),
    (
        "domo.dbFile",
        Some(
            "relay modes and history live in [relays] state_dir; PvMonit's SQLite history is not imported",
        ),
    ),
    (
        "domo.jsonFile",
        Some(
            "relay modes and states are retained topics and [relays] state_dir; current modes are not imported (every relay starts in auto_off)",
        ),
    ),
    (
        "domo.prefixFileData",
        Some("no data files: the bus carries the readings"),
    ),
    (
        "domo.binGpio",
        Some("pvbus drives the GPIO itself (rppal or the GPIO character device)"),
    ),
    (
        "domo.valueUse",
        Some("rules name the values they use: [rules.devices] and the rule text"),
    ),
    (
        "domo.valueSimu",
        Some("test rules with `pvbus rules simulate` (docs/rules.md)"),
    ),
    (
        "domo.dataCheckTime",
        Some("no polling: rules run when readings arrive"),
    ),
    (
        "domo.fileExpir",
        Some("freshness of values: [rules.devices] max_age"),
    ),
    (
        "domo.xmlDataExpir",
        Some("freshness of values: [rules.devices] max_age"),
    ),
    (
        "domo.fileCheckError",
        Some("freshness of values: [rules.devices] max_age"),
    ),
    (
        "domo.relayActionRefresh",
        Some("no polling: relay commands are MQTT messages, applied at once"),
    ),
    (
        "cloud",
        Some("no cloud copy of the page; reach the broker or Home Assistant through your own VPN"),
    ),
    (
        "weather",
        Some(
            "weather and production forecasts are not part of pvbus yet; a plugin can publish them",
        ),
    ),
    (
        "user",
        Some("custom form values of the web page; no equivalent"),
    ),
];

/// Walks the user's file and lists every setting that is not carried over: known ones
/// with their reason, unknown ones as unknown.
fn list_left_out(file: &Node<'_>, out: &mut Vec<LeftOut>) {
    fn walk(node: &Node<'_>, out: &mut Vec<LeftOut>) {
        for (_, child) in node.entries() {
            match WHAT_BECOMES_OF.iter().find(|(key, _)| *key == child.path) {
                Some((_, None)) => {}
                Some((_, Some(why))) => out.push(LeftOut {
                    key: child.path.clone(),
                    why: (*why).to_string(),
                }),
                None => {
                    let prefix = format!("{}.", child.path);
                    if WHAT_BECOMES_OF
                        .iter()
                        .any(|(key, _)| key.starts_with(&prefix))
                        && matches!(child.yaml, Yaml::Hash(_))
                    {
                        walk(&child, out);
                    } else {
                        out.push(LeftOut {
                            key: child.path.clone(),
                            why: "unknown to the importer: not carried over".into(),
                        });
                    }
                }
            }
        }
    }
    walk(file, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_pvmonit_s_defaults() {
        let config = PvmonitConfig::from_yaml("").unwrap();
        assert_eq!(config.relays.len(), 8);
        assert_eq!(
            config
                .relays
                .iter()
                .map(|r| r.wiring_pi)
                .collect::<Vec<_>>(),
            default::RELAY_WIRING_PI
        );
        assert!(config.relays.iter().all(|r| r.name.is_none()));
        assert_eq!((config.lcd.on_at, config.lcd.off_at), (8, 21));
        assert!(!config.lcd.in_use && !config.tm1638.in_use);
        assert_eq!(config.secu_down_no_data_secs, 600);
        assert!(config.left_out.is_empty());
    }

    #[test]
    fn the_user_file_overrides_key_by_key() {
        let yaml = "domo:\n  relayNb: 3\n  relayName:\n    1: Pompe\n    \"3\": Box\n  \
                    relayWiringPi:\n    2: 0\nlcd:\n  onAt: 7\n";
        let config = PvmonitConfig::from_yaml(yaml).unwrap();
        let relays: Vec<_> = config
            .relays
            .iter()
            .map(|r| (r.number, r.name.as_deref(), r.wiring_pi))
            .collect();
        assert_eq!(
            relays,
            [(1, Some("Pompe"), 4), (2, None, 0), (3, Some("Box"), 10)]
        );
        assert!(config.lcd.in_use, "an lcd: section without daemon: false");
        assert_eq!((config.lcd.on_at, config.lcd.off_at), (7, 21));
    }

    #[test]
    fn errors_name_the_key_or_the_line() {
        let cases = [
            (
                "domo:\n  relayWiringPi:\n    3: pin3\n",
                "domo.relayWiringPi.3",
            ),
            (
                "domo:\n  relayWiringPi:\n    3: 300\n",
                "domo.relayWiringPi.3",
            ),
            ("domo:\n  relayNb: 0\n", "domo.relayNb"),
            ("domo:\n  relayNb: 9\n", "domo.relayWiringPi.9"),
            ("lcd:\n  offAt: 25\n", "lcd.offAt"),
            ("lcd:\n  daemon: maybe\n", "lcd.daemon"),
            ("deviceCorrespondance: [a, b]\n", "deviceCorrespondance"),
            (
                "domo:\n  tm1638:\n    actionButtonDelay: soon\n",
                "domo.tm1638.actionButtonDelay",
            ),
            ("- a list\n", "(top level)"),
            ("domo:\n\trelayNb: 3\n", "line 2,"),
        ];
        for (yaml, place) in cases {
            let error = PvmonitConfig::from_yaml(yaml).unwrap_err().to_string();
            assert!(error.contains(place), "{yaml:?}: {error}");
        }
    }

    #[test]
    fn settings_not_carried_over_are_listed_with_a_reason() {
        let yaml = "printMessage: 3\nemoncms:\n  apiKey: SECRET\ndomo:\n  relayNb: 2\n  \
                    relay:\n    scriptDir: /opt/x\n    secuDownNoData: 300\n  tm1638:\n    \
                    refresh: 0.3\nsomethingNew: 1\n";
        let config = PvmonitConfig::from_yaml(yaml).unwrap();
        let keys: Vec<&str> = config.left_out.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "printMessage",
                "emoncms",
                "domo.relay.scriptDir",
                "domo.tm1638.refresh",
                "somethingNew"
            ]
        );
        assert!(config.left_out[4].why.contains("unknown"));
        assert_eq!(config.secu_down_no_data_secs, 300);
        assert!(config.tm1638.in_use);
    }
}
