//! The MCP23017's registers. At power-up the chip is in bank 0 (A and B registers
//! interleaved) with the address pointer incrementing after each byte. We switch it to
//! bank 1 with SEQOP set: the pointer then stays on one register, so a single I2C write
//! can put a whole run of values on a port (the HD44780's E strobes), which is what
//! makes a screen update fast.

/// The registers we use, by their role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    IodirA,
    IodirB,
    IpolA,
    IpolB,
    GpintenA,
    GpintenB,
    DefvalA,
    DefvalB,
    IntconA,
    IntconB,
    Iocon,
    GppuA,
    GppuB,
    IntfA,
    IntfB,
    IntcapA,
    IntcapB,
    GpioA,
    GpioB,
    OlatA,
    OlatB,
}

use Register::*;

/// Bank 0 order: the register at address `n` is `BANK0[n]` (IOCON appears twice).
pub const BANK0: [Register; 22] = [
    IodirA, IodirB, IpolA, IpolB, GpintenA, GpintenB, DefvalA, DefvalB, IntconA, IntconB, Iocon,
    Iocon, GppuA, GppuB, IntfA, IntfB, IntcapA, IntcapB, GpioA, GpioB, OlatA, OlatB,
];

/// Bank 1: port A at 0x00..=0x0A, port B at 0x10..=0x1A.
const BANK1_PORT: [(Register, Register); 11] = [
    (IodirA, IodirB),
    (IpolA, IpolB),
    (GpintenA, GpintenB),
    (DefvalA, DefvalB),
    (IntconA, IntconB),
    (Iocon, Iocon),
    (GppuA, GppuB),
    (IntfA, IntfB),
    (IntcapA, IntcapB),
    (GpioA, GpioB),
    (OlatA, OlatB),
];

/// IOCON bits.
pub const IOCON_BANK: u8 = 0x80;
pub const IOCON_SEQOP: u8 = 0x20;

impl Register {
    /// Its address in bank 0.
    pub fn bank0(self) -> u8 {
        BANK0
            .iter()
            .position(|r| *r == self)
            .expect("every register is in bank 0") as u8
    }

    /// Its address in bank 1.
    pub fn bank1(self) -> u8 {
        for (offset, (a, b)) in BANK1_PORT.iter().enumerate() {
            if *a == self {
                return offset as u8;
            }
            if *b == self {
                return 0x10 + offset as u8;
            }
        }
        unreachable!("every register is in bank 1")
    }

    /// The register at `address` in the given bank, if any.
    pub fn at(address: u8, bank1: bool) -> Option<Register> {
        if bank1 {
            let port_b = address & 0x10 != 0;
            let (a, b) = BANK1_PORT.get(usize::from(address & 0x0F))?;
            if address & !0x1F != 0 {
                return None;
            }
            Some(if port_b { *b } else { *a })
        } else {
            BANK0.get(usize::from(address)).copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_the_datasheet() {
        assert_eq!(GpioA.bank0(), 0x12);
        assert_eq!(OlatB.bank0(), 0x15);
        assert_eq!(Iocon.bank0(), 0x0A);
        assert_eq!(GpioA.bank1(), 0x09);
        assert_eq!(OlatB.bank1(), 0x1A);
        assert_eq!(Iocon.bank1(), 0x05);
        assert_eq!(Register::at(0x15, true), Some(Iocon));
        assert_eq!(Register::at(0x15, false), Some(OlatB));
        assert_eq!(Register::at(0x0B, true), None);
        assert_eq!(Register::at(0x16, false), None);
    }
}
