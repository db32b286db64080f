//! Every shared capture parses to exactly its expected blocks and HEX frames, however the
//! bytes are chunked.

mod common;

use common::{ExpectedHex, LoadedCapture, Rng};
use vedirect::hex::{Response, to_hex_digits};
use vedirect::text::{Event, Parser};

/// Feed `bytes` cut at the given chunk lengths (cycled) and collect events.
fn run(bytes: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<Event>, usize) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = chunk().clamp(1, rest.len());
        events.extend(parser.feed(&rest[..n]));
        rest = &rest[n..];
    }
    (events, parser.pending_text_len())
}

fn check_hex(name: &str, i: usize, got: &vedirect::text::HexFrame, want: &ExpectedHex) {
    let ctx = format!("{name}: hex frame {i} {}", want.raw);
    assert_eq!(got.raw, want.raw, "{ctx}");
    assert_eq!(got.frame.is_ok(), want.valid, "{ctx}");
    let Ok(frame) = &got.frame else { return };
    assert_eq!(frame.command, want.command, "{ctx}");
    assert_eq!(to_hex_digits(&frame.payload), want.payload, "{ctx}");
    let response = Response::from_frame(frame).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    if let Some(word) = &want.word {
        let w = match response {
            Response::Done { word } | Response::Unknown { command: word } => word,
            Response::Ping { version } => version.0,
            ref other => panic!("{ctx}: word expected, got {other:?}"),
        };
        assert_eq!(&format!("0x{w:04X}"), word, "{ctx}");
    }
    if let Some(register) = &want.register {
        let r = response
            .register_frame()
            .unwrap_or_else(|| panic!("{ctx}: register frame expected"));
        assert_eq!(&format!("0x{:04X}", r.register), register, "{ctx}");
        assert_eq!(Some(r.flags.0), want.flags, "{ctx}");
        assert_eq!(Some(to_hex_digits(&r.value)), want.value, "{ctx}");
        if let Some(u) = want.uint {
            assert_eq!(r.uint(), Some(u), "{ctx}");
        }
        if let Some(i) = want.int {
            assert_eq!(r.int(), Some(i), "{ctx}");
        }
        if let Some(s) = &want.string {
            assert_eq!(&r.string(), s, "{ctx}");
        }
        if let Some(pid) = &want.product_id {
            let decoded = vedirect::registers::product_id_from_register(&r.value);
            assert_eq!(
                decoded.map(|p| format!("0x{p:04X}")).as_ref(),
                Some(pid),
                "{ctx}"
            );
        }
    }
}

fn check(c: &LoadedCapture, events: &[Event], pending: usize, how: &str) {
    let name = format!("{} ({how})", c.capture.name);
    let exp = &c.capture.expected;
    let segments: Vec<&Event> = events
        .iter()
        .filter(|e| !matches!(e, Event::Hex(_)))
        .collect();
    assert_eq!(segments.len(), exp.blocks.len(), "{name}: segment count");
    for (i, (got, want)) in segments.iter().zip(&exp.blocks).enumerate() {
        let ctx = format!("{name}: segment {i}");
        match (got, &want.fields) {
            (Event::Block(b), Some(fields)) => {
                assert!(want.checksum_ok, "{ctx}");
                let got: Vec<(&str, &str)> = b.fields().collect();
                let want: Vec<(&str, &str)> = fields
                    .0
                    .iter()
                    .map(|(l, v)| (l.as_str(), v.as_str()))
                    .collect();
                assert_eq!(got, want, "{ctx}");
                let sum = b.to_bytes().iter().fold(0u8, |s, &x| s.wrapping_add(x));
                assert_eq!(sum, 0, "{ctx}: accepted block must sum to 0");
            }
            (Event::Rejected(r), None) => {
                assert_eq!(Some(r.reason.to_string()), want.rejected, "{ctx}");
                assert_eq!(r.checksum_ok, want.checksum_ok, "{ctx}");
                assert_eq!(
                    Some(format!("0x{:02X}", r.checksum_byte)),
                    want.checksum_byte,
                    "{ctx}"
                );
            }
            (Event::Block(b), None) if c.capture.resync_may_accept.contains(&i) => {
                assert!(
                    b.resynchronised(),
                    "{ctx}: only a resynchronised block may stand here"
                );
            }
            (got, _) => panic!("{ctx}: got {got:?}, want {want:?}"),
        }
    }
    let hex: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Hex(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(hex.len(), exp.hex_frames.len(), "{name}: hex frame count");
    for (i, (got, want)) in hex.iter().zip(&exp.hex_frames).enumerate() {
        check_hex(&name, i, got, want);
    }
    assert_eq!(
        pending, exp.trailing_incomplete_bytes,
        "{name}: trailing bytes"
    );
}

#[test]
fn captures_fed_whole() {
    let all = common::load_all();
    assert_eq!(all.len(), 22, "the captures README lists 22 streams");
    for c in &all {
        let (events, pending) = run(&c.bytes, || usize::MAX);
        check(c, &events, pending, "whole");
    }
}

#[test]
fn captures_fed_byte_by_byte() {
    for c in &common::load_all() {
        let (events, pending) = run(&c.bytes, || 1);
        check(c, &events, pending, "bytewise");
    }
}

#[test]
fn captures_fed_in_random_chunks() {
    for c in &common::load_all() {
        for seed in 1..=8u64 {
            let mut rng = Rng::new(seed ^ c.bytes.len() as u64);
            let max = [3, 17, 64, 300][seed as usize % 4];
            let (events, pending) = run(&c.bytes, || 1 + rng.below(max));
            check(
                c,
                &events,
                pending,
                &format!("chunks seed {seed} max {max}"),
            );
        }
    }
}

#[test]
fn leading_junk_is_rejected_unless_the_caller_reports_idle() {
    // Strict rule of PROTOCOL.md 4.6: junk in front of an intact block loses it...
    let c = common::load("smartshunt_500a_read2_leading_junk");
    let junk = c.bytes.iter().position(|&b| b == b'\r').unwrap();
    assert!(junk > 0, "the capture starts with junk bytes");
    let (events, _) = run(&c.bytes, || usize::MAX);
    assert!(matches!(&events[0], Event::Rejected(_)));
    // ...but a silence (idle_reset) between the junk and the block recovers it.
    let mut parser = Parser::new();
    assert!(parser.feed_all(&c.bytes[..junk]).is_empty());
    assert!(parser.idle_reset(), "the junk was dropped");
    let events = parser.feed_all(&c.bytes[junk..]);
    let Event::Block(b) = &events[0] else {
        panic!(
            "expected the H block after the idle reset, got {:?}",
            events[0]
        )
    };
    assert_eq!(b.fields().next().map(|f| f.0), Some("H1"));
    assert_eq!(b.len(), 16);
    assert!(matches!(&events[1], Event::Block(b) if b.get("PID") == Some("0xA389")));
}

#[test]
fn request_frames_of_the_captures_round_trip() {
    let mut seen = 0;
    for c in common::load_all() {
        for text in &c.capture.requests {
            let frame = vedirect::hex::Frame::parse(text.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", c.capture.name));
            let request = vedirect::hex::Request::from_frame(&frame).unwrap();
            assert_eq!(request.encode(), text.as_bytes(), "{}", c.capture.name);
            seen += 1;
        }
    }
    assert!(seen >= 8, "the HEX captures list their requests");
}
