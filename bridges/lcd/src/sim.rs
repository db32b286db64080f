//! The plate at the wire: an MCP23017 register model (both banks, SEQOP, latches,
//! directions, pull-ups, input polarity, interrupt-on-change on port A: INTFA and
//! INTCAPA latched at the first change, released by reading INTCAPA or GPIOA) whose port B pins feed an HD44780 model (8-bit
//! power-up, 4-bit nibbles latched on E's falling edge, DDRAM, display on/off), plus
//! the backlight LEDs and the five buttons.
//!
//! Attach a [`PlateModel`] to a [`pvbus_hardware::i2c::SimI2cBus`] at the plate's
//! address; keep a clone to press buttons and read the screen.

use std::sync::{Arc, Mutex, MutexGuard};

use pvbus_hardware::i2c::I2cDeviceModel;

use crate::charset;
use crate::mcp23017::{BANK0, IOCON_BANK, IOCON_SEQOP, Register};
use crate::plate::{
    A_GREEN, A_RED, B_BLUE, B_D4, B_D5, B_D6, B_D7, B_E, B_RS, B_RW, Button, COLUMNS, Color,
    ROW_START, ROWS,
};

/// What the model holds.
#[derive(Debug, Clone)]
pub struct PlateState {
    /// Registers by bank-0 address.
    registers: [u8; 22],
    pointer: u8,
    /// The first byte of a write sets the pointer; the next ones are data.
    expect_pointer: bool,
    /// Buttons held down now.
    pub buttons: u8,
    lcd: Lcd,
    /// Port B writes seen (each a possible E edge).
    pub port_b_writes: u64,
    /// I2C write transactions seen.
    pub transactions: u64,
    /// I2C read transactions seen (a button poll is one).
    pub reads: u64,
}

#[derive(Debug, Clone)]
struct Lcd {
    eight_bit: bool,
    /// The first nibble of a 4-bit pair, once received.
    high_nibble: Option<u8>,
    ddram: [u8; 0x68],
    address: u8,
    increment: bool,
    display_on: bool,
    two_lines: bool,
    /// Nibbles latched while RW was high (a read we never answer).
    reads: u64,
    last_e: bool,
}

impl Default for Lcd {
    fn default() -> Self {
        Lcd {
            eight_bit: true,
            high_nibble: None,
            ddram: [b' '; 0x68],
            address: 0,
            increment: true,
            display_on: false,
            two_lines: false,
            reads: 0,
            last_e: false,
        }
    }
}

impl Default for PlateState {
    fn default() -> Self {
        let mut registers = [0u8; 22];
        // Power-on: every pin an input.
        registers[usize::from(Register::IodirA.bank0())] = 0xFF;
        registers[usize::from(Register::IodirB.bank0())] = 0xFF;
        PlateState {
            registers,
            pointer: 0,
            expect_pointer: true,
            buttons: 0,
            lcd: Lcd::default(),
            port_b_writes: 0,
            transactions: 0,
            reads: 0,
        }
    }
}

impl PlateState {
    fn reg(&self, register: Register) -> u8 {
        self.registers[usize::from(register.bank0())]
    }

    fn set_reg(&mut self, register: Register, value: u8) {
        for (address, r) in BANK0.iter().enumerate() {
            if *r == register {
                self.registers[address] = value;
            }
        }
    }

    fn bank1(&self) -> bool {
        self.reg(Register::Iocon) & IOCON_BANK != 0
    }

    /// The level of each port pin: outputs from the latch, inputs from the buttons
    /// (to ground) or the pull-up; a floating input reads low.
    fn pins(&self, port_b: bool) -> u8 {
        let (iodir, olat, gppu) = if port_b {
            (Register::IodirB, Register::OlatB, Register::GppuB)
        } else {
            (Register::IodirA, Register::OlatA, Register::GppuA)
        };
        let inputs = self.reg(iodir);
        let pressed = if port_b { 0 } else { self.buttons };
        let input_levels = self.reg(gppu) & !pressed;
        (self.reg(olat) & !inputs) | (input_levels & inputs)
    }

    fn write_register(&mut self, register: Register, value: u8) {
        let port_a = self.pins(false);
        self.store(register, value);
        self.port_a_moved(port_a);
    }

    /// Port A's pins were `before`: latch an interrupt if an enabled input changed and
    /// none is pending (the chip ignores later changes until the latch is read).
    fn port_a_moved(&mut self, before: u8) {
        if self.reg(Register::IntfA) != 0 {
            return;
        }
        let after = self.pins(false);
        let enabled = self.reg(Register::GpintenA) & self.reg(Register::IodirA);
        let intcon = self.reg(Register::IntconA);
        // INTCON clear: against the previous level; set: against DEFVAL.
        let against_previous = (before ^ after) & !intcon;
        let against_defval = (after ^ self.reg(Register::DefvalA)) & intcon & (before ^ after);
        let flags = (against_previous | against_defval) & enabled;
        if flags != 0 {
            self.set_reg(Register::IntfA, flags);
            let captured = after ^ (self.reg(Register::IpolA) & self.reg(Register::IodirA));
            self.set_reg(Register::IntcapA, captured);
        }
    }

    /// The INTA output: asserted while an interrupt of port A is latched.
    pub fn interrupt_a(&self) -> bool {
        self.reg(Register::IntfA) != 0
    }

    fn store(&mut self, register: Register, value: u8) {
        match register {
            Register::GpioA => self.set_reg(Register::OlatA, value),
            Register::GpioB => self.set_reg(Register::OlatB, value),
            Register::IntfA | Register::IntfB | Register::IntcapA | Register::IntcapB => {}
            other => self.set_reg(other, value),
        }
        if matches!(
            register,
            Register::GpioB | Register::OlatB | Register::IodirB
        ) {
            self.port_b_writes += 1;
            let pins = self.pins(true);
            let outputs = !self.reg(Register::IodirB);
            self.lcd.port_b(pins, outputs);
        }
    }

    fn read_register(&mut self, register: Register) -> u8 {
        match register {
            Register::GpioA => {
                self.set_reg(Register::IntfA, 0);
                self.pins(false) ^ (self.reg(Register::IpolA) & self.reg(Register::IodirA))
            }
            Register::IntcapA => {
                self.set_reg(Register::IntfA, 0);
                self.reg(Register::IntcapA)
            }
            Register::GpioB => {
                self.pins(true) ^ (self.reg(Register::IpolB) & self.reg(Register::IodirB))
            }
            other => self.reg(other),
        }
    }

    /// After a byte at the pointer: SEQOP clear increments; set, bank 1 stays, bank 0
    /// toggles between the A/B pair.
    fn advance(&mut self) {
        let seqop_off = self.reg(Register::Iocon) & IOCON_SEQOP != 0;
        self.pointer = match (seqop_off, self.bank1()) {
            (false, false) => (self.pointer + 1) % 22,
            (false, true) => self.pointer.wrapping_add(1),
            (true, true) => self.pointer,
            (true, false) => self.pointer ^ 1,
        };
    }

    /// The two rows as a person reads them (blank when the display is off).
    pub fn screen(&self) -> [String; ROWS] {
        let row = |r: usize| -> String {
            if !self.lcd.display_on {
                return " ".repeat(COLUMNS);
            }
            let start = usize::from(ROW_START[r]);
            self.lcd.ddram[start..start + COLUMNS]
                .iter()
                .map(|&c| charset::decode(c))
                .collect()
        };
        [row(0), row(1)]
    }

    pub fn backlight(&self) -> Color {
        let a = self.pins(false);
        let a_out = !self.reg(Register::IodirA);
        let b = self.pins(true);
        let b_out = !self.reg(Register::IodirB);
        // Active low, and only when the pin is an output.
        Color::from_rgb((
            a_out & A_RED != 0 && a & A_RED == 0,
            a_out & A_GREEN != 0 && a & A_GREEN == 0,
            b_out & B_BLUE != 0 && b & B_BLUE == 0,
        ))
    }

    pub fn display_on(&self) -> bool {
        self.lcd.display_on
    }

    /// Whether the LCD was set for two lines and 4-bit nibbles.
    pub fn four_bit_two_lines(&self) -> bool {
        !self.lcd.eight_bit && self.lcd.two_lines
    }

    pub fn lcd_reads(&self) -> u64 {
        self.lcd.reads
    }
}

impl Lcd {
    fn port_b(&mut self, pins: u8, outputs: u8) {
        let e = outputs & B_E != 0 && pins & B_E != 0;
        let falling = self.last_e && !e;
        self.last_e = e;
        if !falling {
            return;
        }
        if pins & B_RW != 0 {
            self.reads += 1;
            return;
        }
        let rs = pins & B_RS != 0;
        let mut nibble = 0;
        for (bit, pin) in [(0x1, B_D4), (0x2, B_D5), (0x4, B_D6), (0x8, B_D7)] {
            if pins & pin != 0 {
                nibble |= bit;
            }
        }
        if self.eight_bit {
            // Only D4..D7 are wired: D0..D3 read as 0.
            self.execute(rs, nibble << 4);
        } else if let Some(high) = self.high_nibble.take() {
            self.execute(rs, high << 4 | nibble);
        } else {
            self.high_nibble = Some(nibble);
        }
    }

    fn execute(&mut self, rs: bool, byte: u8) {
        if rs {
            self.ddram[usize::from(self.address)] = byte;
            self.address = step(self.address, self.increment);
            return;
        }
        match byte {
            0x01 => {
                self.ddram = [b' '; 0x68];
                self.address = 0;
                self.increment = true;
            }
            0x02..=0x03 => self.address = 0,
            0x04..=0x07 => self.increment = byte & 0x02 != 0,
            0x08..=0x0F => self.display_on = byte & 0x04 != 0,
            0x10..=0x1F => {}
            0x20..=0x3F => {
                self.eight_bit = byte & 0x10 != 0;
                self.two_lines = byte & 0x08 != 0;
            }
            0x40..=0x7F => {}
            _ => {
                let address = byte & 0x7F;
                self.address = if (0x28..0x40).contains(&address) || address >= 0x68 {
                    0
                } else {
                    address
                };
            }
        }
    }
}

/// The next DDRAM address: rows are 0x00..=0x27 and 0x40..=0x67, and each runs into
/// the other.
fn step(address: u8, increment: bool) -> u8 {
    if increment {
        match address {
            0x27 => 0x40,
            0x67 => 0x00,
            a => a + 1,
        }
    } else {
        match address {
            0x00 => 0x67,
            0x40 => 0x27,
            a => a - 1,
        }
    }
}

/// What the INTA pin is connected to: told `true` when it asserts, `false` when it is
/// released.
type InterruptWire = Box<dyn FnMut(bool) + Send>;

/// A handle on the simulated plate; clones share it.
#[derive(Clone, Default)]
pub struct PlateModel {
    state: Arc<Mutex<PlateState>>,
    int_a: Arc<Mutex<Option<InterruptWire>>>,
}

impl PlateModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> PlateState {
        self.lock().clone()
    }

    pub fn screen(&self) -> [String; ROWS] {
        self.lock().screen()
    }

    pub fn backlight(&self) -> Color {
        self.lock().backlight()
    }

    pub fn set_button(&self, button: Button, down: bool) {
        self.update(|state| {
            let port_a = state.pins(false);
            if down {
                state.buttons |= button.bit();
            } else {
                state.buttons &= !button.bit();
            }
            state.port_a_moved(port_a);
        });
    }

    /// Wires the expander's INTA output (the plate leaves it unconnected; a user may
    /// solder it to a GPIO): `wire` is told each time it asserts or releases.
    pub fn connect_interrupt_a(&self, wire: impl FnMut(bool) + Send + 'static) {
        *self.int_a.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(wire));
    }

    /// Runs `f` on the state, then tells the INTA wire if the output changed (outside
    /// the state's lock, so that the wire may do anything).
    fn update<R>(&self, f: impl FnOnce(&mut PlateState) -> R) -> R {
        let (result, before, after) = {
            let mut state = self.lock();
            let before = state.interrupt_a();
            let result = f(&mut state);
            (result, before, state.interrupt_a())
        };
        if before != after
            && let Some(wire) = self
                .int_a
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
        {
            wire(after);
        }
        result
    }

    /// The plate drawn for a terminal: a frame around the two rows, and the backlight.
    pub fn render(&self) -> String {
        let state = self.lock();
        let [top, bottom] = state.screen();
        let bar = "-".repeat(COLUMNS);
        format!(
            "+{bar}+\n|{top}|\n|{bottom}|\n+{bar}+  backlight {}\n",
            state.backlight().name()
        )
    }

    fn lock(&self) -> MutexGuard<'_, PlateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl I2cDeviceModel for PlateModel {
    fn write(&mut self, bytes: &[u8]) {
        self.update(|state| {
            state.transactions += 1;
            for &byte in bytes {
                if state.expect_pointer {
                    state.pointer = byte;
                    state.expect_pointer = false;
                    continue;
                }
                let bank1 = state.bank1();
                if let Some(register) = Register::at(state.pointer, bank1) {
                    state.write_register(register, byte);
                }
                state.advance();
            }
        });
    }

    fn read(&mut self, buffer: &mut [u8]) {
        self.update(|state| {
            state.reads += 1;
            for byte in buffer {
                let bank1 = state.bank1();
                *byte = match Register::at(state.pointer, bank1) {
                    Some(register) => state.read_register(register),
                    None => 0,
                };
                state.advance();
            }
        });
    }

    fn stop(&mut self) {
        self.lock().expect_pointer = true;
    }
}
