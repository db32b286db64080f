//! `pvbus vedirect decode [FILE]`: raw serial bytes in, one JSON line per accepted block.
//!
//! Default output: each accepted text block as a JSON object mapping each label to its
//! value string exactly as received, in order (`Checksum` left out). `hex` adds one JSON
//! line per HEX frame (`{"hex":":A...","valid":true,"command":"async",...}`); `decoded`
//! prints the named SI readings instead of the raw strings. Rejected blocks and invalid
//! HEX frames go to `diag` with their reason, and a summary line ends the run.

use crate::decode::{Reading, Value, write_json_string};
use crate::hex::Response;
use crate::text::{Event, HexFrame, Parser, RejectReason};
use crate::{products, registers};
use std::fmt::Write as _;
use std::io::{self, Read, Write};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Also print HEX frames.
    pub hex: bool,
    /// Print typed SI readings instead of raw value strings.
    pub decoded: bool,
}

/// Counts of what the run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    pub blocks: u64,
    /// Rejected segments by reason, in order of first appearance.
    pub rejected: Vec<(RejectReason, u64)>,
    pub hex_frames: u64,
    pub hex_invalid: u64,
    /// Text bytes of an unfinished block at the end of the input.
    pub trailing_bytes: usize,
}

impl DecodeSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }
}

/// Decode `input` to `out` (JSON lines), reporting problems on `diag`.
pub fn decode(
    mut input: impl Read,
    mut out: impl Write,
    mut diag: impl Write,
    opts: DecodeOptions,
) -> io::Result<DecodeSummary> {
    let mut parser = Parser::new();
    let mut summary = DecodeSummary::default();
    let mut buf = vec![0u8; 8192];
    let mut offset = 0u64;
    let mut line = String::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (i, &byte) in buf[..n].iter().enumerate() {
            let Some(event) = parser.push(byte) else {
                continue;
            };
            let at = offset + i as u64;
            line.clear();
            match event {
                Event::Block(block) => {
                    summary.blocks += 1;
                    if opts.decoded {
                        let reading = Reading::from_block(&block);
                        for e in &reading.errors {
                            writeln!(diag, "byte {at}: {e}")?;
                        }
                        line.push_str(&reading.to_json(None));
                    } else {
                        line.push('{');
                        for (k, (label, value)) in block.fields().enumerate() {
                            if k > 0 {
                                line.push(',');
                            }
                            write_json_string(&mut line, label);
                            line.push(':');
                            write_json_string(&mut line, value);
                        }
                        line.push('}');
                    }
                }
                Event::Rejected(r) => {
                    match summary
                        .rejected
                        .iter_mut()
                        .find(|(reason, _)| *reason == r.reason)
                    {
                        Some((_, count)) => *count += 1,
                        None => summary.rejected.push((r.reason, 1)),
                    }
                    writeln!(diag, "byte {at}: {r}")?;
                }
                Event::Hex(h) => {
                    summary.hex_frames += 1;
                    if let Err(e) = &h.frame {
                        summary.hex_invalid += 1;
                        writeln!(diag, "byte {at}: invalid HEX frame {:?}: {e}", h.raw)?;
                    }
                    if opts.hex {
                        hex_json(&mut line, &h);
                    }
                }
            }
            if !line.is_empty() {
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
        }
        offset += n as u64;
    }
    summary.trailing_bytes = parser.pending_text_len();
    let mut text = format!(
        "vedirect decode: {} block(s) accepted, {} rejected",
        summary.blocks,
        summary.rejected_total()
    );
    if !summary.rejected.is_empty() {
        let reasons: Vec<String> = summary
            .rejected
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        let _ = write!(text, " ({})", reasons.join(", "));
    }
    let _ = write!(
        text,
        ", {} HEX frame(s) ({} invalid), {} trailing byte(s) of an unfinished block",
        summary.hex_frames, summary.hex_invalid, summary.trailing_bytes
    );
    writeln!(diag, "{text}")?;
    out.flush()?;
    Ok(summary)
}

/// One HEX frame as a JSON object with its decoded meaning.
pub fn hex_json(line: &mut String, h: &HexFrame) {
    line.push_str("{\"hex\":");
    write_json_string(line, &h.raw);
    let frame = match &h.frame {
        Err(e) => {
            line.push_str(",\"valid\":false,\"error\":");
            write_json_string(line, &e.to_string());
            line.push('}');
            return;
        }
        Ok(f) => f,
    };
    line.push_str(",\"valid\":true");
    let response = match Response::from_frame(frame) {
        Ok(r) => r,
        Err(e) => {
            let _ = write!(line, ",\"command\":{},\"error\":", frame.command);
            write_json_string(line, &e.to_string());
            line.push('}');
            return;
        }
    };
    line.push_str(",\"command\":");
    write_json_string(line, response.kind_name());
    match &response {
        Response::Done { word } => {
            let _ = write!(line, ",\"word\":\"0x{word:04X}\"");
            if let Some(model) = products::model_name(*word) {
                line.push_str(",\"model\":");
                write_json_string(line, model);
            }
        }
        Response::Ping { version } => {
            let _ = write!(
                line,
                ",\"word\":\"0x{:04X}\",\"version\":\"{version}\"",
                version.0
            );
        }
        Response::Unknown { command } => {
            let _ = write!(line, ",\"unknown_command\":{command}");
        }
        Response::Error { code } => {
            let _ = write!(
                line,
                ",\"code\":\"0x{code:04X}\",\"frame_error\":{}",
                response.is_frame_error()
            );
        }
        Response::Get(r) | Response::Set(r) | Response::Async(r) => {
            let _ = write!(
                line,
                ",\"register\":\"0x{:04X}\",\"flags\":{}",
                r.register, r.flags.0
            );
            if let Err(e) = r.flags.status() {
                line.push_str(",\"flag_error\":");
                write_json_string(line, &e.to_string());
            }
            line.push_str(",\"value_hex\":");
            write_json_string(line, &crate::hex::to_hex_digits(&r.value));
            if r.flags.0 & 0x01 == 0
                && let Some(reg) = registers::lookup(r.register)
            {
                line.push_str(",\"name\":");
                write_json_string(line, reg.name);
                match reg.decode_exact(&r.value) {
                    Ok(v) => {
                        line.push_str(",\"value\":");
                        v.write_json(line);
                        if !reg.unit.is_empty() && v != Value::Null {
                            line.push_str(",\"unit\":");
                            write_json_string(line, reg.unit);
                        }
                    }
                    Err(e) => {
                        line.push_str(",\"error\":");
                        write_json_string(line, &e.to_string());
                    }
                }
            }
        }
    }
    line.push('}');
}
