//! Streaming parser for the VE.Direct byte stream: text blocks and interleaved HEX frames.
//!
//! Contract (PROTOCOL.md section 4): the stream is cut after every checksum byte (the one
//! byte after `LF "Checksum" TAB`, whatever it is); each piece is a *segment*. A segment
//! becomes a [`TextBlock`] only if its bytes sum to 0 mod 256, it starts with CR LF, and
//! it is made of `CR LF label TAB value` fields (1..=22 of them, labels 1..=8 characters
//! of `[A-Za-z0-9_#]`, values 1..=32 printable characters, no label twice) followed by
//! `CR LF Checksum TAB byte`. A `:` anywhere except at the checksum-byte position starts a
//! HEX frame running to the next `\n`; its bytes are taken out of the text stream (never
//! summed) and reported as a [`HexFrame`].
//!
//! Resynchronisation: a segment that begins like a block (with CR LF) and then breaks,
//! or repeats a label, was cut short, and the plain rule would lose the block behind it.
//! So after such a break the parser restarts its candidate at the next line that opens a
//! block (a label already seen in the segment, `PID` or `H1`) and accepts that candidate
//! if *its* bytes sum to 0. Junk in front of the first CR LF is not resynchronised (the
//! captures require such a segment to be rejected): that case is for
//! [`Parser::idle_reset`], which the caller's ~500 ms silence timer invokes. The cost is
//! at most one extra 1-in-256 checksum coincidence, only for truncated segments.
//!
//! Memory is fixed at construction (about 1 KB of field storage); nothing is allocated per
//! byte, only per emitted event.

use crate::hex::{self, Frame, FrameError, MAX_FRAME_CHARS};
use std::fmt;

pub const MAX_LABEL_LEN: usize = 8;
pub const MAX_VALUE_LEN: usize = 32;
pub const MAX_FIELDS: usize = 22;
/// The largest block the limits allow, in bytes (22 full fields plus the checksum line).
pub const MAX_BLOCK_LEN: usize = MAX_FIELDS * (2 + MAX_LABEL_LEN + 1 + MAX_VALUE_LEN) + 12;

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const TAB: u8 = b'\t';
const CHECKSUM_LABEL: &[u8] = b"Checksum";

/// Why a segment was not accepted as a block. `Display` gives the names used in the
/// captures' expectations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("checksum")]
    Checksum,
    #[error("segment does not start with CR LF")]
    NotStartingWithCrLf,
    #[error("line without exactly one TAB")]
    LineWithoutOneTab,
    #[error("bad label")]
    BadLabel,
    #[error("value length")]
    ValueLength,
    #[error("non-printable value byte")]
    NonPrintableValue,
    #[error("duplicate label")]
    DuplicateLabel,
    #[error("too many fields")]
    TooManyFields,
    #[error("empty block")]
    EmptyBlock,
}

/// A segment that was dropped, with everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// Whether the whole segment summed to 0 (false whenever `reason` is `Checksum`).
    pub checksum_ok: bool,
    pub checksum_byte: u8,
    /// Text bytes in the segment (HEX frames excluded).
    pub len: usize,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block rejected ({}), {} bytes, checksum byte 0x{:02X}",
            self.reason, self.len, self.checksum_byte
        )
    }
}

/// An accepted text block: fields in arrival order, `Checksum` excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBlock {
    /// Labels and values concatenated; `spans` index into it.
    text: String,
    spans: Vec<(u16, u16, u16)>, // label start, value start, value end
    checksum_byte: u8,
    resynchronised: bool,
}

impl TextBlock {
    /// `(label, value)` pairs in the order received.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(|&(l, v, e)| {
            (
                &self.text[usize::from(l)..usize::from(v)],
                &self.text[usize::from(v)..usize::from(e)],
            )
        })
    }

    pub fn get(&self, label: &str) -> Option<&str> {
        self.fields().find(|(l, _)| *l == label).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn checksum_byte(&self) -> u8 {
        self.checksum_byte
    }

    /// True when the block was recovered from the tail of a segment that had junk or a
    /// truncated block in front of it.
    pub fn resynchronised(&self) -> bool {
        self.resynchronised
    }

    /// The block's wire bytes (CR LF first, checksum byte last); they sum to 0 mod 256.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 4 * self.len() + 12);
        for (l, v) in self.fields() {
            push_field(&mut out, l.as_bytes(), v.as_bytes());
        }
        out.extend_from_slice(b"\r\nChecksum\t");
        out.push(self.checksum_byte);
        out
    }
}

fn push_field(out: &mut Vec<u8>, label: &[u8], value: &[u8]) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(label);
    out.push(TAB);
    out.extend_from_slice(value);
}

/// A HEX frame taken out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexFrame {
    /// The frame text from `:` up to (not including) `\n`, at most
    /// [`MAX_FRAME_CHARS`] + 1 characters; non-ASCII bytes shown as U+FFFD.
    pub raw: String,
    pub frame: Result<Frame, FrameError>,
}

impl HexFrame {
    /// The frame read as a device-to-host message.
    pub fn response(&self) -> Option<Result<hex::Response, hex::MessageError>> {
        self.frame.as_ref().ok().map(hex::Response::from_frame)
    }
}

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Block(TextBlock),
    Rejected(Rejection),
    Hex(HexFrame),
}

/// Counters since the parser was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    pub blocks: u64,
    pub rejected: u64,
    /// Accepted blocks recovered behind junk or a truncated block.
    pub resynchronised: u64,
    pub hex_frames: u64,
    pub hex_invalid: u64,
    /// Partial segments dropped by [`Parser::idle_reset`].
    pub idle_discards: u64,
}

#[derive(Clone, Copy)]
struct Field {
    label: [u8; MAX_LABEL_LEN],
    label_len: u8,
    value: [u8; MAX_VALUE_LEN],
    value_len: u8,
}

const EMPTY_FIELD: Field = Field {
    label: [0; MAX_LABEL_LEN],
    label_len: 0,
    value: [0; MAX_VALUE_LEN],
    value_len: 0,
};

impl Field {
    fn label(&self) -> &[u8] {
        &self.label[..usize::from(self.label_len)]
    }
    fn value(&self) -> &[u8] {
        &self.value[..usize::from(self.value_len)]
    }
}

/// Where the block grammar is, for the run of fields currently being validated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Grammar {
    /// Expecting the CR that opens a field.
    Cr,
    /// Expecting the LF after that CR.
    Lf,
    Label,
    Value,
    /// Saw `CR LF Checksum TAB`: the run is complete, waiting for the checksum byte.
    ChecksumNext,
    /// The run broke; wait for the next CR LF to start a new candidate run.
    Broken,
    /// Broken run that just saw a CR.
    BrokenCr,
    /// After a break, a CR LF: reading the label to see whether it opens a new block.
    Probe,
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'#'
}

/// Streaming VE.Direct parser. See the module docs for the acceptance rules.
pub struct Parser {
    // Segmenting (independent of the grammar): the cut happens after the byte that
    // follows `LF Checksum TAB`.
    segment_sum: u8,
    segment_len: usize,
    /// Characters of "Checksum" matched since the last LF; `None` when not at a label.
    checksum_match: Option<u8>,
    checksum_byte_next: bool,
    // Grammar of the current candidate run of fields.
    grammar: Grammar,
    run_sum: u8,
    run_restarted: bool,
    /// The segment began with CR LF: a later break means truncation, not leading junk.
    began_as_block: bool,
    first_error: Option<RejectReason>,
    fields: Box<[Field; MAX_FIELDS]>,
    field_count: usize,
    label: [u8; MAX_LABEL_LEN],
    label_len: usize,
    label_overflow: bool,
    // HEX frame being extracted.
    in_hex: bool,
    hex_buf: Vec<u8>,
    hex_overflow: bool,
    stats: ParserStats,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            segment_sum: 0,
            segment_len: 0,
            checksum_match: None,
            checksum_byte_next: false,
            grammar: Grammar::Cr,
            run_sum: 0,
            run_restarted: false,
            began_as_block: false,
            first_error: None,
            fields: Box::new([EMPTY_FIELD; MAX_FIELDS]),
            field_count: 0,
            label: [0; MAX_LABEL_LEN],
            label_len: 0,
            label_overflow: false,
            in_hex: false,
            hex_buf: Vec::with_capacity(MAX_FRAME_CHARS + 1),
            hex_overflow: false,
            stats: ParserStats::default(),
        }
    }

    /// Events found in `bytes`, in stream order. State carries over between calls, so the
    /// stream may be cut anywhere. Bytes are consumed as the iterator advances: drain it
    /// (a `for` loop does) or the rest of `bytes` is never parsed.
    pub fn feed<'p, 'b>(&'p mut self, bytes: &'b [u8]) -> Feed<'p, 'b> {
        Feed {
            parser: self,
            bytes: bytes.iter(),
        }
    }

    /// Feed everything and collect the events (convenience for tests and files).
    pub fn feed_all(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.feed(bytes).collect()
    }

    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Text bytes received since the last checksum byte (an unfinished block).
    pub fn pending_text_len(&self) -> usize {
        self.segment_len
    }

    /// Forget the unfinished segment and HEX frame. Call after ~500 ms without bytes:
    /// devices pause between blocks, never inside one, so what follows starts afresh.
    /// Returns whether anything was dropped.
    pub fn idle_reset(&mut self) -> bool {
        let dropped = self.segment_len > 0 || self.in_hex;
        if dropped {
            self.stats.idle_discards += 1;
        }
        self.in_hex = false;
        self.hex_buf.clear();
        self.hex_overflow = false;
        self.start_segment();
        dropped
    }

    fn start_segment(&mut self) {
        self.segment_sum = 0;
        self.segment_len = 0;
        self.checksum_match = None;
        self.checksum_byte_next = false;
        self.grammar = Grammar::Cr;
        self.run_sum = 0;
        self.run_restarted = false;
        self.began_as_block = false;
        self.first_error = None;
        self.field_count = 0;
    }

    /// Process one byte; at most one event results from a byte.
    pub fn push(&mut self, b: u8) -> Option<Event> {
        if self.in_hex {
            return self.push_hex(b);
        }
        if self.checksum_byte_next {
            return Some(self.finish_segment(b));
        }
        if b == b':' {
            self.in_hex = true;
            self.hex_buf.clear();
            self.hex_buf.push(b':');
            self.hex_overflow = false;
            return None;
        }
        self.segment_sum = self.segment_sum.wrapping_add(b);
        self.segment_len += 1;
        self.checksum_match = match (b, self.checksum_match) {
            (LF, _) => Some(0),
            (TAB, Some(8)) => {
                self.checksum_byte_next = true;
                None
            }
            (_, Some(n))
                if usize::from(n) < CHECKSUM_LABEL.len() && CHECKSUM_LABEL[usize::from(n)] == b =>
            {
                Some(n + 1)
            }
            _ => None,
        };
        self.grammar_byte(b);
        None
    }

    fn push_hex(&mut self, b: u8) -> Option<Event> {
        match b {
            LF => {
                self.in_hex = false;
                let frame = if self.hex_overflow {
                    Err(FrameError::TooLong)
                } else {
                    Frame::parse(&self.hex_buf)
                };
                Some(self.hex_event(frame))
            }
            b':' => {
                // Real frames never contain ':'; this one was cut short and a new one starts.
                let event = self.hex_event(Err(FrameError::Interrupted));
                self.hex_buf.clear();
                self.hex_buf.push(b':');
                self.hex_overflow = false;
                Some(event)
            }
            _ => {
                if self.hex_buf.len() <= MAX_FRAME_CHARS {
                    self.hex_buf.push(b);
                } else {
                    self.hex_overflow = true;
                }
                None
            }
        }
    }

    fn hex_event(&mut self, frame: Result<Frame, FrameError>) -> Event {
        self.stats.hex_frames += 1;
        if frame.is_err() {
            self.stats.hex_invalid += 1;
        }
        let raw = self.hex_buf.strip_suffix(b"\r").unwrap_or(&self.hex_buf);
        Event::Hex(HexFrame {
            raw: String::from_utf8_lossy(raw).into_owned(),
            frame,
        })
    }

    fn fail(&mut self, reason: RejectReason) {
        if self.first_error.is_none() {
            self.first_error = Some(reason);
        }
        self.grammar = Grammar::Broken;
    }

    fn start_run(&mut self) {
        // Called on the LF of a CR LF: the run's sum starts with those two bytes.
        if self.first_error.is_some() {
            self.run_restarted = true;
        }
        self.run_sum = CR.wrapping_add(LF);
        self.field_count = 0;
        self.begin_label();
    }

    fn begin_label(&mut self) {
        self.grammar = Grammar::Label;
        self.label_len = 0;
        self.label_overflow = false;
    }

    fn grammar_byte(&mut self, b: u8) {
        self.run_sum = self.run_sum.wrapping_add(b);
        match self.grammar {
            Grammar::Cr => {
                if b == CR {
                    self.grammar = Grammar::Lf;
                } else {
                    self.fail(RejectReason::NotStartingWithCrLf);
                }
            }
            Grammar::Lf => {
                if b == LF {
                    if self.segment_len == 2 {
                        self.began_as_block = true;
                        self.start_run();
                    } else {
                        self.begin_label();
                    }
                } else if self.segment_len == 2 {
                    self.fail(RejectReason::NotStartingWithCrLf);
                } else {
                    // A lone CR ended the value: the value held a control byte.
                    self.fail(RejectReason::NonPrintableValue);
                    self.grammar_byte_broken(b);
                }
            }
            Grammar::Label => self.label_byte(b),
            Grammar::Value => self.value_byte(b),
            Grammar::ChecksumNext => {
                // Unreachable in practice: the segmenter cuts on the same byte.
                self.fail(RejectReason::LineWithoutOneTab);
            }
            Grammar::Broken | Grammar::BrokenCr => self.grammar_byte_broken(b),
            Grammar::Probe => self.probe_byte(b),
        }
    }

    fn probe_byte(&mut self, b: u8) {
        match b {
            TAB => {
                let label = &self.label[..self.label_len];
                let opens_block = !self.label_overflow
                    && self.label_len > 0
                    && (label == b"PID"
                        || label == b"H1"
                        || self.fields[..self.field_count]
                            .iter()
                            .any(|f| f.label() == label));
                if opens_block {
                    self.restart_run_at_label();
                } else {
                    self.grammar = Grammar::Broken;
                }
            }
            _ if is_label_byte(b) => {
                if self.label_len < MAX_LABEL_LEN {
                    self.label[self.label_len] = b;
                    self.label_len += 1;
                } else {
                    self.label_overflow = true;
                }
            }
            _ => {
                self.grammar = Grammar::Broken;
                self.grammar_byte_broken(b);
            }
        }
    }

    /// Start a new candidate run at the current line, whose label was just read.
    fn restart_run_at_label(&mut self) {
        let label = self.label;
        let len = self.label_len;
        self.start_run();
        self.run_sum = label[..len]
            .iter()
            .fold(self.run_sum, |s, &c| s.wrapping_add(c))
            .wrapping_add(TAB);
        self.label = label;
        self.label_len = len;
        self.push_field_label();
    }

    fn push_field_label(&mut self) {
        let field = &mut self.fields[self.field_count];
        field.label[..self.label_len].copy_from_slice(&self.label[..self.label_len]);
        field.label_len = self.label_len as u8;
        field.value_len = 0;
        self.field_count += 1;
        self.grammar = Grammar::Value;
    }

    fn grammar_byte_broken(&mut self, b: u8) {
        self.grammar = match (self.grammar, b) {
            (_, CR) => Grammar::BrokenCr,
            (Grammar::BrokenCr, LF) if self.began_as_block => {
                self.grammar = Grammar::Probe;
                self.label_len = 0;
                self.label_overflow = false;
                return;
            }
            _ => Grammar::Broken,
        };
    }

    fn label_byte(&mut self, b: u8) {
        match b {
            TAB => self.end_label(),
            CR | LF => {
                self.fail(RejectReason::LineWithoutOneTab);
                self.grammar_byte_broken(b);
            }
            _ if is_label_byte(b) => {
                if self.label_len < MAX_LABEL_LEN {
                    self.label[self.label_len] = b;
                    self.label_len += 1;
                } else {
                    self.label_overflow = true;
                }
            }
            _ => self.fail(RejectReason::BadLabel),
        }
    }

    fn end_label(&mut self) {
        if self.label_len == 0 || self.label_overflow {
            return self.fail(RejectReason::BadLabel);
        }
        let label = &self.label[..self.label_len];
        if label == CHECKSUM_LABEL {
            if self.field_count == 0 {
                return self.fail(RejectReason::EmptyBlock);
            }
            self.grammar = Grammar::ChecksumNext;
            return;
        }
        let duplicate = self.fields[..self.field_count]
            .iter()
            .any(|f| f.label() == label);
        if duplicate {
            // The line is fine and opens the block that follows a truncated one.
            self.fail(RejectReason::DuplicateLabel);
            self.restart_run_at_label();
        } else if self.field_count == MAX_FIELDS {
            self.fail(RejectReason::TooManyFields);
        } else {
            self.push_field_label();
        }
    }

    fn value_byte(&mut self, b: u8) {
        let field = &mut self.fields[self.field_count - 1];
        match b {
            0x20..=0x7E => {
                if usize::from(field.value_len) == MAX_VALUE_LEN {
                    self.fail(RejectReason::ValueLength);
                } else {
                    field.value[usize::from(field.value_len)] = b;
                    field.value_len += 1;
                }
            }
            CR => {
                if field.value_len == 0 {
                    self.fail(RejectReason::ValueLength);
                    self.grammar = Grammar::BrokenCr;
                } else {
                    self.grammar = Grammar::Lf;
                }
            }
            TAB => self.fail(RejectReason::LineWithoutOneTab),
            _ => self.fail(RejectReason::NonPrintableValue),
        }
    }

    fn finish_segment(&mut self, checksum_byte: u8) -> Event {
        let segment_ok = self.segment_sum.wrapping_add(checksum_byte) == 0;
        let run_ok =
            self.grammar == Grammar::ChecksumNext && self.run_sum.wrapping_add(checksum_byte) == 0;
        let len = self.segment_len + 1;
        let event = if run_ok && (self.first_error.is_none() || self.run_restarted) {
            let mut text = String::new();
            let mut spans = Vec::with_capacity(self.field_count);
            for f in &self.fields[..self.field_count] {
                let l = text.len() as u16;
                // Labels and values were checked to be ASCII.
                text.extend(f.label().iter().map(|&c| char::from(c)));
                let v = text.len() as u16;
                text.extend(f.value().iter().map(|&c| char::from(c)));
                spans.push((l, v, text.len() as u16));
            }
            self.stats.blocks += 1;
            if self.run_restarted {
                self.stats.resynchronised += 1;
            }
            Event::Block(TextBlock {
                text,
                spans,
                checksum_byte,
                resynchronised: self.run_restarted,
            })
        } else {
            self.stats.rejected += 1;
            let reason = if !segment_ok {
                RejectReason::Checksum
            } else {
                self.first_error.unwrap_or(RejectReason::LineWithoutOneTab)
            };
            Event::Rejected(Rejection {
                reason,
                checksum_ok: segment_ok,
                checksum_byte,
                len,
            })
        };
        self.start_segment();
        event
    }
}

/// Iterator returned by [`Parser::feed`].
pub struct Feed<'p, 'b> {
    parser: &'p mut Parser,
    bytes: std::slice::Iter<'b, u8>,
}

impl Iterator for Feed<'_, '_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        for &b in self.bytes.by_ref() {
            if let Some(event) = self.parser.push(b) {
                return Some(event);
            }
        }
        None
    }
}

/// Why [`encode_block`] refused its fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("no fields: a block needs at least one")]
    Empty,
    #[error("{count} fields, at most {MAX_FIELDS} allowed")]
    TooManyFields { count: usize },
    #[error("label {label:?} is not 1..=8 characters of [A-Za-z0-9_#] (or is 'Checksum')")]
    BadLabel { label: String },
    #[error("value {value:?} of label {label} is not 1..=32 printable ASCII characters")]
    BadValue { label: String, value: String },
    #[error("label {label} appears twice")]
    DuplicateLabel { label: String },
}

/// Build a text block with a correct checksum from `(label, value)` pairs. The result is
/// exactly what a device sends: CR LF first, the checksum byte last.
pub fn encode_block<L: AsRef<str>, V: AsRef<str>>(
    fields: &[(L, V)],
) -> Result<Vec<u8>, EncodeError> {
    if fields.is_empty() {
        return Err(EncodeError::Empty);
    }
    if fields.len() > MAX_FIELDS {
        return Err(EncodeError::TooManyFields {
            count: fields.len(),
        });
    }
    let mut out = Vec::with_capacity(MAX_BLOCK_LEN);
    for (i, (label, value)) in fields.iter().enumerate() {
        let (label, value) = (label.as_ref(), value.as_ref());
        if label.is_empty()
            || label.len() > MAX_LABEL_LEN
            || !label.bytes().all(is_label_byte)
            || label.as_bytes() == CHECKSUM_LABEL
        {
            return Err(EncodeError::BadLabel {
                label: label.into(),
            });
        }
        if value.is_empty()
            || value.len() > MAX_VALUE_LEN
            || !value.bytes().all(|b| (0x20..=0x7E).contains(&b))
        {
            return Err(EncodeError::BadValue {
                label: label.into(),
                value: value.into(),
            });
        }
        if fields[..i].iter().any(|(l, _)| l.as_ref() == label) {
            return Err(EncodeError::DuplicateLabel {
                label: label.into(),
            });
        }
        push_field(&mut out, label.as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\nChecksum\t");
    let sum = out.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    out.push(sum.wrapping_neg());
    Ok(out)
}
