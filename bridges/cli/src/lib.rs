//! `pvbus relay`, `pvbus get`, `pvbus watch`: thin shell commands over the same MQTT
//! topic contract as `mosquitto_pub`/`mosquitto_sub` (docs/cookbook.md), with friendlier
//! arguments and errors that say what to check.
//!
//! Layout:
//! - [`session`]: a short-lived MQTT session over the bus client as a tool (own client
//!   id, no last will, fails at once) with a "subscribe, then wait for every retained
//!   message" step.
//! - [`relay`]: `pvbus relay <id> forced-on|forced-off|auto [--for 2h|--until 18:00]`:
//!   sends the command and waits for the relay bridge to confirm or refuse it.
//! - [`get`]: `pvbus get <path>`: one value (`mppt_roof.battery_voltage`,
//!   `relays.pump.mode`, `site.pv_power`) from the retained state, for scripts.
//! - [`watch`]: `pvbus watch [filter]`: every message, one `topic payload` line each.

pub mod get;
pub mod relay;
pub mod session;
pub mod watch;

use std::path::{Path, PathBuf};

use pvbus_bus::config::{BusConfig, Settings};

/// What goes wrong in a command, worded for the person who typed it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach the MQTT broker at {endpoint}: {reason}\n  is `pvbus run` running? \
         Point elsewhere with --config FILE ([bus] external_broker) or \
         PVBUS_BUS__EXTERNAL_BROKER=host:port"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error(
        "the MQTT broker at {endpoint} refused us ({reason}): check [bus] username and password"
    )]
    Refused { endpoint: String, reason: String },
    #[error("lost the connection to the MQTT broker at {endpoint}: {reason}")]
    Lost { endpoint: String, reason: String },
    #[error("{0}")]
    Config(#[from] pvbus_bus::ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("no relay `{id}` on the bus; {known}")]
    UnknownRelay { id: String, known: String },
    #[error("relay `{id}` refused the command: {error}")]
    Rejected { id: String, error: String },
    #[error(
        "relay `{id}` did not confirm within {secs} s: the relay bridge is {status}\n  \
         (see `pvbus watch relays`)"
    )]
    NoAnswer {
        id: String,
        secs: u64,
        status: String,
    },
    #[error("nothing on the bus at `{path}`; {hint}")]
    NotFound { path: String, hint: String },
}

/// The `[bus]` section of `config` (or defaults and `PVBUS_...` variables).
pub fn bus_config(config: Option<&Path>) -> Result<BusConfig, CliError> {
    Ok(Settings::load(config)?.bus()?)
}

/// The `--config` option every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (for `[bus]`); without it, 127.0.0.1:1883 and base `pvbus`.
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `a, b and c` for messages.
pub(crate) fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `pvbus relay`: prints the confirmation, or fails with the reason.
pub async fn relay_main(args: relay::RelayArgs) -> anyhow::Result<()> {
    let line = relay::run(args).await.unwrap_or_else(|e| fail(e));
    println!("{line}");
    Ok(())
}

/// `pvbus get`: prints the value bare (warnings go to stderr).
pub async fn get_main(args: get::GetArgs) -> anyhow::Result<()> {
    let got = get::run(args).await.unwrap_or_else(|e| fail(e));
    if let Some(w) = &got.warning {
        eprintln!("warning: {w}");
    }
    println!("{}", got.value);
    Ok(())
}

/// `pvbus watch`: until Ctrl-C, SIGTERM or the reader goes away.
pub async fn watch_main(args: watch::WatchArgs) -> anyhow::Result<()> {
    let (shutdown, _trigger) = pvbus_bus::Shutdown::on_signals();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    watch::run(args, &mut out, shutdown)
        .await
        .unwrap_or_else(|e| fail(e));
    Ok(())
}

/// Prints the error once, for a person (no backtrace, no debug form), and exits 1.
fn fail(e: CliError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}
