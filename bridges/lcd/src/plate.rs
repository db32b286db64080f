//! The Adafruit RGB LCD plate and the HD44780's 4-bit protocol.
//!
//! Pin mapping of the plate (MCP23017 at 0x20):
//! - port A: 0 SELECT, 1 RIGHT, 2 DOWN, 3 UP, 4 LEFT (buttons to ground, internal
//!   pull-ups), 6 red and 7 green backlight (active low);
//! - port B: 0 blue backlight (active low), 1 D7, 2 D6, 3 D5, 4 D4, 5 E, 6 RW, 7 RS.
//!
//! The plate does not wire the expander's INT outputs to the Pi, so buttons are
//! polled. The expander's interrupt-on-change logic works all the same, unwired: at the
//! first change of a button after a read it copies port A into INTCAPA and flags the
//! pin in INTFA, and keeps both until INTCAPA or GPIOA is read. Polling INTFA (one
//! 1-byte read) therefore finds every press, even one shorter than the poll period:
//! the period only sets how long a press waits to be noticed.
//!
//! The HD44780 latches a nibble on the falling edge of E. Commands take 37 µs (clear
//! and home 1.52 ms); one byte on a 100 kHz I2C bus takes 90 µs, so no wait is needed
//! between port values except after clear, which only `new` sends.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use crate::charset;
use crate::mcp23017::{IOCON_BANK, IOCON_SEQOP, Register};

pub const COLUMNS: usize = 16;
pub const ROWS: usize = 2;
/// The plate's default I2C address.
pub const DEFAULT_ADDRESS: u8 = 0x20;

pub(crate) const B_BLUE: u8 = 1 << 0;
pub(crate) const B_D7: u8 = 1 << 1;
pub(crate) const B_D6: u8 = 1 << 2;
pub(crate) const B_D5: u8 = 1 << 3;
pub(crate) const B_D4: u8 = 1 << 4;
pub(crate) const B_E: u8 = 1 << 5;
pub(crate) const B_RW: u8 = 1 << 6;
pub(crate) const B_RS: u8 = 1 << 7;
pub(crate) const A_RED: u8 = 1 << 6;
pub(crate) const A_GREEN: u8 = 1 << 7;
pub(crate) const A_BUTTONS: u8 = 0b0001_1111;

/// HD44780 instructions.
pub(crate) const LCD_CLEAR: u8 = 0x01;
pub(crate) const LCD_ENTRY_INCREMENT: u8 = 0x06;
pub(crate) const LCD_DISPLAY: u8 = 0x08;
pub(crate) const LCD_DISPLAY_ON: u8 = 0x04;
pub(crate) const LCD_FUNCTION_4BIT_2LINES: u8 = 0x28;
pub(crate) const LCD_SET_DDRAM: u8 = 0x80;
/// DDRAM address of the start of each row.
pub(crate) const ROW_START: [u8; ROWS] = [0x00, 0x40];

/// The 5 buttons, by their bit on port A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    Select,
    Right,
    Down,
    Up,
    Left,
}

impl Button {
    pub const ALL: [Button; 5] = [
        Button::Select,
        Button::Right,
        Button::Down,
        Button::Up,
        Button::Left,
    ];

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Button::Select => "select",
            Button::Right => "right",
            Button::Down => "down",
            Button::Up => "up",
            Button::Left => "left",
        }
    }

    pub fn from_name(name: &str) -> Option<Button> {
        Button::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// Buttons held down, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ButtonSet(pub u8);

impl ButtonSet {
    pub fn contains(self, button: Button) -> bool {
        self.0 & button.bit() != 0
    }

    /// Buttons down in `self` that were not in `before`.
    pub fn newly_pressed(self, before: ButtonSet) -> impl Iterator<Item = Button> {
        Button::ALL
            .into_iter()
            .filter(move |b| self.contains(*b) && !before.contains(*b))
    }
}

/// Buttons pull their line to ground.
fn pressed_in(port_a: u8) -> ButtonSet {
    ButtonSet(!port_a & A_BUTTONS)
}

/// The buttons at the first change since the previous read, and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonChanges {
    pub at_first_change: ButtonSet,
    pub now: ButtonSet,
}

impl ButtonChanges {
    /// Buttons that went down since `before` (the set last seen), each once: those
    /// down at the first change, then those down now that were not then.
    pub fn presses(self, before: ButtonSet) -> Vec<Button> {
        let mut presses: Vec<Button> = self.at_first_change.newly_pressed(before).collect();
        presses.extend(self.now.newly_pressed(self.at_first_change));
        presses
    }
}

/// The backlight: three LEDs, so eight colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    Off,
    Red,
    Green,
    Blue,
    Yellow,
    Teal,
    Violet,
    White,
}

impl Color {
    pub const ALL: [Color; 8] = [
        Color::Off,
        Color::Red,
        Color::Green,
        Color::Blue,
        Color::Yellow,
        Color::Teal,
        Color::Violet,
        Color::White,
    ];

    /// Which LEDs are lit: (red, green, blue).
    pub fn rgb(self) -> (bool, bool, bool) {
        match self {
            Color::Off => (false, false, false),
            Color::Red => (true, false, false),
            Color::Green => (false, true, false),
            Color::Blue => (false, false, true),
            Color::Yellow => (true, true, false),
            Color::Teal => (false, true, true),
            Color::Violet => (true, false, true),
            Color::White => (true, true, true),
        }
    }

    pub fn from_rgb(rgb: (bool, bool, bool)) -> Color {
        Color::ALL
            .into_iter()
            .find(|c| c.rgb() == rgb)
            .expect("every combination is a colour")
    }

    pub fn name(self) -> &'static str {
        match self {
            Color::Off => "off",
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::Teal => "teal",
            Color::Violet => "violet",
            Color::White => "white",
        }
    }

    pub fn from_name(name: &str) -> Option<Color> {
        Color::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlateError<E: std::fmt::Debug> {
    #[error("I2C: {0:?}")]
    I2c(E),
    #[error("the LCD has rows 0 and 1, not {0}")]
    NoRow(usize),
}

/// Sleeps with the standard library (only used during initialisation).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdDelay;

impl DelayNs for StdDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(std::time::Duration::from_nanos(u64::from(ns)));
    }
}

/// The plate, initialised.
pub struct Plate<I, D> {
    i2c: I,
    address: u8,
    delay: D,
    /// What we keep on port A's outputs (the red and green backlight bits).
    port_a: u8,
    /// Port B bits that are not the LCD's (the blue backlight).
    port_b_keep: u8,
    display_on: bool,
}

impl<I, D, E> Plate<I, D>
where
    I: I2c<Error = E>,
    D: DelayNs,
    E: std::fmt::Debug,
{
    /// Sets the expander up (from whatever state a previous process left it in) and
    /// initialises the LCD in 4-bit mode: blank screen, display on, backlight off.
    pub fn new(i2c: I, address: u8, delay: D) -> Result<Self, PlateError<E>> {
        let mut plate = Plate {
            i2c,
            address,
            delay,
            port_a: A_RED | A_GREEN,
            port_b_keep: B_BLUE,
            display_on: true,
        };
        // Address 0x15 is IOCON in bank 1 and OLATB in bank 0: writing 0 there puts a
        // chip left in bank 1 back in bank 0, and is harmless otherwise.
        plate.write(&[0x15, 0x00])?;
        // Latches before directions, so that the backlight does not flash on.
        plate.write(&[Register::OlatA.bank0(), plate.port_a, plate.port_b_keep])?;
        plate.write(&[Register::GppuA.bank0(), A_BUTTONS, 0x00])?;
        plate.write(&[Register::IodirA.bank0(), A_BUTTONS | 1 << 5, 0x00])?;
        // Interrupt on any change of a button (INTCON 0: against the previous level).
        plate.write(&[Register::IntconA.bank0(), 0x00, 0x00])?;
        plate.write(&[Register::GpintenA.bank0(), A_BUTTONS, 0x00])?;
        plate.write(&[Register::Iocon.bank0(), IOCON_BANK | IOCON_SEQOP])?;
        // A change latched before this process (or by the set-up) is not a press now.
        plate.read_register(Register::GpioA)?;

        // HD44780 initialisation by instruction (datasheet figure 24): three times
        // "8-bit interface", then "4-bit interface", each a single nibble.
        for (nibble, wait_us) in [(0x3, 4_500), (0x3, 150), (0x3, 150), (0x2, 150)] {
            let mut run = Vec::new();
            plate.push_nibble(&mut run, false, nibble);
            plate.write_port_b(&run)?;
            plate.delay.delay_us(wait_us);
        }
        let mut run = Vec::new();
        for command in [
            LCD_FUNCTION_4BIT_2LINES,
            LCD_DISPLAY | LCD_DISPLAY_ON,
            LCD_CLEAR,
        ] {
            plate.push_byte(&mut run, false, command);
        }
        plate.write_port_b(&run)?;
        plate.delay.delay_us(2_000);
        let mut run = Vec::new();
        plate.push_byte(&mut run, false, LCD_ENTRY_INCREMENT);
        plate.write_port_b(&run)?;
        Ok(plate)
    }

    /// Writes `text` on `row` (0 or 1), padded or cut to 16 characters, in one I2C
    /// write.
    pub fn write_line(&mut self, row: usize, text: &str) -> Result<(), PlateError<E>> {
        let start = *ROW_START.get(row).ok_or(PlateError::NoRow(row))?;
        let mut run = Vec::with_capacity(4 * (COLUMNS + 1));
        self.push_byte(&mut run, false, LCD_SET_DDRAM | start);
        let mut chars = text.chars();
        for _ in 0..COLUMNS {
            let code = chars.next().map_or(b' ', charset::encode);
            self.push_byte(&mut run, true, code);
        }
        self.write_port_b(&run)
    }

    pub fn set_backlight(&mut self, color: Color) -> Result<(), PlateError<E>> {
        let (red, green, blue) = color.rgb();
        self.port_a = (if red { 0 } else { A_RED }) | (if green { 0 } else { A_GREEN });
        self.port_b_keep = if blue { 0 } else { B_BLUE };
        let port_a = self.port_a;
        self.write(&[Register::OlatA.bank1(), port_a])?;
        let keep = self.port_b_keep;
        self.write(&[Register::OlatB.bank1(), keep])
    }

    /// Text on or off (the LCD keeps its memory).
    pub fn set_display(&mut self, on: bool) -> Result<(), PlateError<E>> {
        self.display_on = on;
        let mut run = Vec::new();
        let bit = if on { LCD_DISPLAY_ON } else { 0 };
        self.push_byte(&mut run, false, LCD_DISPLAY | bit);
        self.write_port_b(&run)
    }

    /// The buttons held down now.
    pub fn buttons(&mut self) -> Result<ButtonSet, PlateError<E>> {
        let port = self.read_register(Register::GpioA)?;
        Ok(pressed_in(port))
    }

    /// What changed on the buttons since the last call (or `buttons`): `None` when
    /// nothing did (one 1-byte read), else the buttons as they were at the first change
    /// and as they are now. A press and release both between two calls shows in
    /// `at_first_change`. Changes after the first one are not latched by the chip, so
    /// a second, different button pressed and released in the same interval is not
    /// seen.
    pub fn button_changes(&mut self) -> Result<Option<ButtonChanges>, PlateError<E>> {
        if self.read_register(Register::IntfA)? & A_BUTTONS == 0 {
            return Ok(None);
        }
        // Reading INTCAPA releases the latch; GPIOA then gives the present.
        let at_first_change = pressed_in(self.read_register(Register::IntcapA)?);
        let now = pressed_in(self.read_register(Register::GpioA)?);
        Ok(Some(ButtonChanges {
            at_first_change,
            now,
        }))
    }

    fn read_register(&mut self, register: Register) -> Result<u8, PlateError<E>> {
        let mut value = [0u8];
        self.i2c
            .write_read(self.address, &[register.bank1()], &mut value)
            .map_err(PlateError::I2c)?;
        Ok(value[0])
    }

    /// Gives the I2C bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PlateError<E>> {
        self.i2c.write(self.address, bytes).map_err(PlateError::I2c)
    }

    /// One I2C write of a run of port B values, all to OLATB (the pointer stays).
    fn write_port_b(&mut self, run: &[u8]) -> Result<(), PlateError<E>> {
        let mut bytes = Vec::with_capacity(run.len() + 1);
        bytes.push(Register::OlatB.bank1());
        bytes.extend_from_slice(run);
        self.write(&bytes)
    }

    fn push_byte(&self, run: &mut Vec<u8>, data: bool, byte: u8) {
        self.push_nibble(run, data, byte >> 4);
        self.push_nibble(run, data, byte & 0x0F);
    }

    /// A nibble is two port values: E high with the data, then E low (the latch).
    fn push_nibble(&self, run: &mut Vec<u8>, data: bool, nibble: u8) {
        let mut port = self.port_b_keep;
        if data {
            port |= B_RS;
        }
        for (bit, pin) in [(0x1, B_D4), (0x2, B_D5), (0x4, B_D6), (0x8, B_D7)] {
            if nibble & bit != 0 {
                port |= pin;
            }
        }
        debug_assert_eq!(port & B_RW, 0, "we only ever write to the LCD");
        run.push(port | B_E);
        run.push(port);
    }
}
