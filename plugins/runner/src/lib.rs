//! `pvbus plugins`: every plugin of an installation, in one process that `pvbus run`
//! supervises like any other.
//!
//! Layout:
//! - [`config`]: the `[plugins]` section (folder, timings, `[[plugins.exec]]`,
//!   `[[plugins.dylib]]`), validated with errors that name the key;
//! - [`folder`]: which files of the plugins folder are plugins, and the inotify watch
//!   that reports files added, rewritten and removed;
//! - [`child`]: one folder executable kept running: environment contract, restart with
//!   backoff, crash loops, floods and "never online" reported, stop by process group;
//! - [`logs`]: plugin output logged under the plugin's id, rate-limited;
//! - [`exec`]: PvMonit's `key:value` scripts run on a timer and published as a device;
//! - [`dylib`]: the host of dynamic-library plugins (its unsafe code is in
//!   `dylib::ffi`; the only other unsafe lines register the inotify descriptor with tokio
//!   and set the plugins' parent-death signal, each with its reason);
//! - [`health`]: each plugin's state, retained on `<base>/plugins/<id>/health`;
//! - [`process`]: the process itself, and [`main`] for the `pvbus plugins` subcommand.

pub mod child;
pub mod config;
pub mod dylib;
pub mod exec;
pub mod folder;
pub mod health;
pub mod logs;
pub mod process;

use std::path::PathBuf;

use pvbus_bus::Shutdown;
use pvbus_bus::config::Settings;

pub use config::PluginsConfig;
pub use process::{PROCESS, plugin_env, run};

/// Runs the plugins of the configuration: the executables of the plugins folder (each
/// started with PVBUS_BROKER, PVBUS_BASE and PVBUS_PLUGIN_ID, restarted when it dies,
/// stopped when its file is removed), the `exec` scripts that print `key:value` lines,
/// and the dynamic-library plugins. Each plugin's state is on <base>/plugins/<id>/health.
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// The configuration file (its `[plugins]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `pvbus plugins`.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    pvbus_bus::logging::init(PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let config: config::PluginsConfig = settings.load_section()?;
    let bus = settings.bus()?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    run(config, bus, shutdown).await
}
