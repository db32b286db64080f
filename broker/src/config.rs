//! The `[broker]` section of the pvbus config file, with defaults sized for a Raspberry Pi and
//! a `validate()` whose errors name the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use pvbus_bus::ConfigError;
use pvbus_bus::config::Section;
use serde::Deserialize;

use crate::password;

/// `[broker]`: the embedded MQTT broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// When false, `pvbus run` starts no broker and every process uses the broker named in
    /// `[bus]` (mosquitto, EMQX...).
    pub enabled: bool,
    /// Listener without authentication; keep it on loopback.
    pub listen: SocketAddr,
    /// Where retained messages are kept across restarts.
    pub data_dir: PathBuf,
    /// Topic prefix of the broker's own `<prefix>/broker/status`: `[bus] base`, filled by
    /// `pvbus broker`, not a key of `[broker]`.
    #[serde(skip)]
    pub topic_prefix: String,
    /// Optional listener for the LAN (Home Assistant on another host), login required.
    pub lan: Option<LanListener>,
    /// Simultaneous client connections, all listeners together.
    pub max_connections: usize,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_size: usize,
    /// rumqttd keeps, per subscription filter, up to `segment_count` segments of
    /// `segment_size` bytes of recent messages; this bounds its memory.
    pub segment_size: usize,
    pub segment_count: usize,
    /// Bounds of the retained-message store.
    pub max_retained_topics: usize,
    pub max_retained_bytes: usize,
    /// Retained changes are saved at most once per this many seconds (SD-card wear), and on
    /// shutdown.
    pub retained_flush_secs: u64,
}

/// `[broker.lan]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanListener {
    /// e.g. `0.0.0.0:1884` or `192.168.1.10:1883`.
    pub listen: SocketAddr,
    /// `[[broker.lan.users]]`, at least one.
    pub users: Vec<BrokerUser>,
    /// `tls = { cert = "...", key = "..." }`: the listener speaks MQTT over TLS only.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// `[broker.lan] tls`: PEM files, read once at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Server certificate, followed by any intermediate certificates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1); keep it readable by the pvbus user only.
    pub key: PathBuf,
}

/// `[[broker.lan.users]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    pub username: String,
    /// Argon2id PHC string from `pvbus broker hash-password`; never the password itself.
    pub password_hash: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            data_dir: PathBuf::from("/var/lib/pvbus/broker"),
            topic_prefix: "pvbus".to_owned(),
            lan: None,
            max_connections: 64,
            max_packet_size: 256 * 1024,
            // 1 MiB per subscription filter: measured, 4 QoS 1 subscribers to `pvbus/#`
            // keep up with 2000 topics updated back to back; at 128 KiB they fell off the
            // log, lost messages, and rumqttd's throughput collapsed (docs/broker.md).
            segment_size: 256 * 1024,
            segment_count: 4,
            max_retained_topics: 10_000,
            max_retained_bytes: 16 * 1024 * 1024,
            retained_flush_secs: 30,
        }
    }
}

impl Section for BrokerConfig {
    const NAME: &'static str = "broker";

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "broker.listen",
                format!(
                    "{} is reachable from the network without a login; keep `listen` on \
                     127.0.0.1 and open [broker.lan] with users",
                    self.listen
                ),
            ));
        }
        if self.topic_prefix.is_empty()
            || self.topic_prefix.contains(['+', '#'])
            || self.topic_prefix.ends_with('/')
        {
            return Err(ConfigError::invalid(
                "bus.base",
                "must be non-empty, without wildcards or a trailing '/'",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("broker.data_dir", "must not be empty"));
        }
        let at_least = |key: &str, value: usize, min: usize| {
            if value < min {
                Err(ConfigError::invalid(
                    key,
                    format!("{value} is below the minimum {min}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least("broker.max_connections", self.max_connections, 2)?;
        at_least("broker.max_packet_size", self.max_packet_size, 1024)?;
        if self.max_packet_size > 256 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "broker.max_packet_size",
                "MQTT packets cannot exceed 256 MiB",
            ));
        }
        // rumqttd panics below 1 KiB.
        at_least("broker.segment_size", self.segment_size, 1024)?;
        at_least("broker.segment_count", self.segment_count, 1)?;
        at_least("broker.max_retained_topics", self.max_retained_topics, 1)?;
        at_least("broker.max_retained_bytes", self.max_retained_bytes, 1024)?;
        if self.retained_flush_secs == 0 {
            return Err(ConfigError::invalid(
                "broker.retained_flush_secs",
                "must be at least 1 (0 would write the card on every change)",
            ));
        }
        if let Some(lan) = &self.lan {
            if lan.listen == self.listen {
                return Err(ConfigError::invalid(
                    "broker.lan.listen",
                    "must differ from broker.listen",
                ));
            }
            if lan.users.is_empty() {
                return Err(ConfigError::invalid(
                    "broker.lan.users",
                    "the LAN listener needs at least one [[broker.lan.users]]",
                ));
            }
            if let Some(tls) = &lan.tls {
                for (key, path) in [
                    ("broker.lan.tls.cert", &tls.cert),
                    ("broker.lan.tls.key", &tls.key),
                ] {
                    if path.as_os_str().is_empty() {
                        return Err(ConfigError::invalid(key, "must name a PEM file"));
                    }
                }
                if tls.cert == tls.key {
                    return Err(ConfigError::invalid(
                        "broker.lan.tls.key",
                        "names the same file as broker.lan.tls.cert; give the key its own file",
                    ));
                }
            }
            for (index, user) in lan.users.iter().enumerate() {
                if user.username.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("broker.lan.users[{index}].username"),
                        "must not be empty",
                    ));
                }
                password::check_hash(&user.password_hash).map_err(|error| {
                    ConfigError::invalid(
                        format!("broker.lan.users[{index}].password_hash"),
                        format!("{error}; make one with `pvbus broker hash-password`"),
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl BrokerConfig {
    pub(crate) fn status_topic(&self) -> String {
        format!("{}/broker/status", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(result: Result<(), ConfigError>) -> String {
        match result {
            Err(ConfigError::Key { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        BrokerConfig::default().validate().unwrap();
    }

    #[test]
    fn open_lan_listen_is_refused() {
        let config = BrokerConfig {
            listen: "0.0.0.0:1883".parse().unwrap(),
            ..BrokerConfig::default()
        };
        assert_eq!(key_of(config.validate()), "broker.listen");
    }

    #[test]
    fn lan_needs_users_with_hashes() {
        let mut config = BrokerConfig {
            lan: Some(LanListener {
                listen: "0.0.0.0:1884".parse().unwrap(),
                users: vec![],
                tls: None,
            }),
            ..BrokerConfig::default()
        };
        assert_eq!(key_of(config.validate()), "broker.lan.users");
        config.lan.as_mut().unwrap().users.push(BrokerUser {
            username: "ha".into(),
            password_hash: "clear-text".into(),
        });
        assert_eq!(
            key_of(config.validate()),
            "broker.lan.users[0].password_hash"
        );
        config.lan.as_mut().unwrap().users[0].password_hash =
            password::hash_password("pw").unwrap();
        config.validate().unwrap();
        config.lan.as_mut().unwrap().tls = Some(TlsFiles {
            cert: "/etc/pvbus/tls/server.pem".into(),
            key: "".into(),
        });
        assert_eq!(key_of(config.validate()), "broker.lan.tls.key");
        config.lan.as_mut().unwrap().tls.as_mut().unwrap().key = "/etc/pvbus/tls/server.pem".into();
        assert_eq!(key_of(config.validate()), "broker.lan.tls.key");
        config.lan.as_mut().unwrap().tls.as_mut().unwrap().key = "/etc/pvbus/tls/server.key".into();
        config.validate().unwrap();
    }

    #[test]
    fn a_config_section_deserialises_with_defaults_and_refuses_unknown_keys() {
        let config: BrokerConfig = toml::from_str(
            "listen = \"127.0.0.1:1999\"\n[lan]\nlisten = \"0.0.0.0:1884\"\n\
             [[lan.users]]\nusername = \"ha\"\npassword_hash = \"$argon2id$v=19$m=8192,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 1999);
        assert_eq!(config.topic_prefix, "pvbus");
        assert_eq!(config.segment_count, BrokerConfig::default().segment_count);
        config.validate().unwrap();
        assert!(config.lan.as_ref().unwrap().tls.is_none());
        let config: BrokerConfig = toml::from_str(
            "[lan]\nlisten = \"0.0.0.0:8883\"\nusers = []\n\
             tls = { cert = \"/etc/pvbus/tls/server.crt\", key = \"/etc/pvbus/tls/server.key\" }\n",
        )
        .unwrap();
        let tls = config.lan.unwrap().tls.unwrap();
        assert_eq!(tls.key, PathBuf::from("/etc/pvbus/tls/server.key"));
        let err = toml::from_str::<BrokerConfig>(
            "[lan]\nlisten = \"0.0.0.0:8883\"\nusers = []\ntls = { cert = \"a\", key = \"b\", ca = \"c\" }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("ca"), "{err}");
        let err = toml::from_str::<BrokerConfig>("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let err = toml::from_str::<BrokerConfig>("topic_prefix = \"x\"").unwrap_err();
        assert!(err.to_string().contains("topic_prefix"), "{err}");
    }

    #[test]
    fn too_small_segments_are_refused() {
        let config = BrokerConfig {
            segment_size: 512,
            ..BrokerConfig::default()
        };
        assert_eq!(key_of(config.validate()), "broker.segment_size");
    }
}
