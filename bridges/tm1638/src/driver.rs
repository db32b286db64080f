//! The bit-banged serial protocol: commands, display RAM writes and key scans, for one
//! or several chips that share CLK and DIO and each have their own STB.
//!
//! Timing (datasheet): CLK at most 1 MHz with pulses of at least 400 ns, STB high for at
//! least 1 µs between commands, and 1 µs (Twait) between the read command and the first
//! falling CLK edge of the answer. We keep every half period at 1 µs: an update of one
//! board (3 commands, 18 bytes) then takes well under a millisecond.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use pvbus_hardware::BidirectionalPin;

use crate::board::KeyScan;

/// Data command: write display RAM, address incremented after each byte.
pub const CMD_WRITE_AUTO: u8 = 0x40;
/// Data command: write display RAM at a fixed address.
pub const CMD_WRITE_FIXED: u8 = 0x44;
/// Data command: read the key scan.
pub const CMD_READ_KEYS: u8 = 0x42;
/// Address command: `0xC0 | address` (0..=15).
pub const CMD_ADDRESS: u8 = 0xC0;
/// Display control: `0x80 | 0x08 (on) | brightness (0..=7)`.
pub const CMD_DISPLAY: u8 = 0x80;

const HALF_PERIOD_NS: u32 = 1_000;

/// Display brightness, the chip's 8 pulse widths (0 = 1/16 .. 7 = 14/16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Brightness(u8);

impl Brightness {
    pub const MIN: Brightness = Brightness(0);
    pub const MAX: Brightness = Brightness(7);

    pub fn new(level: u8) -> Option<Brightness> {
        (level <= 7).then_some(Brightness(level))
    }

    pub fn level(self) -> u8 {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Tm1638Error<E: std::fmt::Debug> {
    #[error("GPIO: {0:?}")]
    Pin(E),
    #[error("there is no board {board} (the chain has {boards})")]
    NoBoard { board: usize, boards: usize },
    #[error("display RAM has 16 bytes: {len} bytes from address {start} do not fit")]
    RamOverflow { start: u8, len: usize },
}

/// A chain of TM1638 chips: one STB line each, CLK and DIO shared. The driver does not
/// know which GPIO backend drives the lines, nor whether the chip is real.
pub struct Tm1638<O, D, T> {
    stbs: Vec<O>,
    clk: O,
    dio: D,
    delay: T,
}

impl<O, D, T, E> Tm1638<O, D, T>
where
    O: OutputPin<Error = E>,
    D: BidirectionalPin<Error = E>,
    T: DelayNs,
    E: std::fmt::Debug,
{
    /// Takes the lines and sets them idle: every STB and CLK high, DIO released (the
    /// line needs a pull-up: the chip's DIO output is open drain).
    pub fn new(stbs: Vec<O>, clk: O, dio: D, delay: T) -> Result<Self, Tm1638Error<E>> {
        let mut chain = Tm1638 {
            stbs,
            clk,
            dio,
            delay,
        };
        for stb in &mut chain.stbs {
            stb.set_high().map_err(Tm1638Error::Pin)?;
        }
        chain.clk.set_high().map_err(Tm1638Error::Pin)?;
        chain.dio.release().map_err(Tm1638Error::Pin)?;
        // STB high for a while before the first transfer (PWSTB), as between transfers:
        // the line may have been low, or floating, until now.
        chain.delay.delay_ns(HALF_PERIOD_NS);
        Ok(chain)
    }

    pub fn boards(&self) -> usize {
        self.stbs.len()
    }

    /// Writes `bytes` into display RAM from `start`, in one transfer.
    pub fn write_ram(
        &mut self,
        board: usize,
        start: u8,
        bytes: &[u8],
    ) -> Result<(), Tm1638Error<E>> {
        self.check(board)?;
        if usize::from(start) + bytes.len() > 16 {
            return Err(Tm1638Error::RamOverflow {
                start,
                len: bytes.len(),
            });
        }
        self.command(board, &[CMD_WRITE_AUTO])?;
        let mut transfer = Vec::with_capacity(bytes.len() + 1);
        transfer.push(CMD_ADDRESS | start);
        transfer.extend_from_slice(bytes);
        self.command(board, &transfer)
    }

    /// Writes one byte of display RAM (fixed address mode): one LED without touching
    /// the rest.
    pub fn write_at(&mut self, board: usize, address: u8, byte: u8) -> Result<(), Tm1638Error<E>> {
        self.check(board)?;
        if address > 15 {
            return Err(Tm1638Error::RamOverflow {
                start: address,
                len: 1,
            });
        }
        self.command(board, &[CMD_WRITE_FIXED])?;
        self.command(board, &[CMD_ADDRESS | address, byte])
    }

    /// Display on or off, and its brightness.
    pub fn display(
        &mut self,
        board: usize,
        on: bool,
        brightness: Brightness,
    ) -> Result<(), Tm1638Error<E>> {
        self.check(board)?;
        let on_bit = if on { 0x08 } else { 0 };
        self.command(board, &[CMD_DISPLAY | on_bit | brightness.level()])
    }

    /// Reads the 4 key-scan bytes of one chip.
    pub fn read_keys(&mut self, board: usize) -> Result<KeyScan, Tm1638Error<E>> {
        self.check(board)?;
        self.stb(board, false)?;
        self.send_byte(CMD_READ_KEYS)?;
        self.dio.release().map_err(Tm1638Error::Pin)?;
        self.delay.delay_ns(HALF_PERIOD_NS); // Twait
        let mut scan = [0u8; 4];
        for byte in &mut scan {
            for bit in 0..8 {
                // The chip shifts a bit out on the falling edge; it is stable once CLK
                // is high again.
                self.clk.set_low().map_err(Tm1638Error::Pin)?;
                self.delay.delay_ns(HALF_PERIOD_NS);
                self.clk.set_high().map_err(Tm1638Error::Pin)?;
                if self.dio.is_high().map_err(Tm1638Error::Pin)? {
                    *byte |= 1 << bit;
                }
                self.delay.delay_ns(HALF_PERIOD_NS);
            }
        }
        self.stb(board, true)?;
        Ok(KeyScan(scan))
    }

    fn check(&self, board: usize) -> Result<(), Tm1638Error<E>> {
        if board < self.stbs.len() {
            Ok(())
        } else {
            Err(Tm1638Error::NoBoard {
                board,
                boards: self.stbs.len(),
            })
        }
    }

    /// One STB-framed transfer: the first byte is the command, the rest its data.
    fn command(&mut self, board: usize, bytes: &[u8]) -> Result<(), Tm1638Error<E>> {
        self.stb(board, false)?;
        for &byte in bytes {
            self.send_byte(byte)?;
        }
        self.stb(board, true)?;
        // DIO stays driven between transfers, at the level of the last bit; release it
        // so that a chip never sees it fight a scan.
        self.dio.release().map_err(Tm1638Error::Pin)
    }

    fn stb(&mut self, board: usize, high: bool) -> Result<(), Tm1638Error<E>> {
        let stb = &mut self.stbs[board];
        if high {
            stb.set_high().map_err(Tm1638Error::Pin)?;
        } else {
            stb.set_low().map_err(Tm1638Error::Pin)?;
        }
        self.delay.delay_ns(HALF_PERIOD_NS);
        Ok(())
    }

    /// LSB first; DIO changes while CLK is low, the chip samples on the rising edge.
    fn send_byte(&mut self, byte: u8) -> Result<(), Tm1638Error<E>> {
        for bit in 0..8 {
            self.clk.set_low().map_err(Tm1638Error::Pin)?;
            if byte & (1 << bit) != 0 {
                self.dio.set_high().map_err(Tm1638Error::Pin)?;
            } else {
                self.dio.set_low().map_err(Tm1638Error::Pin)?;
            }
            self.delay.delay_ns(HALF_PERIOD_NS);
            self.clk.set_high().map_err(Tm1638Error::Pin)?;
            self.delay.delay_ns(HALF_PERIOD_NS);
        }
        Ok(())
    }
}

/// Waits by spinning on the clock: the waits are a microsecond, far below what a
/// sleep can do, and a whole transfer is over in well under a millisecond.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpinDelay;

impl DelayNs for SpinDelay {
    fn delay_ns(&mut self, ns: u32) {
        let until = std::time::Instant::now() + std::time::Duration::from_nanos(u64::from(ns));
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}
