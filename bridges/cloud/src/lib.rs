//! `pvbus cloud`: a bridge from the local bus to a remote MQTT broker over TLS, so that
//! the site can be seen from anywhere and chosen relays driven remotely (PvMonit's
//! "cloud"), with the embedded broker as well as with mosquitto.
//!
//! Layout:
//! - [`config`]: the `[cloud]` section (remote, TLS files, login, prefixes, filters).
//! - [`route`]: which topics go out, which commands come in, and the outbox that
//!   remembers retained values and holds readings back to one per `state_interval`.
//! - [`tls`]: the rustls client configuration (ring provider) from the files, and the
//!   words for a failed connection.
//! - [`process`]: the glue: the local [`pvbus_bus::Bus`], the remote connection with
//!   its own reconnect loop, the link report on `<base>/cloud/remote`.
//! - [`Cli`] and [`main`]: the `pvbus cloud` subcommand.

pub mod config;
pub mod process;
pub mod route;
pub mod tls;

use std::path::PathBuf;

use pvbus_bus::Shutdown;
use pvbus_bus::config::Settings;

pub use config::CloudConfig;
pub use process::run;

/// The name of this process on the bus.
pub const PROCESS: &str = "cloud";

/// Forwards the local bus to a remote broker over TLS, and takes back only the
/// commands of `[cloud] accept`.
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// The configuration file (its `[cloud]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `pvbus cloud`.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    pvbus_bus::logging::init(PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let config: CloudConfig = settings.load_section()?;
    let bus = settings.bus()?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    run(config, bus, shutdown).await
}
