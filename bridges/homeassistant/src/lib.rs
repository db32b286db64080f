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

pub use config::{HomeAssistantConfig, LcdPanel, Panels, Tm1638Panel};
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
    config.panels = panels(&settings);
    let bus = settings.bus()?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    run(config, bus, shutdown).await
}

/// The panels the file configures, read with the panel's own section types. A section
/// the panel process would refuse is left out: that process does not run.
fn panels(settings: &Settings) -> Panels {
    let present = settings.sections();
    let has = |name: &str| present.iter().any(|s| s == name);
    let tm1638 = has("tm1638")
        .then(|| settings.load_section::<pvbus_panel::Tm1638Config>())
        .and_then(Result::ok)
        .map(|c| Tm1638Panel {
            buttons: c.buttons(),
            leds: c.leds(),
            digits: c.digits(),
        });
    let lcd = has("lcd")
        .then(|| settings.load_section::<pvbus_panel::LcdConfig>())
        .and_then(Result::ok)
        .map(|c| LcdPanel {
            pages: c.pages.len(),
        });
    Panels { tm1638, lcd }
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
    fn panels_are_read_from_their_own_sections() {
        let none = Settings::from_toml("[homeassistant]\n").unwrap();
        assert_eq!(panels(&none), Panels::default());
        let both = Settings::from_toml(
            "[tm1638]\nstb = [16, 13]\n[lcd]\nbackend = \"sim\"\nsim_dir = \"/tmp/x\"\npages = [[\"a\"], [\"b\", \"c\"], [\"d\"]]\n",
        )
        .unwrap();
        assert_eq!(
            panels(&both),
            Panels {
                tm1638: Some(Tm1638Panel {
                    buttons: 16,
                    leds: 16,
                    digits: 16
                }),
                lcd: Some(LcdPanel { pages: 3 }),
            }
        );
        let keys16 = Settings::from_toml("[tm1638]\nboard = \"keys16\"\n").unwrap();
        assert_eq!(
            panels(&keys16).tm1638,
            Some(Tm1638Panel {
                buttons: 16,
                leds: 0,
                digits: 8
            })
        );
        // A section its process would refuse: that panel does not run.
        let bad = Settings::from_toml("[tm1638]\nbrightness = 9\n").unwrap();
        assert_eq!(panels(&bad).tm1638, None);
    }

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
