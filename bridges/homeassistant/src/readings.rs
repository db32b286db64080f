//! What Home Assistant should know about each standardised reading name: how to show it
//! (device class, unit, state class, precision) and whether it is a diagnostic. The names
//! are the contract's (docs/topics.md); a reading not in this table still becomes an
//! entity, a plain one, chosen by the JSON type of its value.

use serde_json::Value;

/// How a reading becomes an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number or a text: a `sensor`.
    Sensor,
    /// `true`/`false`: a `binary_sensor`.
    Binary,
    /// A snake_case enumeration: an `enum` sensor whose options are the names of this
    /// table of the `vedirect` crate (the one that names the codes), plus any other value
    /// seen on the bus: a code the table does not know stays the raw number on the bus
    /// (`"error":99`) and becomes the option `"99"`.
    Enum(&'static [(i64, &'static str)]),
    /// A list of snake_case names (alarm reasons): a text sensor showing them joined,
    /// `none` when the list is empty.
    List,
    /// Part of the device's identity (model, serial number, firmware): shown on the
    /// device, not as an entity.
    Identity,
    /// Bookkeeping (`ts`): not an entity.
    Hidden,
}

/// Home Assistant's `state_class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    Measurement,
    /// A counter that only grows, except when it is reset (daily yield, lifetime energy).
    TotalIncreasing,
}

impl StateClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StateClass::Measurement => "measurement",
            StateClass::TotalIncreasing => "total_increasing",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub name: &'static str,
    /// The entity's name, as people read it.
    pub label: &'static str,
    pub kind: Kind,
    pub device_class: Option<&'static str>,
    pub unit: Option<&'static str>,
    pub state_class: Option<StateClass>,
    pub precision: Option<u8>,
    /// `entity_category: diagnostic`: hidden from the default dashboard.
    pub diagnostic: bool,
}

use vedirect::decode::{CHARGE_STATES, DEVICE_MODES, ERRORS, MONITOR_MODES, TRACKER_MODES};

use Kind::{Binary, Enum, Hidden, Identity, List, Sensor};
use StateClass::{Measurement as M, TotalIncreasing as T};

const fn row(
    name: &'static str,
    label: &'static str,
    device_class: Option<&'static str>,
    unit: Option<&'static str>,
    state_class: Option<StateClass>,
    precision: Option<u8>,
    diagnostic: bool,
) -> Reading {
    Reading {
        name,
        label,
        kind: Sensor,
        device_class,
        unit,
        state_class,
        precision,
        diagnostic,
    }
}

const fn volts(name: &'static str, label: &'static str, diagnostic: bool) -> Reading {
    let sc = if diagnostic { None } else { Some(M) };
    row(
        name,
        label,
        Some("voltage"),
        Some("V"),
        sc,
        Some(2),
        diagnostic,
    )
}
const fn amps(name: &'static str, label: &'static str) -> Reading {
    row(
        name,
        label,
        Some("current"),
        Some("A"),
        Some(M),
        Some(2),
        false,
    )
}
const fn watts(name: &'static str, label: &'static str) -> Reading {
    row(
        name,
        label,
        Some("power"),
        Some("W"),
        Some(M),
        Some(0),
        false,
    )
}
const fn kwh(name: &'static str, label: &'static str, state_class: Option<StateClass>) -> Reading {
    row(
        name,
        label,
        Some("energy"),
        Some("kWh"),
        state_class,
        Some(2),
        false,
    )
}
const fn amp_hours(name: &'static str, label: &'static str, diagnostic: bool) -> Reading {
    row(name, label, None, Some("Ah"), Some(M), Some(1), diagnostic)
}
const fn counter(name: &'static str, label: &'static str) -> Reading {
    row(name, label, None, None, Some(T), Some(0), true)
}
const fn special(name: &'static str, label: &'static str, kind: Kind, diagnostic: bool) -> Reading {
    Reading {
        name,
        label,
        kind,
        device_class: None,
        unit: None,
        state_class: None,
        precision: None,
        diagnostic,
    }
}
const fn binary(
    name: &'static str,
    label: &'static str,
    device_class: Option<&'static str>,
    diagnostic: bool,
) -> Reading {
    Reading {
        name,
        label,
        kind: Binary,
        device_class,
        unit: None,
        state_class: None,
        precision: None,
        diagnostic,
    }
}

/// Every standardised reading name, VE.Direct's and the site's, plus a few generic names
/// that scripts are likely to use.
pub const TABLE: &[Reading] = &[
    special("ts", "Last reading", Hidden, true),
    // Identity.
    special("product_id", "Product id", Identity, true),
    special("model", "Model", Identity, true),
    special("serial_number", "Serial number", Identity, true),
    special("firmware", "Firmware", Identity, true),
    special("model_description", "Model description", Identity, true),
    // Battery side.
    volts("battery_voltage", "Battery voltage", false),
    volts("battery_voltage_2", "Battery 2 voltage", false),
    volts("battery_voltage_3", "Battery 3 voltage", false),
    volts("auxiliary_voltage", "Auxiliary voltage", false),
    volts("midpoint_voltage", "Midpoint voltage", false),
    row(
        "midpoint_deviation",
        "Midpoint deviation",
        None,
        Some("%"),
        Some(M),
        Some(1),
        false,
    ),
    amps("battery_current", "Battery current"),
    amps("battery_current_2", "Battery 2 current"),
    amps("battery_current_3", "Battery 3 current"),
    amps("load_current", "Load current"),
    binary("load_output", "Load output", Some("power"), false),
    watts("battery_power", "Battery power"),
    row(
        "battery_temperature",
        "Battery temperature",
        Some("temperature"),
        Some("°C"),
        Some(M),
        Some(1),
        false,
    ),
    amp_hours("consumed_charge", "Consumed charge", false),
    row(
        "state_of_charge",
        "State of charge",
        Some("battery"),
        Some("%"),
        Some(M),
        Some(1),
        false,
    ),
    row(
        "time_to_go",
        "Time to go",
        Some("duration"),
        Some("s"),
        Some(M),
        Some(0),
        false,
    ),
    binary("alarm", "Alarm", Some("problem"), false),
    binary("relay", "Relay contact", None, true),
    special("alarm_reason", "Alarm reason", List, true),
    special("off_reason", "Off reason", List, true),
    special("warning_reason", "Warning reason", List, true),
    // Solar charger.
    volts("pv_voltage", "PV voltage", false),
    watts("pv_power", "PV power"),
    special("charge_state", "Charge state", Enum(CHARGE_STATES), false),
    special("error", "Charger error", Enum(ERRORS), true),
    special("tracker_mode", "Tracker mode", Enum(TRACKER_MODES), true),
    special("device_mode", "Device mode", Enum(DEVICE_MODES), true),
    kwh("yield_total", "Yield total", Some(T)),
    kwh("yield_today", "Yield today", Some(T)),
    kwh("yield_yesterday", "Yield yesterday", None),
    watts("max_power_today", "Max power today"),
    row(
        "max_power_yesterday",
        "Max power yesterday",
        Some("power"),
        Some("W"),
        None,
        Some(0),
        false,
    ),
    row(
        "day_sequence_number",
        "Day sequence number",
        None,
        None,
        None,
        Some(0),
        true,
    ),
    // Inverter.
    row(
        "ac_output_voltage",
        "AC output voltage",
        Some("voltage"),
        Some("V"),
        Some(M),
        Some(0),
        false,
    ),
    row(
        "ac_output_current",
        "AC output current",
        Some("current"),
        Some("A"),
        Some(M),
        Some(1),
        false,
    ),
    row(
        "ac_output_apparent_power",
        "AC output apparent power",
        Some("apparent_power"),
        Some("VA"),
        Some(M),
        Some(0),
        false,
    ),
    // Battery monitor history (H1..H18).
    amp_hours("deepest_discharge", "Deepest discharge", true),
    amp_hours("last_discharge", "Last discharge", true),
    amp_hours("average_discharge", "Average discharge", true),
    counter("charge_cycles", "Charge cycles"),
    counter("full_discharges", "Full discharges"),
    // Counted negative by the battery monitor (charge drawn), so it only *decreases*:
    // not `total_increasing`, which HA would read as a reset at every sample.
    row(
        "cumulative_ah_drawn",
        "Cumulative Ah drawn",
        None,
        Some("Ah"),
        None,
        Some(0),
        true,
    ),
    volts("min_battery_voltage", "Minimum battery voltage", true),
    volts("max_battery_voltage", "Maximum battery voltage", true),
    row(
        "seconds_since_full_charge",
        "Time since full charge",
        Some("duration"),
        Some("s"),
        Some(M),
        Some(0),
        true,
    ),
    counter("synchronisations", "Synchronisations"),
    counter("low_voltage_alarms", "Low voltage alarms"),
    counter("high_voltage_alarms", "High voltage alarms"),
    counter("low_aux_voltage_alarms", "Low auxiliary voltage alarms"),
    counter("high_aux_voltage_alarms", "High auxiliary voltage alarms"),
    volts("min_aux_voltage", "Minimum auxiliary voltage", true),
    volts("max_aux_voltage", "Maximum auxiliary voltage", true),
    kwh("discharged_energy", "Discharged energy", Some(T)),
    kwh("charged_energy", "Charged energy", Some(T)),
    special(
        "dc_monitor_mode",
        "DC monitor mode",
        Enum(MONITOR_MODES),
        true,
    ),
    // Site totals.
    watts("consumption", "Consumption"),
    // Generic names for scripts and plugins.
    row(
        "temperature",
        "Temperature",
        Some("temperature"),
        Some("°C"),
        Some(M),
        Some(1),
        false,
    ),
    row(
        "humidity",
        "Humidity",
        Some("humidity"),
        Some("%"),
        Some(M),
        Some(0),
        false,
    ),
    watts("power", "Power"),
    kwh("energy", "Energy", Some(T)),
    volts("voltage", "Voltage", false),
    amps("current", "Current"),
];

/// The table's row for `name`.
pub fn lookup(name: &str) -> Option<&'static Reading> {
    TABLE.iter().find(|r| r.name == name)
}

/// How to show a reading this table does not know: by the JSON type of its value.
pub fn unknown_kind(value: &Value) -> Kind {
    match value {
        Value::Bool(_) => Kind::Binary,
        Value::Array(_) => Kind::List,
        Value::Object(_) => Kind::Hidden,
        _ => Kind::Sensor,
    }
}

/// `battery_voltage` → `Battery voltage`, for names the table does not know.
pub fn label_from_name(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Units Home Assistant accepts for each device class we use (its `DEVICE_CLASS_UNITS`).
    fn allowed_units(device_class: &str) -> &'static [&'static str] {
        match device_class {
            "voltage" => &["V", "mV", "µV", "kV", "MV"],
            "current" => &["A", "mA"],
            "power" => &["W", "kW", "mW", "MW", "GW", "TW", "BTU/h"],
            "energy" => &[
                "Wh", "kWh", "MWh", "J", "kJ", "MJ", "GJ", "mWh", "GWh", "TWh",
            ],
            "apparent_power" => &["VA"],
            "temperature" => &["°C", "°F", "K"],
            "battery" | "humidity" => &["%"],
            "duration" => &["d", "h", "min", "s", "ms"],
            _ => &[],
        }
    }

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = HashSet::new();
        for r in TABLE {
            assert!(seen.insert(r.name), "{} twice", r.name);
            assert!(
                r.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                r.name
            );
        }
    }

    #[test]
    fn units_match_device_classes() {
        for r in TABLE {
            if let Some(dc) = r.device_class {
                if r.kind == Kind::Binary {
                    assert!(r.unit.is_none(), "{}: binary sensors have no unit", r.name);
                    continue;
                }
                let unit = r
                    .unit
                    .unwrap_or_else(|| panic!("{}: {dc} needs a unit", r.name));
                assert!(
                    allowed_units(dc).contains(&unit),
                    "{}: {unit} is not a unit of {dc}",
                    r.name
                );
            }
        }
    }

    #[test]
    fn energy_counters_are_total_increasing_and_power_is_a_measurement() {
        for name in [
            "yield_total",
            "yield_today",
            "charged_energy",
            "discharged_energy",
        ] {
            assert_eq!(lookup(name).unwrap().state_class, Some(T), "{name}");
        }
        // Home Assistant refuses `measurement` on energy.
        for r in TABLE.iter().filter(|r| r.device_class == Some("energy")) {
            assert_ne!(r.state_class, Some(M), "{}", r.name);
        }
        for name in ["pv_power", "battery_power", "consumption"] {
            let r = lookup(name).unwrap();
            assert_eq!((r.unit, r.state_class), (Some("W"), Some(M)), "{name}");
        }
    }

    #[test]
    fn the_contract_names_are_all_known() {
        // Every name of the preamble's label table.
        let contract = "battery_voltage battery_voltage_2 battery_voltage_3 auxiliary_voltage \
            midpoint_voltage midpoint_deviation battery_current battery_current_2 \
            battery_current_3 load_current load_output battery_power pv_voltage pv_power \
            battery_temperature consumed_charge state_of_charge time_to_go alarm relay \
            alarm_reason off_reason warning_reason charge_state error tracker_mode \
            device_mode ac_output_voltage ac_output_current ac_output_apparent_power \
            yield_total yield_today max_power_today yield_yesterday max_power_yesterday \
            deepest_discharge last_discharge average_discharge charge_cycles full_discharges \
            cumulative_ah_drawn min_battery_voltage max_battery_voltage \
            seconds_since_full_charge synchronisations low_voltage_alarms high_voltage_alarms \
            low_aux_voltage_alarms high_aux_voltage_alarms min_aux_voltage max_aux_voltage \
            discharged_energy charged_energy product_id model serial_number firmware \
            dc_monitor_mode day_sequence_number consumption";
        for name in contract.split_whitespace() {
            assert!(lookup(name).is_some(), "{name} missing from the table");
        }
    }

    #[test]
    fn history_counters_are_diagnostics_and_enumerations_are_enums() {
        assert!(lookup("charge_cycles").unwrap().diagnostic);
        assert!(lookup("min_battery_voltage").unwrap().diagnostic);
        assert!(!lookup("battery_voltage").unwrap().diagnostic);
        let options = |name: &str| match lookup(name).unwrap().kind {
            Kind::Enum(table) => vedirect::decode::names(table).collect::<Vec<_>>(),
            other => panic!("{name} is {other:?}"),
        };
        assert!(options("charge_state").contains(&"float"));
        assert!(options("error").contains(&"no_error"));
        assert!(options("tracker_mode").contains(&"mppt_active"));
        assert!(options("device_mode").contains(&"eco"));
        assert!(options("dc_monitor_mode").contains(&"battery_monitor"));
        // The contract's charger states (what rules accept) are the table's names.
        assert_eq!(options("charge_state"), pvbus_bus::contract::CHARGE_STATES);
        // Every enumeration the vedirect crate decodes is an enum here: each of its
        // labels, decoded from a known code, gives a name of the reading's table.
        for (label, code) in [
            ("CS", "5"),
            ("ERR", "0"),
            ("MPPT", "2"),
            ("MODE", "4"),
            ("MON", "0"),
        ] {
            let fields = vedirect::decode::decode_field(label, code).unwrap();
            let (name, value) = &fields[0];
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{label}: {value:?}"));
            assert!(options(name).contains(&text), "{label} -> {name}: {text}");
        }
    }

    #[test]
    fn unknown_readings_follow_their_value() {
        assert_eq!(unknown_kind(&serde_json::json!(true)), Kind::Binary);
        assert_eq!(unknown_kind(&serde_json::json!(12.5)), Kind::Sensor);
        assert_eq!(unknown_kind(&serde_json::json!("x")), Kind::Sensor);
        assert_eq!(unknown_kind(&serde_json::json!({"a": 1})), Kind::Hidden);
        assert_eq!(unknown_kind(&serde_json::json!(["a"])), Kind::List);
        assert_eq!(label_from_name("water_level"), "Water level");
    }
}
