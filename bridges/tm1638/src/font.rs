//! The seven-segment font: which segments light for each character we show.
//!
//! Bit 0 is segment a (top), then b, c, d, e, f clockwise, g (middle) in bit 6 and the
//! decimal point in bit 7, as on every TM1638 board with common-cathode digits.

/// Segment bits, for building patterns by hand.
pub mod seg {
    pub const A: u8 = 1 << 0;
    pub const B: u8 = 1 << 1;
    pub const C: u8 = 1 << 2;
    pub const D: u8 = 1 << 3;
    pub const E: u8 = 1 << 4;
    pub const F: u8 = 1 << 5;
    pub const G: u8 = 1 << 6;
    pub const DP: u8 = 1 << 7;
}

use seg::*;

/// Every character the font knows, with its pattern. Letters that a seven-segment digit
/// can only show in one case are listed once; `glyph` maps the other case onto them.
const GLYPHS: &[(char, u8)] = &[
    (' ', 0),
    ('0', A | B | C | D | E | F),
    ('1', B | C),
    ('2', A | B | D | E | G),
    ('3', A | B | C | D | G),
    ('4', B | C | F | G),
    ('5', A | C | D | F | G),
    ('6', A | C | D | E | F | G),
    ('7', A | B | C),
    ('8', A | B | C | D | E | F | G),
    ('9', A | B | C | D | F | G),
    ('A', A | B | C | E | F | G),
    ('b', C | D | E | F | G),
    ('C', A | D | E | F),
    ('c', D | E | G),
    ('d', B | C | D | E | G),
    ('E', A | D | E | F | G),
    ('F', A | E | F | G),
    ('G', A | C | D | E | F),
    ('H', B | C | E | F | G),
    ('h', C | E | F | G),
    ('I', E | F),
    ('J', B | C | D | E),
    ('L', D | E | F),
    ('n', C | E | G),
    ('o', C | D | E | G),
    ('P', A | B | E | F | G),
    ('q', A | B | C | F | G),
    ('r', E | G),
    ('t', D | E | F | G),
    ('U', B | C | D | E | F),
    ('u', C | D | E),
    ('y', B | C | D | F | G),
    ('-', G),
    ('_', D),
    ('=', D | G),
    ('\'', F),
    ('"', B | F),
    ('°', A | B | F | G),
];

/// The pattern of one character, or `None` when a seven-segment digit cannot show it.
/// `S` is `5`, `O` is `0`, `B` is `8`, as on every such display.
pub fn glyph(c: char) -> Option<u8> {
    if let Some(&(_, bits)) = GLYPHS.iter().find(|(g, _)| *g == c) {
        return Some(bits);
    }
    let other = match c {
        'S' | 's' => '5',
        'O' => '0',
        'B' => '8',
        'Z' | 'z' => '2',
        'i' => 'I',
        'l' => 'I',
        'j' => 'J',
        'g' => '9',
        'Q' => 'q',
        'T' => 't',
        'Y' => 'y',
        'N' => 'n',
        'R' => 'r',
        'D' => 'd',
        'a' => 'A',
        'e' => 'E',
        'f' => 'F',
        'p' => 'P',
        _ if c.is_ascii_lowercase() => c.to_ascii_uppercase(),
        _ if c.is_ascii_uppercase() => c.to_ascii_lowercase(),
        _ => return None,
    };
    GLYPHS.iter().find(|(g, _)| *g == other).map(|&(_, b)| b)
}

/// A text that does not fit the font.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FontError {
    #[error("{0:?} cannot be shown on a seven-segment digit")]
    NoGlyph(char),
    #[error("{text:?} needs {needed} digits, there are {digits}")]
    TooLong {
        text: String,
        needed: usize,
        digits: usize,
    },
}

/// Encodes `text` for `digits` digits, left-aligned and padded with blanks. A `.` lights
/// the decimal point of the digit before it (so `12.5` takes three digits).
pub fn encode(text: &str, digits: usize) -> Result<Vec<u8>, FontError> {
    let mut out: Vec<u8> = Vec::with_capacity(digits);
    let mut last_had_point = true;
    for c in text.chars() {
        if c == '.'
            && !last_had_point
            && let Some(last) = out.last_mut()
        {
            *last |= DP;
            last_had_point = true;
            continue;
        }
        let bits = if c == '.' {
            DP
        } else {
            glyph(c).ok_or(FontError::NoGlyph(c))?
        };
        last_had_point = c == '.';
        out.push(bits);
    }
    if out.len() > digits {
        return Err(FontError::TooLong {
            text: text.to_string(),
            needed: out.len(),
            digits,
        });
    }
    out.resize(digits, 0);
    Ok(out)
}

/// What a person reads on a digit lit with `bits`: the font's character, followed by `.`
/// when the point is lit; `?` for a pattern that is no character of the font.
pub fn decode(bits: u8) -> String {
    let c = GLYPHS
        .iter()
        .find(|(_, b)| *b == bits & !DP)
        .map_or('?', |(c, _)| *c);
    let mut s = String::from(c);
    if bits & DP != 0 {
        s.push('.');
    }
    s
}

/// The text a row of digits shows, as `decode` reads each one.
pub fn decode_all(digits: &[u8]) -> String {
    digits.iter().map(|&b| decode(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_decodes_back_to_itself() {
        for &(c, bits) in GLYPHS {
            assert_eq!(decode(bits), c.to_string());
        }
    }

    #[test]
    fn patterns_are_distinct() {
        for (i, (c1, b1)) in GLYPHS.iter().enumerate() {
            for (c2, b2) in &GLYPHS[i + 1..] {
                assert_ne!(b1, b2, "{c1:?} and {c2:?} look the same");
            }
        }
    }

    #[test]
    fn words_we_show_encode() {
        assert_eq!(decode_all(&encode("boot", 8).unwrap()), "boot    ");
        assert_eq!(decode_all(&encode("no bus", 8).unwrap()), "no bu5  ");
        assert_eq!(decode_all(&encode("12.5", 4).unwrap()), "12.5 ");
        assert_eq!(encode("1.", 1).unwrap(), vec![B | C | DP]);
        assert_eq!(encode("..", 2).unwrap(), vec![DP, DP]);
    }

    #[test]
    fn what_cannot_be_shown_is_refused_by_name() {
        assert_eq!(encode("W", 8), Err(FontError::NoGlyph('W')));
        let err = encode("123456789", 8).unwrap_err().to_string();
        assert!(
            err.contains("9 digits") && err.contains("there are 8"),
            "{err}"
        );
    }
}
