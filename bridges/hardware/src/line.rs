//! GPIO lines as drivers see them: levels, the three kinds of line, and their
//! embedded-hal 1.0 traits, plus inputs whose edges can be waited for (interrupt
//! lines). Backends plug in behind the small `*Driver` traits.

use std::time::Duration;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, StatefulOutputPin};
use serde::{Deserialize, Serialize};

use crate::HardwareError;

/// The electrical level of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Low,
    High,
}

impl Level {
    pub fn is_high(self) -> bool {
        self == Level::High
    }

    pub fn from_high(high: bool) -> Level {
        if high { Level::High } else { Level::Low }
    }
}

impl std::ops::Not for Level {
    type Output = Level;
    fn not(self) -> Level {
        match self {
            Level::Low => Level::High,
            Level::High => Level::Low,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Low => "low",
            Level::High => "high",
        })
    }
}

/// The level an output takes at the moment it is opened. Opening never drives
/// any other level first, so a relay does not click when its process starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialLevel {
    /// Drive this level from the first instant.
    Level(Level),
    /// Keep what the line is at now (a previous process left it driven, or its
    /// pull resistor holds it); `if_unknown` when the backend cannot tell.
    Keep { if_unknown: Level },
}

/// Pull resistor of an input or a released bidirectional line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pull {
    #[default]
    None,
    Up,
    Down,
}

/// What a backend implements for an output line.
pub trait OutputDriver: Send {
    fn write(&mut self, level: Level) -> Result<(), HardwareError>;
    /// The level the line really is at, read back from the hardware.
    fn read_back(&mut self) -> Result<Level, HardwareError>;
}

/// What a backend implements for an input line.
pub trait InputDriver: Send {
    fn read(&mut self) -> Result<Level, HardwareError>;
}

/// What a backend implements for a line that is driven, then released so that
/// a device can drive it (the TM1638's DIO during a key scan).
pub trait BidirectionalDriver: Send {
    /// Switches to output (if needed) and drives `level`.
    fn drive(&mut self, level: Level) -> Result<(), HardwareError>;
    /// Switches to input: stops driving, the device or the pull decides.
    fn release(&mut self) -> Result<(), HardwareError>;
    /// Reads the line (what we drive, or what the device drives once released).
    fn read(&mut self) -> Result<Level, HardwareError>;
}

/// Which edges an [`EdgeLine`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    Rising,
    Falling,
    Both,
}

impl Edge {
    /// Whether a change from `before` to `after` is such an edge.
    pub fn matches(self, before: Level, after: Level) -> bool {
        match (before, after) {
            (Level::Low, Level::High) => self != Edge::Falling,
            (Level::High, Level::Low) => self != Edge::Rising,
            _ => false,
        }
    }
}

/// What a backend implements for an input whose edges are waited for (a device's
/// interrupt output). Edges are queued from the moment the line is opened, so one that
/// comes between two waits is not lost.
pub trait EdgeDriver: Send {
    /// Blocks until the next edge of the kind asked for, or until `timeout` (`None`:
    /// no limit). Returns the level after the edge, `None` on timeout.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Level>, HardwareError>;
    fn read(&mut self) -> Result<Level, HardwareError>;
}

/// A line that is driven, then released: embedded-hal's `OutputPin` drives it,
/// `InputPin` reads it, and `release` hands it over to the device.
pub trait BidirectionalPin: OutputPin + InputPin {
    fn release(&mut self) -> Result<(), Self::Error>;
}

macro_rules! line_struct {
    ($(#[$doc:meta])* $name:ident, $driver:ident) => {
        $(#[$doc])*
        pub struct $name {
            bcm: u8,
            driver: Box<dyn $driver>,
        }

        impl $name {
            /// Wraps a backend's driver; `bcm` names the line in errors and logs.
            pub fn new(bcm: u8, driver: Box<dyn $driver>) -> Self {
                Self { bcm, driver }
            }

            /// The BCM number this line was opened with.
            pub fn bcm(&self) -> u8 {
                self.bcm
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("bcm", &self.bcm).finish()
            }
        }

        impl ErrorType for $name {
            type Error = HardwareError;
        }
    };
}

line_struct!(
    /// An output line (a relay, the TM1638's STB and CLK).
    OutputLine,
    OutputDriver
);
line_struct!(
    /// An input line (a push button).
    InputLine,
    InputDriver
);
line_struct!(
    /// A bidirectional line (the TM1638's DIO).
    BidirectionalLine,
    BidirectionalDriver
);

line_struct!(
    /// An input whose edges are waited for (an expander's INT output).
    EdgeLine,
    EdgeDriver
);

impl EdgeLine {
    /// Blocks until the next edge asked for (the level after it), or `timeout`
    /// (`None`). The thread sleeps in the kernel meanwhile: no polling.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Level>, HardwareError> {
        self.driver.wait(timeout)
    }

    pub fn read(&mut self) -> Result<Level, HardwareError> {
        self.driver.read()
    }
}

impl OutputLine {
    pub fn write(&mut self, level: Level) -> Result<(), HardwareError> {
        self.driver.write(level)
    }

    /// What the line really is at, read back after the write.
    pub fn read_back(&mut self) -> Result<Level, HardwareError> {
        self.driver.read_back()
    }
}

impl OutputPin for OutputLine {
    fn set_low(&mut self) -> Result<(), HardwareError> {
        self.driver.write(Level::Low)
    }
    fn set_high(&mut self) -> Result<(), HardwareError> {
        self.driver.write(Level::High)
    }
}

impl StatefulOutputPin for OutputLine {
    fn is_set_high(&mut self) -> Result<bool, HardwareError> {
        Ok(self.driver.read_back()?.is_high())
    }
    fn is_set_low(&mut self) -> Result<bool, HardwareError> {
        Ok(!self.driver.read_back()?.is_high())
    }
}

impl InputLine {
    pub fn read(&mut self) -> Result<Level, HardwareError> {
        self.driver.read()
    }
}

impl InputPin for InputLine {
    fn is_high(&mut self) -> Result<bool, HardwareError> {
        Ok(self.driver.read()?.is_high())
    }
    fn is_low(&mut self) -> Result<bool, HardwareError> {
        Ok(!self.driver.read()?.is_high())
    }
}

impl OutputPin for BidirectionalLine {
    fn set_low(&mut self) -> Result<(), HardwareError> {
        self.driver.drive(Level::Low)
    }
    fn set_high(&mut self) -> Result<(), HardwareError> {
        self.driver.drive(Level::High)
    }
}

impl InputPin for BidirectionalLine {
    fn is_high(&mut self) -> Result<bool, HardwareError> {
        Ok(self.driver.read()?.is_high())
    }
    fn is_low(&mut self) -> Result<bool, HardwareError> {
        Ok(!self.driver.read()?.is_high())
    }
}

impl BidirectionalPin for BidirectionalLine {
    fn release(&mut self) -> Result<(), HardwareError> {
        self.driver.release()
    }
}
