//! The local panel: `pvbus tm1638` (relay LEDs, mode digits and buttons) and `pvbus lcd`
//! (pages of values, backlight, buttons), each a process that glues a driver crate
//! (`tm1638`, `hd44780-mcp23017`) to the bus.
//!
//! Layout:
//! - [`config`]: the `[tm1638]` and `[lcd]` sections, and the relay order both use.
//! - [`values`]: what the panel knows of the bus (readings, site totals, relays).
//! - [`template`]: LCD lines as templates over those values.
//! - [`scan`]: when buttons are read: fast while in use, slower when idle, one wake-up
//!   per scan.
//! - [`tm1638_process`]: the `pvbus tm1638` process.
//! - [`lcd_process`]: the `pvbus lcd` process.
//! - [`Tm1638Cli`], [`LcdCli`] and their `main`s: the subcommands.
//!
//! With the `sim` backend, each process attaches the wire-level model of its hardware,
//! draws it into `<sim_dir>/tm1638.txt` or `<sim_dir>/lcd.txt`, and listens on
//! `<base>/<process>/sim/press` for button presses (docs/panel.md).

pub mod config;
pub mod lcd_process;
pub mod scan;
pub mod template;
pub mod tm1638_process;
pub mod values;

use std::path::PathBuf;

use pvbus_bus::Shutdown;
use pvbus_bus::config::Settings;

pub use config::{LcdConfig, Tm1638Config};

/// Shows relay states and modes on a TM1638 board, and sets modes with its buttons.
#[derive(Debug, clap::Args)]
pub struct Tm1638Cli {
    /// The configuration file (its `[tm1638]`, `[relays]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Shows pages of values on the 16x2 LCD plate, coloured by the state of charge.
#[derive(Debug, clap::Args)]
pub struct LcdCli {
    /// The configuration file (its `[lcd]`, `[relays]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `pvbus tm1638`.
pub async fn tm1638_main(cli: Tm1638Cli) -> anyhow::Result<()> {
    pvbus_bus::logging::init(tm1638_process::PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let config: Tm1638Config = settings.load_section()?;
    let relays = if config.relays.is_empty() {
        config::relay_order(&settings)
    } else {
        config.relays.clone()
    };
    let bus = settings.bus()?;
    let hardware = tm1638_process::Hardware::open(&config)?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    tm1638_process::run(config, relays, bus, hardware, shutdown).await
}

/// Runs `pvbus lcd`.
pub async fn lcd_main(cli: LcdCli) -> anyhow::Result<()> {
    pvbus_bus::logging::init(lcd_process::PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let config: LcdConfig = settings.load_section()?;
    let relays = if config.relays.is_empty() {
        config::relay_order(&settings)
    } else {
        config.relays.clone()
    };
    let bus = settings.bus()?;
    let hardware = lcd_process::Hardware::open(&config)?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    lcd_process::run(config, relays, bus, hardware, shutdown).await
}
