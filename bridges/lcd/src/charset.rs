//! Text to the HD44780's character ROM (the common A00 "Japanese" ROM) and back. ASCII
//! from space to `}` is itself; `°` is 0xDF; anything else shows as `?`.

/// The ROM code of `c`.
pub fn encode(c: char) -> u8 {
    match c {
        ' '..='}' => c as u8,
        '°' => 0xDF,
        _ => b'?',
    }
}

/// The character a ROM code shows as.
pub fn decode(code: u8) -> char {
    match code {
        0x20..=0x7D => code as char,
        0xDF => '°',
        _ => '?',
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        for c in " 09AZaz%:-°".chars() {
            assert_eq!(super::decode(super::encode(c)), c);
        }
        assert_eq!(super::encode('€'), b'?');
    }
}
