//! `pvbus config check FILE`: loads the file like the processes would (defaults, file,
//! environment) and validates every section with the owning crate's own rules, so that a
//! mistake is reported before anything starts, with the key (or line and column) that is
//! wrong. Every error is reported, not just the first.

use std::path::Path;

use anyhow::{Result, bail};
use pvbus_bus::config::Settings;

/// A section of the file and how the crate that owns it validates it.
struct Section {
    name: &'static str,
    check: fn(&Settings) -> Vec<String>,
}

fn one<T, E: std::fmt::Display>(r: Result<T, E>) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

fn sections() -> Vec<Section> {
    vec![
        Section {
            name: "bus",
            check: |s| one(s.bus()),
        },
        Section {
            name: "broker",
            check: |s| {
                one(s
                    .section::<pvbus_broker::BrokerConfig>("broker")
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.validate().map_err(|e| format!("broker: {e}"))))
            },
        },
        Section {
            name: "vedirect",
            check: |s| one(pvbus_vedirect_bridge::config::load(s)),
        },
        Section {
            name: "relays",
            check: |s| one(pvbus_relays::config::load(s)),
        },
        Section {
            name: "rules",
            check: rules,
        },
        // [site] (time zone, position, surplus method) is read by the rules with their
        // own positions in the file: checked together with [rules].
        Section {
            name: "site",
            check: |_| Vec::new(),
        },
        Section {
            name: "homeassistant",
            check: |s| {
                one(s
                    .section::<pvbus_homeassistant::config::HomeAssistantConfig>("homeassistant")
                    .and_then(|c| c.validate()))
            },
        },
        Section {
            name: "plugins",
            check: |s| one(pvbus_plugins::config::load(s)),
        },
        Section {
            name: "tm1638",
            check: |s| one(pvbus_panel::load_tm1638(s)),
        },
        Section {
            name: "lcd",
            check: |s| one(pvbus_panel::load_lcd(s)),
        },
        Section {
            name: "supervisor",
            check: |s| one(crate::supervisor::config::load(s)),
        },
    ]
}

/// Rules are read from the file itself (not the merged settings) so that errors point at
/// a line and column.
fn rules(settings: &Settings) -> Vec<String> {
    let path = Path::new(settings.origin());
    if !settings.sections().iter().any(|s| s == "rules") || !path.is_file() {
        return Vec::new();
    }
    match pvbus_rules::simulate::check(path) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// Every error found, as printable lines.
pub fn check(settings: &Settings) -> Vec<String> {
    let known = sections();
    let mut errors = Vec::new();
    for present in settings.sections() {
        if !known.iter().any(|s| s.name == present) {
            let names: Vec<_> = known.iter().map(|s| s.name).collect();
            errors.push(format!(
                "{}: unknown section [{present}]; known sections: {}",
                settings.origin(),
                names.join(", ")
            ));
        }
    }
    for section in &known {
        errors.extend((section.check)(settings));
    }
    errors
}

pub fn run(file: &Path) -> Result<()> {
    let settings = Settings::load(Some(file))?;
    let errors = check(&settings);
    if errors.is_empty() {
        println!("{}: ok", file.display());
        return Ok(());
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    bail!("{} error(s) in {}", errors.len(), file.display())
}
