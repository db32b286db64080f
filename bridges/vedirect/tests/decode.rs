//! Decoding the captures' values: names, SI scaling, enumerations, unknown labels kept;
//! the battery-monitor accumulator; the `pvbus vedirect decode` logic.

mod common;

use vedirect::cli::{DecodeOptions, decode};
use vedirect::decode::{Accumulator, Reading, Value};
use vedirect::text::{Event, Parser, RejectReason, TextBlock};

fn blocks_of(name: &str) -> Vec<TextBlock> {
    let c = common::load(name);
    Parser::new()
        .feed_all(&c.bytes)
        .into_iter()
        .filter_map(|e| match e {
            Event::Block(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn json_of(block: &TextBlock) -> serde_json::Value {
    serde_json::from_str(&Reading::from_block(block).to_json(Some(1764040000))).unwrap()
}

#[test]
fn battery_monitor_values_in_si() {
    let blocks = blocks_of("bmv700_two_blocks");
    let a = json_of(&blocks[0]);
    assert_eq!(a["ts"], 1764040000);
    assert_eq!(a["product_id"], "0x0203");
    assert_eq!(a["model"], "BMV-700");
    assert_eq!(a["battery_voltage"], 12.065); // V 12065 mV
    assert_eq!(a["battery_current"], -7.625); // I -7625 mA
    assert_eq!(a["battery_power"], -92);
    assert_eq!(a["consumed_charge"], -65.473); // CE mAh -> Ah
    assert_eq!(a["state_of_charge"], 83.9); // SOC 839 per mille -> %
    assert_eq!(a["time_to_go"], 942 * 60); // minutes -> s
    assert_eq!(a["alarm"], false);
    assert_eq!(a["relay"], false);
    assert_eq!(a["alarm_reason"], serde_json::json!([]));
    assert_eq!(a["model_description"], "700");
    assert_eq!(a["firmware"], "3.08");
    let h = json_of(&blocks[1]);
    assert_eq!(h["deepest_discharge"], -149.322);
    assert_eq!(h["cumulative_ah_drawn"], -5526.294);
    assert_eq!(h["min_battery_voltage"], 11.733);
    assert_eq!(h["seconds_since_full_charge"], 368003);
    assert_eq!(h["synchronisations"], 26);
    assert_eq!(h["discharged_energy"], 68.43); // H17 0.01 kWh -> kWh
    assert_eq!(h["charged_energy"], 85.27);
}

#[test]
fn smart_battery_monitor_and_shunt() {
    let blocks = blocks_of("bmv712_smart_stream");
    let main = blocks.iter().find(|b| b.get("PID").is_some()).unwrap();
    let j = json_of(main);
    assert_eq!(j["model"], "BMV-712 Smart");
    let soc = main.get("SOC").unwrap().parse::<f64>().unwrap() / 10.0;
    assert_eq!(j["state_of_charge"].as_f64(), Some(soc));
    let shunt = blocks_of("smartshunt_500a_48v_mon");
    let j = json_of(&shunt[0]);
    assert_eq!(j["dc_monitor_mode"], "battery_monitor");
    assert_eq!(j["battery_voltage"], 53.509);
    assert_eq!(j["state_of_charge"], 54.8);
    assert_eq!(j["time_to_go"], serde_json::Value::Null); // TTG -1: infinite
    assert_eq!(j["firmware"], "4.14");
    let read2 = blocks_of("smartshunt_500a_read2_leading_junk");
    assert_eq!(json_of(&read2[0])["auxiliary_voltage"], -0.012);
}

#[test]
fn solar_charger_values_and_enumerations() {
    let blocks = blocks_of("mppt_bluesolar_75-15_fw123_full");
    let j = json_of(&blocks[0]);
    assert_eq!(j["model"], "BlueSolar MPPT 75/15");
    assert_eq!(j["firmware"], "1.23");
    assert_eq!(j["serial_number"], "HQ1411MYIKN");
    assert_eq!(j["pv_voltage"], 31.39);
    assert_eq!(j["pv_power"], 8);
    assert_eq!(j["charge_state"], "bulk");
    assert_eq!(j["error"], "no_error");
    assert_eq!(j["load_output"], true);
    assert_eq!(j["load_current"], 0);
    assert_eq!(j["yield_total"], 82.72); // H19 8272 x 0.01 kWh
    assert_eq!(j["yield_today"], 0);
    assert_eq!(j["max_power_yesterday"], 119);
    assert_eq!(j["day_sequence_number"], 274);
    // Every charge state seen over the 41 kB recording has a name.
    for b in &blocks {
        let j = json_of(b);
        assert!(j["charge_state"].is_string(), "{j}");
    }
    let smart = blocks_of("mppt_smartsolar_75-15_async_before_block");
    let j = json_of(&smart[0]);
    assert!(j["tracker_mode"].is_string(), "{j}");
    assert!(j["off_reason"].is_array(), "{j}");
}

#[test]
fn inverter_block_and_unknown_pid() {
    let blocks = blocks_of("phoenix_inverter_12v-1200va");
    let j = json_of(&blocks[0]);
    assert_eq!(j["product_id"], "0xA2F1");
    assert_eq!(
        j["model"],
        serde_json::Value::Null,
        "0xA2F1 is in no list: kept, unnamed"
    );
    assert_eq!(j["charge_state"], "inverting");
    assert!(j["device_mode"].is_string());
    assert!(j["ac_output_voltage"].as_f64().unwrap() > 100.0);
    assert!(j["warning_reason"].is_array());
}

/// MPPT RS and 250/85 send both FW and FWE: one `firmware` key, the 24-bit form.
#[test]
fn two_labels_of_one_name_give_one_key() {
    let bytes = vedirect::text::encode_block(&[
        ("PID", "0xA053"),
        ("FW", "159"),
        ("FWE", "0159FF"),
        ("V", "12800"),
    ])
    .unwrap();
    let events = Parser::new().feed_all(&bytes);
    let Event::Block(b) = &events[0] else {
        panic!("{events:?}")
    };
    let json = Reading::from_block(b).to_json(None);
    assert_eq!(json.matches("\"firmware\"").count(), 1, "{json}");
    let fwe = vedirect::decode::decode_field("FWE", "0159FF").unwrap()[0]
        .1
        .clone();
    assert_eq!(Reading::from_block(b).get("firmware"), Some(&fwe));
}

#[test]
fn unknown_labels_and_codes_are_kept() {
    let bytes = vedirect::text::encode_block(&[
        ("PID", "0xA053"),
        ("CS", "250"),
        ("ERR", "200"),
        ("NEWFLD", "abc 1"),
        ("OR", "0x00010001"),
        ("V", "oops"),
    ])
    .unwrap();
    let events = Parser::new().feed_all(&bytes);
    let Event::Block(b) = &events[0] else {
        panic!()
    };
    let r = Reading::from_block(b);
    assert_eq!(r.get("charge_state"), Some(&Value::Int(250)));
    assert_eq!(r.get("error"), Some(&Value::Int(200)));
    assert_eq!(r.get("NEWFLD"), Some(&Value::Text("abc 1".into())));
    let j: serde_json::Value = serde_json::from_str(&r.to_json(None)).unwrap();
    assert_eq!(
        j["off_reason"],
        serde_json::json!(["no_input_power", "bit_16"])
    );
    // A malformed value is an error naming the field, and is kept raw, never dropped.
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].label, "V");
    assert_eq!(r.get("V"), Some(&Value::Text("oops".into())));
}

#[test]
fn accumulator_merges_the_two_blocks_and_never_rejected_ones() {
    let blocks = blocks_of("bmv700_two_blocks");
    let mut acc = Accumulator::new();
    assert!(
        !acc.update(&blocks[0]),
        "main block alone is not a full BMV reading"
    );
    assert!(acc.reading().get("deepest_discharge").is_none());
    assert!(acc.update(&blocks[1]));
    let r = acc.reading();
    assert!(r.get("state_of_charge").is_some() && r.get("deepest_discharge").is_some());
    // Later blocks replace values in place.
    for b in &blocks[2..] {
        acc.update(b);
    }
    let last_ce = blocks.iter().rev().find_map(|b| b.get("CE")).unwrap();
    let want = last_ce.parse::<f64>().unwrap() / 1000.0;
    assert_eq!(
        acc.reading().get("consumed_charge").and_then(Value::as_f64),
        Some(want)
    );
    // The noisy capture has only rejected segments: nothing reaches the accumulator.
    let noisy = common::load("bmv702_noisy_line_split");
    let events = Parser::new().feed_all(&noisy.bytes);
    assert!(events.iter().all(|e| !matches!(e, Event::Block(_))));
    // An MPPT is complete with its single block.
    let mut mppt = Accumulator::new();
    assert!(mppt.update(&blocks_of("mppt_smartsolar_100-20_fw139_start")[0]));
}

fn run_decode(bytes: &[u8], opts: DecodeOptions) -> (String, String, vedirect::cli::DecodeSummary) {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let summary = decode(bytes, &mut out, &mut diag, opts).unwrap();
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(diag).unwrap(),
        summary,
    )
}

#[test]
fn decode_command_prints_each_accepted_block_in_order() {
    for c in common::load_all() {
        let (out, diag, summary) = run_decode(&c.bytes, DecodeOptions::default());
        let accepted: Vec<_> = c
            .capture
            .expected
            .blocks
            .iter()
            .filter_map(|b| b.fields.as_ref())
            .collect();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), accepted.len(), "{}", c.capture.name);
        for (line, fields) in lines.iter().zip(&accepted) {
            // Exact text, so the order of the labels is checked too.
            let want: Vec<String> = fields
                .0
                .iter()
                .map(|(l, v)| format!("{}:{}", serde_json::json!(l), serde_json::json!(v)))
                .collect();
            assert_eq!(
                *line,
                format!("{{{}}}", want.join(",")),
                "{}",
                c.capture.name
            );
        }
        let rejected = c.capture.expected.blocks.len() - accepted.len();
        assert_eq!(
            summary.rejected_total() as usize,
            rejected,
            "{}",
            c.capture.name
        );
        assert_eq!(
            summary.hex_frames as usize,
            c.capture.expected.hex_frames.len()
        );
        assert_eq!(
            summary.trailing_bytes,
            c.capture.expected.trailing_incomplete_bytes
        );
        assert_eq!(
            diag.lines()
                .filter(|l| l.contains("block rejected (checksum)"))
                .count(),
            rejected
        );
        assert!(
            diag.lines()
                .last()
                .unwrap()
                .starts_with("vedirect decode: "),
            "{diag}"
        );
    }
}

#[test]
fn decode_command_hex_and_decoded_options() {
    let c = common::load("hex_mppt_smartsolar_250-70_session");
    let opts = DecodeOptions {
        hex: true,
        decoded: true,
    };
    let (out, _, summary) = run_decode(&c.bytes, opts);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 54, "53 HEX frames and 1 block");
    assert_eq!(summary.blocks, 1);
    let block = lines.iter().find(|l| l.get("hex").is_none()).unwrap();
    assert!(block["battery_voltage"].is_number() && block["charge_state"].is_string());
    let pid = lines.iter().find(|l| l["hex"] == ":169A04B").unwrap();
    assert_eq!(pid["command"], "done");
    assert_eq!(pid["model"], "SmartSolar MPPT 250/70 rev2");
    let async_current = lines.iter().find(|l| l["hex"] == ":AD7ED00310056").unwrap();
    assert_eq!(async_current["command"], "async");
    assert_eq!(async_current["name"], "battery_current");
    assert_eq!(async_current["value"], 4.9); // 49 x 0.1 A
    assert_eq!(async_current["unit"], "A");
    let c = common::load("hex_bmv712_document_examples");
    let (out, _, _) = run_decode(&c.bytes, opts);
    let param = out.lines().find(|l| l.contains(":8001004010038")).unwrap();
    let j: serde_json::Value = serde_json::from_str(param).unwrap();
    assert_eq!(j["flags"], 4);
    assert!(
        j["flag_error"]
            .as_str()
            .unwrap()
            .starts_with("parameter error")
    );
    assert_eq!(j["value"], 1);
}

#[test]
fn decode_command_reports_invalid_input_without_stopping() {
    let mut bytes = b"garbage\x00\xff:ZZ\n".to_vec();
    let good = vedirect::text::encode_block(&[("PID", "0xA053"), ("V", "12800")]).unwrap();
    bytes.extend_from_slice(&good);
    bytes.extend_from_slice(&good);
    let (out, diag, summary) = run_decode(&bytes, DecodeOptions::default());
    assert_eq!(out.lines().count(), 1);
    assert_eq!(summary.rejected, vec![(RejectReason::Checksum, 1)]);
    assert_eq!(summary.hex_invalid, 1);
    assert!(diag.contains("invalid HEX frame \":ZZ\""), "{diag}");
}
