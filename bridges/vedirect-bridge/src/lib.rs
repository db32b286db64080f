//! The VE.Direct bridge process (`pvbus vedirect`) and the VE.Direct device simulator
//! (`pvbus sim vedirect`). The protocol itself (parsing, HEX frames, decoding, the device
//! model) is the `vedirect` crate; this crate adds ports, processes and MQTT.
//!
//! Layout:
//! - [`config`]: the `[vedirect]` section and its `validate()`.
//! - [`port`]: one reader thread per serial port (blocking reads, idle reset, reopen with
//!   backoff), handing parsed events to the bridge loop.
//! - [`detect`]: finds VE.Direct USB cables under `/dev/serial/by-id`.
//! - [`registry`]: serial number → device id (the topic level), stable across ports.
//! - [`site`]: site totals (PV power, battery power, consumption).
//! - [`commands`]: MQTT-writable settings and the per-port HEX request queue.
//! - [`bridge`]: the glue loop: readings, availability, commands, refresh of volatile
//!   settings.
//! - [`sim`]: the simulator process: a device model writing real bytes into a pty.
//!
//! `pvbus vedirect decode` is `vedirect::cli::decode` on a file or standard input.

pub mod bridge;
pub mod commands;
pub mod config;
pub mod detect;
pub mod port;
pub mod registry;
pub mod sim;
pub mod site;

use std::path::PathBuf;

use pvbus_bus::Shutdown;
use pvbus_bus::config::Settings;

pub use bridge::Bridge;
pub use config::VedirectConfig;

/// `pvbus vedirect`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Read Victron VE.Direct devices and publish them on the bus",
    long_about = "Reads every VE.Direct serial port of the [vedirect] section (and the USB \
cables found under /dev/serial/by-id), publishes one retained JSON state per device on \
pvbus/vedirect/<device>/state, its availability, and the site totals on pvbus/site/state. \
Settings are written over HEX with pvbus/vedirect/<device>/<setting>/set (load_output, \
charge_current_limit). `decode` reads a capture instead, to debug a cable."
)]
pub struct Cli {
    /// The configuration file (its `[vedirect]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<VedirectCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum VedirectCommand {
    /// Parse raw VE.Direct bytes and print one JSON line per accepted text block; rejected
    /// blocks are counted on stderr with their reason. FILE may be a capture, or a serial
    /// port (`/dev/ttyUSB0`, a simulator's link), read live at 19200 baud until Ctrl-C.
    Decode(DecodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// A capture file or a serial port; standard input when absent.
    pub file: Option<PathBuf>,
    /// Also print the HEX frames found between and inside the blocks.
    #[arg(long)]
    pub hex: bool,
    /// Print the typed SI readings (`battery_voltage: 12.54`) instead of the raw fields.
    #[arg(long)]
    pub decoded: bool,
}

/// Runs the bridge until SIGTERM/Ctrl-C, or the `decode` tool.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    if let Some(VedirectCommand::Decode(args)) = cli.command {
        return decode(&args);
    }
    pvbus_bus::logging::init(bridge::PROCESS);
    let settings = Settings::load(cli.config.as_deref())?;
    let config: VedirectConfig = settings.load_section()?;
    let bus_cfg = settings.bus()?;
    let (shutdown, _trigger) = Shutdown::on_signals();
    let (bus, inbox) = pvbus_bus::Bus::connect(&bus_cfg, bridge::PROCESS);
    let (bridge, events) = Bridge::new(config, bus.clone())?;
    let result = bridge.run(events, inbox, shutdown).await;
    bus.shutdown().await;
    result
}

/// `pvbus vedirect decode`: the protocol crate does the work; this opens the input. A
/// serial port (a character device: a cable, a simulator's pty) is opened at 19200 8N1
/// and read until Ctrl-C, one line per block as it arrives.
fn decode(args: &DecodeArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::FileTypeExt;
    let opts = vedirect::cli::DecodeOptions {
        hex: args.hex,
        decoded: args.decoded,
    };
    let stdout = std::io::stdout().lock();
    let stderr = std::io::stderr().lock();
    let result = match &args.file {
        Some(path) if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device()) => {
            let port = serialport::new(path.to_string_lossy(), port::BAUD_RATE)
                .timeout(std::time::Duration::from_secs(3600))
                .open_native()
                .with_context(|| format!("cannot open the serial port {}", path.display()))?;
            // Line by line, as blocks arrive (stdout is line-buffered).
            vedirect::cli::decode(LiveSerial(port), stdout, stderr, opts)
        }
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            vedirect::cli::decode(file, std::io::BufWriter::new(stdout), stderr, opts)
        }
        None => vedirect::cli::decode(
            std::io::stdin().lock(),
            std::io::BufWriter::new(stdout),
            stderr,
            opts,
        ),
    };
    match result {
        Ok(_) => Ok(()),
        // `pvbus vedirect decode capture.bin | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("decode"),
    }
}

/// A serial port read as an endless stream: a quiet line is not the end of the input.
struct LiveSerial(serialport::TTYPort);

impl std::io::Read for LiveSerial {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                other => return other,
            }
        }
    }
}
