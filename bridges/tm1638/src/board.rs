//! How the chip is wired on the boards we support: where digits and LEDs sit in display
//! RAM, and which key-matrix position each button is.
//!
//! The chip scans a matrix of 8 segment lines (KS1..KS8) by 3 key lines (K1..K3) and
//! reports it in 4 bytes: byte `b` holds KS(2b+1) in bits 0..2 (K3, K2, K1) and
//! KS(2b+2) in bits 4..6 (K3, K2, K1).

/// One key of the chip's matrix: segment line `ks` (1..=8) by key line `k` (1..=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPosition {
    pub ks: u8,
    pub k: u8,
}

impl KeyPosition {
    /// Where this key's bit is in the 4 scan bytes: `(byte, bit)`.
    pub fn scan_bit(self) -> (usize, u8) {
        let byte = usize::from((self.ks - 1) / 2);
        let base = if (self.ks - 1).is_multiple_of(2) {
            0
        } else {
            4
        };
        (byte, base + (3 - self.k))
    }
}

/// The 4 bytes of one key scan, as the chip sends them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyScan(pub [u8; 4]);

impl KeyScan {
    pub fn is_pressed(&self, key: KeyPosition) -> bool {
        let (byte, bit) = key.scan_bit();
        self.0[byte] & (1 << bit) != 0
    }

    pub fn press(&mut self, key: KeyPosition) {
        let (byte, bit) = key.scan_bit();
        self.0[byte] |= 1 << bit;
    }
}

/// The board around the chip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BoardKind {
    /// "LED&KEY": 8 common-cathode digits, 8 red LEDs, 8 buttons S1..S8 on K3.
    #[default]
    LedAndKey,
    /// "QYF-TM1638": 8 common-anode digits, no LEDs, 16 buttons S1..S16 on K3 (S1..S8)
    /// and K2 (S9..S16).
    Keys16,
}

impl BoardKind {
    pub const DIGITS: usize = 8;

    pub fn buttons(self) -> usize {
        match self {
            BoardKind::LedAndKey => 8,
            BoardKind::Keys16 => 16,
        }
    }

    pub fn leds(self) -> usize {
        match self {
            BoardKind::LedAndKey => 8,
            BoardKind::Keys16 => 0,
        }
    }

    /// The matrix position of button `index` (0-based: S1 is 0).
    pub fn button_key(self, index: usize) -> Option<KeyPosition> {
        if index >= self.buttons() {
            return None;
        }
        let ks = (index % 8) as u8 + 1;
        let k = if index < 8 { 3 } else { 2 };
        Some(KeyPosition { ks, k })
    }

    /// Which buttons a scan shows pressed, as a bit set (bit n is button n, 0-based).
    pub fn pressed(self, scan: &KeyScan) -> u16 {
        (0..self.buttons())
            .filter(|&i| self.button_key(i).is_some_and(|key| scan.is_pressed(key)))
            .fold(0, |set, i| set | (1 << i))
    }

    /// Display RAM for these digit patterns and LEDs (bit n of `leds` is LED n).
    pub fn ram(self, digits: &[u8; 8], leds: u8) -> [u8; 16] {
        let mut ram = [0u8; 16];
        match self {
            BoardKind::LedAndKey => {
                for n in 0..8 {
                    ram[2 * n] = digits[n];
                    ram[2 * n + 1] = (leds >> n) & 1;
                }
            }
            BoardKind::Keys16 => {
                // Common anode: the chip's grids drive segments and its segment lines
                // drive digits, so RAM is the digit patterns transposed.
                for (n, &pattern) in digits.iter().enumerate() {
                    for segment in 0..8 {
                        if pattern & (1 << segment) != 0 {
                            ram[2 * segment] |= 1 << n;
                        }
                    }
                }
            }
        }
        ram
    }

    /// The digit patterns and LEDs that display RAM shows (the inverse of `ram`).
    pub fn shown(self, ram: &[u8; 16]) -> ([u8; 8], u8) {
        let mut digits = [0u8; 8];
        let mut leds = 0u8;
        match self {
            BoardKind::LedAndKey => {
                for n in 0..8 {
                    digits[n] = ram[2 * n];
                    leds |= (ram[2 * n + 1] & 1) << n;
                }
            }
            BoardKind::Keys16 => {
                for (n, digit) in digits.iter_mut().enumerate() {
                    for segment in 0..8 {
                        if ram[2 * segment] & (1 << n) != 0 {
                            *digit |= 1 << segment;
                        }
                    }
                }
            }
        }
        (digits, leds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_bits_follow_the_datasheet() {
        assert_eq!(KeyPosition { ks: 1, k: 3 }.scan_bit(), (0, 0));
        assert_eq!(KeyPosition { ks: 1, k: 1 }.scan_bit(), (0, 2));
        assert_eq!(KeyPosition { ks: 2, k: 3 }.scan_bit(), (0, 4));
        assert_eq!(KeyPosition { ks: 8, k: 1 }.scan_bit(), (3, 6));
    }

    #[test]
    fn every_button_has_its_own_bit() {
        for kind in [BoardKind::LedAndKey, BoardKind::Keys16] {
            for i in 0..kind.buttons() {
                let mut scan = KeyScan::default();
                scan.press(kind.button_key(i).unwrap());
                assert_eq!(kind.pressed(&scan), 1 << i, "{kind:?} button {i}");
            }
        }
    }

    #[test]
    fn ram_round_trips() {
        let digits = [0x3F, 0x06, 0x5B, 0x4F, 0x66, 0x6D, 0x7D, 0x87];
        for kind in [BoardKind::LedAndKey, BoardKind::Keys16] {
            let leds = if kind.leds() > 0 { 0b1010_0101 } else { 0 };
            assert_eq!(kind.shown(&kind.ram(&digits, leds)), (digits, leds));
        }
    }
}
