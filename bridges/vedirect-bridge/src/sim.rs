//! `pvbus sim vedirect`: a simulated Victron device on a pseudo-terminal, so that the
//! bridge (and the demo, and the tests) read real VE.Direct bytes through a real tty.
//!
//! The device model is `vedirect::sim::Simulator` (pure, driven by virtual time); this
//! module gives it a pty, a clock and a symlink:
//! - a text block every real second, at the virtual time `start + elapsed x time_scale`;
//! - HEX requests read from the pty and answered at once, between blocks;
//! - the pty's slave path published through `--link`, replaced atomically, removed on exit,
//!   so that a bridge configured with the link survives the simulator being restarted.
//!
//! Like a real UART, the simulator does not wait for a reader: while nobody has the port
//! open, blocks are dropped rather than queued.
//!
//! With `--gpio-dir` and `--load`, the site is closed loop: the loads wired to the relays
//! of a simulated GPIO board (the `sim` backend of `pvbus relays`) are drawn from the
//! battery when their relay is on. The pin levels are read from the board's saved state
//! once per block, just before the block is built: the block is the only moment the
//! device shows anything, so a change cannot be seen sooner, and reading one small file
//! in a wake-up that happens anyway costs less than a file watcher (its thread, its
//! descriptor, and a wake-up for every write the relay bridge makes, including its log).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use pvbus_bus::Shutdown;
use pvbus_hardware::{Level, SimBoard};
use serialport::{ClearBuffer, SerialPort, TTYPort};
use tracing::{debug, info, warn};
use vedirect::sim::{DeviceKind, SimOptions, Simulator};

/// `pvbus sim vedirect`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Simulate a Victron VE.Direct device on a pseudo-terminal",
    long_about = "Writes real VE.Direct text blocks (one per second) following a day curve \
(night, bulk, absorption, float with surplus) into a pseudo-terminal, and answers HEX \
gets and sets, including the volatile charge current limit, which the device forgets a \
minute after the last write. The pty's path is published as the symlink --link, which \
the bridge's [[vedirect.ports]] path points to.

Closed loop: with --gpio-dir (the sim_dir of a simulated GPIO board, as in [relays.gpio]) \
and one --load per switched load, the simulated site draws each load from the battery \
while its relay is on, read from the board's pin levels once per block. The BMV sees the \
battery current drop, the MPPT raises its harvest to cover the load if the sun allows and \
leaves float for bulk when it cannot; the state of charge follows. Give the MPPT and the \
BMV the same --load options: they describe the same house.

Example: --gpio-dir /tmp/pvbus-demo/gpio --load 17=300 --load 27=250:active_high"
)]
pub struct Cli {
    /// Which device: mppt, bmv, smartshunt or phoenix.
    #[arg(long, value_parser = parse_kind)]
    pub kind: DeviceKind,
    /// Symlink to create to the pty (e.g. /tmp/pvbus-demo/mppt); replaced if it exists.
    #[arg(long, value_name = "PATH")]
    pub link: PathBuf,
    /// Serial number (SER#) of the simulated device.
    #[arg(long)]
    pub serial: Option<String>,
    /// Virtual seconds per real second (60 runs a day in 24 minutes).
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub time_scale: f64,
    /// Time of day (UTC) at which the simulation starts, e.g. 10:30; now when absent.
    #[arg(long, value_name = "HH:MM", value_parser = parse_time_of_day)]
    pub start_time: Option<u32>,
    /// Real seconds the device keeps a volatile setting (the charge current limit) after
    /// its last write; the real device keeps it about a minute.
    #[arg(long, value_name = "SECS", default_value_t = vedirect::sim::VOLATILE_TIMEOUT_S, value_parser = parse_timeout)]
    pub volatile_timeout: f64,
    /// Closes the loop: folder of the simulated GPIO board (the `sim_dir` of
    /// `[relays.gpio]`) whose relays switch the --load loads, read once per block. Give
    /// the MPPT and the BMV the same --gpio-dir and --load: they watch the same house.
    #[arg(long, value_name = "DIR", requires = "loads")]
    pub gpio_dir: Option<PathBuf>,
    /// A load switched by the relay on a pin of --gpio-dir, drawn from the battery while
    /// the relay is on: PIN=WATTS, e.g. 17=2000. The relay is active-low by default (a low
    /// pin energises it), like [[relays.relay]]'s default `active_low = true`; add
    /// `:active_high` for a relay that a high pin energises (`:active_low` is accepted
    /// too). Repeat for each load; loads on one pin add up.
    #[arg(
        long = "load",
        value_name = "PIN=WATTS[:active_high]",
        value_parser = parse_load,
        requires = "gpio_dir"
    )]
    pub loads: Vec<SwitchedLoad>,
}

/// A load behind a relay of the simulated GPIO board (`--load`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwitchedLoad {
    pub pin: u8,
    pub watts: f64,
    /// The pin level that energises the relay (the load is on).
    pub on_level: Level,
}

fn parse_load(s: &str) -> Result<SwitchedLoad, String> {
    let (rest, on_level) = match s.split_once(':') {
        None => (s, Level::Low),
        Some((rest, "active_low")) => (rest, Level::Low),
        Some((rest, "active_high")) => (rest, Level::High),
        Some((_, other)) => {
            return Err(format!(
                "{s:?}: unknown polarity {other:?} (expected active_low or active_high)"
            ));
        }
    };
    let (pin, watts) = rest
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PIN=WATTS, e.g. 17=2000"))?;
    let pin = pin
        .trim()
        .parse::<u8>()
        .map_err(|_| format!("{s:?}: the pin {pin:?} is not a GPIO number (0 to 255)"))?;
    let watts = match watts.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && (0.0..=100_000.0).contains(&w) => w,
        _ => {
            return Err(format!(
                "{s:?}: the power {watts:?} is not a number of watts from 0 to 100000"
            ));
        }
    };
    Ok(SwitchedLoad {
        pin,
        watts,
        on_level,
    })
}

/// Reads which switched loads are on from the simulated board's saved pin levels.
struct LoadSensor {
    dir: PathBuf,
    loads: Vec<SwitchedLoad>,
    /// The loads' total as last read, W; kept when the board cannot be read.
    watts: f64,
    /// The last read error, so that a broken file is reported once, not every second.
    error: Option<String>,
}

impl LoadSensor {
    fn new(dir: PathBuf, loads: Vec<SwitchedLoad>) -> LoadSensor {
        LoadSensor {
            dir,
            loads,
            watts: 0.0,
            error: None,
        }
    }

    /// The watts switched on now.
    fn read(&mut self) -> f64 {
        match SimBoard::saved_levels(&self.dir) {
            Ok(levels) => {
                if self.error.take().is_some() {
                    info!(gpio_dir = %self.dir.display(), "the simulated board reads again");
                }
                let on: Vec<&SwitchedLoad> = self
                    .loads
                    .iter()
                    .filter(|l| levels.get(&l.pin) == Some(&l.on_level))
                    .collect();
                let watts = on.iter().fold(0.0, |sum, l| sum + l.watts);
                if watts != self.watts {
                    let pins: Vec<u8> = on.iter().map(|l| l.pin).collect();
                    info!(watts, on_pins = ?pins, "switched loads changed");
                    self.watts = watts;
                }
            }
            Err(e) => {
                let message = e.to_string();
                if self.error.as_deref() != Some(&message) {
                    warn!(error = %message, watts = self.watts, "cannot read the simulated board's pins; the loads stay as they were");
                    self.error = Some(message);
                }
            }
        }
        self.watts
    }
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?}: expected a number of seconds above 0")),
    }
}

fn parse_kind(s: &str) -> Result<DeviceKind, String> {
    s.parse::<DeviceKind>().map_err(|e| e.to_string())
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..=100_000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected a number from 0.001 to 100000")),
    }
}

/// `HH:MM` to seconds after midnight.
fn parse_time_of_day(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?}: expected HH:MM, e.g. 06:30");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || s.len() > 5 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60)
}

fn default_serial(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Mppt => "HQ2150SIM01",
        DeviceKind::Bmv => "HQ2150SIM02",
        DeviceKind::SmartShunt => "HQ2150SIM03",
        DeviceKind::Phoenix => "HQ2150SIM04",
    }
}

/// Virtual time: unix seconds of the simulated world.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start_real: std::time::Instant,
    start_virtual: f64,
    scale: f64,
}

impl Clock {
    fn new(start_time: Option<u32>, scale: f64) -> Clock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start_virtual = match start_time {
            Some(secs) => (now / 86_400.0).floor() * 86_400.0 + f64::from(secs),
            None => now,
        };
        Clock {
            start_real: std::time::Instant::now(),
            start_virtual,
            scale,
        }
    }

    fn now(&self) -> f64 {
        self.start_virtual + self.start_real.elapsed().as_secs_f64() * self.scale
    }
}

/// The device side of the pty: one writer shared by the block loop and the HEX answers,
/// so that a reply never lands in the middle of a block.
struct Wire {
    master: Mutex<TTYPort>,
    /// Kept open so that the pty lives while no bridge has it open (and so that reads
    /// on the master block instead of failing), and to drop what nobody read.
    slave: Mutex<TTYPort>,
}

impl Wire {
    fn send(&self, bytes: &[u8]) {
        let mut master = self.master.lock().expect("pty lock");
        match master.write_all(bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                // Nobody reads: a UART would not wait either. Drop what is buffered so
                // that the next reader starts with fresh data.
                debug!("no reader on the pty; output dropped");
                let _ = self
                    .slave
                    .lock()
                    .expect("pty lock")
                    .clear(ClearBuffer::Input);
            }
            Err(e) => warn!(error = %e, "writing to the pty failed"),
        }
    }
}

/// Runs the simulator until SIGTERM/Ctrl-C.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    pvbus_bus::logging::init("sim-vedirect");
    let (shutdown, _trigger) = Shutdown::on_signals();
    run(cli, shutdown).await
}

/// The simulator loop, stopped by `shutdown`.
pub async fn run(cli: Cli, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let serial = cli
        .serial
        .clone()
        .unwrap_or_else(|| default_serial(cli.kind).to_string());
    let (mut master, slave) = TTYPort::pair().context("cannot create a pseudo-terminal")?;
    let slave_path = slave.name().context("the pseudo-terminal has no path")?;
    // A short write timeout is how "nobody reads" shows (the pty buffer is full).
    master.set_timeout(Duration::from_millis(100))?;
    let mut reader = master.try_clone_native()?;
    reader.set_timeout(Duration::from_secs(3600))?;
    link(&cli.link, Path::new(&slave_path))?;
    info!(kind = %cli.kind, serial = %serial, pty = %slave_path, link = %cli.link.display(), "simulated VE.Direct device ready");

    let wire = Arc::new(Wire {
        master: Mutex::new(master),
        slave: Mutex::new(slave),
    });
    let sim = Arc::new(Mutex::new(Simulator::new(
        cli.kind,
        &serial,
        SimOptions {
            // The device's timer runs in real time, whatever the speed of the simulated day.
            volatile_timeout_s: Some(cli.volatile_timeout * cli.time_scale),
            ..SimOptions::default()
        },
    )));
    let clock = Clock::new(cli.start_time, cli.time_scale);
    let mut loads = cli
        .gpio_dir
        .clone()
        .map(|dir| LoadSensor::new(dir, cli.loads.clone()));
    if let Some(sensor) = &mut loads {
        info!(gpio_dir = %sensor.dir.display(), loads = sensor.loads.len(), "closed loop: relay loads are drawn from the battery");
        let watts = sensor.read();
        sim.lock()
            .expect("sim lock")
            .set_switched_load(watts, clock.now());
    }

    {
        let (wire, sim) = (wire.clone(), sim.clone());
        std::thread::Builder::new()
            .name("sim-hex".into())
            .stack_size(128 * 1024)
            .spawn(move || answer_hex(&mut reader, &wire, &sim, clock))?;
    }

    // Blocks once per real second, whatever the time scale: that is the device's pace.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {
                let watts = loads.as_mut().map(LoadSensor::read);
                let now = clock.now();
                let block = {
                    let mut sim = sim.lock().expect("sim lock");
                    if let Some(watts) = watts {
                        sim.set_switched_load(watts, now);
                    }
                    sim.text_block(now)
                };
                wire.send(&block);
            }
        }
    }
    unlink(&cli.link, Path::new(&slave_path));
    info!("simulator stopped");
    Ok(())
}

/// Reads HEX requests line by line and writes the device's answers.
fn answer_hex(reader: &mut TTYPort, wire: &Wire, sim: &Mutex<Simulator>, clock: Clock) {
    let mut line: Vec<u8> = Vec::with_capacity(64);
    let mut buf = [0u8; 128];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b':' {
                        line.clear();
                    }
                    if line.len() < 256 {
                        line.push(b);
                    }
                    if b == b'\n' {
                        let answer = sim.lock().expect("sim lock").handle_hex(&line, clock.now());
                        line.clear();
                        if !answer.is_empty() {
                            wire.send(&answer);
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                warn!(error = %e, "reading the pty failed; HEX requests are no longer answered");
                return;
            }
        }
    }
}

/// Points `link` at `target`, replacing an old link atomically (rename over it).
fn link(link: &Path, target: &Path) -> anyhow::Result<()> {
    if let Some(dir) = link.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder of --link {}", link.display()))?;
    }
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot create the symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, link)
        .with_context(|| format!("cannot create the symlink --link {}", link.display()))?;
    Ok(())
}

/// Removes `link` if it still points at our pty (a newer simulator may have replaced it).
fn unlink(link: &Path, target: &Path) {
    if std::fs::read_link(link).ok().as_deref() == Some(target) {
        let _ = std::fs::remove_file(link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_strictly() {
        assert_eq!(parse_time_of_day("06:30"), Ok(6 * 3600 + 30 * 60));
        for bad in ["24:00", "6h30", "06:60", "06:300", ""] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
        assert!(parse_scale("0").is_err());
        assert_eq!(parse_scale("60"), Ok(60.0));
        assert!(parse_kind("inverter").is_err());
    }

    #[test]
    fn loads_parse_with_their_polarity_and_bad_ones_name_the_part() {
        assert_eq!(
            parse_load("17=2000"),
            Ok(SwitchedLoad {
                pin: 17,
                watts: 2000.0,
                on_level: Level::Low
            })
        );
        assert_eq!(
            parse_load("27=250.5:active_high").unwrap().on_level,
            Level::High
        );
        assert_eq!(
            parse_load("27=250:active_low").unwrap().on_level,
            Level::Low
        );
        for (bad, says) in [
            ("17", "PIN=WATTS"),
            ("x=20", "GPIO number"),
            ("300=20", "GPIO number"),
            ("17=-5", "watts"),
            ("17=NaN", "watts"),
            ("17=lots", "watts"),
            ("17=20:inverted", "polarity"),
        ] {
            let e = parse_load(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_sensor_reads_the_relays_pins_and_keeps_its_value_on_a_broken_file() {
        use pvbus_hardware::{Gpio, InitialLevel};
        let dir = tempfile::tempdir().unwrap();
        let loads = vec![
            parse_load("17=2000").unwrap(),
            parse_load("27=250:active_high").unwrap(),
        ];
        let mut sensor = LoadSensor::new(dir.path().to_path_buf(), loads);
        assert_eq!(
            sensor.read(),
            0.0,
            "no board yet: nothing driven, nothing on"
        );
        {
            // The relay bridge's side: the real sim backend writes the levels.
            let board = SimBoard::open(dir.path()).unwrap();
            let mut heater = board.output(17, InitialLevel::Level(Level::High)).unwrap();
            let mut pump = board.output(27, InitialLevel::Level(Level::Low)).unwrap();
            assert_eq!(sensor.read(), 0.0, "both relays off");
            heater.write(Level::Low).unwrap();
            assert_eq!(sensor.read(), 2000.0);
            pump.write(Level::High).unwrap();
            assert_eq!(sensor.read(), 2250.0);
            heater.write(Level::High).unwrap();
            assert_eq!(sensor.read(), 250.0);
        }
        std::fs::write(dir.path().join("pins.json"), "{not json").unwrap();
        assert_eq!(sensor.read(), 250.0, "kept");
        assert!(sensor.error.is_some());
    }

    #[test]
    fn the_link_is_replaced_and_removed_only_if_ours() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("sub/mppt");
        link(&l, Path::new("/dev/pts/998")).unwrap();
        link(&l, Path::new("/dev/pts/999")).unwrap();
        assert_eq!(std::fs::read_link(&l).unwrap(), Path::new("/dev/pts/999"));
        unlink(&l, Path::new("/dev/pts/998"));
        assert!(std::fs::symlink_metadata(&l).is_ok(), "not ours: kept");
        unlink(&l, Path::new("/dev/pts/999"));
        assert!(std::fs::symlink_metadata(&l).is_err());
    }
}
