//! `pvbus homeassistant`: Home Assistant MQTT discovery, as one module of its own that
//! reads only the bus (like zigbee2mqtt's extension). It learns devices from their
//! retained `state` objects, relays from their retained `mode`, the site and the rules
//! from theirs, and keeps one retained device-discovery config per thing on
//! `<discovery_prefix>/device/<node_id>/config` (HA 2024.11 and later).
//!
//! Layout:
//! - [`readings`]: the table from a standard reading name to how HA shows it (device
//!   class, unit, state class, precision, diagnostic).
//! - [`inventory`]: what the bus says exists, learned message by message.
//! - [`discovery`]: the discovery payloads, pure functions of the inventory.
//! - [`config`]: the `[homeassistant]` section.
//! - [`process`]: the bus loop: listen, announce, remove, re-announce when HA restarts.
//! - [`Cli`] and [`main`]: the `pvbus homeassistant` subcommand.

pub mod config;
pub mod discovery;
pub mod inventory;
pub mod process;
pub mod readings;

use std::path::PathBuf;

use pvbus_bus::Shutdown;
use pvbus_bus::config::Settings;

pub use config::HomeAssistantConfig;
pub use process::{PROCESS, run};

/// Announces every device, relay and the site to Home Assistant by MQTT discovery, and
/// removes what disappears from the bus.
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// The configuration file (its `[homeassistant]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `pvbus homeassistant`.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    pvbus_bus::logging::init(PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let mut config: HomeAssistantConfig = settings.load_section()?;
    // People name their relays once, in `[relays]`; HA shows those names unless
    // `[homeassistant.names]` says otherwise. The relay bridge reports its own config
    // errors, so a section it would refuse is simply not read here.
    if let Ok(relays) = settings.section::<RelayNames>("relays") {
        for relay in relays.relay {
            if let Some(name) = relay.name {
                config.names.entry(relay.id.to_string()).or_insert(name);
            }
        }
    }
    let bus = settings.bus()?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    run(config, bus, shutdown).await
}

/// The names in `[[relays.relay]]`, and nothing else of that section.
#[derive(Debug, Default, serde::Deserialize)]
struct RelayNames {
    #[serde(default)]
    relay: Vec<NamedRelay>,
}

#[derive(Debug, serde::Deserialize)]
struct NamedRelay {
    id: RelayId,
    #[serde(default)]
    name: Option<String>,
}

/// Relay ids may be written as numbers (`id = 3`).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum RelayId {
    Text(String),
    Number(i64),
}

impl std::fmt::Display for RelayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayId::Text(t) => f.write_str(t),
            RelayId::Number(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_names_are_read_from_the_relays_section() {
        let s = Settings::from_toml(
            "[relays]\nstate_dir = \"/x\"\n[[relays.relay]]\nid = \"pump\"\nname = \"Well pump\"\npin = 27\n[[relays.relay]]\nid = 3\npin = 4\n",
        )
        .unwrap();
        let names: RelayNames = s.section("relays").unwrap();
        let got: Vec<(String, Option<String>)> = names
            .relay
            .into_iter()
            .map(|r| (r.id.to_string(), r.name))
            .collect();
        assert_eq!(
            got,
            [
                ("pump".into(), Some("Well pump".into())),
                ("3".into(), None)
            ]
        );
    }
}
