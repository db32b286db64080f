//! HEX frame decoding, message interpretation, register decoding and the simulator's
//! answers never panic; encoding round-trips; the simulator only ever answers with valid
//! frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vedirect::hex::{Frame, Request, Response};
use vedirect::sim::{DeviceKind, SimOptions, Simulator};
use vedirect::text::{Event, HexFrame, Parser};
use vedirect::{cli, registers};

fn simulators() -> &'static [Simulator; 4] {
    static SIMS: OnceLock<[Simulator; 4]> = OnceLock::new();
    SIMS.get_or_init(|| {
        [
            DeviceKind::Mppt,
            DeviceKind::Bmv,
            DeviceKind::SmartShunt,
            DeviceKind::Phoenix,
        ]
        .map(|k| Simulator::new(k, "HQ0000FUZZ", SimOptions::default()))
    })
}

fuzz_target!(|data: &[u8]| {
    let parsed = Frame::parse(data);
    let mut line = String::new();
    cli::hex_json(
        &mut line,
        &HexFrame {
            raw: String::from_utf8_lossy(data).into_owned(),
            frame: parsed.clone(),
        },
    );
    if let Ok(frame) = &parsed {
        assert_eq!(Frame::parse(&frame.encode()).as_ref(), Ok(frame));
        if let Ok(request) = Request::from_frame(frame) {
            let again = Request::from_frame(&request.to_frame()).unwrap();
            assert_eq!(again, request);
        }
        if let Ok(response) = Response::from_frame(frame) {
            let again = Response::from_frame(&response.to_frame()).unwrap();
            assert_eq!(again, response);
            if let Some(r) = response.register_frame() {
                let _ = registers::decode_frame(r);
                let _ = r.uint();
                let _ = r.int();
                let _ = r.string();
            }
        }
    }
    // Any bytes sent to a simulated device: the reply is only valid HEX frames.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut sim = simulators()[usize::from(selector % 4)].clone();
    let t = f64::from(u32::from(selector) * 1000);
    let mut request = rest.to_vec();
    request.push(b'\n');
    let reply = sim.handle_hex(&request, t);
    for e in Parser::new().feed_all(&reply) {
        match e {
            Event::Hex(h) => assert!(h.frame.is_ok(), "simulator sent {:?}", h.raw),
            other => panic!("simulator HEX reply produced {other:?}"),
        }
    }
    let _ = sim.text_block(t);
});
