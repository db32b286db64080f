//! `pvbus homeassistant` against a real broker and the real bridges: every discovery
//! payload checked field by field against Home Assistant's documented schema for device
//! discovery (HA 2024.11+: https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload
//! and each platform's page), and the life cycle: a device that disappears is removed, a
//! restart removes what vanished meanwhile and re-sends nothing else, HA's `online`
//! brings every config again, bad input is survived, and `enabled = false` cleans up.

#[path = "ha/stack.rs"]
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pvbus_testkit::{Recorder, mosquitto_pub};
use serde_json::Value;
use stack::{Parts, Stack};
use vedirect::decode as vedirect_names;

const WAIT: Duration = Duration::from_secs(10);

// --- HA's schema, from its documentation --------------------------------------------

/// Options every MQTT entity accepts.
const COMMON: &[&str] = &[
    "platform",
    "unique_id",
    "default_entity_id",
    "name",
    "availability",
    "availability_mode",
    "entity_category",
    "icon",
    "json_attributes_topic",
    "json_attributes_template",
    "enabled_by_default",
    "qos",
];

fn allowed(platform: &str) -> Vec<&'static str> {
    let own: &[&str] = match platform {
        "sensor" => &[
            "state_topic",
            "value_template",
            "device_class",
            "unit_of_measurement",
            "state_class",
            "suggested_display_precision",
            "options",
            "expire_after",
            "force_update",
        ],
        "binary_sensor" => &[
            "state_topic",
            "value_template",
            "device_class",
            "payload_on",
            "payload_off",
            "expire_after",
        ],
        "select" => &[
            "state_topic",
            "value_template",
            "command_topic",
            "command_template",
            "options",
            "retain",
            "optimistic",
        ],
        "button" => &["command_topic", "payload_press", "retain", "device_class"],
        "event" => &[
            "state_topic",
            "value_template",
            "event_types",
            "device_class",
        ],
        "text" => &[
            "state_topic",
            "value_template",
            "command_topic",
            "command_template",
            "min",
            "max",
            "mode",
            "pattern",
            "retain",
        ],
        "number" => &[
            "state_topic",
            "value_template",
            "command_topic",
            "command_template",
            "min",
            "max",
            "step",
            "mode",
            "unit_of_measurement",
            "device_class",
            "payload_reset",
            "retain",
            "optimistic",
        ],
        "switch" => &[
            "state_topic",
            "value_template",
            "command_topic",
            "command_template",
            "payload_on",
            "payload_off",
            "state_on",
            "state_off",
            "device_class",
            "retain",
            "optimistic",
        ],
        other => panic!("unexpected platform {other}"),
    };
    COMMON.iter().chain(own).copied().collect()
}

fn required(platform: &str) -> &'static [&'static str] {
    match platform {
        "sensor" | "binary_sensor" => &["platform", "unique_id", "state_topic"],
        "select" => &["platform", "unique_id", "command_topic", "options"],
        "button" | "text" | "number" | "switch" => &["platform", "unique_id", "command_topic"],
        "event" => &["platform", "unique_id", "state_topic", "event_types"],
        _ => &[],
    }
}

/// Sensor device classes HA knows, and the units it accepts for each one we might use.
fn sensor_units(device_class: &str) -> Option<&'static [&'static str]> {
    Some(match device_class {
        "voltage" => &["V", "mV", "kV"],
        "current" => &["A", "mA"],
        "power" => &["W", "kW"],
        "apparent_power" => &["VA"],
        "energy" => &["Wh", "kWh", "MWh"],
        "temperature" => &["°C", "°F", "K"],
        "battery" | "humidity" => &["%"],
        "duration" => &["s", "min", "h", "d"],
        "enum" | "timestamp" => &[],
        _ => return None,
    })
}

const BINARY_DEVICE_CLASSES: &[&str] = &["power", "problem", "running", "plug", "battery_charging"];

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Every rule of the documented schema that applies to one device payload; returns what
/// is wrong, one line per problem.
fn schema_problems(topic: &str, payload: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            bad.push(format!("{topic}: {what}"));
        }
    };
    let node = topic
        .strip_prefix("homeassistant/device/")
        .and_then(|t| t.strip_suffix("/config"))
        .unwrap_or("");
    check(
        !node.is_empty()
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        format!("node id {node:?} must be [a-zA-Z0-9_-]+"),
    );
    let Some(obj) = payload.as_object() else {
        check(false, "payload is not an object".into());
        return bad;
    };
    for key in obj.keys() {
        check(
            [
                "device",
                "origin",
                "components",
                "qos",
                "availability",
                "availability_mode",
                "state_topic",
                "command_topic",
            ]
            .contains(&key.as_str()),
            format!("unknown device-level key {key}"),
        );
    }
    let device = &payload["device"];
    check(
        device["identifiers"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string)),
        "device.identifiers must be a non-empty list of strings".into(),
    );
    check(device["name"].is_string(), "device.name is required".into());
    for key in device
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        check(
            [
                "identifiers",
                "name",
                "manufacturer",
                "model",
                "model_id",
                "serial_number",
                "sw_version",
                "hw_version",
                "via_device",
                "suggested_area",
                "configuration_url",
                "connections",
            ]
            .contains(&key.as_str()),
            format!("unknown device key {key}"),
        );
    }
    check(
        payload["origin"]["name"].is_string(),
        "origin.name is required".into(),
    );
    let Some(components) = payload["components"].as_object() else {
        check(false, "components must be an object".into());
        return bad;
    };
    check(!components.is_empty(), "no components".into());
    let mut unique_ids = BTreeSet::new();
    for (id, c) in components {
        let platform = c["platform"].as_str().unwrap_or("");
        let at = |what: &str| format!("component {id} ({platform}): {what}");
        check(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            at("component id must be [a-zA-Z0-9_-]+"),
        );
        let allowed = allowed(platform);
        for key in c.as_object().unwrap().keys() {
            check(
                allowed.contains(&key.as_str()),
                at(&format!("unknown option {key}")),
            );
            check(key != "object_id", at("object_id is removed in HA 2026.4"));
        }
        for key in required(platform) {
            // Shared options given at the device level are inherited (HA merges them).
            let inherited =
                ["state_topic", "command_topic"].contains(key) && payload.get(*key).is_some();
            check(
                c.get(*key).is_some() || inherited,
                at(&format!("{key} is required")),
            );
        }
        check(
            unique_ids.insert(c["unique_id"].to_string()),
            at("unique_id repeated"),
        );
        if let Some(e) = c["default_entity_id"].as_str() {
            let (domain, object) = e.split_once('.').unwrap_or(("", ""));
            check(
                domain == platform && is_slug(object),
                at(&format!("default_entity_id {e}")),
            );
        } else {
            check(false, at("default_entity_id missing"));
        }
        // The component's own availability, or the device's shared one.
        if let Some(a) = c
            .get("availability")
            .or_else(|| payload.get("availability"))
        {
            let list = a.as_array().map(Vec::as_slice).unwrap_or_default();
            check(
                !list.is_empty(),
                at("availability must be a non-empty list"),
            );
            for entry in list {
                check(
                    entry["topic"].is_string(),
                    at("availability entries need a topic"),
                );
            }
            let mode = c
                .get("availability_mode")
                .or_else(|| payload.get("availability_mode"));
            check(
                mode.is_some_and(|m| m == "all"),
                at("availability_mode must be `all` (process and data both alive)"),
            );
        }
        if let Some(cat) = c.get("entity_category") {
            // HA refuses `config` on read-only platforms.
            let writable = ["select", "button", "text", "number", "switch"].contains(&platform);
            check(
                cat == "diagnostic" || (cat == "config" && writable),
                at(&format!("entity_category {cat}")),
            );
        }
        if let Some(p) = c.get("suggested_display_precision") {
            check(
                p.as_u64().is_some(),
                at("suggested_display_precision must be a positive int"),
            );
        }
        for template in ["value_template", "command_template"] {
            if let Some(t) = c.get(template).and_then(Value::as_str) {
                check(
                    t.matches("{{").count() == t.matches("}}").count()
                        && t.matches("{%").count() == t.matches("%}").count(),
                    at(&format!("{template} is unbalanced: {t}")),
                );
            }
        }
        match platform {
            "sensor" => {
                let dc = c.get("device_class").and_then(Value::as_str);
                let unit = c.get("unit_of_measurement").and_then(Value::as_str);
                let sc = c.get("state_class").and_then(Value::as_str);
                if let Some(dc) = dc {
                    match sensor_units(dc) {
                        None => check(false, at(&format!("unknown sensor device_class {dc}"))),
                        Some([]) => check(unit.is_none(), at(&format!("{dc} has no unit"))),
                        Some(units) => check(
                            unit.is_some_and(|u| units.contains(&u)),
                            at(&format!("unit {unit:?} is not one of {dc}'s {units:?}")),
                        ),
                    }
                }
                if let Some(sc) = sc {
                    check(
                        ["measurement", "total", "total_increasing"].contains(&sc),
                        at(&format!("state_class {sc}")),
                    );
                    check(
                        dc != Some("enum") && dc != Some("timestamp"),
                        at("enum/timestamp sensors take no state_class"),
                    );
                    if dc == Some("energy") {
                        check(sc != "measurement", at("energy cannot be a measurement"));
                    }
                }
                if dc == Some("enum") {
                    let options = c["options"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    check(
                        !options.is_empty() && options.iter().all(Value::is_string),
                        at("enum needs options"),
                    );
                } else {
                    check(
                        c.get("options").is_none(),
                        at("options only with device_class enum"),
                    );
                }
            }
            "binary_sensor" => {
                if let Some(dc) = c.get("device_class").and_then(Value::as_str) {
                    check(
                        BINARY_DEVICE_CLASSES.contains(&dc),
                        at(&format!("binary device_class {dc}")),
                    );
                }
            }
            "select" => {
                let options: Vec<&str> = c["options"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let unique: BTreeSet<_> = options.iter().collect();
                check(
                    !options.is_empty() && unique.len() == options.len(),
                    at("select options must be unique strings"),
                );
                check(c["retain"] == false, at("commands are never retained"));
            }
            "button" | "switch" => {
                check(c["retain"] == false, at("commands are never retained"));
            }
            "text" => {
                check(c["retain"] == false, at("commands are never retained"));
                let (min, max) = (c["min"].as_u64(), c["max"].as_u64());
                check(
                    min.is_some_and(|min| max.is_some_and(|max| min <= max && max <= 255)),
                    at("text needs 0 <= min <= max <= 255"),
                );
            }
            "number" => {
                check(c["retain"] == false, at("commands are never retained"));
                let (min, max) = (c["min"].as_f64(), c["max"].as_f64());
                check(
                    min.is_some_and(|min| max.is_some_and(|max| min < max)),
                    at("number needs min < max"),
                );
                check(
                    c.get("mode").is_none_or(|m| {
                        ["auto", "box", "slider"].contains(&m.as_str().unwrap_or(""))
                    }),
                    at("number mode is auto, box or slider"),
                );
            }
            "event" => {
                let types = c["event_types"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                check(
                    !types.is_empty() && types.iter().all(Value::is_string),
                    at("event_types must be a non-empty list of strings"),
                );
                if let Some(dc) = c.get("device_class") {
                    check(
                        ["button", "doorbell", "motion"].contains(&dc.as_str().unwrap_or("")),
                        at(&format!("event device_class {dc}")),
                    );
                }
            }
            _ => {}
        }
    }
    bad
}

/// The latest non-empty discovery payloads, by topic.
fn configs(rec: &Recorder) -> BTreeMap<String, Value> {
    rec.latest()
        .into_iter()
        .filter(|(t, p)| t.ends_with("/config") && !p.is_empty())
        .map(|(t, p)| {
            let v = serde_json::from_str(&p).unwrap_or_else(|e| panic!("{t}: not JSON: {e}"));
            (t, v)
        })
        .collect()
}

const MPPT: &str = "homeassistant/device/pvbus_vedirect_mppt_roof/config";
const BMV: &str = "homeassistant/device/pvbus_vedirect_bmv/config";
const HEATER: &str = "homeassistant/device/pvbus_relays_water_heater/config";
const SITE: &str = "homeassistant/device/pvbus_site/config";
const TM1638: &str = "homeassistant/device/pvbus_tm1638/config";
const LCD: &str = "homeassistant/device/pvbus_lcd/config";

#[test]
fn every_payload_follows_the_documented_schema() {
    let mut stack = Stack::start_with_panel(Parts::ALL, "");
    let addr = stack.broker.addr();
    // The rules' topics, as the rules process would publish them.
    mosquitto_pub(addr, &["-r", "-t", "pvbus/rules/status", "-m", "online"]);
    mosquitto_pub(
        addr,
        &[
            "-r",
            "-t",
            "pvbus/rules/water_heater/status",
            "-m",
            "on: soc 93.5 % < 95 %",
        ],
    );
    mosquitto_pub(
        addr,
        &[
            "-r",
            "-t",
            "pvbus/site/surplus",
            "-m",
            r#"{"ts":1,"surplus":120,"method":"x"}"#,
        ],
    );
    let rec = Recorder::start(addr, "homeassistant/#");
    for topic in [
        MPPT,
        BMV,
        HEATER,
        SITE,
        TM1638,
        LCD,
        "homeassistant/device/pvbus_relays_pump/config",
    ] {
        rec.wait_for(topic, WAIT, |p| !p.is_empty())
            .unwrap_or_else(|| panic!("{topic} never announced"));
    }
    rec.wait_for(HEATER, WAIT, |p| p.contains("rule_status"))
        .expect("the rule status joins the relay's device");
    rec.wait_for(SITE, WAIT, |p| p.contains("surplus"))
        .expect("the surplus joins the site");
    let all = configs(&rec);
    let problems: Vec<String> = all
        .iter()
        .flat_map(|(t, p)| schema_problems(t, p))
        .collect();
    assert!(
        problems.is_empty(),
        "schema problems:\n{}",
        problems.join("\n")
    );

    // The values themselves, for what matters most.
    let mppt = &all[MPPT];
    assert_eq!(mppt["device"]["manufacturer"], "Victron Energy");
    assert_eq!(mppt["device"]["serial_number"], "HQSIMMPPT01");
    assert!(
        mppt["device"]["model"].as_str().unwrap().contains("MPPT"),
        "{}",
        mppt["device"]
    );
    assert!(mppt["device"]["sw_version"].is_string());
    assert!(
        mppt["device"]["model_id"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    let c = &mppt["components"];
    assert_eq!(c["battery_voltage"]["unit_of_measurement"], "V");
    assert_eq!(c["battery_voltage"]["device_class"], "voltage");
    assert_eq!(c["battery_voltage"]["state_class"], "measurement");
    assert_eq!(c["yield_total"]["state_class"], "total_increasing");
    assert_eq!(c["yield_today"]["unit_of_measurement"], "kWh");
    assert_eq!(c["charge_state"]["device_class"], "enum");
    assert!(
        c["charge_state"]["options"]
            .as_array()
            .unwrap()
            .contains(&"float".into())
    );
    assert_eq!(c["error"]["entity_category"], "diagnostic");
    // Every enumeration is an enum sensor whose options are the vedirect crate's names.
    for (name, table) in [
        ("charge_state", vedirect_names::CHARGE_STATES),
        ("error", vedirect_names::ERRORS),
        ("tracker_mode", vedirect_names::TRACKER_MODES),
    ] {
        assert_eq!(c[name]["device_class"], "enum", "{name}");
        let options: Vec<&str> = c[name]["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        let names: Vec<&str> = table.iter().map(|(_, n)| *n).collect();
        assert_eq!(options, names, "{name}");
        assert!(c[name].get("state_class").is_none(), "{name}");
    }
    assert!(
        c["pv_power"].get("availability").is_none(),
        "shared at the device level"
    );
    assert_eq!(mppt["state_topic"], "pvbus/vedirect/mppt_roof/state");
    let availability: Vec<&str> = mppt["availability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        availability,
        [
            "pvbus/vedirect/status",
            "pvbus/vedirect/mppt_roof/availability"
        ]
    );
    // A battery monitor says its serial number over HEX only; it reaches HA all the same.
    assert_eq!(all[BMV]["device"]["serial_number"], "HQSIMBMV01");
    let bmv = &all[BMV]["components"];
    assert_eq!(bmv["state_of_charge"]["device_class"], "battery");
    assert_eq!(bmv["charged_energy"]["state_class"], "total_increasing");
    assert_eq!(bmv["charge_cycles"]["entity_category"], "diagnostic");
    let heater = &all[HEATER]["components"];
    assert_eq!(heater["mode"]["platform"], "select");
    assert_eq!(
        heater["mode"]["command_topic"],
        "pvbus/relays/water_heater/mode/set"
    );
    assert_eq!(
        heater["output"]["state_topic"],
        "pvbus/relays/water_heater/state"
    );
    assert_eq!(heater["on_time_today"]["unit_of_measurement"], "s");
    assert_eq!(
        heater["rule_status"]["availability"][0]["topic"], "pvbus/rules/status",
        "a rule status is available when the rules are"
    );
    let site = &all[SITE]["components"];
    assert_eq!(site["consumption"]["unit_of_measurement"], "W");
    assert_eq!(site["surplus"]["state_topic"], "pvbus/site/surplus");

    // The panel: one device per panel process, available while that process is.
    let tm1638 = &all[TM1638];
    assert_eq!(tm1638["device"]["name"], "tm1638");
    assert_eq!(tm1638["availability"][0]["topic"], "pvbus/tm1638/status");
    assert_eq!(tm1638["availability_mode"], "all");
    let c = tm1638["components"].as_object().unwrap();
    // One board (`stb = [16]`) of the default kind: 8 buttons, 8 LEDs, 8 digits.
    let platforms = |p: &str| c.values().filter(|c| c["platform"] == p).count();
    assert_eq!(platforms("event"), 8, "one event entity per button");
    assert_eq!(
        platforms("switch"),
        8 + 1,
        "one per LED, and the display's on/off"
    );
    let button = &c["button_8"];
    assert_eq!(button["state_topic"], "pvbus/tm1638/button/8");
    assert_eq!(button["event_types"], serde_json::json!(["press"]));
    assert_eq!(button["device_class"], "button");
    assert_eq!(button["default_entity_id"], "event.tm1638_button_8");
    let led = &c["led_2"];
    assert_eq!(led["state_topic"], "pvbus/tm1638/led/2");
    assert_eq!(led["command_topic"], "pvbus/tm1638/led/2/set");
    assert_eq!(
        (&led["payload_on"], &led["payload_off"]),
        (&"ON".into(), &"OFF".into())
    );
    let display = &c["display"];
    assert_eq!(display["platform"], "text");
    assert_eq!(display["state_topic"], "pvbus/tm1638/display");
    assert_eq!(display["command_topic"], "pvbus/tm1638/display/set");
    assert_eq!(display["max"], 16, "8 digits, each with its point");
    let brightness = &c["brightness"];
    assert_eq!(brightness["platform"], "number");
    assert_eq!(
        (brightness["min"].as_f64(), brightness["max"].as_f64()),
        (Some(0.0), Some(7.0))
    );
    assert_eq!(brightness["command_topic"], "pvbus/tm1638/brightness/set");
    let on = &c["display_on"];
    assert_eq!(on["state_topic"], "pvbus/tm1638/brightness");
    assert_eq!(
        (&on["payload_on"], &on["payload_off"]),
        (&"on".into(), &"off".into())
    );
    let lcd = &all[LCD];
    assert_eq!(lcd["availability"][0]["topic"], "pvbus/lcd/status");
    let c = &lcd["components"];
    for n in [1, 2] {
        let line = &c[format!("line_{n}")];
        assert_eq!(line["platform"], "text");
        assert_eq!(line["state_topic"], format!("pvbus/lcd/line/{n}"));
        assert_eq!(line["command_topic"], format!("pvbus/lcd/line/{n}/set"));
        assert_eq!(
            (line["min"].as_u64(), line["max"].as_u64()),
            (Some(0), Some(16))
        );
        assert_eq!(line["default_entity_id"], format!("text.lcd_line_{n}"));
    }
    assert_eq!(c["backlight"]["platform"], "select");
    assert_eq!(
        c["backlight"]["options"],
        serde_json::json!([
            "auto", "off", "red", "green", "blue", "yellow", "teal", "violet", "white"
        ])
    );
    assert_eq!(c["page"]["platform"], "number");
    assert_eq!(c["page"]["command_topic"], "pvbus/lcd/page/set");
    for name in ["select", "right", "down", "up", "left"] {
        let b = &c[format!("button_{name}")];
        assert_eq!(b["platform"], "event", "{name}");
        assert_eq!(b["state_topic"], format!("pvbus/lcd/button/{name}"));
    }
    // What the panel really sends matches what HA was told to expect: its retained
    // state on the state topics, and a press on a button's topic as one of the
    // event types.
    let panel = Recorder::start(addr, "pvbus/+/button/#");
    mosquitto_pub(addr, &["-t", "pvbus/tm1638/sim/press", "-m", "8"]);
    mosquitto_pub(addr, &["-t", "pvbus/lcd/sim/press", "-m", "right"]);
    for topic in ["pvbus/tm1638/button/8", "pvbus/lcd/button/right"] {
        let press = panel
            .wait_for(topic, WAIT, |_| true)
            .unwrap_or_else(|| panic!("no press on {topic}"));
        let press: Value = serde_json::from_str(&press).unwrap();
        assert_eq!(press["event_type"], "press", "{topic}");
    }
    let states = Recorder::start(addr, "pvbus/#");
    for topic in [
        "pvbus/tm1638/display",
        "pvbus/tm1638/led/2",
        "pvbus/tm1638/brightness",
        "pvbus/lcd/line/1",
        "pvbus/lcd/backlight",
        "pvbus/lcd/page",
    ] {
        states
            .wait_for(topic, WAIT, |p| !p.is_empty())
            .unwrap_or_else(|| panic!("{topic}: nothing retained for HA to show"));
    }
    let backlight = states.last("pvbus/lcd/backlight").unwrap();
    assert!(
        all[LCD]["components"]["backlight"]["options"]
            .as_array()
            .unwrap()
            .contains(&backlight.as_str().into()),
        "the colour lit ({backlight}) is one of the select's options"
    );

    // A panel removed from the configuration is removed from HA at the next start.
    let ha = 6; // sims 0 and 1, vedirect 2, relays 3, tm1638 4, lcd 5
    stack
        .child(ha)
        .terminate(Duration::from_secs(5))
        .expect("clean stop");
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let (start, end) = (text.find("[tm1638]").unwrap(), text.find("[lcd]").unwrap());
    std::fs::write(&stack.config, format!("{}{}", &text[..start], &text[end..])).unwrap();
    rec.clear();
    stack.spawn_process("homeassistant");
    rec.expect(TM1638, "", WAIT);
    assert!(
        rec.last(LCD).is_none_or(|p| !p.is_empty()),
        "the LCD, still configured, stays"
    );
}

#[test]
fn devices_come_and_go_without_ghosts() {
    let mut stack = Stack::start(Parts {
        vedirect: false,
        relays: true,
        homeassistant: true,
    });
    let addr = stack.broker.addr();
    let rec = Recorder::start(addr, "homeassistant/#");
    let cellar = "homeassistant/device/pvbus_script_cellar/config";
    let attic = "homeassistant/device/pvbus_script_attic/config";
    let state = |dev: &str| format!("pvbus/script/{dev}/state");
    mosquitto_pub(
        addr,
        &[
            "-r",
            "-t",
            &state("cellar"),
            "-m",
            r#"{"ts":1,"temperature":12.5,"fan":true,"note":"ok"}"#,
        ],
    );
    mosquitto_pub(
        addr,
        &[
            "-r",
            "-t",
            &state("attic"),
            "-m",
            r#"{"ts":1,"temperature":30.5}"#,
        ],
    );
    let p = rec
        .wait_for(cellar, WAIT, |p| !p.is_empty())
        .expect("a script's device is announced");
    let p: Value = serde_json::from_str(&p).unwrap();
    assert_eq!(p["components"]["temperature"]["unit_of_measurement"], "°C");
    assert_eq!(p["components"]["fan"]["platform"], "binary_sensor");
    assert!(
        p["components"]["temperature"].get("availability").is_none()
            && p.get("availability").is_none(),
        "no status topic: always available"
    );
    rec.wait_for(attic, WAIT, |p| !p.is_empty())
        .expect("attic announced");

    // Bad input: reported in the log, the device stays, nothing crashes.
    mosquitto_pub(addr, &["-r", "-t", &state("cellar"), "-m", "{not json"]);
    // A new reading changes the shape: re-announced with it.
    mosquitto_pub(
        addr,
        &[
            "-r",
            "-t",
            &state("cellar"),
            "-m",
            r#"{"ts":2,"temperature":12.6,"fan":true,"note":"ok","humidity":80}"#,
        ],
    );
    rec.wait_for(cellar, WAIT, |p| p.contains("\"humidity\""))
        .expect("re-announced with the new reading");

    // Cleared on the bus: removed from HA (an empty retained config).
    mosquitto_pub(addr, &["-r", "-t", &state("cellar"), "-n"]);
    rec.expect(cellar, "", WAIT);

    // Restart: while it is down, the attic vanishes; at start it removes the attic and
    // sends nothing for what did not change.
    let index = 1; // relays is 0, homeassistant 1
    stack
        .child(index)
        .terminate(Duration::from_secs(5))
        .expect("clean stop");
    mosquitto_pub(addr, &["-r", "-t", &state("attic"), "-n"]);
    rec.clear();
    let pump = "homeassistant/device/pvbus_relays_pump/config";
    stack.spawn_process("homeassistant");
    rec.expect(attic, "", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let resent: Vec<String> = rec
        .all()
        .into_iter()
        .filter(|s| !s.retain && s.topic.ends_with("/config") && !s.payload.is_empty())
        .map(|s| s.topic)
        .collect();
    assert!(
        resent.is_empty(),
        "unchanged configs re-sent after a restart: {resent:?}"
    );
    assert!(
        stack.log("homeassistant").contains("not JSON"),
        "the bad state was logged"
    );

    // HA restarts: every config again.
    rec.clear();
    mosquitto_pub(addr, &["-t", "homeassistant/status", "-m", "online"]);
    rec.wait_for(pump, WAIT, |p| !p.is_empty())
        .expect("re-announced when HA says online");
    rec.wait_for(
        "homeassistant/device/pvbus_relays_water_heater/config",
        WAIT,
        |p| !p.is_empty(),
    )
    .expect("every config re-announced");
}

#[test]
fn disabled_removes_every_entity_then_idles() {
    let mut stack = Stack::start(Parts {
        vedirect: false,
        relays: true,
        homeassistant: true,
    });
    let addr = stack.broker.addr();
    let rec = Recorder::start(addr, "homeassistant/#");
    let pump = "homeassistant/device/pvbus_relays_pump/config";
    rec.wait_for(pump, WAIT, |p| !p.is_empty())
        .expect("announced");
    stack
        .child(1)
        .terminate(Duration::from_secs(5))
        .expect("clean stop");
    let config = stack.config.clone();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[homeassistant]\nenabled = false\n");
    std::fs::write(&config, text).unwrap();
    let status = Recorder::start(addr, "pvbus/homeassistant/status");
    let index = stack.spawn_process("homeassistant");
    rec.expect(pump, "", WAIT);
    rec.expect(
        "homeassistant/device/pvbus_relays_water_heater/config",
        "",
        WAIT,
    );
    // Then it leaves the bus but keeps running (the supervisor would restart an exit).
    status.expect("pvbus/homeassistant/status", "offline", WAIT);
    assert!(stack.child(index).is_running(), "idle, not exited");
    let stopped = stack.child(index).terminate(Duration::from_secs(5));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "stops cleanly: {stopped:?}"
    );
}

#[test]
fn a_bad_section_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pvbus.toml");
    std::fs::write(&config, "[homeassistant]\ndiscovery_prefix = \"ha/#\"\n").unwrap();
    let out = std::process::Command::new(stack::PVBUS)
        .args(["homeassistant", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("homeassistant.discovery_prefix"), "{err}");
}

/// Topics under `filter` that the broker still retains (non-empty), read by a new
/// subscriber.
fn retained(addr: std::net::SocketAddr, filter: &str) -> Vec<String> {
    let rec = Recorder::start(addr, filter);
    std::thread::sleep(Duration::from_millis(500));
    rec.latest()
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn what_leaves_the_configuration_leaves_home_assistant() {
    let mut stack = Stack::start(Parts::ALL);
    let addr = stack.broker.addr();
    let rec = Recorder::start(addr, "homeassistant/#");
    let pump = "homeassistant/device/pvbus_relays_pump/config";
    for topic in [pump, MPPT, BMV, HEATER] {
        rec.wait_for(topic, WAIT, |p| !p.is_empty())
            .unwrap_or_else(|| panic!("{topic} never announced"));
    }
    assert!(!retained(addr, "pvbus/relays/pump/#").is_empty());

    // The pump leaves the configuration, and the charger gets a name of its own
    // (its serial number, the same device, now goes by `roof`).
    let (vedirect, relays) = (2, 3); // sims 0 and 1, then vedirect, relays, homeassistant
    stack
        .child(vedirect)
        .terminate(Duration::from_secs(5))
        .expect("clean stop");
    stack
        .child(relays)
        .terminate(Duration::from_secs(5))
        .expect("clean stop");
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let pump_block = "[[relays.relay]]\nid = \"pump\"\npin = 27\n";
    let mppt_name = "HQSIMMPPT01 = \"mppt_roof\"";
    assert!(
        text.contains(pump_block) && text.contains(mppt_name),
        "{text}"
    );
    let text = text
        .replace(pump_block, "")
        .replace(mppt_name, "HQSIMMPPT01 = \"roof\"");
    std::fs::write(&stack.config, text).unwrap();
    stack.spawn_process("relays");
    stack.spawn_process("vedirect");

    // Gone from HA: an empty retained config.
    rec.expect(pump, "", WAIT);
    rec.expect(MPPT, "", WAIT);
    let roof = "homeassistant/device/pvbus_vedirect_roof/config";
    let p = rec
        .wait_for(roof, WAIT, |p| !p.is_empty())
        .expect("the charger announced under its new name");
    let p: Value = serde_json::from_str(&p).unwrap();
    assert_eq!(p["device"]["serial_number"], "HQSIMMPPT01");
    // And from the bus: nothing left that a newcomer would take for a relay or a device.
    assert_eq!(retained(addr, "pvbus/relays/pump/#"), Vec::<String>::new());
    assert_eq!(
        retained(addr, "pvbus/vedirect/mppt_roof/#"),
        Vec::<String>::new()
    );
    // What is still configured stays, a device that was not renamed included.
    assert!(rec.last(HEATER).is_some_and(|p| !p.is_empty()));
    assert!(rec.last(BMV).is_some_and(|p| !p.is_empty()));
    assert!(retained(addr, "pvbus/relays/water_heater/#").len() >= 4);
    assert!(stack.log("relays").contains("not in the configuration"));
}
