//! The Linux GPIO character device backend (gpiocdev, uAPI v2): any board with
//! a /dev/gpiochipN, and the way out should rppal stop working on a future Pi.
//!
//! A released request leaves a line's state to the kernel driver; most keep the
//! last output level. A process that restarts therefore opens with
//! `InitialLevel::Keep`: the line is requested as-is, read, and only then turned
//! into an output at the level it already had.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpiocdev::Request;
use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Value};

use crate::HardwareError;
use crate::backend::Gpio;
use crate::line::{
    BidirectionalDriver, BidirectionalLine, Edge, EdgeDriver, EdgeLine, InitialLevel, InputDriver,
    InputLine, Level, OutputDriver, OutputLine, Pull,
};

const CONSUMER: &str = "pvbus";

pub struct CdevGpio {
    chip: PathBuf,
}

impl CdevGpio {
    /// Checks that `chip` is a GPIO character device.
    pub fn new(chip: &Path) -> Result<Self, HardwareError> {
        gpiocdev::chip::Chip::from_path(chip).map_err(|error| HardwareError::Backend {
            backend: "gpiochip",
            message: format!("{}: {error}", chip.display()),
        })?;
        Ok(CdevGpio {
            chip: chip.to_owned(),
        })
    }

    fn builder(&self, bcm: u8) -> gpiocdev::request::Builder {
        let mut builder = Request::builder();
        builder
            .on_chip(&self.chip)
            .with_consumer(CONSUMER)
            .with_line(u32::from(bcm));
        builder
    }
}

fn line_error(bcm: u8, error: gpiocdev::Error) -> HardwareError {
    HardwareError::Line {
        bcm,
        message: error.to_string(),
    }
}

fn value(level: Level) -> Value {
    match level {
        Level::Low => Value::Inactive,
        Level::High => Value::Active,
    }
}

fn level(value: Value) -> Level {
    Level::from_high(value == Value::Active)
}

fn bias(pull: Pull) -> Bias {
    match pull {
        Pull::None => Bias::Disabled,
        Pull::Up => Bias::PullUp,
        Pull::Down => Bias::PullDown,
    }
}

impl Gpio for CdevGpio {
    fn name(&self) -> &'static str {
        "gpiochip"
    }

    fn output(&self, bcm: u8, initial: InitialLevel) -> Result<OutputLine, HardwareError> {
        let request = match initial {
            InitialLevel::Level(start) => self
                .builder(bcm)
                .as_output(value(start))
                .request()
                .map_err(|e| line_error(bcm, e))?,
            InitialLevel::Keep { if_unknown } => {
                let request = self
                    .builder(bcm)
                    .as_is()
                    .request()
                    .map_err(|e| line_error(bcm, e))?;
                let now = request
                    .value(u32::from(bcm))
                    .map(level)
                    .unwrap_or(if_unknown);
                let mut config = request.config();
                config.with_line(u32::from(bcm)).as_output(value(now));
                request
                    .reconfigure(&config)
                    .map_err(|e| line_error(bcm, e))?;
                request
            }
        };
        Ok(OutputLine::new(bcm, Box::new(CdevLine { bcm, request })))
    }

    fn input(&self, bcm: u8, pull: Pull) -> Result<InputLine, HardwareError> {
        let request = self
            .builder(bcm)
            .as_input()
            .with_bias(bias(pull))
            .request()
            .map_err(|e| line_error(bcm, e))?;
        Ok(InputLine::new(bcm, Box::new(CdevLine { bcm, request })))
    }

    fn bidirectional(&self, bcm: u8, pull: Pull) -> Result<BidirectionalLine, HardwareError> {
        let request = self
            .builder(bcm)
            .as_input()
            .with_bias(bias(pull))
            .request()
            .map_err(|e| line_error(bcm, e))?;
        Ok(BidirectionalLine::new(
            bcm,
            Box::new(CdevBidirectional {
                line: CdevLine { bcm, request },
                driving: false,
            }),
        ))
    }

    fn edge_input(&self, bcm: u8, pull: Pull, edge: Edge) -> Result<EdgeLine, HardwareError> {
        let request = self
            .builder(bcm)
            .as_input()
            .with_bias(bias(pull))
            .with_edge_detection(match edge {
                Edge::Rising => EdgeDetection::RisingEdge,
                Edge::Falling => EdgeDetection::FallingEdge,
                Edge::Both => EdgeDetection::BothEdges,
            })
            .request()
            .map_err(|e| line_error(bcm, e))?;
        Ok(EdgeLine::new(bcm, Box::new(CdevLine { bcm, request })))
    }
}

impl EdgeDriver for CdevLine {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<Level>, HardwareError> {
        // The kernel queues edges on the request's file: a read blocks until one.
        if let Some(limit) = timeout {
            let ready = self
                .request
                .wait_edge_event(limit)
                .map_err(|e| line_error(self.bcm, e))?;
            if !ready {
                return Ok(None);
            }
        }
        let event = self
            .request
            .read_edge_event()
            .map_err(|e| line_error(self.bcm, e))?;
        Ok(Some(match event.kind {
            EdgeKind::Rising => Level::High,
            EdgeKind::Falling => Level::Low,
        }))
    }

    fn read(&mut self) -> Result<Level, HardwareError> {
        self.get()
    }
}

struct CdevLine {
    bcm: u8,
    request: Request,
}

impl CdevLine {
    fn offset(&self) -> u32 {
        u32::from(self.bcm)
    }

    fn get(&self) -> Result<Level, HardwareError> {
        self.request
            .value(self.offset())
            .map(level)
            .map_err(|e| line_error(self.bcm, e))
    }

    fn set(&self, to: Level) -> Result<(), HardwareError> {
        self.request
            .set_value(self.offset(), value(to))
            .map_err(|e| line_error(self.bcm, e))
    }

    fn reconfigure(&self, output: Option<Level>) -> Result<(), HardwareError> {
        let mut config = self.request.config();
        let line = config.with_line(self.offset());
        match output {
            Some(start) => line.as_output(value(start)),
            None => line.as_input(),
        };
        self.request
            .reconfigure(&config)
            .map_err(|e| line_error(self.bcm, e))
    }
}

impl OutputDriver for CdevLine {
    fn write(&mut self, to: Level) -> Result<(), HardwareError> {
        self.set(to)
    }
    fn read_back(&mut self) -> Result<Level, HardwareError> {
        self.get()
    }
}

impl InputDriver for CdevLine {
    fn read(&mut self) -> Result<Level, HardwareError> {
        self.get()
    }
}

struct CdevBidirectional {
    line: CdevLine,
    driving: bool,
}

impl BidirectionalDriver for CdevBidirectional {
    fn drive(&mut self, to: Level) -> Result<(), HardwareError> {
        if self.driving {
            self.line.set(to)
        } else {
            // One reconfigure sets direction and level together.
            self.line.reconfigure(Some(to))?;
            self.driving = true;
            Ok(())
        }
    }
    fn release(&mut self) -> Result<(), HardwareError> {
        if self.driving {
            self.line.reconfigure(None)?;
            self.driving = false;
        }
        Ok(())
    }
    fn read(&mut self) -> Result<Level, HardwareError> {
        self.line.get()
    }
}
