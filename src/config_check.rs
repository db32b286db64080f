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

/// A section that its crate reads with [`Settings::load_section`]; the name comes with it.
fn loaded<T: pvbus_bus::config::Section>() -> Section {
    Section {
        name: T::NAME,
        check: |s| one(s.load_section::<T>()),
    }
}

fn sections() -> Vec<Section> {
    vec![
        Section {
            name: "bus",
            check: |s| one(s.bus()),
        },
        loaded::<pvbus_broker::BrokerConfig>(),
        loaded::<pvbus_vedirect_bridge::VedirectConfig>(),
        loaded::<pvbus_relays::config::RelaysConfig>(),
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
        loaded::<pvbus_homeassistant::config::HomeAssistantConfig>(),
        loaded::<pvbus_plugins::config::PluginsConfig>(),
        loaded::<pvbus_panel::Tm1638Config>(),
        loaded::<pvbus_panel::LcdConfig>(),
        loaded::<crate::supervisor::config::SupervisorConfig>(),
        // [cloud] has required keys: checked only when present (absent = no bridge).
        Section {
            name: "cloud",
            check: |s| {
                if s.sections().iter().any(|n| n == "cloud") {
                    one(s.load_section::<pvbus_cloud::CloudConfig>())
                } else {
                    Vec::new()
                }
            },
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
