//! The Rust SDK of pvbus plugins: a plugin is a program that `pvbus plugins` starts from
//! its folder, and this crate makes it a few lines long.
//!
//! Layout:
//! - [`env`]: the environment contract (`PVBUS_BROKER`, `PVBUS_BASE`, `PVBUS_PLUGIN_ID`,
//!   `PVBUS_USERNAME`/`PVBUS_PASSWORD`) turned into a bus configuration;
//! - [`plugin`]: [`Plugin`], the plugin's connection: devices and their readings,
//!   availability, commands, errors — the topic contract of docs/topics.md, so that
//!   Home Assistant discovery and the rules see the plugin's devices with no extra work;
//! - [`dylib`]: the dynamic-library ABI (re-exported `pvbus-plugin-abi`), for a plugin
//!   that runs inside the host process instead of as a process of its own.

pub mod env;
pub mod plugin;

pub use pvbus_plugin_abi as dylib;

pub use env::{EnvError, PluginEnv};
pub use plugin::{Command, Plugin};
pub use pvbus_bus::{Bus, Event, Inbox, Message, Shutdown};

/// Structured logs on stderr (`pvbus plugins` logs each line under the plugin's id).
pub fn bus_logging(name: &str) {
    pvbus_bus::logging::init(name);
}

/// A duration as the contract writes them (`90s`, `5m`, `1h30m`, `1d`), or milliseconds
/// (`300ms`): plugin timings can be short.
pub fn parse_span(s: &str) -> Result<std::time::Duration, pvbus_bus::contract::ContractError> {
    match s.trim().strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Ok(std::time::Duration::from_millis(ms)),
        _ => pvbus_bus::contract::parse_duration(s),
    }
}

/// Prints `help` and returns true when the program was run with `--help` or `-h` (a
/// plugin's own arguments are not parsed otherwise: its settings come from the
/// environment).
pub fn wants_help(help: &str) -> bool {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{help}");
        return true;
    }
    false
}
