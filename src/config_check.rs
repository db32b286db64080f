//! `pvbus config check FILE`: loads the file like the processes would (defaults, file,
//! environment) and validates every section with the owning crate's own rules, so that a
//! mistake is reported before anything starts, with the key that is wrong.

use std::path::Path;

use anyhow::{Result, bail};
use pvbus_bus::config::{ConfigError, Settings};

/// A section of the file and how to validate it.
struct Section {
    name: &'static str,
    check: fn(&Settings) -> Result<(), ConfigError>,
}

fn sections() -> Vec<Section> {
    vec![Section {
        name: "bus",
        check: |s| s.bus().map(|_| ()),
    }]
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
        if let Err(e) = (section.check)(settings) {
            errors.push(e.to_string());
        }
    }
    errors
}

pub fn run(file: &Path) -> Result<()> {
    let settings = match Settings::load(Some(file)) {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
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
