//! The stream parser never panics, gives the same events however the input is chunked,
//! keeps its output bounded, and only ever accepts blocks that sum to 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vedirect::decode::{Accumulator, Reading};
use vedirect::hex::{Frame, MAX_FRAME_CHARS};
use vedirect::text::{Event, MAX_FIELDS, MAX_LABEL_LEN, MAX_VALUE_LEN, Parser};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector % 64) + 1;
    let mut whole = Parser::new();
    let events = whole.feed_all(data);
    let mut chunked = Parser::new();
    let mut again = Vec::new();
    for (i, c) in data.chunks(chunk).enumerate() {
        again.extend(chunked.feed(c));
        // An idle reset between chunks must never break anything either.
        if selector & 0x80 != 0 && i % 7 == 6 {
            chunked.idle_reset();
        }
    }
    if selector & 0x80 == 0 {
        assert_eq!(events, again, "chunking changed the result");
    }
    assert!(events.len() <= data.len(), "at most one event per byte");
    assert!(whole.pending_text_len() <= data.len());
    let mut acc = Accumulator::new();
    for e in events.iter().chain(&again) {
        match e {
            Event::Block(b) => {
                let bytes = b.to_bytes();
                assert_eq!(bytes.iter().fold(0u8, |s, &x| s.wrapping_add(x)), 0);
                assert!((1..=MAX_FIELDS).contains(&b.len()));
                for (l, v) in b.fields() {
                    assert!((1..=MAX_LABEL_LEN).contains(&l.len()));
                    assert!((1..=MAX_VALUE_LEN).contains(&v.len()));
                }
                let _ = Reading::from_block(b).to_json(Some(0));
                acc.update(b);
            }
            Event::Hex(h) => {
                assert!(h.raw.chars().count() <= MAX_FRAME_CHARS + 1);
                if let Ok(f) = &h.frame {
                    assert_eq!(Frame::parse(&f.encode()).as_ref(), Ok(f));
                }
            }
            Event::Rejected(r) => assert!(r.len >= 1),
        }
    }
    let _ = acc.reading().to_json(None);
});
