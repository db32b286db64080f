//! The environment a plugin is started with. `pvbus plugins` sets these variables; a
//! plugin started by hand (or by systemd, or in a test) can set them itself.

use pvbus_bus::BusConfig;

/// `host:port` of the broker.
pub const BROKER: &str = "PVBUS_BROKER";
/// The installation's topic prefix (`pvbus`).
pub const BASE: &str = "PVBUS_BASE";
/// The plugin's id: its process name on the bus and the first level of its devices.
pub const PLUGIN_ID: &str = "PVBUS_PLUGIN_ID";
pub const USERNAME: &str = "PVBUS_USERNAME";
pub const PASSWORD: &str = "PVBUS_PASSWORD";
/// The plugin's own settings (`[plugins.config.<id>]` of the configuration), as JSON.
pub const PLUGIN_CONFIG: &str = "PVBUS_PLUGIN_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(
        "{var} is not set: a plugin is started by `pvbus plugins`, which sets it (or set it yourself)"
    )]
    Missing { var: &'static str },
    #[error("key `{key}`: {message}")]
    Settings { key: String, message: String },
    #[error("{var}={value:?}: {problem}")]
    Invalid {
        var: &'static str,
        value: String,
        problem: &'static str,
    },
}

/// What a plugin learns from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEnv {
    pub broker: String,
    pub base: String,
    pub id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The JSON of PVBUS_PLUGIN_CONFIG, if set.
    pub settings: Option<String>,
}

impl PluginEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<PluginEnv, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<PluginEnv, EnvError> {
        let need = |var: &'static str| get(var).ok_or(EnvError::Missing { var });
        let broker = need(BROKER)?;
        match broker.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(EnvError::Invalid {
                    var: BROKER,
                    value: broker,
                    problem: "expected host:port, such as 127.0.0.1:1883",
                });
            }
        }
        let base = get(BASE).unwrap_or_else(|| "pvbus".into());
        let id = need(PLUGIN_ID)?;
        if !is_topic_level(&id) {
            return Err(EnvError::Invalid {
                var: PLUGIN_ID,
                value: id,
                problem: "must be one topic level: letters, digits, `_` or `-`",
            });
        }
        Ok(PluginEnv {
            broker,
            base,
            id,
            username: get(USERNAME).filter(|u| !u.is_empty()),
            password: get(PASSWORD).filter(|p| !p.is_empty()),
            settings: get(PLUGIN_CONFIG).filter(|s| !s.trim().is_empty()),
        })
    }

    /// The plugin's own settings (`[plugins.config.<id>]`), or `T::default()` when it has
    /// none. Errors name the key as it is written in the configuration file.
    pub fn settings<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, EnvError> {
        let Some(json) = &self.settings else {
            return Ok(T::default());
        };
        let mut de = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." || path.is_empty() {
                format!("plugins.config.{}", self.id)
            } else {
                format!("plugins.config.{}.{path}", self.id)
            };
            EnvError::Settings {
                key,
                message: e.into_inner().to_string(),
            }
        })
    }

    /// The `[bus]` configuration these variables describe.
    pub fn bus_config(&self) -> BusConfig {
        BusConfig {
            external_broker: Some(self.broker.clone()),
            base: self.base.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            client_id_prefix: "pvbus-plugin-".into(),
            ..BusConfig::default()
        }
    }
}

/// Whether `s` can be one level of a topic and a name in the rules.
pub fn is_topic_level(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<PluginEnv, EnvError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PluginEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_the_contract_and_names_what_is_wrong() {
        let e = env(&[
            (BROKER, "10.0.0.2:1884"),
            (PLUGIN_ID, "cellar"),
            (BASE, "home/pv"),
        ])
        .unwrap();
        let bus = e.bus_config();
        assert_eq!(bus.endpoint(), ("10.0.0.2".into(), 1884));
        assert_eq!(bus.base, "home/pv");
        assert_eq!(e.username, None);

        let err = env(&[(PLUGIN_ID, "x")]).unwrap_err().to_string();
        assert!(err.starts_with("PVBUS_BROKER is not set"), "{err}");
        let err = env(&[(BROKER, "localhost"), (PLUGIN_ID, "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PVBUS_BROKER=\"localhost\""), "{err}");
        let err = env(&[(BROKER, "h:1"), (PLUGIN_ID, "a/b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PVBUS_PLUGIN_ID"), "{err}");
    }
}
