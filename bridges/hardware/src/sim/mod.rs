//! A simulated board, at the level of the wire.
//!
//! Like real hardware, its pin levels outlive the process that drove them: they
//! are kept in `pins.json` in the board's directory, so a process that restarts
//! finds its outputs where it left them, and a restart that glitches shows up.
//! Every level change is appended to `pins.log` (JSON lines: `ts`, `pin`,
//! `level`, `prev`, `pid`, `by`), which tests in another process read through
//! [`SimLog`]. Device models (a TM1638 decoding the bit stream, an LCD) attach
//! in-process through [`WireModel`]: they see every change the host makes and
//! drive the lines the host has released.
//!
//! One process drives a board directory at a time, as one process owns a GPIO
//! chip; any number may read its files.

mod log;

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::log::{SimLog, SimLogEntry, WireSide};
use crate::HardwareError;
use crate::backend::Gpio;
use crate::line::{
    BidirectionalDriver, BidirectionalLine, Edge, EdgeDriver, EdgeLine, InitialLevel, InputDriver,
    InputLine, Level, OutputDriver, OutputLine, Pull,
};

const STATE_FILE: &str = "pins.json";
const LOG_FILE: &str = "pins.log";

/// What a device model is told: the host changed how it drives `pin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostChange {
    pub pin: u8,
    /// `Some(level)` when the host drives the pin, `None` when it released it.
    pub drive: Option<Level>,
}

/// A wire-level model of a device connected to some pins of the board.
///
/// It is called synchronously, inside the host's write, so a bit-banged
/// protocol is seen edge by edge in order, as the real chip sees it. A TM1638
/// model, for instance, watches STB, CLK and DIO, samples DIO on each rising
/// CLK edge, and during a key scan drives DIO once the host has released it.
pub trait WireModel: Send {
    fn host_changed(&mut self, change: HostChange, wire: &mut Wire<'_>);
}

/// The device side of the wire, handed to a model while it reacts.
pub struct Wire<'a> {
    board: &'a mut BoardState,
}

impl Wire<'_> {
    /// The level on `pin` now (host drive wins over device drive).
    pub fn level(&self, pin: u8) -> Level {
        self.board.level(pin)
    }

    /// How the host drives `pin` (`None`: released or never opened).
    pub fn host_drive(&self, pin: u8) -> Option<Level> {
        self.board.pins.get(&pin).and_then(|p| p.host)
    }

    /// The device drives `pin` (`Some`) or lets it go (`None`).
    pub fn drive(&mut self, pin: u8, level: Option<Level>) {
        self.board.set_device_drive(pin, level);
    }
}

/// The simulated board. Cheap to clone; clones share the same pins.
#[derive(Clone)]
pub struct SimBoard {
    state: Arc<Mutex<BoardState>>,
}

#[derive(Default)]
struct PinState {
    /// What the host drives; `None` when the pin is an input or unopened.
    host: Option<Level>,
    /// What a device (model, test) drives.
    device: Option<Level>,
    pull: Pull,
}

impl PinState {
    fn level(&self) -> Level {
        self.host.or(self.device).unwrap_or(match self.pull {
            Pull::Up => Level::High,
            Pull::None | Pull::Down => Level::Low,
        })
    }
}

/// The content of `pins.json`: what the host drives on each pin.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    driven: BTreeMap<u8, Level>,
}

struct Files {
    dir: PathBuf,
    log: File,
}

struct BoardState {
    pins: BTreeMap<u8, PinState>,
    open: HashSet<u8>,
    unrecorded: HashSet<u8>,
    files: Option<Files>,
    models: Vec<Box<dyn WireModel>>,
    /// Open edge lines: each edge they wait for is sent to them.
    watchers: Vec<Watcher>,
    /// Changes made under the lock, written out before it is released.
    pending: Vec<SimLogEntry>,
    state_dirty: bool,
    pid: u32,
}

impl BoardState {
    fn level(&self, pin: u8) -> Level {
        self.pins
            .get(&pin)
            .map(PinState::level)
            .unwrap_or(Level::Low)
    }

    fn change(&mut self, pin: u8, side: WireSide, apply: impl FnOnce(&mut PinState)) {
        let entry = self.pins.entry(pin).or_default();
        let before = entry.level();
        let host_before = entry.host;
        apply(entry);
        let after = entry.level();
        if before != after {
            // A watcher whose line was closed is dropped.
            self.watchers.retain(|w| {
                w.pin != pin || !w.edge.matches(before, after) || w.tx.send(after).is_ok()
            });
        }
        if entry.host != host_before {
            self.state_dirty |= !self.unrecorded.contains(&pin);
        }
        if before != after && !self.unrecorded.contains(&pin) {
            self.pending.push(SimLogEntry {
                ts: log::now(),
                pin,
                level: after,
                prev: before,
                pid: self.pid,
                by: side,
            });
        }
    }

    fn set_device_drive(&mut self, pin: u8, level: Option<Level>) {
        self.change(pin, WireSide::Device, |p| p.device = level);
    }

    fn set_host_drive(&mut self, pin: u8, level: Option<Level>) {
        let before = self.pins.get(&pin).and_then(|p| p.host);
        self.change(pin, WireSide::Host, |p| p.host = level);
        if before != level {
            let mut models = std::mem::take(&mut self.models);
            for model in &mut models {
                model.host_changed(HostChange { pin, drive: level }, &mut Wire { board: self });
            }
            self.models = models;
        }
    }

    /// Writes what changed: first the pin levels (that is the "hardware"), then
    /// the log lines.
    fn flush(&mut self) -> Result<(), HardwareError> {
        let Some(files) = &mut self.files else {
            self.pending.clear();
            return Ok(());
        };
        if self.state_dirty {
            let state = StateFile {
                driven: self
                    .pins
                    .iter()
                    .filter(|(pin, _)| !self.unrecorded.contains(pin))
                    .filter_map(|(pin, p)| p.host.map(|level| (*pin, level)))
                    .collect(),
            };
            write_state(&files.dir, &state, self.pid)?;
            self.state_dirty = false;
        }
        if !self.pending.is_empty() {
            let mut lines = String::new();
            for entry in self.pending.drain(..) {
                lines.push_str(&serde_json::to_string(&entry).expect("log entry serialises"));
                lines.push('\n');
            }
            // One write of whole lines to an O_APPEND file: a reader never sees
            // half a line from a process that is killed.
            files
                .log
                .write_all(lines.as_bytes())
                .map_err(|e| HardwareError::io(files.dir.join(LOG_FILE), e))?;
        }
        Ok(())
    }
}

fn write_state(dir: &Path, state: &StateFile, pid: u32) -> Result<(), HardwareError> {
    let path = dir.join(STATE_FILE);
    let temp = dir.join(format!(".{STATE_FILE}.{pid}.tmp"));
    let body = serde_json::to_vec_pretty(state).expect("state serialises");
    std::fs::write(&temp, body).map_err(|e| HardwareError::io(&temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| HardwareError::io(&path, e))
}

fn read_state(dir: &Path) -> Result<StateFile, HardwareError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(body) => serde_json::from_slice(&body).map_err(|source| HardwareError::SimFile {
            path: path.clone(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(HardwareError::io(path, e)),
    }
}

impl SimBoard {
    /// Opens (or creates) the board kept in `dir`, with the levels its last
    /// process left.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, HardwareError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| HardwareError::io(dir, e))?;
        let saved = read_state(dir)?;
        let log_path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HardwareError::io(&log_path, e))?;
        let board = Self::with_files(Some(Files {
            dir: dir.to_owned(),
            log,
        }));
        {
            let mut state = board.lock();
            for (pin, level) in saved.driven {
                state.pins.entry(pin).or_default().host = Some(level);
            }
        }
        Ok(board)
    }

    /// A board with no files, for in-process tests and device models.
    pub fn in_memory() -> Self {
        Self::with_files(None)
    }

    fn with_files(files: Option<Files>) -> Self {
        SimBoard {
            state: Arc::new(Mutex::new(BoardState {
                pins: BTreeMap::new(),
                open: HashSet::new(),
                unrecorded: HashSet::new(),
                files,
                models: Vec::new(),
                watchers: Vec::new(),
                pending: Vec::new(),
                state_dirty: false,
                pid: std::process::id(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // A panic in a model must not take the whole board down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `pins` out of the state file and the log: for fast bit-banged
    /// buses (a TM1638's STB/CLK/DIO) whose every edge would be a file write.
    pub fn unrecorded(&self, pins: &[u8]) {
        self.lock().unrecorded.extend(pins.iter().copied());
    }

    /// Connects a device model to the board.
    pub fn attach(&self, model: Box<dyn WireModel>) {
        self.lock().models.push(model);
    }

    /// The level on `pin` now.
    pub fn level(&self, pin: u8) -> Level {
        self.lock().level(pin)
    }

    /// Drives `pin` from the device side, as a button or a sensor would.
    pub fn drive_from_device(&self, pin: u8, level: Option<Level>) -> Result<(), HardwareError> {
        let mut state = self.lock();
        state.set_device_drive(pin, level);
        state.flush()
    }

    /// The levels the host drives, as saved in `dir/pins.json`, read from any
    /// process.
    pub fn saved_levels(dir: impl AsRef<Path>) -> Result<BTreeMap<u8, Level>, HardwareError> {
        Ok(read_state(dir.as_ref())?.driven)
    }

    fn claim(&self, bcm: u8) -> Result<MutexGuard<'_, BoardState>, HardwareError> {
        let mut state = self.lock();
        if !state.open.insert(bcm) {
            return Err(HardwareError::LineBusy { bcm });
        }
        Ok(state)
    }

    fn line(&self, bcm: u8) -> SimLine {
        SimLine {
            board: self.clone(),
            bcm,
        }
    }
}

impl Gpio for SimBoard {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn output(&self, bcm: u8, initial: InitialLevel) -> Result<OutputLine, HardwareError> {
        let mut state = self.claim(bcm)?;
        let start = match initial {
            InitialLevel::Level(level) => level,
            InitialLevel::Keep { if_unknown } => state
                .pins
                .get(&bcm)
                .and_then(|p| p.host)
                .unwrap_or(if_unknown),
        };
        state.set_host_drive(bcm, Some(start));
        let flushed = state.flush();
        drop(state);
        flushed?;
        Ok(OutputLine::new(bcm, Box::new(self.line(bcm))))
    }

    fn input(&self, bcm: u8, pull: Pull) -> Result<InputLine, HardwareError> {
        let mut state = self.claim(bcm)?;
        state.change(bcm, WireSide::Host, |p| p.pull = pull);
        state.set_host_drive(bcm, None);
        state.flush()?;
        drop(state);
        Ok(InputLine::new(bcm, Box::new(self.line(bcm))))
    }

    fn bidirectional(&self, bcm: u8, pull: Pull) -> Result<BidirectionalLine, HardwareError> {
        let mut state = self.claim(bcm)?;
        state.change(bcm, WireSide::Host, |p| p.pull = pull);
        state.set_host_drive(bcm, None);
        state.flush()?;
        drop(state);
        Ok(BidirectionalLine::new(bcm, Box::new(self.line(bcm))))
    }

    fn edge_input(&self, bcm: u8, pull: Pull, edge: Edge) -> Result<EdgeLine, HardwareError> {
        let mut state = self.claim(bcm)?;
        state.change(bcm, WireSide::Host, |p| p.pull = pull);
        state.set_host_drive(bcm, None);
        state.flush()?;
        let (tx, edges) = std::sync::mpsc::channel();
        state.watchers.push(Watcher { pin: bcm, edge, tx });
        drop(state);
        Ok(EdgeLine::new(
            bcm,
            Box::new(SimEdgeLine {
                line: self.line(bcm),
                edges,
            }),
        ))
    }
}

/// An edge line's subscription to a pin.
struct Watcher {
    pin: u8,
    edge: Edge,
    tx: Sender<Level>,
}

/// An open edge line: the line, and the edges sent to it.
struct SimEdgeLine {
    line: SimLine,
    edges: Receiver<Level>,
}

impl EdgeDriver for SimEdgeLine {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Level>, HardwareError> {
        // The board keeps the sending side for as long as it lives, and this line
        // holds the board: the channel cannot close under us.
        let closed = || HardwareError::Line {
            bcm: self.line.bcm,
            message: "the simulated board is gone".into(),
        };
        match timeout {
            None => self.edges.recv().map(Some).map_err(|_| closed()),
            Some(limit) => match self.edges.recv_timeout(limit) {
                Ok(level) => Ok(Some(level)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(closed()),
            },
        }
    }

    fn read(&mut self) -> Result<Level, HardwareError> {
        Ok(self.line.get())
    }
}

/// One open line of the simulated board.
struct SimLine {
    board: SimBoard,
    bcm: u8,
}

impl SimLine {
    fn set(&mut self, drive: Option<Level>) -> Result<(), HardwareError> {
        let mut state = self.board.lock();
        state.set_host_drive(self.bcm, drive);
        state.flush()
    }

    fn get(&self) -> Level {
        self.board.level(self.bcm)
    }
}

impl Drop for SimLine {
    fn drop(&mut self) {
        // Like rppal without reset-on-drop: the level stays, the line is free.
        self.board.lock().open.remove(&self.bcm);
    }
}

impl OutputDriver for SimLine {
    fn write(&mut self, level: Level) -> Result<(), HardwareError> {
        self.set(Some(level))
    }
    fn read_back(&mut self) -> Result<Level, HardwareError> {
        Ok(self.get())
    }
}

impl InputDriver for SimLine {
    fn read(&mut self) -> Result<Level, HardwareError> {
        Ok(self.get())
    }
}

impl BidirectionalDriver for SimLine {
    fn drive(&mut self, level: Level) -> Result<(), HardwareError> {
        self.set(Some(level))
    }
    fn release(&mut self) -> Result<(), HardwareError> {
        self.set(None)
    }
    fn read(&mut self) -> Result<Level, HardwareError> {
        Ok(self.get())
    }
}

#[cfg(test)]
mod tests;
