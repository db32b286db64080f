//! GPIO and I2C for pvbus drivers, with no MQTT in it.
//!
//! Layout:
//! - `line`: levels and the three kinds of GPIO line (output, input, bidirectional),
//!   with their embedded-hal 1.0 traits, and edge-waiting inputs (interrupt lines);
//!   backends plug in behind small driver traits.
//! - `backend`: the `Gpio` trait (open lines by BCM number) and the choice of backend
//!   (`auto`, `rppal`, `gpiochip`, `sim`), with detection of the board.
//! - `rppal_backend`: the Raspberry Pi backend (rppal), never resetting pins on drop.
//! - `cdev_backend`: the Linux GPIO character device backend (gpiocdev), any board.
//! - `sim`: a simulated board: pin levels kept in a state file (they survive a
//!   process restart like real hardware), every change appended to a JSON-lines log
//!   that tests read, and an in-process hook for wire-level device models.
//! - `i2c`: the embedded-hal `I2c` bus: Linux i2c-dev (linux-embedded-hal), rppal, and a simulated
//!   bus on which device models answer at their address.

pub mod backend;
#[cfg(feature = "gpiocdev")]
pub mod cdev_backend;
pub mod i2c;
pub mod line;
#[cfg(feature = "rppal")]
pub mod rppal_backend;
pub mod sim;

use std::path::PathBuf;

pub use backend::{BackendKind, Gpio, GpioConfig, open_gpio};
pub use line::{
    BidirectionalLine, BidirectionalPin, Edge, EdgeLine, InitialLevel, InputLine, Level,
    OutputLine, Pull,
};
pub use sim::{SimBoard, SimLog, SimLogEntry};

/// Everything that can go wrong with the hardware layer.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    #[error(
        "no GPIO found: {model_path} does not name a Raspberry Pi and there is no /dev/gpiochip* in {dev_dir} (use backend = \"sim\" to run without hardware)"
    )]
    NoGpioFound {
        model_path: PathBuf,
        dev_dir: PathBuf,
    },
    #[error("unknown GPIO backend {0:?} (expected auto, rppal, gpiochip or sim)")]
    UnknownBackend(String),
    #[error("this pvbus was built without the {0} backend (cargo feature \"{0}\")")]
    BackendNotBuilt(&'static str),
    #[error("the sim backend needs a directory for its state file and log (sim_dir)")]
    SimDirMissing,
    #[error("{backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    #[error("GPIO {bcm} is already open in this process")]
    LineBusy { bcm: u8 },
    #[error("GPIO {bcm}: {message}")]
    Line { bcm: u8, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid simulated board file: {source}")]
    SimFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} line {line}: not a valid log entry: {source}")]
    SimLogLine {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("I2C: {0}")]
    I2c(String),
    #[error("I2C device 0x{address:02x} did not answer")]
    I2cNoDevice { address: u8 },
}

impl HardwareError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HardwareError::Io {
            path: path.into(),
            source,
        }
    }
}

impl embedded_hal::digital::Error for HardwareError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl embedded_hal::i2c::Error for HardwareError {
    fn kind(&self) -> embedded_hal::i2c::ErrorKind {
        match self {
            HardwareError::I2cNoDevice { .. } => embedded_hal::i2c::ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            ),
            _ => embedded_hal::i2c::ErrorKind::Other,
        }
    }
}
