//! `pvbus import-pvmonit`: turns a PvMonit `config.yaml` into a pvbus configuration file.
//!
//! Layout:
//! - `pvmonit`: reads the YAML file (over PvMonit's own defaults) into what can be
//!   carried over, and lists the settings that cannot, with the reason;
//! - `wiringpi`: the wiringPi → BCM pin table (the one of docs/wiringpi-to-bcm.md);
//! - `ids`: names for people ("Box Internet") to topic ids (`box_internet`);
//! - `render`: writes the TOML file, each value commented with its origin;
//! - `cli`: the subcommand (read a file, write stdout or a file).
//!
//! ```
//! let yaml = "deviceCorrespondance:\n  HQ2150ABCDE: MpttToit\n\
//!             domo:\n  relayNb: 1\n  relayName:\n    1: Pompe\n  relayWiringPi:\n    1: 0\n";
//! let imported = pvbus_pvmonit_import::import(yaml, "config.yaml").unwrap();
//! assert!(imported.toml.contains("HQ2150ABCDE = \"mptt_toit\""));
//! assert!(imported.toml.contains("id = \"pompe\"\nname = \"Pompe\"\npin = 17\n"));
//! ```

mod cli;
mod ids;
mod pvmonit;
mod render;
pub mod wiringpi;

pub use cli::{Cli, main};
pub use ids::id_from_name;
pub use pvmonit::{Lcd, LeftOut, PvmonitConfig, Relay, Tm1638};
pub use render::Imported;

/// Why a PvMonit file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("YAML syntax error at line {line}, column {column}: {message}")]
    Yaml {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{key}: expected {expected}, found {found}")]
    Value {
        key: String,
        expected: &'static str,
        found: String,
    },
}

/// Reads PvMonit's `yaml` (named `source` in the output's comments) and writes the pvbus
/// configuration.
pub fn import(yaml: &str, source: &str) -> Result<Imported, ImportError> {
    let config = PvmonitConfig::from_yaml(yaml)?;
    Ok(render::render(&config, source))
}
