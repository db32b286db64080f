//! `pvbus`: one binary, one subcommand per process, so that a Raspberry Pi installs a
//! single file while every process still runs on its own (`pvbus run` starts them as
//! children).
//!
//! Layout: `main.rs` parses the command line and hands each subcommand to the crate that
//! owns it; `config_check.rs` validates a whole configuration file, section by section.

mod config_check;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pvbus",
    version,
    about = "MQTT plugin bus for off-grid solar homes",
    long_about = "pvbus joins Victron VE.Direct devices, a relay board, rules, a local panel \
and plugins on one MQTT bus, so that every watt of solar surplus is used and nothing is \
switched on when the batteries are low.\n\nEach subcommand is one process; `pvbus run` \
starts the embedded broker and every process that the configuration enables. The topics \
are documented in docs/topics.md.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file: every error, with the key or line that is wrong.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate FILE (and the PVBUS_... environment overrides) without starting anything.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One thread is enough for every pvbus process: they wait on I/O, not CPU, and a
    // Pi Zero has little memory for thread stacks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Config {
            action: ConfigAction::Check { file },
        } => config_check::run(&file),
    }
}
