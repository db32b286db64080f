//! Victron VE.Direct protocol: bytes in, typed values out. No I/O, no MQTT, no clock.
//!
//! Layout:
//! - [`text`]: streaming parser that cuts the serial byte stream into checksummed text
//!   blocks and pulls out the HEX frames interleaved with them; text-block encoder.
//! - [`hex`]: HEX frames (`:7D5ED008C`), requests and responses, encode and decode.
//! - [`registers`]: the HEX registers the bridge uses, with types and SI scaling.
//! - [`products`]: product id (PID) to model name.
//! - [`decode`]: text fields to named SI readings (enumerations named), and the
//!   per-device [`decode::Accumulator`] that merges the two blocks of a battery monitor.
//! - [`sim`]: a device simulator (MPPT, BMV, SmartShunt, Phoenix) driven by virtual time.
//! - [`cli`]: the logic of `pvbus vedirect decode [FILE]`.
//!
//! A bridge reads the serial port and does this with every chunk it gets:
//!
//! ```
//! use vedirect::decode::Accumulator;
//! use vedirect::text::{Event, Parser};
//!
//! let mut parser = Parser::new();
//! let mut device = Accumulator::new();
//! let chunk = vedirect::text::encode_block(&[("PID", "0xA053"), ("V", "12540")]).unwrap();
//! for event in parser.feed(&chunk) {
//!     match event {
//!         Event::Block(block) => {
//!             if device.update(&block) {
//!                 let json = device.reading().to_json(Some(1764040000));
//!                 assert_eq!(
//!                     json,
//!                     r#"{"ts":1764040000,"product_id":"0xA053","model":"SmartSolar MPPT 75/15","battery_voltage":12.54}"#
//!                 );
//!             }
//!         }
//!         Event::Rejected(rejection) => eprintln!("{rejection}"),
//!         Event::Hex(frame) => eprintln!("HEX {}", frame.raw),
//!     }
//! }
//! // And after ~500 ms without bytes: parser.idle_reset();
//! ```

pub mod cli;
pub mod decode;
pub mod hex;
pub mod products;
pub mod registers;
pub mod sim;
pub mod text;
