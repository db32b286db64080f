//! The configuration file: one TOML file, one section per process, layered as
//! built-in defaults (serde defaults of each section), then the user's file, then
//! environment variables `PVBUS_<SECTION>__<KEY>` (e.g. `PVBUS_BUS__BASE=home/pv`).
//!
//! Keys are snake_case only: the `config` crate lower-cases environment keys, so a
//! camelCase key could never be overridden.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Errors name the file and the key (or the line, for syntax errors).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// An error about one key, for a section's `validate()`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            origin: "config".into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A section of the file, owned by the crate of the process that reads it: its name and
/// the checks serde cannot make. [`Settings::load_section`] reads and checks it in one
/// step, so every section reports its mistakes the same way: the file, then the key.
pub trait Section: DeserializeOwned {
    /// The section's name in the file: `[NAME]`, and the first part of its keys.
    const NAME: &'static str;

    /// Checks what serde cannot (ranges, ids, keys that exclude each other); errors name
    /// the key, with [`ConfigError::invalid`].
    fn validate(&self) -> Result<(), ConfigError>;
}

/// A duration in a configuration file: seconds (`600`) or as people write it (`"10m"`,
/// `"1h30m"`, see [`crate::contract::parse_duration`]), for
/// `#[serde(deserialize_with = "pvbus_bus::config::duration")]`.
pub fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Seconds(u64),
        Text(String),
    }
    match Written::deserialize(deserializer)? {
        Written::Seconds(seconds) => Ok(std::time::Duration::from_secs(seconds)),
        Written::Text(text) => {
            crate::contract::parse_duration(&text).map_err(serde::de::Error::custom)
        }
    }
}

/// The environment variables that override the file: `PVBUS_<SECTION>__<KEY>` only.
/// Other `PVBUS_` variables are settings of the process, not of the file
/// (`PVBUS_LOG`, `PVBUS_LOG_FORMAT`, `PVBUS_CONFIG`, a plugin's `PVBUS_BROKER`): taken
/// as overrides, they would become sections `[log]`, `[config]`... that no process knows,
/// and `pvbus config check` would refuse the file because a log level was set.
fn config_overrides(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("PVBUS_").is_some_and(|rest| {
            rest.split_once("__")
                .is_some_and(|(s, k)| !s.is_empty() && !k.is_empty())
        })
    })
    .collect()
}

/// The merged configuration, from which each process takes its section.
#[derive(Debug, Clone)]
pub struct Settings {
    merged: config::Config,
    origin: String,
}

impl Settings {
    /// Loads `path` (if any) over the built-in defaults, then the environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        let origin = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                // Parse with `toml` first: its errors carry line and column, the config
                // crate's do not.
                if let Err(e) = text.parse::<toml::Table>() {
                    return Err(ConfigError::Syntax {
                        path: p.to_path_buf(),
                        message: e.to_string().trim_end().to_string(),
                    });
                }
                builder =
                    builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
                p.display().to_string()
            }
            None => "defaults".to_string(),
        };
        builder = builder.add_source(
            config::Environment::with_prefix("PVBUS")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(config_overrides(std::env::vars()))),
        );
        let merged = builder.build().map_err(|e| ConfigError::Syntax {
            path: PathBuf::from(&origin),
            message: e.to_string(),
        })?;
        Ok(Settings { merged, origin })
    }

    /// Settings from a TOML string (tests, `pvbus config check`).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError::Syntax {
                path: PathBuf::from("<inline>"),
                message: e.to_string().trim_end().to_string(),
            });
        }
        let merged = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Syntax {
                path: PathBuf::from("<inline>"),
                message: e.to_string(),
            })?;
        Ok(Settings {
            merged,
            origin: "<inline>".into(),
        })
    }

    /// Where the settings came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Top-level sections present in the file or environment.
    pub fn sections(&self) -> Vec<String> {
        match self.merged.cache.clone().into_table() {
            Ok(t) => t.into_keys().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Deserialises one section; an absent section gives the section's defaults. Errors
    /// carry the full key path (`relays.relay[2].pin`).
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let value = match self.merged.get::<config::Value>(name) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => {
                config::Value::new(None, config::ValueKind::Table(Default::default()))
            }
            Err(e) => {
                return Err(ConfigError::Key {
                    origin: self.origin.clone(),
                    key: name.into(),
                    message: e.to_string(),
                });
            }
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let key = if inner == "." || inner.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{inner}")
            };
            ConfigError::Key {
                origin: self.origin.clone(),
                key,
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Section `T`, read and validated; errors name this file and the key. An absent
    /// section gives its defaults, validated too.
    pub fn load_section<T: Section>(&self) -> Result<T, ConfigError> {
        let section: T = self.section(T::NAME)?;
        self.check(&section)?;
        Ok(section)
    }

    /// Validates a section changed after it was read (options of the command line,
    /// values from other sections); errors name this file and the key.
    pub fn check<T: Section>(&self, section: &T) -> Result<(), ConfigError> {
        section.validate().map_err(|e| match e {
            ConfigError::Key { key, message, .. } => ConfigError::Key {
                origin: self.origin.clone(),
                key,
                message,
            },
            other => other,
        })
    }

    /// The `[bus]` section, resolved against `[broker] listen` when no external broker
    /// is configured.
    pub fn bus(&self) -> Result<BusConfig, ConfigError> {
        let mut bus: BusConfig = self.section(BusConfig::NAME)?;
        let listen: Option<String> = self.merged.get::<String>("broker.listen").ok();
        if let Some(listen) = listen {
            bus.embedded_listen = listen.parse().map_err(|_| ConfigError::Key {
                origin: self.origin.clone(),
                key: "broker.listen".into(),
                message: format!("{listen:?} is not an address such as 127.0.0.1:1883"),
            })?;
        }
        self.check(&bus)?;
        Ok(bus)
    }
}

/// `[bus]`: how every process reaches the broker and which topic prefix it uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `host:port` of an external broker (mosquitto, EMQX). When absent, processes use
    /// the embedded broker at `[broker] listen`, and `pvbus run` starts it.
    pub external_broker: Option<String>,
    /// Topic prefix of this installation.
    pub base: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT keep-alive: also how long a silently dead peer goes unnoticed (x 1.5).
    pub keep_alive_secs: u64,
    pub client_id_prefix: String,
    pub max_packet_size: usize,
    /// Filled from `[broker] listen`.
    #[serde(skip)]
    pub embedded_listen: SocketAddr,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            external_broker: None,
            base: "pvbus".into(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            client_id_prefix: "pvbus-".into(),
            max_packet_size: 256 * 1024,
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
        }
    }
}

impl BusConfig {
    /// A bus config pointing at `host:port`, defaults otherwise (tests, tools).
    pub fn at(addr: SocketAddr) -> BusConfig {
        BusConfig {
            embedded_listen: addr,
            ..BusConfig::default()
        }
    }

    /// Host and port to connect to.
    pub fn endpoint(&self) -> (String, u16) {
        if let Some(ext) = &self.external_broker {
            if let Some((h, Ok(port))) = ext.rsplit_once(':').map(|(h, p)| (h, p.parse())) {
                return (h.trim_matches(['[', ']']).to_string(), port);
            }
            return (ext.clone(), 1883);
        }
        let a = self.embedded_listen;
        let host = if a.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            a.ip().to_string()
        };
        (host, a.port())
    }
}

impl Section for BusConfig {
    const NAME: &'static str = "bus";

    fn validate(&self) -> Result<(), ConfigError> {
        if self.base.is_empty()
            || self.base.starts_with('/')
            || self.base.contains(['+', '#'])
            || self.base.split('/').any(str::is_empty)
        {
            return Err(ConfigError::invalid(
                "bus.base",
                format!(
                    "{:?} is not a topic prefix: use levels such as `pvbus` or `home/solar`, without +, # or empty levels",
                    self.base
                ),
            ));
        }
        if let Some(ext) = &self.external_broker {
            let ok = match ext.rsplit_once(':') {
                Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok(),
                None => !ext.is_empty(),
            };
            if !ok {
                return Err(ConfigError::invalid(
                    "bus.external_broker",
                    format!("{ext:?} is not host:port"),
                ));
            }
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::invalid(
                "bus.password",
                "a password needs bus.username",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        pin: u8,
        name: String,
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        id: String,
        #[allow(dead_code)]
        pin: u8,
    }

    impl Section for Demo {
        const NAME: &'static str = "demo";

        fn validate(&self) -> Result<(), ConfigError> {
            if self.pin > 40 {
                return Err(ConfigError::invalid("demo.pin", "use 0..40"));
            }
            Ok(())
        }
    }

    #[test]
    fn load_section_reads_then_validates_and_names_the_file() {
        let s = Settings::from_toml("[demo]\npin = 3\n").unwrap();
        assert_eq!(s.load_section::<Demo>().unwrap().pin, 3);
        let s = Settings::from_toml("[other]\n").unwrap();
        assert_eq!(s.load_section::<Demo>().unwrap().pin, 0);

        let s = Settings::from_toml("[demo]\npin = 41\n").unwrap();
        let err = s.load_section::<Demo>().unwrap_err().to_string();
        assert_eq!(err, "<inline>: key `demo.pin`: use 0..40");

        let s = Settings::from_toml("[demo]\npin = \"x\"\n").unwrap();
        let err = s.load_section::<Demo>().unwrap_err().to_string();
        assert!(
            err.starts_with("<inline>: key `demo.pin`: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn only_section_keys_of_the_environment_override_the_file() {
        let vars = [
            ("PVBUS_LOG", "debug"),
            ("PVBUS_LOG_FORMAT", "json"),
            ("PVBUS_CONFIG", "/etc/pvbus.toml"),
            ("PVBUS_BROKER", "127.0.0.1:1883"),
            ("PVBUS___X", "1"),
            ("PVBUS_BUS__", "1"),
            ("PVBUS_BUS__BASE", "home/pv"),
            ("PVBUS_RELAYS__STALE_AFTER", "60s"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let mut kept: Vec<String> = config_overrides(vars.into_iter()).into_keys().collect();
        kept.sort();
        assert_eq!(kept, ["PVBUS_BUS__BASE", "PVBUS_RELAYS__STALE_AFTER"]);
    }

    #[test]
    fn absent_section_gives_defaults() {
        let s = Settings::from_toml("[other]\nx = 1\n").unwrap();
        let d: Demo = s.section("demo").unwrap();
        assert_eq!(d.pin, 0);
        assert_eq!(s.bus().unwrap(), BusConfig::default());
    }

    #[test]
    fn errors_name_the_key() {
        let s = Settings::from_toml(
            "[demo]\npin = 3\n[[demo.items]]\nid = \"a\"\npin = 1\n[[demo.items]]\nid = \"b\"\npin = \"x\"\n",
        )
        .unwrap();
        let err = s.section::<Demo>("demo").unwrap_err().to_string();
        assert!(err.contains("demo.items[1].pin"), "{err}");

        let s = Settings::from_toml("[demo]\npni = 3\n").unwrap();
        let err = s.section::<Demo>("demo").unwrap_err().to_string();
        assert!(err.contains("pni") && err.contains("demo"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = Settings::from_toml("[bus]\nbase = \"a\"\nport = = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bus_resolves_embedded_or_external() {
        let s = Settings::from_toml("[broker]\nlisten = \"127.0.0.1:1999\"\n").unwrap();
        assert_eq!(s.bus().unwrap().endpoint(), ("127.0.0.1".into(), 1999));
        let s = Settings::from_toml(
            "[broker]\nlisten = \"127.0.0.1:1999\"\n[bus]\nexternal_broker = \"mqtt.lan:1884\"\n",
        )
        .unwrap();
        assert_eq!(s.bus().unwrap().endpoint(), ("mqtt.lan".into(), 1884));
        let s = Settings::from_toml("[bus]\nbase = \"a//b\"\n").unwrap();
        assert!(s.bus().unwrap_err().to_string().contains("bus.base"));
    }
}
