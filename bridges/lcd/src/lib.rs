//! The Adafruit RGB 16x2 LCD plate: an HD44780 character LCD in 4-bit mode, an RGB
//! backlight and 5 buttons, all behind an MCP23017 I2C port expander. No MQTT in it.
//!
//! Layout:
//! - [`mcp23017`]: the expander's registers in both bank layouts, and how we set it up
//!   (bank 1, no address increment) so that one I2C write can carry a whole run of
//!   port values.
//! - [`plate`]: the plate's pin mapping (buttons, backlight, LCD lines), the HD44780
//!   4-bit protocol and [`Plate`], the driver: lines of text, backlight colour, buttons
//!   (polled through the expander's latched change flags, so no press is lost).
//! - [`charset`]: text to the HD44780's character ROM (A00) and back.
//! - [`sim`]: [`sim::PlateModel`], the MCP23017 and the HD44780 at the wire, decoding
//!   register writes into a 16x2 screen and a backlight colour.

pub mod charset;
pub mod mcp23017;
pub mod plate;
pub mod sim;

pub use plate::{Button, ButtonChanges, ButtonSet, Color, Plate, PlateError, StdDelay};
