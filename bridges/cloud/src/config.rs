//! The `[cloud]` section of the configuration file.
//!
//! ```toml
//! [cloud]
//! remote = "abc123.s1.eu.hivemq.cloud:8883"   # host:port of the remote broker (required)
//! remote_base = "sites/cabin"                 # prefix on the remote, one per site (required)
//! tls = true                                  # default; false only for a broker on a VPN
//! # ca_file = "/etc/pvbus/cloud-ca.pem"       # default: the system's root certificates
//! # client_cert_file = "/etc/pvbus/cloud.crt" # AWS IoT style: both or neither
//! # client_key_file = "/etc/pvbus/cloud.key"
//! username = "cabin"
//! password_file = "/etc/pvbus/cloud.password" # or password = "..." (less safe)
//! # client_id = "pvbus-cloud-sites-cabin"     # default: made from remote_base
//! forward = ["#"]                             # local topics sent out, relative to [bus] base
//! accept = ["relays/+/mode/set"]              # commands taken in; each must end in /set
//! state_interval = "60s"                      # device readings: at most one per topic per interval
//! keep_alive = "60s"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::ConfigError;
use pvbus_bus::config::Section;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// `host:port` of the remote broker.
    pub remote: Option<String>,
    pub tls: bool,
    /// PEM file of the CA(s) that signed the remote's certificate; the system's roots
    /// when absent.
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (first line), readable only by the service.
    pub password_file: Option<PathBuf>,
    pub client_id: Option<String>,
    /// The prefix of this site on the remote broker.
    pub remote_base: Option<String>,
    /// Topic filters, relative to `[bus] base`, of what goes out.
    pub forward: Vec<String>,
    /// Command topic filters, relative to both bases, taken in from the remote.
    pub accept: Vec<String>,
    #[serde(deserialize_with = "pvbus_bus::config::duration")]
    pub state_interval: Duration,
    #[serde(deserialize_with = "pvbus_bus::config::duration")]
    pub keep_alive: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            remote: None,
            tls: true,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password: None,
            password_file: None,
            client_id: None,
            remote_base: None,
            forward: vec!["#".into()],
            accept: vec!["relays/+/mode/set".into()],
            state_interval: Duration::from_secs(60),
            keep_alive: Duration::from_secs(60),
        }
    }
}

impl Section for CloudConfig {
    const NAME: &'static str = "cloud";

    /// Checks what serde cannot; errors name the key (`cloud.accept[1]`).
    fn validate(&self) -> Result<(), ConfigError> {
        let Some(remote) = &self.remote else {
            return Err(ConfigError::invalid(
                "cloud.remote",
                "required: the remote broker as host:port, e.g. \"mqtt.example.org:8883\"",
            ));
        };
        if split_host_port(remote).is_none() {
            return Err(ConfigError::invalid(
                "cloud.remote",
                format!("{remote:?} is not host:port (e.g. \"mqtt.example.org:8883\")"),
            ));
        }
        let Some(remote_base) = &self.remote_base else {
            return Err(ConfigError::invalid(
                "cloud.remote_base",
                "required: this site's prefix on the remote broker, unique per site, e.g. \"sites/cabin\"",
            ));
        };
        if remote_base.is_empty()
            || remote_base.starts_with('/')
            || remote_base.contains(['+', '#'])
            || remote_base.split('/').any(str::is_empty)
        {
            return Err(ConfigError::invalid(
                "cloud.remote_base",
                format!(
                    "{remote_base:?} is not a topic prefix: use levels such as `sites/cabin`, without +, # or empty levels"
                ),
            ));
        }
        for (i, filter) in self.forward.iter().enumerate() {
            check_filter(filter).map_err(|m| {
                ConfigError::invalid(format!("cloud.forward[{i}]"), format!("{filter:?}: {m}"))
            })?;
        }
        for (i, filter) in self.accept.iter().enumerate() {
            let key = format!("cloud.accept[{i}]");
            check_filter(filter)
                .map_err(|m| ConfigError::invalid(key.clone(), format!("{filter:?}: {m}")))?;
            if !filter.ends_with("/set") {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "{filter:?} does not end in /set: only commands are taken from the remote, never states or readings"
                    ),
                ));
            }
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "cloud.client_key_file",
                    "cloud.client_cert_file needs its private key here",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "cloud.client_cert_file",
                    "cloud.client_key_file needs its certificate here",
                ));
            }
            _ => {}
        }
        if !self.tls {
            for (key, set) in [
                ("cloud.ca_file", self.ca_file.is_some()),
                ("cloud.client_cert_file", self.client_cert_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::invalid(key, "needs cloud.tls = true"));
                }
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(ConfigError::invalid(
                "cloud.password_file",
                "set either cloud.password or cloud.password_file, not both",
            ));
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return Err(ConfigError::invalid(
                "cloud.username",
                "a password needs a user name",
            ));
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err(ConfigError::invalid(
                "cloud.client_id",
                "must be 1 to 128 characters",
            ));
        }
        if self.keep_alive < Duration::from_secs(5) || self.keep_alive > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "cloud.keep_alive",
                "must be between 5 s and 1 h",
            ));
        }
        Ok(())
    }
}

impl CloudConfig {
    /// `(host, port)` of the remote; call after [`validate`](Self::validate).
    pub fn remote_endpoint(&self) -> (String, u16) {
        self.remote
            .as_deref()
            .and_then(split_host_port)
            .unwrap_or_else(|| ("localhost".into(), 8883))
    }

    /// The remote prefix; call after [`validate`](Self::validate).
    pub fn remote_base(&self) -> &str {
        self.remote_base.as_deref().unwrap_or("pvbus")
    }

    /// The configured client id, else one made from `remote_base`: unique per site,
    /// unlike the host name (every Raspberry Pi is `raspberrypi`, and two bridges with
    /// the same id take the connection from each other in a loop).
    pub fn client_id(&self) -> String {
        match &self.client_id {
            Some(id) => id.clone(),
            None => {
                let site: String = self
                    .remote_base()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                format!("pvbus-cloud-{site}")
            }
        }
    }

    /// The password: from the config, or the first line of `password_file` (read at
    /// every connection, so that a changed file is picked up without a restart).
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cloud.password_file {}: cannot read: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(format!(
                "cloud.password_file {}: empty (the password is its first line)",
                path.display()
            ));
        }
        Ok(Some(line))
    }
}

fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_matches(['[', ']']);
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

/// An MQTT topic filter relative to a base: no leading `/`, `#` only as the whole last
/// level, `+` only as a whole level.
fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty filter");
    }
    if filter.starts_with('/') {
        return Err("relative to the base: no leading /");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("# must be the whole last level");
        }
        if level.contains('+') && *level != "+" {
            return Err("+ must be a whole level");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::config::Settings;

    const MINIMAL: &str =
        "[cloud]\nremote = \"mqtt.example.org:8883\"\nremote_base = \"sites/cabin\"\n";

    fn load(toml: &str) -> Result<CloudConfig, ConfigError> {
        Settings::from_toml(toml)?.load_section()
    }

    fn error(extra: &str) -> String {
        load(&format!("{MINIMAL}{extra}")).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_section_gets_safe_defaults() {
        let c = load(MINIMAL).unwrap();
        assert!(c.tls);
        assert_eq!(c.forward, ["#"]);
        assert_eq!(c.accept, ["relays/+/mode/set"]);
        assert_eq!(c.state_interval, Duration::from_secs(60));
        assert_eq!(c.remote_endpoint(), ("mqtt.example.org".into(), 8883));
        assert_eq!(c.client_id(), "pvbus-cloud-sites-cabin");
        assert_eq!(c.password().unwrap(), None);
    }

    #[test]
    fn durations_as_text_or_seconds() {
        let c = load(&format!(
            "{MINIMAL}state_interval = \"5m\"\nkeep_alive = 30\n"
        ))
        .unwrap();
        assert_eq!(c.state_interval, Duration::from_secs(300));
        assert_eq!(c.keep_alive, Duration::from_secs(30));
        assert!(error("state_interval = \"soon\"\n").contains("cloud.state_interval"));
    }

    #[test]
    fn remote_and_remote_base_are_required() {
        let e = load("[cloud]\nremote_base = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`cloud.remote`") && e.contains("required"),
            "{e}"
        );
        let e = load("[cloud]\nremote = \"h:1\"\n").unwrap_err().to_string();
        assert!(e.contains("`cloud.remote_base`"), "{e}");
        let e = load("[cloud]\nremote = \"mqtt.example.org\"\nremote_base = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`cloud.remote`") && e.contains("host:port"),
            "{e}"
        );
        let e = load("[cloud]\nremote = \"h:1\"\nremote_base = \"a/+/b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cloud.remote_base`"), "{e}");
    }

    #[test]
    fn accept_filters_must_be_commands() {
        let e = error("accept = [\"relays/+/mode/set\", \"relays/+/state\"]\n");
        assert!(e.contains("`cloud.accept[1]`") && e.contains("/set"), "{e}");
        let e = error("accept = [\"#\"]\n");
        assert!(e.contains("`cloud.accept[0]`"), "{e}");
        let e = error("accept = [\"relays/#/set\"]\n");
        assert!(e.contains("`cloud.accept[0]`") && e.contains('#'), "{e}");
        let c = load(&format!(
            "{MINIMAL}accept = [\"relays/+/mode/set\", \"vedirect/+/load_output/set\"]\n"
        ))
        .unwrap();
        assert_eq!(c.accept.len(), 2);
    }

    #[test]
    fn forward_filters_are_checked() {
        let e = error("forward = [\"relays/#\", \"/site/state\"]\n");
        assert!(e.contains("`cloud.forward[1]`"), "{e}");
        let e = error("forward = [\"relays/pu+/state\"]\n");
        assert!(e.contains("`cloud.forward[0]`") && e.contains('+'), "{e}");
    }

    #[test]
    fn credentials_are_consistent() {
        let e = error("username = \"u\"\npassword = \"p\"\npassword_file = \"/x\"\n");
        assert!(
            e.contains("`cloud.password_file`") && e.contains("not both"),
            "{e}"
        );
        let e = error("password = \"p\"\n");
        assert!(e.contains("`cloud.username`"), "{e}");
        let e = error("client_cert_file = \"/c.pem\"\n");
        assert!(e.contains("`cloud.client_key_file`"), "{e}");
        let e = error("tls = false\nca_file = \"/ca.pem\"\n");
        assert!(e.contains("`cloud.ca_file`") && e.contains("tls"), "{e}");
        let e = error("pasword = \"p\"\n");
        assert!(e.contains("pasword"), "{e}");
    }

    #[test]
    fn the_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let c = load(&format!(
            "{MINIMAL}username = \"u\"\npassword_file = \"{}\"\n",
            path.display()
        ))
        .unwrap();
        assert_eq!(c.password().unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&path, "").unwrap();
        assert!(c.password().unwrap_err().contains("empty"));
        std::fs::remove_file(&path).unwrap();
        let e = c.password().unwrap_err();
        assert!(
            e.contains("cloud.password_file") && e.contains("cannot read"),
            "{e}"
        );
    }
}
