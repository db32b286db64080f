//! The Raspberry Pi backend: rppal's memory-mapped GPIO.
//!
//! rppal resets a pin to its former mode when its handle drops; a relay would
//! then fall to whatever the pull resistor says each time the process stops.
//! Every line here therefore has reset-on-drop turned off: what a process last
//! drove stays driven until the next process opens the line at that level.

use std::time::Duration;

use rppal::gpio::{Bias, IoPin, Mode, OutputPin as RppalOutput, Trigger};

use crate::HardwareError;
use crate::backend::Gpio;
use crate::line::{
    BidirectionalDriver, BidirectionalLine, Edge, EdgeDriver, EdgeLine, InitialLevel, InputDriver,
    InputLine, Level, OutputDriver, OutputLine, Pull,
};

pub struct RppalGpio {
    gpio: rppal::gpio::Gpio,
}

impl RppalGpio {
    pub fn new() -> Result<Self, HardwareError> {
        let gpio = rppal::gpio::Gpio::new().map_err(|error| HardwareError::Backend {
            backend: "rppal",
            message: error.to_string(),
        })?;
        Ok(RppalGpio { gpio })
    }

    fn pin(&self, bcm: u8) -> Result<rppal::gpio::Pin, HardwareError> {
        self.gpio.get(bcm).map_err(|error| line_error(bcm, error))
    }
}

fn line_error(bcm: u8, error: rppal::gpio::Error) -> HardwareError {
    match error {
        rppal::gpio::Error::PinUsed(_) => HardwareError::LineBusy { bcm },
        other => HardwareError::Line {
            bcm,
            message: other.to_string(),
        },
    }
}

fn to_rppal(level: Level) -> rppal::gpio::Level {
    match level {
        Level::Low => rppal::gpio::Level::Low,
        Level::High => rppal::gpio::Level::High,
    }
}

fn from_rppal(level: rppal::gpio::Level) -> Level {
    Level::from_high(level == rppal::gpio::Level::High)
}

fn bias(pull: Pull) -> Bias {
    match pull {
        Pull::None => Bias::Off,
        Pull::Up => Bias::PullUp,
        Pull::Down => Bias::PullDown,
    }
}

impl Gpio for RppalGpio {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn output(&self, bcm: u8, initial: InitialLevel) -> Result<OutputLine, HardwareError> {
        let pin = self.pin(bcm)?;
        let level = match initial {
            InitialLevel::Level(level) => level,
            // The level register reads the line in any mode, so the level a
            // previous process left (or the pull holds) is always known here.
            InitialLevel::Keep { .. } => from_rppal(pin.read()),
        };
        // into_output_{low,high} writes the level before switching the mode.
        let mut output = match level {
            Level::Low => pin.into_output_low(),
            Level::High => pin.into_output_high(),
        };
        output.set_reset_on_drop(false);
        Ok(OutputLine::new(bcm, Box::new(RppalOutputDriver(output))))
    }

    fn input(&self, bcm: u8, pull: Pull) -> Result<InputLine, HardwareError> {
        let pin = self.pin(bcm)?;
        let mut input = match pull {
            Pull::None => pin.into_input(),
            Pull::Up => pin.into_input_pullup(),
            Pull::Down => pin.into_input_pulldown(),
        };
        input.set_reset_on_drop(false);
        Ok(InputLine::new(bcm, Box::new(RppalInputDriver(input))))
    }

    fn bidirectional(&self, bcm: u8, pull: Pull) -> Result<BidirectionalLine, HardwareError> {
        let mut io = self.pin(bcm)?.into_io(Mode::Input);
        io.set_bias(bias(pull));
        io.set_reset_on_drop(false);
        Ok(BidirectionalLine::new(bcm, Box::new(RppalIoDriver(io))))
    }

    fn edge_input(&self, bcm: u8, pull: Pull, edge: Edge) -> Result<EdgeLine, HardwareError> {
        let pin = self.pin(bcm)?;
        let mut input = match pull {
            Pull::None => pin.into_input(),
            Pull::Up => pin.into_input_pullup(),
            Pull::Down => pin.into_input_pulldown(),
        };
        input.set_reset_on_drop(false);
        let trigger = match edge {
            Edge::Rising => Trigger::RisingEdge,
            Edge::Falling => Trigger::FallingEdge,
            Edge::Both => Trigger::Both,
        };
        input
            .set_interrupt(trigger, None)
            .map_err(|e| line_error(bcm, e))?;
        Ok(EdgeLine::new(bcm, Box::new(RppalInputDriver(input))))
    }
}

struct RppalOutputDriver(RppalOutput);

impl OutputDriver for RppalOutputDriver {
    fn write(&mut self, level: Level) -> Result<(), HardwareError> {
        self.0.write(to_rppal(level));
        Ok(())
    }
    fn read_back(&mut self) -> Result<Level, HardwareError> {
        // The level register, not the value last written.
        Ok(Level::from_high(self.0.is_set_high()))
    }
}

struct RppalInputDriver(rppal::gpio::InputPin);

impl EdgeDriver for RppalInputDriver {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Level>, HardwareError> {
        // reset = false: an edge that came since the last wait is returned at once.
        let event = self
            .0
            .poll_interrupt(false, timeout)
            .map_err(|e| line_error(self.0.pin(), e))?;
        Ok(event.map(|e| match e.trigger {
            Trigger::RisingEdge => Level::High,
            _ => Level::Low,
        }))
    }

    fn read(&mut self) -> Result<Level, HardwareError> {
        Ok(from_rppal(self.0.read()))
    }
}

impl InputDriver for RppalInputDriver {
    fn read(&mut self) -> Result<Level, HardwareError> {
        Ok(from_rppal(self.0.read()))
    }
}

struct RppalIoDriver(IoPin);

impl BidirectionalDriver for RppalIoDriver {
    fn drive(&mut self, level: Level) -> Result<(), HardwareError> {
        // Latch the level first, then switch to output: no stray edge on DIO.
        self.0.write(to_rppal(level));
        if self.0.mode() != Mode::Output {
            self.0.set_mode(Mode::Output);
        }
        Ok(())
    }
    fn release(&mut self) -> Result<(), HardwareError> {
        self.0.set_mode(Mode::Input);
        Ok(())
    }
    fn read(&mut self) -> Result<Level, HardwareError> {
        Ok(from_rppal(self.0.read()))
    }
}
