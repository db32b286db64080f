//! `pvbus relays`: the one process that owns every relay output, so that Home
//! Assistant, rules, buttons and scripts never fight over one.
//!
//! Layout:
//! - [`config`]: the `[relays]` section (pins, active level, stale-data safety).
//! - [`command`]: `mode/set` and `auto/set` payloads to commands, each bad input
//!   with its own error.
//! - [`machine`]: the pure state machine: modes, time-scoped overrides, the
//!   stale-data safety; it is given the time and says what changed.
//! - [`store`]: `state.json` (atomic, fsynced, only on change) and the bounded,
//!   rotating history.
//! - [`stats`]: today's on-time and switch count, rebuilt from the history.
//! - [`process`]: the glue to GPIO, disk and bus, in a single task.
//! - [`Cli`] and [`main`]: the `pvbus relays` subcommand and `pvbus relays history`.

pub mod command;
pub mod config;
pub mod machine;
pub mod process;
pub mod stats;
pub mod store;

use std::path::PathBuf;

use anyhow::Context;
use pvbus_bus::Shutdown;
use pvbus_bus::config::Settings;

pub use config::{OnStale, RelayConfig, RelaysConfig};
pub use process::run;

/// Owns the relay outputs: modes from people, auto/set from rules, time-scoped
/// overrides, and a safety that switches auto relays off when the rules go quiet.
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// The configuration file (its `[relays]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<RelaysCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RelaysCommand {
    /// Print the event log: every change of mode or output, oldest first.
    History {
        /// Only this relay.
        id: Option<String>,
        /// Only the last N events.
        #[arg(long, short = 'n', value_name = "N")]
        last: Option<usize>,
        /// One JSON object per line, as stored.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `pvbus relays` (or its `history` subcommand).
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    pvbus_bus::logging::init(process::PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let mut config: config::RelaysConfig = settings.load_section()?;
    config.zone = config::site_zone(&settings)?;
    if let Some(RelaysCommand::History { id, last, json }) = cli.command {
        return print_history(&config, id.as_deref(), last, json);
    }
    let bus = settings.bus()?;
    let gpio = pvbus_hardware::open_gpio(&config.gpio).context("opening the GPIO")?;
    tracing::info!(backend = gpio.name(), "GPIO open");
    let (shutdown, _trigger) = Shutdown::on_signals();
    run(config, bus, gpio, shutdown).await
}

fn print_history(
    config: &RelaysConfig,
    id: Option<&str>,
    last: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(id) = id
        && !config.relay.iter().any(|r| r.id == id)
    {
        let known: Vec<&str> = config.relay.iter().map(|r| r.id.as_str()).collect();
        anyhow::bail!("unknown relay {id:?} (relays: {})", known.join(", "));
    }
    let history = store::read_history(&config.state_dir)?;
    let zone = config
        .zone
        .clone()
        .unwrap_or_else(jiff::tz::TimeZone::system);
    let events: Vec<&store::HistoryEvent> = history
        .events
        .iter()
        .filter(|e| id.is_none_or(|id| e.relay == id))
        .collect();
    let skip = last.map_or(0, |n| events.len().saturating_sub(n));
    let mut out = String::new();
    for event in &events[skip..] {
        if json {
            out.push_str(&serde_json::to_string(event)?);
        } else {
            let state = |on: bool| if on { "ON" } else { "OFF" };
            let switched = if event.on == event.prev_on {
                format!("{:3}     ", state(event.on))
            } else {
                format!("{:3} > {:3}", state(event.prev_on), state(event.on))
            };
            out.push_str(&format!(
                "{}  {:<16} {:<10} > {:<10} {}  {:<16} {}",
                machine::format_ts(event.ts as u64, &zone),
                event.relay,
                event.prev_mode.as_str(),
                event.mode.as_str(),
                switched,
                serde_json::to_value(event.by)?.as_str().unwrap_or("?"),
                event.text
            ));
        }
        out.push('\n');
    }
    if events.is_empty() {
        eprintln!("no relay events yet in {}", config.state_dir.display());
    }
    for skipped in &history.skipped {
        eprintln!("skipped unreadable line: {skipped}");
    }
    print!("{out}");
    Ok(())
}
