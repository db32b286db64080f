//! HEX protocol frames: `':' command-nibble payload-bytes check-byte '\n'`.
//!
//! Every byte after the command nibble is two upper-case hex digits, the check byte makes
//! `command + Σ payload + check ≡ 0x55 (mod 256)`, and multi-byte numbers are little
//! endian. A [`Frame`] is the wire layer (nibble + payload bytes); [`Request`] (host to
//! device) and [`Response`] (device to host) give it meaning, because the same nibble
//! means different things in the two directions (1 = ping request, or "done" reply).

use std::fmt;

/// Longest frame text (after the `:`, before the `\n`) the stream parser keeps. Real frames
/// are at most ~80 characters (the 34-byte history records).
pub const MAX_FRAME_CHARS: usize = 128;

/// The check byte brings the sum of command, payload and check to this value.
pub const CHECK_TARGET: u8 = 0x55;

/// Payload of the device's "error" response meaning the request frame was malformed.
pub const FRAME_ERROR_CODE: u16 = 0xAAAA;

/// Why a HEX frame is not usable. The parser still removes its bytes from the text stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("HEX frame does not start with ':'")]
    MissingColon,
    #[error("HEX frame has no command digit")]
    Empty,
    #[error("HEX frame has a non-hex character {found:?} at offset {offset}")]
    NotHexDigit { offset: usize, found: char },
    #[error("HEX frame has an odd number of digits after the command")]
    OddLength,
    #[error("HEX frame has no check byte")]
    NoCheckByte,
    #[error("HEX frame checksum is 0x{sum:02X}, expected 0x55")]
    Checksum { sum: u8 },
    #[error("HEX frame longer than {MAX_FRAME_CHARS} characters")]
    TooLong,
    #[error("HEX frame interrupted by a new ':' before its '\\n'")]
    Interrupted,
}

/// A checksummed HEX frame: the command nibble and the payload bytes (check byte removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: u8,
    pub payload: Vec<u8>,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        // Devices send upper case; lower case is accepted because it is unambiguous.
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

const DIGITS: &[u8; 16] = b"0123456789ABCDEF";

impl Frame {
    pub fn new(command: u8, payload: Vec<u8>) -> Self {
        Frame {
            command: command & 0x0F,
            payload,
        }
    }

    /// Parse one frame: `:` then digits, without the terminating `\n` (a trailing CR or LF
    /// is tolerated).
    pub fn parse(text: &[u8]) -> Result<Frame, FrameError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let digits = text.strip_prefix(b":").ok_or(FrameError::MissingColon)?;
        if digits.len() > MAX_FRAME_CHARS {
            return Err(FrameError::TooLong);
        }
        let (&cmd, rest) = digits.split_first().ok_or(FrameError::Empty)?;
        let command = hex_value(cmd).ok_or(FrameError::NotHexDigit {
            offset: 1,
            found: cmd as char,
        })?;
        if rest.len() % 2 != 0 {
            return Err(FrameError::OddLength);
        }
        let mut bytes = Vec::with_capacity(rest.len() / 2);
        for (i, pair) in rest.chunks_exact(2).enumerate() {
            let digit = |k: usize| {
                hex_value(pair[k]).ok_or(FrameError::NotHexDigit {
                    offset: 2 + 2 * i + k,
                    found: pair[k] as char,
                })
            };
            bytes.push(digit(0)? << 4 | digit(1)?);
        }
        if bytes.is_empty() {
            return Err(FrameError::NoCheckByte);
        }
        let sum = bytes.iter().fold(command, |s, &b| s.wrapping_add(b));
        if sum != CHECK_TARGET {
            return Err(FrameError::Checksum { sum });
        }
        bytes.pop();
        Ok(Frame {
            command,
            payload: bytes,
        })
    }

    pub fn check_byte(&self) -> u8 {
        let sum = self
            .payload
            .iter()
            .fold(self.command, |s, &b| s.wrapping_add(b));
        CHECK_TARGET.wrapping_sub(sum)
    }

    /// Wire bytes including the leading `:` and the trailing `\n`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 2 * self.payload.len());
        out.push(b':');
        out.push(DIGITS[usize::from(self.command & 0x0F)]);
        for &b in self
            .payload
            .iter()
            .chain(std::iter::once(&self.check_byte()))
        {
            out.push(DIGITS[usize::from(b >> 4)]);
            out.push(DIGITS[usize::from(b & 0x0F)]);
        }
        out.push(b'\n');
        out
    }

    /// The frame text without the `\n` (as shown in logs and the captures' `raw`).
    pub fn to_text(&self) -> String {
        let mut bytes = self.encode();
        bytes.pop();
        String::from_utf8(bytes).expect("encoded frames are ASCII")
    }
}

/// Convert bytes to upper-case hex digits (how values appear on the wire).
pub fn to_hex_digits(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0F)]])
        .map(char::from)
        .collect()
}

/// Get/Set/Async flags byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const OK: Flags = Flags(0);
    pub const UNKNOWN_ID: Flags = Flags(0x01);
    pub const NOT_SUPPORTED: Flags = Flags(0x02);
    pub const PARAMETER_ERROR: Flags = Flags(0x04);

    /// `Ok` when no error bit is set, else the first error the flags report.
    pub fn status(self) -> Result<(), RegisterError> {
        match self.0 {
            0 => Ok(()),
            f if f & 0x01 != 0 => Err(RegisterError::UnknownId),
            f if f & 0x02 != 0 => Err(RegisterError::NotSupported),
            f if f & 0x04 != 0 => Err(RegisterError::ParameterError),
            f => Err(RegisterError::OtherFlags(f)),
        }
    }
}

/// Error a device reports in the flags of a Get/Set reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("unknown register id")]
    UnknownId,
    #[error("register not supported (e.g. read-only)")]
    NotSupported,
    #[error("parameter error: value out of range, the reply carries the nearest valid value")]
    ParameterError,
    #[error("unknown flags 0x{0:02X}")]
    OtherFlags(u8),
}

/// Firmware version word (ping / application version reply), e.g. `0x4401` = 4.01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub u16);

/// What kind of firmware answered, from the two top bits of the version word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareType {
    BootLoader,
    Application,
    Tester,
    ReleaseCandidate,
}

impl Version {
    pub fn firmware_type(self) -> FirmwareType {
        match self.0 >> 14 {
            0 => FirmwareType::BootLoader,
            1 => FirmwareType::Application,
            2 => FirmwareType::Tester,
            _ => FirmwareType::ReleaseCandidate,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let major = (v >> 8) & 0x0F;
        let minor = v & 0xFF;
        match self.firmware_type() {
            FirmwareType::ReleaseCandidate => {
                let letter = char::from_digit(u32::from(v >> 12), 16)
                    .unwrap_or('?')
                    .to_ascii_uppercase();
                write!(f, "{major:X}.{minor:02X}-rc-{letter}")
            }
            _ => write!(f, "{major:X}.{minor:02X}"),
        }
    }
}

/// Register id, flags and raw little-endian value of a Get/Set/Async frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterFrame {
    pub register: u16,
    pub flags: Flags,
    pub value: Vec<u8>,
}

impl RegisterFrame {
    fn from_payload(payload: &[u8]) -> Result<Self, MessageError> {
        if payload.len() < 3 {
            return Err(MessageError::ShortPayload {
                needed: 3,
                got: payload.len(),
            });
        }
        Ok(RegisterFrame {
            register: u16::from_le_bytes([payload[0], payload[1]]),
            flags: Flags(payload[2]),
            value: payload[3..].to_vec(),
        })
    }

    fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(3 + self.value.len());
        p.extend_from_slice(&self.register.to_le_bytes());
        p.push(self.flags.0);
        p.extend_from_slice(&self.value);
        p
    }

    /// The value as an unsigned little-endian integer (1, 2 or 4 bytes).
    pub fn uint(&self) -> Option<u64> {
        match self.value.len() {
            1..=8 => Some(
                self.value
                    .iter()
                    .rev()
                    .fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
            ),
            _ => None,
        }
    }

    /// The value as a signed (two's complement) little-endian integer of its own width.
    pub fn int(&self) -> Option<i64> {
        let bits = 8 * self.value.len() as u32;
        let u = self.uint()?;
        Some(if bits < 64 && u >> (bits - 1) & 1 == 1 {
            u as i64 - (1i64 << bits)
        } else {
            u as i64
        })
    }

    /// The value as text, cut at the first NUL (string registers are NUL-padded).
    pub fn string(&self) -> String {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }
}

/// A frame that is well-formed but whose payload does not fit its command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("payload of {got} byte(s), this command needs at least {needed}")]
    ShortPayload { needed: usize, got: usize },
    #[error("command 0x{0:X} is not defined in this direction")]
    UnknownCommand(u8),
}

/// Host to device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    AppVersion,
    ProductId,
    Restart,
    Get {
        register: u16,
    },
    Set {
        register: u16,
        value: Vec<u8>,
    },
    /// Commands we never send (0 boot loader, reserved ones): kept so a device simulator
    /// can answer "unknown".
    Other {
        command: u8,
    },
}

impl Request {
    pub fn from_frame(frame: &Frame) -> Result<Request, MessageError> {
        let p = &frame.payload;
        let id = || -> Result<u16, MessageError> {
            if p.len() < 3 {
                return Err(MessageError::ShortPayload {
                    needed: 3,
                    got: p.len(),
                });
            }
            Ok(u16::from_le_bytes([p[0], p[1]]))
        };
        Ok(match frame.command {
            0x1 => Request::Ping,
            0x3 => Request::AppVersion,
            0x4 => Request::ProductId,
            0x6 => Request::Restart,
            0x7 => Request::Get { register: id()? },
            0x8 => Request::Set {
                register: id()?,
                value: p[3..].to_vec(),
            },
            c => Request::Other { command: c },
        })
    }

    pub fn to_frame(&self) -> Frame {
        match self {
            Request::Ping => Frame::new(0x1, vec![]),
            Request::AppVersion => Frame::new(0x3, vec![]),
            Request::ProductId => Frame::new(0x4, vec![]),
            Request::Restart => Frame::new(0x6, vec![]),
            Request::Get { register } => {
                let mut p = register.to_le_bytes().to_vec();
                p.push(0);
                Frame::new(0x7, p)
            }
            Request::Set { register, value } => {
                let mut p = register.to_le_bytes().to_vec();
                p.push(0);
                p.extend_from_slice(value);
                Frame::new(0x8, p)
            }
            Request::Other { command } => Frame::new(*command, vec![]),
        }
    }

    /// Wire bytes, `:` to `\n`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_frame().encode()
    }
}

/// Device to host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Reply to application-version (a [`Version`] word) or product-id (a PID) requests;
    /// which one it is only the requester knows.
    Done {
        word: u16,
    },
    /// The device did not understand command `command`.
    Unknown {
        command: u16,
    },
    /// `code` 0xAAAA: the request frame was malformed ([`Response::is_frame_error`]).
    Error {
        code: u16,
    },
    Ping {
        version: Version,
    },
    Get(RegisterFrame),
    Set(RegisterFrame),
    Async(RegisterFrame),
}

impl Response {
    pub fn from_frame(frame: &Frame) -> Result<Response, MessageError> {
        let p = &frame.payload;
        let word = || -> Result<u16, MessageError> {
            if p.len() < 2 {
                return Err(MessageError::ShortPayload {
                    needed: 2,
                    got: p.len(),
                });
            }
            Ok(u16::from_le_bytes([p[0], p[1]]))
        };
        Ok(match frame.command {
            0x1 => Response::Done { word: word()? },
            0x3 => Response::Unknown { command: word()? },
            0x4 => Response::Error { code: word()? },
            0x5 => Response::Ping {
                version: Version(word()?),
            },
            0x7 => Response::Get(RegisterFrame::from_payload(p)?),
            0x8 => Response::Set(RegisterFrame::from_payload(p)?),
            0xA => Response::Async(RegisterFrame::from_payload(p)?),
            c => return Err(MessageError::UnknownCommand(c)),
        })
    }

    pub fn command(&self) -> u8 {
        match self {
            Response::Done { .. } => 0x1,
            Response::Unknown { .. } => 0x3,
            Response::Error { .. } => 0x4,
            Response::Ping { .. } => 0x5,
            Response::Get(_) => 0x7,
            Response::Set(_) => 0x8,
            Response::Async(_) => 0xA,
        }
    }

    /// snake_case name of the response kind, as printed by `pvbus vedirect decode`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Response::Done { .. } => "done",
            Response::Unknown { .. } => "unknown_command",
            Response::Error { .. } => "error",
            Response::Ping { .. } => "ping",
            Response::Get(_) => "get",
            Response::Set(_) => "set",
            Response::Async(_) => "async",
        }
    }

    pub fn is_frame_error(&self) -> bool {
        matches!(self, Response::Error { code } if *code == FRAME_ERROR_CODE)
    }

    pub fn register_frame(&self) -> Option<&RegisterFrame> {
        match self {
            Response::Get(r) | Response::Set(r) | Response::Async(r) => Some(r),
            _ => None,
        }
    }

    pub fn to_frame(&self) -> Frame {
        let payload = match self {
            Response::Done { word }
            | Response::Unknown { command: word }
            | Response::Error { code: word } => word.to_le_bytes().to_vec(),
            Response::Ping { version } => version.0.to_le_bytes().to_vec(),
            Response::Get(r) | Response::Set(r) | Response::Async(r) => r.payload(),
        };
        Frame::new(self.command(), payload)
    }

    pub fn encode(&self) -> Vec<u8> {
        self.to_frame().encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_worked_examples() {
        assert_eq!(Request::Ping.encode(), b":154\n");
        assert_eq!(Request::Get { register: 0xEDD5 }.encode(), b":7D5ED008C\n");
        assert_eq!(Request::Get { register: 0x0FFF }.encode(), b":7FF0F0040\n");
        let set = Request::Set {
            register: 0xEDAB,
            value: vec![4],
        };
        assert_eq!(set.encode(), b":8ABED0004B1\n");
        let f = Frame::parse(b":AD5ED0009057B").unwrap();
        let Response::Async(r) = Response::from_frame(&f).unwrap() else {
            panic!("not async")
        };
        assert_eq!((r.register, r.uint()), (0xEDD5, Some(1289)));
        assert_eq!(
            Response::Error {
                code: FRAME_ERROR_CODE
            }
            .encode(),
            b":4AAAAFD\n"
        );
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(Frame::parse(b"154"), Err(FrameError::MissingColon));
        assert_eq!(Frame::parse(b":"), Err(FrameError::Empty));
        assert_eq!(Frame::parse(b":1"), Err(FrameError::NoCheckByte));
        assert_eq!(Frame::parse(b":1554"), Err(FrameError::OddLength));
        assert_eq!(Frame::parse(b":154\r\n").map(|f| f.command), Ok(1));
        assert_eq!(
            Frame::parse(b":153"),
            Err(FrameError::Checksum { sum: 0x54 })
        );
        assert_eq!(
            Frame::parse(b":1G4"),
            Err(FrameError::NotHexDigit {
                offset: 2,
                found: 'G'
            })
        );
        let flags = Frame::parse(b":77777015F").unwrap();
        let Response::Get(r) = Response::from_frame(&flags).unwrap() else {
            panic!("not get")
        };
        assert_eq!(r.flags.status(), Err(RegisterError::UnknownId));
        assert_eq!(Flags(0x04).status(), Err(RegisterError::ParameterError));
        assert_eq!(Flags(0x02).status(), Err(RegisterError::NotSupported));
    }

    #[test]
    fn version_words() {
        assert_eq!(Version(0x4401).to_string(), "4.01");
        assert_eq!(Version(0x4161).firmware_type(), FirmwareType::Application);
        assert_eq!(Version(0xD101).to_string(), "1.01-rc-D");
    }
}
