//! wiringPi pin numbers (PvMonit's `relayWiringPi`) to BCM numbers (pvbus's `pin`).
//!
//! The one table in code; `docs/wiringpi-to-bcm.md` prints the same table for people, and
//! a test reads the document and checks that both agree, row by row.

/// `(wiringPi, BCM)` for every wiringPi number of a Raspberry Pi with a 40-pin header
/// (model B rev 2 and later; the very first model B numbered 2, 8 and 9 differently).
pub const WIRINGPI_TO_BCM: [(u8, u8); 32] = [
    (0, 17),
    (1, 18),
    (2, 27),
    (3, 22),
    (4, 23),
    (5, 24),
    (6, 25),
    (7, 4),
    (8, 2),
    (9, 3),
    (10, 8),
    (11, 7),
    (12, 10),
    (13, 9),
    (14, 11),
    (15, 14),
    (16, 15),
    (17, 28),
    (18, 29),
    (19, 30),
    (20, 31),
    (21, 5),
    (22, 6),
    (23, 13),
    (24, 19),
    (25, 26),
    (26, 12),
    (27, 16),
    (28, 20),
    (29, 21),
    (30, 0),
    (31, 1),
];

/// Where a wiringPi pin lands, and whether a relay may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BcmPin {
    /// A GPIO of the 40-pin header, free for a relay.
    Usable(u8),
    /// BCM 2/3: the I2C bus of the LCD plate; usable only without the LCD.
    I2c(u8),
    /// BCM 14/15: the serial console's UART; usable when the console is off.
    Uart(u8),
    /// BCM 0/1: the HAT EEPROM lines, never for a relay.
    HatEeprom(u8),
    /// BCM 28..31: the P5 header of the model B rev 2 only, absent from every later Pi.
    P5Header(u8),
}

impl BcmPin {
    pub fn bcm(self) -> u8 {
        match self {
            BcmPin::Usable(pin)
            | BcmPin::I2c(pin)
            | BcmPin::Uart(pin)
            | BcmPin::HatEeprom(pin)
            | BcmPin::P5Header(pin) => pin,
        }
    }
}

/// The BCM pin of wiringPi pin `wiring_pi`, or `None` when wiringPi has no such number.
pub fn bcm_of(wiring_pi: u8) -> Option<BcmPin> {
    let (_, bcm) = WIRINGPI_TO_BCM.iter().find(|(w, _)| *w == wiring_pi)?;
    Some(match bcm {
        0 | 1 => BcmPin::HatEeprom(*bcm),
        2 | 3 => BcmPin::I2c(*bcm),
        14 | 15 => BcmPin::Uart(*bcm),
        28..=31 => BcmPin::P5Header(*bcm),
        _ => BcmPin::Usable(*bcm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `| wiringPi | BCM | ...` rows of docs/wiringpi-to-bcm.md.
    fn table_of_the_doc() -> Vec<(u8, u8)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wiringpi-to-bcm.md");
        let text = std::fs::read_to_string(path).expect("docs/wiringpi-to-bcm.md");
        text.lines()
            .filter_map(|line| {
                let mut cells = line.trim().strip_prefix('|')?.split('|').map(str::trim);
                let wiring_pi = cells.next()?.parse().ok()?;
                let bcm = cells.next()?.parse().ok()?;
                Some((wiring_pi, bcm))
            })
            .collect()
    }

    #[test]
    fn the_code_table_is_the_table_of_the_doc() {
        let doc = table_of_the_doc();
        assert_eq!(doc.len(), 32, "the doc's table has 32 rows: {doc:?}");
        assert_eq!(doc, WIRINGPI_TO_BCM.to_vec());
    }

    #[test]
    fn every_bcm_pin_appears_once() {
        let mut bcm: Vec<u8> = WIRINGPI_TO_BCM.iter().map(|(_, b)| *b).collect();
        bcm.sort_unstable();
        assert_eq!(bcm, (0..32).collect::<Vec<u8>>());
    }

    #[test]
    fn pins_a_relay_must_not_use_are_told_apart() {
        assert_eq!(bcm_of(0), Some(BcmPin::Usable(17)));
        assert_eq!(bcm_of(29), Some(BcmPin::Usable(21)));
        assert_eq!(bcm_of(8), Some(BcmPin::I2c(2)));
        assert_eq!(bcm_of(16), Some(BcmPin::Uart(15)));
        assert_eq!(bcm_of(31), Some(BcmPin::HatEeprom(1)));
        assert_eq!(bcm_of(18), Some(BcmPin::P5Header(29)));
        assert_eq!(bcm_of(32), None);
    }
}
