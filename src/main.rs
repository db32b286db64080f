//! `pvbus`: one binary, one subcommand per process, so that a Raspberry Pi installs a
//! single file while every process still runs on its own (`pvbus run` starts them as
//! children).
//!
//! Layout: `main.rs` parses the command line and hands each subcommand to the crate that
//! owns it; `config_check.rs` validates a whole configuration file, section by section.

mod config_check;
mod status;
mod supervisor;

use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Run everything: the broker, then every process the configuration enables, each as
    /// a child process restarted when it crashes; SIGTERM or Ctrl-C stops them all.
    ///
    /// Starts the embedded broker (unless [bus] external_broker is set or [broker] enabled
    /// = false) and waits until it accepts connections; then the [[supervisor.simulator]]
    /// entries; then every process whose section is in FILE (or those listed in
    /// [supervisor] processes); then the [[supervisor.program]] entries. A child that exits
    /// is started again after restart_delay_secs (1 s), doubling while it keeps crashing, up
    /// to restart_delay_max_secs (60 s). The table of children (pid, state, restarts, last
    /// exit) is published, retained, on <base>/supervisor/processes. SIGTERM or Ctrl-C stops
    /// the processes, then the simulators, then the broker, each given stop_timeout_secs
    /// (5 s) before SIGKILL; the children die with pvbus even if it is killed.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// The embedded MQTT broker; `hash-password` makes a LAN user's password_hash.
    ///
    /// Listens on [broker] listen (127.0.0.1:1883) without login, and on [broker.lan] with
    /// user names and Argon2 password hashes. Every retained message reaches every new
    /// subscriber, and retained messages survive restarts ([broker] data_dir). SIGTERM or
    /// Ctrl-C saves and stops. See docs/broker.md.
    Broker(pvbus_broker::Cli),
    /// Show the bus live in the terminal: processes, devices, relays, rules.
    ///
    /// Reads only MQTT (<base>/#, from [bus] of FILE), so it shows what Home Assistant and
    /// mosquitto_sub see, from any machine that reaches the broker. Redraws when something
    /// changes, at most four times a second; Ctrl-C quits. With --once it prints one picture
    /// after the retained messages have arrived, without colours unless on a terminal.
    Status {
        /// The TOML configuration file (for [bus]); without it, 127.0.0.1:1883 and `pvbus`.
        #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one picture once the retained state has arrived, and exit.
        #[arg(long)]
        once: bool,
    },
    /// Check a configuration file: every error, with the key or line that is wrong.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Own the relay outputs: modes, overrides, stale-data safety, history.
    ///
    /// One process owns every relay, so that people, Home Assistant, rules, buttons and
    /// scripts never fight over an output. Modes: forced_off, auto_off, auto_on,
    /// forced_on (0..3). People send <base>/relays/<id>/mode/set (forced_off, auto,
    /// forced_on, a number, or an override such as {"mode":"forced_on","for":"2h"});
    /// rules send <base>/relays/<id>/auto/set ON/OFF, obeyed only in auto modes. When the
    /// rules fall silent for `[relays] stale_after`, auto_on relays go auto_off. Forced
    /// modes and overrides survive restarts; outputs never glitch. See docs/relays.md.
    Relays(pvbus_relays::Cli),
    /// Run the rules: on/off conditions per relay, evaluated when readings arrive, each
    /// decision with its reason; `check` validates them, `simulate` replays a scenario.
    Rules(pvbus_rules::Cli),
    /// Read Victron VE.Direct devices and publish them; `decode` debugs a cable or capture.
    Vedirect(pvbus_vedirect_bridge::Cli),
    /// Announce every device, relay and the site to Home Assistant (MQTT discovery).
    Homeassistant(pvbus_homeassistant::Cli),
    /// Run the plugins: a watched folder of executables, key:value scripts, libraries.
    ///
    /// Every executable of the [plugins] folder runs with PVBUS_BROKER, PVBUS_BASE and
    /// PVBUS_PLUGIN_ID in its environment, is restarted with a growing delay when it
    /// dies, and stops when its file is removed; [[plugins.exec]] commands print PvMonit
    /// key:value lines that become a device's readings; [[plugins.dylib]] libraries run
    /// inside this process. Each plugin's state: <base>/plugins/<id>/health. See
    /// docs/plugins.md.
    Plugins(pvbus_plugins::Cli),
    /// Bridge the bus to a remote MQTT broker over TLS (see the site from anywhere).
    ///
    /// Every local topic of [cloud] forward (default: all) appears on the remote broker
    /// under [cloud] remote_base, retained as the topic contract says; retained values are
    /// sent again after every reconnect. Device readings are held back to one per topic per
    /// state_interval (60 s), latest value winning, for metered links; relay states,
    /// availability and errors go at once. Commands (.../set) never go out; from the
    /// remote, only non-retained commands matching [cloud] accept (default:
    /// relays/+/mode/set) come in. The link's state is on <base>/cloud/remote, and
    /// <remote_base>/cloud/status is online/offline on the remote. See docs/cloud.md.
    Cloud(pvbus_cloud::Cli),
    /// Set a relay's mode (forced-on, forced-off, auto), for good or `--for 2h`.
    Relay(pvbus_cli::relay::RelayArgs),
    /// Print one value from the bus: mppt_roof.battery_voltage, site.pv_power, relays.pump.
    Get(pvbus_cli::get::GetArgs),
    /// Print the bus live, one `topic payload` line per message.
    Watch(pvbus_cli::watch::WatchArgs),
    /// Show relay states and modes on a TM1638 board (LEDs, digits) and set modes with its
    /// buttons; its LEDs, digits, brightness and buttons are on MQTT too.
    Tm1638(pvbus_panel::Tm1638Cli),
    /// Show pages of values on the 16x2 RGB LCD plate, coloured by the state of charge and
    /// dark at night; its lines, backlight and buttons are on MQTT too.
    Lcd(pvbus_panel::LcdCli),
    /// Turn a PvMonit config.yaml into a pvbus configuration (relays, devices, LCD, TM1638).
    ///
    /// Carries over the relays (names, and wiringPi pins as BCM numbers), the VE.Direct
    /// device names (deviceCorrespondance), the stale-data safety delay, the LCD's night
    /// hours and the TM1638 button delay, over PvMonit's own defaults as PvMonit read
    /// them; every other setting of the file is listed at the end of the output with what
    /// pvbus does instead (no value of those is copied). Relay scripts are not converted:
    /// docs/pvmonit.md shows how they become rules. Check the result with `pvbus config
    /// check`.
    ImportPvmonit(pvbus_pvmonit_import::Cli),
    /// Simulated hardware for the demo and the tests.
    Sim {
        #[command(subcommand)]
        device: SimDevice,
    },
}

#[derive(Subcommand)]
enum SimDevice {
    /// A Victron VE.Direct device (MPPT, BMV, SmartShunt, Phoenix) on a pseudo-terminal.
    Vedirect(pvbus_vedirect_bridge::sim::Cli),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate FILE (and the PVBUS_... environment overrides) without starting anything.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One thread is enough for every pvbus process: they wait on I/O, not CPU, and a
    // Pi Zero has little memory for thread stacks.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Printed once, at the edge, with its chain of causes; no backtrace (users
            // read this, and RUST_BACKTRACE is often set on development machines).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config } => supervisor::run(&config, &has_subcommand).await,
        Command::Broker(cli) => pvbus_broker::main(cli).await,
        Command::Status { config, once } => status::run(config.as_deref(), once).await,
        Command::Config {
            action: ConfigAction::Check { file },
        } => config_check::run(&file),
        Command::Relays(cli) => pvbus_relays::main(cli).await,
        Command::Rules(cli) => pvbus_rules::main(cli).await,
        Command::Vedirect(cli) => pvbus_vedirect_bridge::main(cli).await,
        Command::Homeassistant(cli) => pvbus_homeassistant::main(cli).await,
        Command::Plugins(cli) => pvbus_plugins::main(cli).await,
        Command::Cloud(cli) => pvbus_cloud::main(cli).await,
        Command::Relay(args) => pvbus_cli::relay_main(args).await,
        Command::Get(args) => pvbus_cli::get_main(args).await,
        Command::Watch(args) => pvbus_cli::watch_main(args).await,
        Command::Tm1638(cli) => pvbus_panel::tm1638_main(cli).await,
        Command::Lcd(cli) => pvbus_panel::lcd_main(cli).await,
        Command::ImportPvmonit(cli) => pvbus_pvmonit_import::main(cli),
        Command::Sim {
            device: SimDevice::Vedirect(cli),
        } => pvbus_vedirect_bridge::sim::main(cli).await,
    }
}

/// Whether this binary has the subcommand `path` (e.g. `["sim", "vedirect"]`): `pvbus run`
/// starts only what is built in.
fn has_subcommand(path: &[&str]) -> bool {
    let mut cmd = Cli::command();
    for name in path {
        match cmd.find_subcommand(name) {
            Some(sub) => cmd = sub.clone(),
            None => return false,
        }
    }
    true
}
