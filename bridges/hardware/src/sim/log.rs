//! The board's change log, `pins.log`, and the reader tests use.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::HardwareError;
use crate::line::Level;

/// Which side of the wire made a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireSide {
    /// The program driving the GPIO (through a backend line).
    Host,
    /// A device model, or a test acting as a button.
    Device,
}

/// One level change on one pin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimLogEntry {
    /// Unix time in seconds, to the microsecond.
    pub ts: f64,
    pub pin: u8,
    pub level: Level,
    pub prev: Level,
    /// The process that made the change.
    pub pid: u32,
    pub by: WireSide,
}

pub(crate) fn now() -> f64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Whole microseconds: the log shows them and they compare exactly.
    since.as_micros() as f64 / 1e6
}

/// Reads a board's change log, from any process.
#[derive(Clone, Debug)]
pub struct SimLog {
    path: PathBuf,
}

impl SimLog {
    /// The log of the board kept in `dir`.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        SimLog {
            path: dir.as_ref().join(super::LOG_FILE),
        }
    }

    /// Every change so far, oldest first (none when the board never changed).
    pub fn read(&self) -> Result<Vec<SimLogEntry>, HardwareError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(HardwareError::io(&self.path, e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str(line).map_err(|source| HardwareError::SimLogLine {
                    path: self.path.clone(),
                    line: index + 1,
                    source,
                })
            })
            .collect()
    }

    /// The changes of one pin, oldest first.
    pub fn pin(&self, pin: u8) -> Result<Vec<SimLogEntry>, HardwareError> {
        Ok(self.read()?.into_iter().filter(|e| e.pin == pin).collect())
    }

    /// Changes of `pin` that reversed within `window` seconds: a pulse of the
    /// opposite level, the signature of a glitch.
    pub fn pulses(
        &self,
        pin: u8,
        window: f64,
    ) -> Result<Vec<(SimLogEntry, SimLogEntry)>, HardwareError> {
        let changes = self.pin(pin)?;
        Ok(changes
            .windows(2)
            .filter(|pair| pair[1].level == pair[0].prev && pair[1].ts - pair[0].ts <= window)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect())
    }
}
