//! `pvbus broker`: the process around [`EmbeddedBroker`] (config, flags, signals), and
//! `pvbus broker hash-password` for `[[broker.lan.users]]`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use pvbus_bus::config::{Section, Settings};

use crate::{BrokerConfig, EmbeddedBroker};

/// The embedded MQTT broker: listens on `[broker] listen` (127.0.0.1:1883), keeps retained
/// messages across restarts in `[broker] data_dir`, and opens `[broker.lan]` with logins.
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// The configuration file (its `[broker]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Listen here instead of `[broker] listen` (a loopback address).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Keep retained messages here instead of `[broker] data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<BrokerCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum BrokerCommand {
    /// Read a password on standard input (one line) and print its Argon2id hash, for
    /// `password_hash` in `[[broker.lan.users]]`: `pvbus broker hash-password < file`.
    HashPassword,
}

/// Runs `pvbus broker` until SIGTERM or Ctrl-C, then saves the retained messages.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    if let Some(BrokerCommand::HashPassword) = cli.command {
        return print_hash();
    }
    pvbus_bus::logging::init("broker");
    let settings = Settings::load(cli.config.as_deref())?;
    let mut config: BrokerConfig = settings.section(BrokerConfig::NAME)?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = cli.data_dir {
        config.data_dir = data_dir;
    }
    config.topic_prefix = settings.bus()?.base;
    settings.check(&config)?;
    let (mut shutdown, _trigger) = pvbus_bus::Shutdown::on_signals();
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(config))
        .await
        .context("broker start task")??;
    shutdown.wait().await;
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .context("broker shutdown task")??;
    Ok(())
}

fn print_hash() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password on standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password on standard input");
    println!("{}", crate::hash_password(password)?);
    Ok(())
}
