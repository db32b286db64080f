//! Synthesised streams for what no capture has: awkward checksum bytes, HEX frames in
//! awkward places, the limits of PROTOCOL.md section 4, resynchronisation.

mod common;

use common::Rng;
use vedirect::hex::FrameError;
use vedirect::text::{
    EncodeError, Event, MAX_FIELDS, Parser, RejectReason, TextBlock, encode_block,
};

const ASYNC: &[u8] = b":A0102000543\n";

fn mppt_fields(v: u32) -> Vec<(String, String)> {
    [
        ("PID", "0xA053".to_string()),
        ("FW", "159".into()),
        ("SER#", "HQ2019ABCDE".into()),
        ("V", v.to_string()),
        ("I", "1200".into()),
        ("VPV", "34960".into()),
        ("PPV", "17".into()),
        ("CS", "3".into()),
        ("ERR", "0".into()),
        ("LOAD", "ON".into()),
    ]
    .into_iter()
    .map(|(l, v)| (l.to_string(), v))
    .collect()
}

/// A valid block whose checksum byte is `target`: the serial number is padded with
/// letters whose sum brings the block to that checksum.
fn block_with_checksum(target: u8) -> (Vec<(String, String)>, Vec<u8>) {
    let base = encode_block(&mppt_fields(12540)).unwrap();
    // Sum of everything but the checksum byte, plus the target, must be 0 mod 256.
    let sum_without = base[..base.len() - 1]
        .iter()
        .fold(0u8, |s, &b| s.wrapping_add(b));
    let need = 0u8.wrapping_sub(sum_without).wrapping_sub(target);
    for n in 1..=10usize {
        for k in 0..=4usize {
            let s = usize::from(need) + 256 * k;
            if s < 65 * n || s > 90 * n {
                continue;
            }
            let mut extra = s - 65 * n;
            let pad: String = (0..n)
                .map(|_| {
                    let e = extra.min(25);
                    extra -= e;
                    (65 + e) as u8 as char
                })
                .collect();
            let mut fields = mppt_fields(12540);
            fields[2].1.push_str(&pad);
            let block = encode_block(&fields).unwrap();
            assert_eq!(*block.last().unwrap(), target);
            return (fields, block);
        }
    }
    unreachable!("a padding exists for every residue")
}

/// Bytes of a block built without validation, with a correct checksum byte.
fn raw_block(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(b"\r\nChecksum\t");
    let sum = out.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    out.push(sum.wrapping_neg());
    out
}

fn fields_of(b: &TextBlock) -> Vec<(String, String)> {
    b.fields()
        .map(|(l, v)| (l.to_string(), v.to_string()))
        .collect()
}

/// Feed whole, byte by byte and in random chunks; all three must give the same events.
fn parse_every_way(bytes: &[u8]) -> Vec<Event> {
    let whole = Parser::new().feed_all(bytes);
    let mut p = Parser::new();
    let bytewise: Vec<Event> = bytes.iter().flat_map(|&b| p.push(b)).collect();
    assert_eq!(whole, bytewise, "byte-by-byte feeding differs");
    for seed in 0..6 {
        let mut rng = Rng::new(seed + bytes.len() as u64);
        let mut p = Parser::new();
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = (1 + rng.below(40)).min(rest.len());
            events.extend(p.feed(&rest[..n]));
            rest = &rest[n..];
        }
        assert_eq!(whole, events, "chunked feeding (seed {seed}) differs");
    }
    whole
}

fn blocks(events: &[Event]) -> Vec<&TextBlock> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Block(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn rejections(events: &[Event]) -> Vec<RejectReason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected(r) => Some(r.reason),
            _ => None,
        })
        .collect()
}

#[test]
fn checksum_bytes_that_look_like_delimiters() {
    for target in [b'\n', b'\r', b':', b'\t', 0x00, 0xFF] {
        let (fields, block) = block_with_checksum(target);
        let (_, before) = block_with_checksum(0x41);
        // A HEX frame right after the checksum byte, and another block after it.
        let mut stream = before.clone();
        stream.extend_from_slice(&block);
        stream.extend_from_slice(ASYNC);
        stream.extend_from_slice(&before);
        let events = parse_every_way(&stream);
        let got = blocks(&events);
        assert_eq!(got.len(), 3, "checksum byte 0x{target:02X}: {events:?}");
        assert_eq!(fields_of(got[1]), fields, "checksum byte 0x{target:02X}");
        assert_eq!(got[1].checksum_byte(), target);
        assert!(rejections(&events).is_empty());
        let hex: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::Hex(_)))
            .collect();
        assert_eq!(
            hex.len(),
            1,
            "checksum byte 0x{target:02X}: the async frame"
        );
    }
}

#[test]
fn hex_frames_spliced_anywhere_in_a_block() {
    let (fields, block) = block_with_checksum(0x3A);
    // Every position from the first byte up to (not including) the checksum byte,
    // including inside "Checksum" and between CR and LF.
    for at in 0..block.len() - 1 {
        let mut stream = block[..at].to_vec();
        stream.extend_from_slice(ASYNC);
        stream.extend_from_slice(&block[at..]);
        let events = Parser::new().feed_all(&stream);
        let got = blocks(&events);
        assert_eq!(got.len(), 1, "HEX frame at offset {at}: {events:?}");
        assert_eq!(fields_of(got[0]), fields);
        let Some(Event::Hex(h)) = events.iter().find(|e| matches!(e, Event::Hex(_))) else {
            panic!("HEX frame at offset {at} not reported");
        };
        assert_eq!(h.raw, ":A0102000543");
        assert!(h.frame.is_ok());
    }
    // Inside the word Checksum, fed in every chunking.
    let cut = block.windows(8).position(|w| w == b"Checksum").unwrap() + 5;
    let mut stream = block[..cut].to_vec();
    stream.extend_from_slice(b":AD5ED0009057B\n");
    stream.extend_from_slice(&block[cut..]);
    assert_eq!(blocks(&parse_every_way(&stream)).len(), 1);
}

#[test]
fn invalid_and_over_long_hex_frames_are_stripped_and_reported() {
    let (fields, block) = block_with_checksum(0x55);
    let cut = block.windows(3).position(|w| w == b"VPV").unwrap() + 5;
    let long: Vec<u8> = std::iter::once(b':')
        .chain(std::iter::repeat_n(b'A', 300))
        .chain(std::iter::once(b'\n'))
        .collect();
    let mut stream = block[..cut].to_vec();
    stream.extend_from_slice(&long);
    stream.extend_from_slice(b":A0102000544\n"); // bad HEX checksum
    stream.extend_from_slice(&block[cut..]);
    let events = parse_every_way(&stream);
    assert_eq!(fields_of(blocks(&events)[0]), fields);
    let hex: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Hex(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(hex.len(), 2);
    assert_eq!(hex[0].frame, Err(FrameError::TooLong));
    assert!(
        hex[0].raw.len() <= 129,
        "raw kept bounded: {}",
        hex[0].raw.len()
    );
    assert_eq!(hex[1].frame, Err(FrameError::Checksum { sum: 0x56 }));
}

#[test]
fn limits_and_rejection_reasons() {
    let long_value = format!("\r\nV\t{}", "1".repeat(33));
    let max_value = format!("\r\nV\t{}", "1".repeat(32));
    let too_many: String = (0..=MAX_FIELDS).map(|i| format!("\r\nL{i}\t{i}")).collect();
    let just_enough: String = (0..MAX_FIELDS).map(|i| format!("\r\nL{i}\t{i}")).collect();
    let cases: Vec<(&str, String, Option<RejectReason>)> = vec![
        (
            "label of 9",
            "\r\nLABELNINE\t1".into(),
            Some(RejectReason::BadLabel),
        ),
        ("label of 8", "\r\nLABEL__8\t1".into(), None),
        (
            "label with '-'",
            "\r\nA-B\t1".into(),
            Some(RejectReason::BadLabel),
        ),
        (
            "empty label",
            "\r\n\t1".into(),
            Some(RejectReason::BadLabel),
        ),
        ("value of 33", long_value, Some(RejectReason::ValueLength)),
        ("value of 32", max_value, None),
        (
            "empty value",
            "\r\nV\t\r\nI\t1".into(),
            Some(RejectReason::ValueLength),
        ),
        ("23 fields", too_many, Some(RejectReason::TooManyFields)),
        ("22 fields", just_enough, None),
        (
            "duplicate",
            "\r\nV\t1\r\nV\t2".into(),
            Some(RejectReason::DuplicateLabel),
        ),
        (
            "no TAB",
            "\r\nV1\r\nI\t2".into(),
            Some(RejectReason::LineWithoutOneTab),
        ),
        (
            "two TABs",
            "\r\nV\t1\t2".into(),
            Some(RejectReason::LineWithoutOneTab),
        ),
        (
            "control byte",
            "\r\nV\t1\u{1}2".into(),
            Some(RejectReason::NonPrintableValue),
        ),
        (
            "lone CR",
            "\r\nV\t1\r2".into(),
            Some(RejectReason::NonPrintableValue),
        ),
        (
            "no CR LF first",
            "X\r\nV\t1".into(),
            Some(RejectReason::NotStartingWithCrLf),
        ),
        ("empty block", String::new(), Some(RejectReason::EmptyBlock)),
    ];
    let (good_fields, good) = block_with_checksum(0x20);
    for (name, body, want) in cases {
        let bad = raw_block(body.as_bytes());
        assert_eq!(bad.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        let mut stream = good.clone();
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&good);
        let events = parse_every_way(&stream);
        let got = blocks(&events);
        match want {
            Some(reason) => {
                assert_eq!(rejections(&events), vec![reason], "{name}");
                assert_eq!(got.len(), 2, "{name}: the blocks around it survive");
            }
            None => {
                assert!(rejections(&events).is_empty(), "{name}: {events:?}");
                assert_eq!(got.len(), 3, "{name}");
            }
        }
        assert_eq!(fields_of(got.last().unwrap()), good_fields, "{name}");
    }
    // Checksum first: a broken block that also has a wrong sum is reported as checksum.
    let mut bad = raw_block(b"\r\nLABELNINE\t1");
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(
        rejections(&Parser::new().feed_all(&bad)),
        vec![RejectReason::Checksum]
    );
}

#[test]
fn garbage_then_a_valid_block() {
    let (fields, block) = block_with_checksum(0x0D);
    let mut rng = Rng::new(7);
    let garbage: Vec<u8> = (0..2000).map(|_| rng.next_u64() as u8).collect();

    // With a silence between them (the caller's idle timer), the block is kept even though
    // the garbage ends right before its CR LF.
    let mut p = Parser::new();
    let _ = p.feed_all(&garbage);
    p.idle_reset();
    let events = p.feed_all(&block);
    assert_eq!(blocks(&events).len(), 1, "{events:?}");
    assert_eq!(fields_of(blocks(&events)[0]), fields);

    // Without a silence the garbage and the block form one segment (PROTOCOL.md 4.6): it is
    // dropped, and the very next block is accepted.
    let mut stream: Vec<u8> = garbage.iter().copied().filter(|&b| b != b':').collect();
    stream.extend_from_slice(&block);
    stream.extend_from_slice(&block);
    let events = parse_every_way(&stream);
    let got = blocks(&events);
    assert_eq!(got.len(), 1, "{events:?}");
    assert_eq!(fields_of(got[0]), fields);
}

#[test]
fn truncated_block_then_intact_block_is_recovered() {
    let (fields, block) = block_with_checksum(0x09);
    for cut in [5, 20, 37, 60, block.len() - 12, block.len() - 3] {
        // The device resets (or the cable is replugged) in the middle of a block.
        let mut stream = block[..cut].to_vec();
        stream.extend_from_slice(&block);
        let events = parse_every_way(&stream);
        let got = blocks(&events);
        assert_eq!(got.len(), 1, "cut at {cut}: {events:?}");
        assert_eq!(fields_of(got[0]), fields, "cut at {cut}");
        assert!(got[0].resynchronised());
    }
    // Line noise in a truncated battery-monitor block, then the other (H1) block.
    let main = encode_block(&[("PID", "0xA381"), ("V", "12800"), ("I", "-1500")]).unwrap();
    let history = encode_block(&[("H1", "-1000"), ("H2", "-500"), ("H4", "3")]).unwrap();
    let mut stream = main[..14].to_vec();
    stream.extend_from_slice(b"\x01\x7f\xfe");
    stream.extend_from_slice(&history);
    let events = parse_every_way(&stream);
    let got = blocks(&events);
    assert_eq!(got.len(), 1, "{events:?}");
    assert_eq!(got[0].get("H1"), Some("-1000"));
    assert!(got[0].resynchronised());
    // A corrupted block alone is not partially accepted.
    let mut corrupted = block.clone();
    corrupted[30] = 0x01;
    let events = Parser::new().feed_all(&corrupted);
    assert!(blocks(&events).is_empty());
}

#[test]
fn encoder_round_trips_through_the_parser() {
    let mut rng = Rng::new(42);
    let label_chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_#";
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..200 {
        let n = 1 + rng.below(MAX_FIELDS);
        let mut fields: Vec<(String, String)> = Vec::new();
        while fields.len() < n {
            let label: String = (0..1 + rng.below(8))
                .map(|_| label_chars[rng.below(label_chars.len())] as char)
                .collect();
            if label == "Checksum" || fields.iter().any(|(l, _)| *l == label) {
                continue;
            }
            let value: String = (0..1 + rng.below(32))
                .map(|_| (0x20 + rng.below(0x5F)) as u8 as char)
                .filter(|&c| c != ':')
                .collect();
            if value.is_empty() {
                continue;
            }
            fields.push((label, value));
        }
        stream.extend(encode_block(&fields).unwrap());
        expected.push(fields);
    }
    let events = parse_every_way(&stream);
    let got: Vec<_> = blocks(&events).into_iter().map(fields_of).collect();
    assert_eq!(got, expected);
    assert!(rejections(&events).is_empty());
}

#[test]
fn encoder_refuses_what_the_parser_would_reject() {
    assert_eq!(encode_block::<&str, &str>(&[]), Err(EncodeError::Empty));
    assert!(matches!(
        encode_block(&[("LABELNINE", "1")]),
        Err(EncodeError::BadLabel { .. })
    ));
    assert!(matches!(
        encode_block(&[("Checksum", "1")]),
        Err(EncodeError::BadLabel { .. })
    ));
    assert!(matches!(
        encode_block(&[("V", "")]),
        Err(EncodeError::BadValue { .. })
    ));
    assert!(matches!(
        encode_block(&[("V", "\t")]),
        Err(EncodeError::BadValue { .. })
    ));
    assert!(matches!(
        encode_block(&[("V", "1"), ("V", "2")]),
        Err(EncodeError::DuplicateLabel { .. })
    ));
    let many: Vec<(String, String)> = (0..23).map(|i| (format!("L{i}"), "1".into())).collect();
    assert_eq!(
        encode_block(&many),
        Err(EncodeError::TooManyFields { count: 23 })
    );
}

#[test]
fn random_bytes_never_yield_a_block_that_does_not_sum_to_zero() {
    let mut rng = Rng::new(99);
    let (_, good) = block_with_checksum(0x33);
    let mut stream = Vec::new();
    for _ in 0..300 {
        match rng.below(4) {
            0 => stream.extend((0..rng.below(200)).map(|_| rng.next_u64() as u8)),
            1 => stream.extend_from_slice(&good[..rng.below(good.len())]),
            2 => stream.extend_from_slice(ASYNC),
            _ => stream.extend_from_slice(&good),
        }
    }
    let events = parse_every_way(&stream);
    assert!(!blocks(&events).is_empty());
    for b in blocks(&events) {
        assert_eq!(b.to_bytes().iter().fold(0u8, |s, &x| s.wrapping_add(x)), 0);
        assert!(b.len() <= MAX_FIELDS);
    }
}
