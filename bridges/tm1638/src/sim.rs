//! A wire-level model of the TM1638, for tests and the demo: it watches STB, CLK and DIO
//! edge by edge as the chip does (bytes LSB first, DIO sampled on the rising CLK edge,
//! the first byte after STB falls is the command), keeps display RAM and the display
//! control, and answers key scans by pulling DIO low (open drain) for each 0 bit, one
//! bit per falling CLK edge.
//!
//! Attach one model per chip of a chain (each with its own STB) to a
//! [`pvbus_hardware::SimBoard`]; keep a clone to press buttons and read what it shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::delay::DelayNs;

use pvbus_hardware::Level;
use pvbus_hardware::sim::{HostChange, Wire, WireModel};

use crate::board::{BoardKind, KeyPosition, KeyScan};
use crate::font;

/// The wiring of one chip: its STB and the shared CLK and DIO (BCM numbers).
#[derive(Debug, Clone, Copy)]
pub struct ChipPins {
    pub stb: u8,
    pub clk: u8,
    pub dio: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// STB is high: CLK is ignored.
    Idle,
    /// STB fell: the next byte is a command.
    Command,
    /// After an address command: bytes go to display RAM.
    Data,
    /// After the read command: `bit` is the next scan bit to shift out.
    Reading { bit: u8 },
    /// After a command with no data: further bytes are ignored until STB rises.
    Ignore,
}

/// The time of the wire, in nanoseconds, advanced only by the host's waits: give the
/// driver this clock as its delay and the model ([`Tm1638Model::with_clock`]) the same
/// one, and the model measures the waits the driver asked for, whatever the speed of the
/// machine running the test. A driver that forgets a wait shows a pulse of 0 ns.
#[derive(Debug, Clone, Default)]
pub struct WireClock(Arc<AtomicU64>);

impl WireClock {
    pub fn now_ns(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl DelayNs for WireClock {
    fn delay_ns(&mut self, ns: u32) {
        self.0.fetch_add(u64::from(ns), Ordering::Relaxed);
    }
}

/// The datasheet's minimum times, in ns.
const CLK_PULSE_NS: u64 = 400;
const STB_HIGH_NS: u64 = 1_000;
const SETUP_NS: u64 = 100;
const HOLD_NS: u64 = 100;
const TWAIT_NS: u64 = 1_000;

/// When the host last moved each line, on the [`WireClock`].
#[derive(Debug, Clone, Default)]
struct Edges {
    clk: Option<u64>,
    clk_rose: Option<u64>,
    dio: Option<u64>,
    stb_rose: Option<u64>,
    read_command: Option<u64>,
}

/// What the chip holds, plus what the model noticed about the host's behaviour.
#[derive(Debug, Clone)]
pub struct ChipState {
    pub ram: [u8; 16],
    pub display_on: bool,
    pub brightness: u8,
    pub fixed_address: bool,
    /// Keys held down now.
    pub keys: KeyScan,
    /// Transfers (STB low..high) seen.
    pub transfers: u64,
    /// Key scans answered.
    pub scans: u64,
    /// Times the host drove DIO while the chip was shifting a key bit out.
    pub contentions: u64,
    /// Bytes that were no valid command (e.g. a data command with unknown bits).
    pub bad_commands: u64,
    /// Waits shorter than the datasheet's (only with a [`WireClock`]): how many, and the
    /// first of each kind described.
    pub timing_violations: u64,
    pub timing: Vec<String>,
    edges: Edges,
    address: u8,
    phase: Phase,
    shift: u8,
    bits: u8,
    driving_dio: bool,
}

impl Default for ChipState {
    fn default() -> Self {
        ChipState {
            ram: [0; 16],
            display_on: false,
            brightness: 0,
            fixed_address: false,
            keys: KeyScan::default(),
            transfers: 0,
            scans: 0,
            contentions: 0,
            bad_commands: 0,
            timing_violations: 0,
            timing: Vec::new(),
            edges: Edges::default(),
            address: 0,
            phase: Phase::Idle,
            shift: 0,
            bits: 0,
            driving_dio: false,
        }
    }
}

/// A handle on one simulated chip. Cheap to clone; clones share the chip.
#[derive(Clone)]
pub struct Tm1638Model {
    pins: ChipPins,
    state: Arc<Mutex<ChipState>>,
    clock: Option<WireClock>,
}

impl Tm1638Model {
    pub fn new(pins: ChipPins) -> Self {
        Tm1638Model {
            pins,
            state: Arc::new(Mutex::new(ChipState::default())),
            clock: None,
        }
    }

    /// A model that also checks the host's timing against the datasheet (CLK pulses,
    /// STB high between transfers, DIO setup and hold around the rising CLK edge, Twait
    /// before a key scan is clocked out), measured on `clock`.
    pub fn with_clock(pins: ChipPins, clock: WireClock) -> Self {
        Tm1638Model {
            clock: Some(clock),
            ..Tm1638Model::new(pins)
        }
    }

    /// A copy of the chip's state now.
    pub fn state(&self) -> ChipState {
        self.lock().clone()
    }

    /// Holds a key of the matrix down (`true`) or lets it go.
    pub fn set_key(&self, key: KeyPosition, down: bool) {
        let mut state = self.lock();
        let (byte, bit) = key.scan_bit();
        if down {
            state.keys.0[byte] |= 1 << bit;
        } else {
            state.keys.0[byte] &= !(1 << bit);
        }
    }

    /// Holds button `index` (0-based) of a board of `kind` down or lets it go; false when
    /// the board has no such button.
    pub fn set_button(&self, kind: BoardKind, index: usize, down: bool) -> bool {
        match kind.button_key(index) {
            Some(key) => {
                self.set_key(key, down);
                true
            }
            None => false,
        }
    }

    /// What a person sees on a board of `kind`: the digits as text and the LEDs.
    pub fn view(&self, kind: BoardKind) -> BoardView {
        let state = self.lock();
        let (digits, leds) = kind.shown(&state.ram);
        BoardView {
            on: state.display_on,
            brightness: state.brightness,
            text: if state.display_on {
                font::decode_all(&digits)
            } else {
                " ".repeat(BoardKind::DIGITS)
            },
            leds: if state.display_on { leds } else { 0 },
            segments: if state.display_on { digits } else { [0; 8] },
            led_count: kind.leds(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChipState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One board as a person sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardView {
    pub on: bool,
    pub brightness: u8,
    /// The digits read as text (a lit point follows its digit as `.`).
    pub text: String,
    /// Bit n: LED n is lit.
    pub leds: u8,
    /// The segments lit on each digit.
    pub segments: [u8; 8],
    pub led_count: usize,
}

impl BoardView {
    pub fn led(&self, n: usize) -> bool {
        self.leds & (1 << n) != 0
    }

    /// For a terminal: `[boot    ]  brightness 7`, `LEDs * . . ...`, then the digits
    /// drawn with `_`, `|` and `.` on three lines.
    pub fn render(&self) -> String {
        let mut out = format!(
            "[{}]  {}\n",
            self.text,
            if self.on {
                format!("brightness {}", self.brightness)
            } else {
                "display off".to_string()
            }
        );
        if self.led_count > 0 {
            out.push_str(" LEDs:");
            for n in 0..self.led_count {
                out.push_str(if self.led(n) { " *" } else { " ." });
            }
            out.push('\n');
        }
        let lit = |bits: u8, segment: u8, c: char| if bits & segment != 0 { c } else { ' ' };
        use crate::font::seg::*;
        for row in 0..3 {
            out.push(' ');
            for &bits in &self.segments {
                let cells = match row {
                    0 => [' ', lit(bits, A, '_'), ' ', ' '],
                    1 => [lit(bits, F, '|'), lit(bits, G, '_'), lit(bits, B, '|'), ' '],
                    _ => [
                        lit(bits, E, '|'),
                        lit(bits, D, '_'),
                        lit(bits, C, '|'),
                        lit(bits, DP, '.'),
                    ],
                };
                out.extend(cells);
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

impl WireModel for Tm1638Model {
    fn host_changed(&mut self, change: HostChange, wire: &mut Wire<'_>) {
        let pins = self.pins;
        let now = self.clock.as_ref().map(WireClock::now_ns);
        let mut state = self.lock();
        if let Some(now) = now {
            check_timing(&mut state, pins, change, now);
        }
        if change.pin == pins.stb {
            if wire.level(pins.stb) == Level::Low {
                if state.phase == Phase::Idle {
                    state.phase = Phase::Command;
                    state.shift = 0;
                    state.bits = 0;
                }
            } else if state.phase != Phase::Idle {
                state.phase = Phase::Idle;
                state.transfers += 1;
                if state.driving_dio {
                    state.driving_dio = false;
                    wire.drive(pins.dio, None);
                }
            }
            return;
        }
        if state.phase == Phase::Idle {
            return;
        }
        if change.pin == pins.dio {
            if state.driving_dio && change.drive.is_some() {
                state.contentions += 1;
            }
            return;
        }
        if change.pin != pins.clk {
            return;
        }
        match (change.drive, state.phase) {
            (Some(Level::High), Phase::Command | Phase::Data | Phase::Ignore) => {
                let bit = u8::from(wire.level(pins.dio) == Level::High);
                state.shift |= bit << state.bits;
                state.bits += 1;
                if state.bits == 8 {
                    let byte = state.shift;
                    state.shift = 0;
                    state.bits = 0;
                    receive(&mut state, byte);
                    if state.phase == (Phase::Reading { bit: 0 }) {
                        state.edges.read_command = now;
                    }
                }
            }
            (Some(Level::Low), Phase::Reading { bit }) => {
                if bit < 32 {
                    let value = state.keys.0[usize::from(bit / 8)] & (1 << (bit % 8)) != 0;
                    if wire.host_drive(pins.dio).is_some() {
                        state.contentions += 1;
                    }
                    // Open drain: a 0 pulls DIO low, a 1 lets the pull-up lift it.
                    let drive = if value { None } else { Some(Level::Low) };
                    state.driving_dio = drive.is_some();
                    wire.drive(pins.dio, drive);
                    state.phase = Phase::Reading { bit: bit + 1 };
                    if bit == 31 {
                        state.scans += 1;
                    }
                } else if state.driving_dio {
                    state.driving_dio = false;
                    wire.drive(pins.dio, None);
                }
            }
            _ => {}
        }
    }
}

/// Compares the time since the last edges with the datasheet's minimums; called before
/// the change is decoded.
fn check_timing(state: &mut ChipState, pins: ChipPins, change: HostChange, now: u64) {
    let mut violations = Vec::new();
    let since = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
    let transferring = state.phase != Phase::Idle;
    if change.pin == pins.stb {
        match change.drive {
            Some(Level::High) => state.edges.stb_rose = Some(now),
            Some(Level::Low) => {
                if let Some(ns) = since(state.edges.stb_rose).filter(|&ns| ns < STB_HIGH_NS) {
                    violations.push(format!(
                        "STB high for {ns} ns between transfers (at least {STB_HIGH_NS})"
                    ));
                }
                state.edges.clk = None;
            }
            None => {}
        }
    } else if change.pin == pins.clk && transferring {
        if let Some(ns) = since(state.edges.clk).filter(|&ns| ns < CLK_PULSE_NS) {
            let level = if change.drive == Some(Level::High) {
                "low"
            } else {
                "high"
            };
            violations.push(format!("CLK {level} for {ns} ns (at least {CLK_PULSE_NS})"));
        }
        state.edges.clk = Some(now);
        match (change.drive, state.phase) {
            (Some(Level::High), Phase::Command | Phase::Data | Phase::Ignore) => {
                if let Some(ns) = since(state.edges.dio).filter(|&ns| ns < SETUP_NS) {
                    violations.push(format!(
                        "DIO set {ns} ns before CLK rose (setup at least {SETUP_NS})"
                    ));
                }
                state.edges.clk_rose = Some(now);
            }
            (Some(Level::Low), Phase::Reading { bit: 0 }) => {
                if let Some(ns) = since(state.edges.read_command).filter(|&ns| ns < TWAIT_NS) {
                    violations.push(format!(
                        "key scan clocked {ns} ns after the read command (Twait at least {TWAIT_NS})"
                    ));
                }
            }
            _ => {}
        }
    } else if change.pin == pins.dio && transferring && change.drive.is_some() {
        if !matches!(state.phase, Phase::Reading { .. })
            && let Some(ns) = since(state.edges.clk_rose).filter(|&ns| ns < HOLD_NS)
        {
            violations.push(format!(
                "DIO changed {ns} ns after CLK rose (hold at least {HOLD_NS})"
            ));
        }
        state.edges.dio = Some(now);
    }
    // The kind of a violation is its text up to the first number.
    let kind = |text: &str| {
        text[..text
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(text.len())]
            .to_string()
    };
    for v in violations {
        state.timing_violations += 1;
        if !state.timing.iter().any(|t| kind(t) == kind(&v)) {
            state.timing.push(v);
        }
    }
}

fn receive(state: &mut ChipState, byte: u8) {
    match state.phase {
        Phase::Command => match byte & 0xC0 {
            0x40 => {
                // Data command: bit 2 fixed address, bits 1..0 write (00) or read (10).
                state.fixed_address = byte & 0x04 != 0;
                state.phase = match byte & 0x03 {
                    0x00 => Phase::Ignore,
                    0x02 => Phase::Reading { bit: 0 },
                    _ => {
                        state.bad_commands += 1;
                        Phase::Ignore
                    }
                };
            }
            0x80 => {
                state.display_on = byte & 0x08 != 0;
                state.brightness = byte & 0x07;
                state.phase = Phase::Ignore;
            }
            0xC0 => {
                state.address = byte & 0x0F;
                state.phase = Phase::Data;
            }
            _ => {
                state.bad_commands += 1;
                state.phase = Phase::Ignore;
            }
        },
        Phase::Data => {
            let address = usize::from(state.address & 0x0F);
            state.ram[address] = byte;
            if !state.fixed_address {
                state.address = (state.address + 1) & 0x0F;
            }
        }
        _ => {}
    }
}
