//! TM1638 LED and key driver, bit-banged over three GPIO lines, with no MQTT in it.
//!
//! Layout:
//! - [`font`]: the seven-segment font (text to segment patterns and back).
//! - [`board`]: the boards around the chip: where digits and LEDs sit in display RAM,
//!   which matrix key each button is, and how a key scan reads.
//! - [`driver`]: [`Tm1638`], the serial protocol (commands, RAM writes, brightness,
//!   key scans) for a chain of chips sharing CLK and DIO, one STB each.
//! - [`sim`]: [`sim::Tm1638Model`], the chip at the wire, for tests and the demo.

pub mod board;
pub mod driver;
pub mod font;
pub mod sim;

pub use board::{BoardKind, KeyPosition, KeyScan};
pub use driver::{Brightness, SpinDelay, Tm1638, Tm1638Error};
