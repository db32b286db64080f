//! The simulator's bytes go through the real parser and decoder: a whole simulated day
//! must stay consistent between an MPPT and a BMV of the same site, and HEX requests get
//! device-like answers (including the volatile charge current limit).

use vedirect::decode::{Accumulator, Reading, Value};
use vedirect::hex::{Flags, Frame, RegisterError, Request, Response};
use vedirect::registers::{self, CHARGE_CURRENT_LIMIT, LOAD_OUTPUT_CONTROL};
use vedirect::sim::{DeviceKind, SimOptions, Simulator, VOLATILE_TIMEOUT_S};
use vedirect::text::{Event, Parser, TextBlock};

mod common;

#[test]
fn bmv_answers_the_documented_session_byte_for_byte() {
    // Victron's "BMV700 Series HEX protocol" example session: the requests and the exact
    // replies of a BMV-712 Smart with firmware 4.01 and a 200 Ah capacity.
    let c = common::load("hex_bmv712_document_examples");
    let options = SimOptions {
        firmware: Some(0x4401),
        ..SimOptions::default()
    };
    let mut sim = Simulator::new(DeviceKind::Bmv, "HQ0000DOC", options);
    let mut replies = Vec::new();
    for request in &c.capture.requests {
        replies.extend(sim.handle_hex(request.as_bytes(), 0.0));
    }
    assert_eq!(replies, c.bytes, "{}", String::from_utf8_lossy(&replies));
}

fn one_block(parser: &mut Parser, bytes: &[u8]) -> TextBlock {
    let events = parser.feed_all(bytes);
    assert_eq!(events.len(), 1, "{events:?}");
    match events.into_iter().next().unwrap() {
        Event::Block(b) => b,
        other => panic!("simulator block not accepted: {other:?}"),
    }
}

fn num(r: &Reading, name: &str) -> f64 {
    r.get(name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{name} missing or not a number in {r:?}"))
}

fn name(r: &Reading, name: &str) -> String {
    match r.get(name) {
        Some(Value::Name(n)) => n.to_string(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn a_whole_day_is_consistent_between_mppt_and_bmv() {
    let mut mppt = Simulator::new(DeviceKind::Mppt, "HQ2250SIM01", SimOptions::default());
    let mut bmv = Simulator::new(DeviceKind::Bmv, "HQ2250SIM02", SimOptions::default());
    let (mut pm, mut pb) = (Parser::new(), Parser::new());
    let mut bmv_acc = Accumulator::new();
    let day0 = 20_000.0 * 86_400.0; // virtual time: any day
    let mut states = Vec::new();
    let mut prev_yield = 0.0;
    let mut energy_wh = 0.0;
    let mut soc_first = None;
    let mut charge_ah = 0.0;
    for minute in 0..1440 {
        let t = day0 + minute as f64 * 60.0 + 10.0;
        let m = Reading::from_block(&one_block(&mut pm, &mppt.text_block(t)));
        // The BMV alternates blocks on even/odd seconds: take both.
        let main = one_block(&mut pb, &bmv.text_block(t));
        let hist = one_block(&mut pb, &bmv.text_block(t + 1.0));
        assert!(main.get("PID").is_some() && hist.get("H1").is_some());
        bmv_acc.update(&main);
        assert!(
            bmv_acc.update(&hist),
            "main + history block make a complete reading"
        );
        let b = bmv_acc.reading();
        assert!(m.errors.is_empty() && b.errors.is_empty());

        // Same battery: same voltage; the BMV sees the charge current minus the loads.
        let v = num(&m, "battery_voltage");
        assert!(
            (v - num(b, "battery_voltage")).abs() < 0.0015,
            "minute {minute}"
        );
        let load = num(&m, "battery_current") - num(b, "battery_current");
        assert!(
            (1.0..15.0).contains(&load),
            "minute {minute}: load {load} A"
        );
        // P = V × I on the BMV, PV power ≥ charge power on the MPPT.
        let p = num(b, "battery_power");
        assert!(
            (p - v * num(b, "battery_current")).abs() <= 1.0,
            "minute {minute}"
        );
        assert!(
            num(&m, "pv_power") + 1.0 >= v * num(&m, "battery_current"),
            "minute {minute}"
        );

        let cs = name(&m, "charge_state");
        let soc = num(b, "state_of_charge");
        match cs.as_str() {
            "off" => assert_eq!(num(&m, "pv_power"), 0.0),
            // Entered when full; the battery may give a little back as the sun sets.
            "float" if states.last().map(String::as_str) != Some("float") => {
                assert!(soc >= 99.0, "float entered at {soc} %")
            }
            "float" => assert!(soc >= 95.0, "float at {soc} %"),
            "bulk" => assert!(soc < 91.0, "bulk at {soc} %"),
            "absorption" => assert!(soc >= 89.0, "absorption at {soc} %"),
            other => panic!("unexpected charge state {other}"),
        }
        if states.last() != Some(&cs) {
            states.push(cs);
        }
        // Yield today only grows, and matches the integral of PV power.
        let y = num(&m, "yield_today");
        assert!(y >= prev_yield, "yield went down at minute {minute}");
        prev_yield = y;
        energy_wh += num(&m, "pv_power") / 60.0;
        soc_first.get_or_insert(soc);
        charge_ah += num(b, "battery_current") / 60.0;
    }
    assert_eq!(
        states,
        ["off", "bulk", "absorption", "float", "off"],
        "night, bulk in the morning, absorption, float, evening"
    );
    assert!(
        (prev_yield * 1000.0 - energy_wh).abs() < 20.0,
        "{prev_yield} kWh vs {energy_wh} Wh"
    );
    // Integrating the BMV current over the day closes the state-of-charge loop.
    let capacity = 200.0;
    let soc_end = num(bmv_acc.reading(), "state_of_charge");
    let predicted = soc_first.unwrap() + charge_ah / capacity * 100.0;
    assert!(
        (predicted - soc_end).abs() < 2.0,
        "{predicted} vs {soc_end}"
    );
}

#[test]
fn phoenix_and_smartshunt_blocks_decode() {
    let t = 1_764_040_000.0;
    for (kind, model) in [
        (DeviceKind::Phoenix, "Phoenix Inverter 12V 1200 VA 230V"),
        (DeviceKind::SmartShunt, "SmartShunt 500A/50mV"),
        (DeviceKind::Mppt, "SmartSolar MPPT 75/15"),
        (DeviceKind::Bmv, "BMV-712 Smart"),
    ] {
        let kind_name = kind.to_string();
        assert_eq!(kind_name.parse::<DeviceKind>(), Ok(kind));
        let mut sim = Simulator::new(kind, "HQ00000000", SimOptions::default());
        let mut p = Parser::new();
        let mut acc = Accumulator::new();
        for s in 0..4 {
            let block = one_block(&mut p, &sim.text_block(t + f64::from(s)));
            acc.update(&block);
        }
        assert!(acc.is_complete(), "{kind_name}");
        let r = acc.reading();
        assert_eq!(
            r.get("model"),
            Some(&Value::Text(model.into())),
            "{kind_name}"
        );
        assert!(r.errors.is_empty(), "{kind_name}: {:?}", r.errors);
    }
    assert!("inverter".parse::<DeviceKind>().is_err());
}

/// Send a request, feed the reply through the parser, return the decoded response.
fn ask(sim: &mut Simulator, request: Request, t: f64) -> Response {
    let reply = sim.handle_hex(&request.encode(), t);
    let events = Parser::new().feed_all(&reply);
    assert_eq!(events.len(), 1, "{events:?}");
    let Event::Hex(h) = &events[0] else {
        panic!("{events:?}")
    };
    h.response().expect("valid frame").expect("known response")
}

fn get_value(sim: &mut Simulator, register: u16, t: f64) -> (Flags, Vec<u8>) {
    match ask(sim, Request::Get { register }, t) {
        Response::Get(r) => {
            assert_eq!(r.register, register);
            (r.flags, r.value)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hex_ping_version_product_and_get() {
    let mut sim = Simulator::new(DeviceKind::Mppt, "HQ2250SIM01", SimOptions::default());
    let t = 20_000.0 * 86_400.0 + 10.0 * 3600.0;
    assert!(
        matches!(ask(&mut sim, Request::Ping, t), Response::Ping { version } if version.to_string() == "1.63")
    );
    assert_eq!(
        ask(&mut sim, Request::AppVersion, t),
        Response::Done { word: 0x4163 }
    );
    assert_eq!(
        ask(&mut sim, Request::ProductId, t),
        Response::Done { word: 0xA053 }
    );
    assert!(sim.handle_hex(&Request::Restart.encode(), t).is_empty());
    // Get answers agree with the text block of the same moment.
    let text = Reading::from_block(&one_block(&mut Parser::new(), &sim.text_block(t)));
    let (flags, value) = get_value(&mut sim, registers::CHARGER_VOLTAGE, t);
    assert_eq!(flags, Flags::OK);
    let reg = registers::lookup(registers::CHARGER_VOLTAGE).unwrap();
    let hex_v = reg.decode_exact(&value).unwrap().as_f64().unwrap();
    assert!((hex_v - num(&text, "battery_voltage")).abs() < 0.006);
    let (_, value) = get_value(&mut sim, registers::PANEL_POWER, t);
    let reg = registers::lookup(registers::PANEL_POWER).unwrap();
    let w = reg.decode_exact(&value).unwrap().as_f64().unwrap();
    assert!((w - num(&text, "pv_power")).abs() <= 0.5);
    let (_, serial) = get_value(&mut sim, registers::SERIAL_NUMBER, t);
    assert_eq!(serial, b"HQ2250SIM01");
    // A register this device does not have.
    let (flags, value) = get_value(&mut sim, 0x7777, t);
    assert_eq!(flags.status(), Err(RegisterError::UnknownId));
    assert!(value.is_empty());
    // A malformed request gets the frame-error reply.
    let reply = sim.handle_hex(b":7D5ED008D\n", t);
    assert_eq!(reply, b":4AAAAFD\n");
    let bmv_only = sim.handle_hex(
        &Request::Get {
            register: registers::STATE_OF_CHARGE,
        }
        .encode(),
        t,
    );
    assert_eq!(
        Frame::parse(&bmv_only).unwrap().payload[2],
        Flags::UNKNOWN_ID.0
    );
}

#[test]
fn volatile_charge_current_limit_reverts_after_a_minute() {
    let mut sim = Simulator::new(DeviceKind::Mppt, "HQ2250SIM01", SimOptions::default());
    let noon = 20_000.0 * 86_400.0 + 10.0 * 3600.0; // bulk, ~30 A available
    let limit = registers::lookup(CHARGE_CURRENT_LIMIT).unwrap();
    let (_, default) = get_value(&mut sim, CHARGE_CURRENT_LIMIT, noon);
    let set = Request::Set {
        register: CHARGE_CURRENT_LIMIT,
        value: limit.encode(5.0),
    };
    match ask(&mut sim, set, noon) {
        Response::Set(r) => assert_eq!((r.flags, r.value.clone()), (Flags::OK, vec![50, 0])),
        other => panic!("{other:?}"),
    }
    let current_at = |sim: &mut Simulator, t: f64| {
        let b = one_block(&mut Parser::new(), &sim.text_block(t));
        num(&Reading::from_block(&b), "battery_current")
    };
    assert!(current_at(&mut sim, noon + 1.0) <= 5.0);
    assert_eq!(
        get_value(
            &mut sim,
            CHARGE_CURRENT_LIMIT,
            noon + VOLATILE_TIMEOUT_S - 1.0
        )
        .1,
        vec![50, 0]
    );
    // Not refreshed: the device forgets it.
    assert_eq!(
        get_value(
            &mut sim,
            CHARGE_CURRENT_LIMIT,
            noon + VOLATILE_TIMEOUT_S + 1.0
        )
        .1,
        default
    );
    assert!(current_at(&mut sim, noon + VOLATILE_TIMEOUT_S + 1.0) > 5.0);
    // Refreshing keeps it in force.
    let set = Request::Set {
        register: CHARGE_CURRENT_LIMIT,
        value: limit.encode(8.0),
    };
    ask(&mut sim, set.clone(), noon + 100.0);
    ask(&mut sim, set, noon + 150.0);
    assert_eq!(
        get_value(&mut sim, CHARGE_CURRENT_LIMIT, noon + 200.0).1,
        vec![80, 0]
    );
    // Out of range: parameter error with the nearest valid value.
    let set = Request::Set {
        register: CHARGE_CURRENT_LIMIT,
        value: limit.encode(99.0),
    };
    match ask(&mut sim, set, noon + 300.0) {
        Response::Set(r) => {
            assert_eq!(r.flags.status(), Err(RegisterError::ParameterError));
            assert_eq!(r.value, default);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_output_set_shows_in_text_and_read_only_registers_refuse() {
    let mut sim = Simulator::new(DeviceKind::Mppt, "HQ2250SIM01", SimOptions::default());
    let t = 20_000.0 * 86_400.0 + 13.0 * 3600.0;
    let load_of = |sim: &mut Simulator| {
        let b = one_block(&mut Parser::new(), &sim.text_block(t));
        Reading::from_block(&b)
            .get("load_output")
            .and_then(Value::as_bool)
            .unwrap()
    };
    assert!(load_of(&mut sim), "automatic: on with a full battery");
    let off = Request::Set {
        register: LOAD_OUTPUT_CONTROL,
        value: vec![0],
    };
    assert!(
        matches!(ask(&mut sim, off, t), Response::Set(r) if r.flags == Flags::OK && r.value == [0])
    );
    assert!(!load_of(&mut sim));
    let on = Request::Set {
        register: LOAD_OUTPUT_CONTROL,
        value: vec![4],
    };
    ask(&mut sim, on, t);
    assert!(load_of(&mut sim));
    let bad = Request::Set {
        register: LOAD_OUTPUT_CONTROL,
        value: vec![9],
    };
    assert!(
        matches!(ask(&mut sim, bad, t), Response::Set(r) if r.flags == Flags::PARAMETER_ERROR && r.value == [4])
    );
    let ro = Request::Set {
        register: registers::CHARGER_VOLTAGE,
        value: vec![0, 0],
    };
    match ask(&mut sim, ro, t) {
        Response::Set(r) => assert_eq!(r.flags.status(), Err(RegisterError::NotSupported)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bmv_hex_registers_match_its_text_block() {
    let mut sim = Simulator::new(DeviceKind::Bmv, "HQ2250SIM02", SimOptions::default());
    let t = 20_000.0 * 86_400.0 + 20.0 * 3600.0; // evening discharge, even second
    let text = Reading::from_block(&one_block(&mut Parser::new(), &sim.text_block(t)));
    for (register, name, tolerance) in [
        (registers::STATE_OF_CHARGE, "state_of_charge", 0.06),
        (registers::MAIN_VOLTAGE, "battery_voltage", 0.006),
        (registers::CURRENT_HIGH_RES, "battery_current", 0.0006),
        (registers::CONSUMED_AH, "consumed_charge", 0.06),
        (registers::TIME_TO_GO, "time_to_go", 60.0),
    ] {
        let (flags, value) = get_value(&mut sim, register, t);
        assert_eq!(flags, Flags::OK);
        let reg = registers::lookup(register).unwrap();
        let hex = reg.decode_exact(&value).unwrap().as_f64().unwrap();
        assert!(
            (hex - num(&text, name)).abs() <= tolerance,
            "{name}: {hex} vs {}",
            num(&text, name)
        );
    }
}

/// At any time scale a battery monitor sends both of its blocks in turn: the demo steps
/// virtual time by 10 s per block, and a parity rule would only ever send one kind.
#[test]
fn battery_monitor_alternates_blocks_at_any_time_scale() {
    let mut sim = Simulator::new(DeviceKind::Bmv, "HQTEST", SimOptions::default());
    let mut acc = Accumulator::new();
    let mut parser = Parser::new();
    let mut complete = false;
    for step in 0..4 {
        let block = one_block(
            &mut parser,
            &sim.text_block(36_000.0 + 10.0 * f64::from(step)),
        );
        complete |= acc.update(&block);
    }
    assert!(complete, "main and history blocks never both arrived");
}
