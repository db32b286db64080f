//! Text fields to named readings in SI units (the names of the pvbus topic contract).
//!
//! Numbers stay exact: a [`Value::Decimal`] is an integer with a power-of-ten exponent
//! (12540 mV → 12.54 V), so JSON shows `12.54` and never `12.540000000000001`.
//! Enumerations become snake_case names; an unknown code stays the raw integer, an unknown
//! bit of a mask becomes `bit_<n>`; an unknown label is kept verbatim with its raw string;
//! a value that does not parse is kept the same way and reported in [`Reading::errors`].
//! `---` (not available) becomes [`Value::Null`].

use crate::products::{self, Family};
use crate::text::TextBlock;
use std::borrow::Cow;
use std::fmt::Write as _;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Not available (`---`), or infinite time-to-go.
    Null,
    Bool(bool),
    Int(i64),
    /// `raw × 10^-exp`, exact.
    Decimal {
        raw: i64,
        exp: u8,
    },
    Text(String),
    /// A known enumeration value.
    Name(&'static str),
    /// The set bits of a mask, by name.
    Names(Vec<Cow<'static, str>>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Decimal { raw, exp } => Some(raw as f64 / 10f64.powi(i32::from(exp))),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Name(s) => Some(s),
            _ => None,
        }
    }

    /// Append the JSON form of the value.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Decimal { raw, exp } => write_decimal(out, *raw, *exp),
            Value::Text(s) => write_json_string(out, s),
            Value::Name(s) => write_json_string(out, s),
            Value::Names(names) => {
                out.push('[');
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, n);
                }
                out.push(']');
            }
        }
    }
}

fn write_decimal(out: &mut String, raw: i64, exp: u8) {
    if raw < 0 {
        out.push('-');
    }
    let abs = raw.unsigned_abs();
    let div = 10u64.pow(u32::from(exp));
    let _ = write!(out, "{}", abs / div);
    let frac = abs % div;
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = usize::from(exp));
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Append `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings always serialise"));
}

/// A field whose value does not fit its label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {label}: value {value:?} is not {expected}")]
pub struct DecodeError {
    pub label: String,
    pub value: String,
    pub expected: &'static str,
}

/// Decoded readings in the order the device sent the fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub fields: Vec<(Cow<'static, str>, Value)>,
    pub errors: Vec<DecodeError>,
}

impl Reading {
    /// One name per value: when two labels decode to the same name (`FW` and `FWE`, both
    /// `firmware`, as some MPPTs send), the later one wins, in the place of the first, so
    /// that the JSON object never has a key twice.
    pub fn from_block(block: &TextBlock) -> Reading {
        let mut reading = Reading::default();
        for (label, value) in block.fields() {
            match decode_field(label, value) {
                Ok(values) => {
                    for (name, value) in values {
                        reading.set(name, value);
                    }
                }
                Err(e) => {
                    reading.fields.push((
                        Cow::Owned(label.to_string()),
                        Value::Text(value.to_string()),
                    ));
                    reading.errors.push(e);
                }
            }
        }
        reading
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Set or replace a value, keeping the position of an existing one.
    pub fn set(&mut self, name: Cow<'static, str>, value: Value) {
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
    }

    /// One JSON object, `ts` first when given, then the readings in order.
    pub fn to_json(&self, ts: Option<i64>) -> String {
        let mut out = String::from("{");
        if let Some(ts) = ts {
            let _ = write!(out, "\"ts\":{ts}");
        }
        for (name, value) in &self.fields {
            if out.len() > 1 {
                out.push(',');
            }
            write_json_string(&mut out, name);
            out.push(':');
            value.write_json(&mut out);
        }
        out.push('}');
        out
    }
}

fn err(label: &str, value: &str, expected: &'static str) -> DecodeError {
    DecodeError {
        label: label.into(),
        value: value.into(),
        expected,
    }
}

type Fields = Vec<(Cow<'static, str>, Value)>;

fn one(name: &'static str, value: Value) -> Fields {
    vec![(Cow::Borrowed(name), value)]
}

/// What a known label carries, and under which name.
enum Kind {
    /// Integer scaled by 10^-exp after multiplying by `mul`.
    Scaled {
        exp: u8,
    },
    Int,
    Bool,
    Text,
    Minutes,
    Firmware,
    FirmwareExtended,
    ProductId,
    ChargeState,
    Error,
    TrackerMode,
    DeviceMode,
    MonitorMode,
    AlarmMask,
    OffReasonMask,
    BluetoothMask,
}

fn label_kind(label: &str) -> Option<(&'static str, Kind)> {
    use Kind::*;
    const MILLI: Kind = Scaled { exp: 3 };
    Some(match label {
        "V" => ("battery_voltage", MILLI),
        "V2" => ("battery_voltage_2", MILLI),
        "V3" => ("battery_voltage_3", MILLI),
        "VS" => ("auxiliary_voltage", MILLI),
        "VM" => ("midpoint_voltage", MILLI),
        "DM" => ("midpoint_deviation", Scaled { exp: 1 }),
        "VPV" => ("pv_voltage", MILLI),
        "PPV" => ("pv_power", Int),
        "I" => ("battery_current", MILLI),
        "I2" => ("battery_current_2", MILLI),
        "I3" => ("battery_current_3", MILLI),
        "IL" => ("load_current", MILLI),
        "LOAD" => ("load_output", Bool),
        "T" => ("battery_temperature", Int),
        "P" => ("battery_power", Int),
        "CE" => ("consumed_charge", MILLI),
        "SOC" => ("state_of_charge", Scaled { exp: 1 }),
        "TTG" => ("time_to_go", Minutes),
        "Alarm" => ("alarm", Bool),
        "Relay" => ("relay", Bool),
        "AR" => ("alarm_reason", AlarmMask),
        "WARN" => ("warning_reason", AlarmMask),
        "OR" => ("off_reason", OffReasonMask),
        "H1" => ("deepest_discharge", MILLI),
        "H2" => ("last_discharge", MILLI),
        "H3" => ("average_discharge", MILLI),
        "H4" => ("charge_cycles", Int),
        "H5" => ("full_discharges", Int),
        "H6" => ("cumulative_ah_drawn", MILLI),
        "H7" => ("min_battery_voltage", MILLI),
        "H8" => ("max_battery_voltage", MILLI),
        "H9" => ("seconds_since_full_charge", Int),
        "H10" => ("synchronisations", Int),
        "H11" => ("low_voltage_alarms", Int),
        "H12" => ("high_voltage_alarms", Int),
        "H13" => ("low_aux_voltage_alarms", Int),
        "H14" => ("high_aux_voltage_alarms", Int),
        "H15" => ("min_aux_voltage", MILLI),
        "H16" => ("max_aux_voltage", MILLI),
        "H17" => ("discharged_energy", Scaled { exp: 2 }),
        "H18" => ("charged_energy", Scaled { exp: 2 }),
        "H19" => ("yield_total", Scaled { exp: 2 }),
        "H20" => ("yield_today", Scaled { exp: 2 }),
        "H21" => ("max_power_today", Int),
        "H22" => ("yield_yesterday", Scaled { exp: 2 }),
        "H23" => ("max_power_yesterday", Int),
        "ERR" => ("error", Error),
        "CS" => ("charge_state", ChargeState),
        "BMV" => ("model_description", Text),
        "FW" => ("firmware", Firmware),
        "FWE" => ("firmware", FirmwareExtended),
        "PID" => ("product_id", ProductId),
        "SER#" => ("serial_number", Text),
        "HSDS" => ("day_sequence_number", Int),
        "MODE" => ("device_mode", DeviceMode),
        "AC_OUT_V" => ("ac_output_voltage", Scaled { exp: 2 }),
        "AC_OUT_I" => ("ac_output_current", Scaled { exp: 1 }),
        "AC_OUT_S" => ("ac_output_apparent_power", Int),
        "MPPT" => ("tracker_mode", TrackerMode),
        "MON" => ("dc_monitor_mode", MonitorMode),
        "CAP_BLE" => ("bluetooth_capabilities", BluetoothMask),
        "DC_IN_V" => ("dc_input_voltage", Scaled { exp: 2 }),
        "DC_IN_I" => ("dc_input_current", Scaled { exp: 1 }),
        "DC_IN_P" => ("dc_input_power", Int),
        _ => return None,
    })
}

fn parse_int(label: &str, value: &str) -> Result<i64, DecodeError> {
    value
        .parse::<i64>()
        .map_err(|_| err(label, value, "a decimal integer"))
}

fn parse_hex_mask(label: &str, value: &str) -> Result<u32, DecodeError> {
    value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .and_then(|d| u32::from_str_radix(d, 16).ok())
        .ok_or_else(|| err(label, value, "a 0x-prefixed hex mask"))
}

/// Decode one text field. Unknown labels come back verbatim with their raw string.
pub fn decode_field(label: &str, value: &str) -> Result<Fields, DecodeError> {
    let Some((name, kind)) = label_kind(label) else {
        return Ok(vec![(
            Cow::Owned(label.to_string()),
            Value::Text(value.to_string()),
        )]);
    };
    if value == "---" {
        return Ok(one(name, Value::Null));
    }
    let v = match kind {
        Kind::Scaled { exp } => Value::Decimal {
            raw: parse_int(label, value)?,
            exp,
        },
        Kind::Int => Value::Int(parse_int(label, value)?),
        Kind::Bool => Value::Bool(match value.to_ascii_uppercase().as_str() {
            "ON" => true,
            "OFF" => false,
            _ => return Err(err(label, value, "ON or OFF")),
        }),
        Kind::Text => Value::Text(value.to_string()),
        Kind::Minutes => match parse_int(label, value)? {
            -1 => Value::Null,
            m => Value::Int(m * 60),
        },
        Kind::Firmware => {
            Value::Text(firmware(value).ok_or_else(|| err(label, value, "a firmware version"))?)
        }
        Kind::FirmwareExtended => Value::Text(
            firmware_extended(value)
                .ok_or_else(|| err(label, value, "a 24-bit firmware version"))?,
        ),
        Kind::ProductId => {
            let pid = products::parse_pid(value)
                .ok_or_else(|| err(label, value, "a 0x-prefixed product id"))?;
            let model = products::model_name(pid).map_or(Value::Null, |m| Value::Text(m.into()));
            return Ok(vec![
                (
                    Cow::Borrowed("product_id"),
                    Value::Text(format!("0x{pid:04X}")),
                ),
                (Cow::Borrowed("model"), model),
            ]);
        }
        Kind::ChargeState => enum_value(parse_int(label, value)?, charge_state_name),
        Kind::Error => enum_value(parse_int(label, value)?, error_name),
        Kind::TrackerMode => enum_value(parse_int(label, value)?, tracker_mode_name),
        Kind::DeviceMode => enum_value(parse_int(label, value)?, device_mode_name),
        Kind::MonitorMode => enum_value(parse_int(label, value)?, monitor_mode_name),
        Kind::AlarmMask => {
            let mask = parse_int(label, value)?;
            let mask = u32::try_from(mask).map_err(|_| err(label, value, "a bit mask"))?;
            Value::Names(mask_names(mask, ALARM_BITS))
        }
        Kind::OffReasonMask => {
            Value::Names(mask_names(parse_hex_mask(label, value)?, OFF_REASON_BITS))
        }
        Kind::BluetoothMask => {
            Value::Names(mask_names(parse_hex_mask(label, value)?, BLUETOOTH_BITS))
        }
    };
    Ok(one(name, v))
}

fn enum_value(code: i64, name: fn(i64) -> Option<&'static str>) -> Value {
    name(code).map_or(Value::Int(code), Value::Name)
}

/// The name of `code` in one of the tables below.
fn name_of(table: &[(i64, &'static str)], code: i64) -> Option<&'static str> {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// Every name of a table, in code order: the values an enumeration reading can take
/// (besides the raw code of a code the table does not know).
pub fn names(table: &'static [(i64, &'static str)]) -> impl Iterator<Item = &'static str> {
    table.iter().map(|(_, name)| *name)
}

// The enumeration tables are data, not `match`es, so that what shows the readings (Home
// Assistant's enum options) can list every name without a copy of its own.

/// `CS` / register 0x0201 names, by code.
pub const CHARGE_STATES: &[(i64, &str)] = &[
    (0, "off"),
    (1, "low_power"),
    (2, "fault"),
    (3, "bulk"),
    (4, "absorption"),
    (5, "float"),
    (6, "storage"),
    (7, "equalize_manual"),
    (8, "passthru"),
    (9, "inverting"),
    (10, "assisting"),
    (11, "power_supply"),
    (244, "sustain"),
    (245, "starting_up"),
    (246, "repeated_absorption"),
    (247, "auto_equalize"),
    (248, "battery_safe"),
    (252, "external_control"),
];

/// The name of a charge state code ([`CHARGE_STATES`]).
pub fn charge_state_name(code: i64) -> Option<&'static str> {
    name_of(CHARGE_STATES, code)
}

/// `ERR` / register 0xEDDA names, by code.
pub const ERRORS: &[(i64, &str)] = &[
    (0, "no_error"),
    (2, "battery_voltage_too_high"),
    (17, "charger_temperature_too_high"),
    (18, "charger_over_current"),
    (19, "charger_current_reversed"),
    (20, "bulk_time_limit_exceeded"),
    (21, "current_sensor_issue"),
    (26, "terminals_overheated"),
    (28, "converter_issue"),
    (33, "input_voltage_too_high"),
    (34, "input_current_too_high"),
    (38, "input_shutdown_battery_voltage"),
    (39, "input_shutdown_current_flow"),
    (65, "lost_communication"),
    (66, "synchronised_charging_config_issue"),
    (67, "bms_connection_lost"),
    (68, "network_misconfigured"),
    (116, "factory_calibration_lost"),
    (117, "invalid_firmware"),
    (119, "user_settings_invalid"),
];

/// The name of an error code ([`ERRORS`]).
pub fn error_name(code: i64) -> Option<&'static str> {
    name_of(ERRORS, code)
}

/// `MPPT` / register 0xEDB3 names, by code.
pub const TRACKER_MODES: &[(i64, &str)] = &[
    (0, "off"),
    (1, "voltage_or_current_limited"),
    (2, "mppt_active"),
];

/// The name of a tracker mode code ([`TRACKER_MODES`]).
pub fn tracker_mode_name(code: i64) -> Option<&'static str> {
    name_of(TRACKER_MODES, code)
}

/// `MODE` / register 0x0200 names, by code.
pub const DEVICE_MODES: &[(i64, &str)] = &[
    (1, "charger_on"),
    (2, "inverter_on"),
    (3, "on"),
    (4, "off"),
    (5, "eco"),
    (253, "hibernate"),
];

/// The name of a device mode code ([`DEVICE_MODES`]).
pub fn device_mode_name(code: i64) -> Option<&'static str> {
    name_of(DEVICE_MODES, code)
}

/// `MON` names (negative: sources, positive: loads).
pub const MONITOR_MODES: &[(i64, &str)] = &[
    (-9, "solar_charger"),
    (-8, "wind_turbine"),
    (-7, "shaft_generator"),
    (-6, "alternator"),
    (-5, "fuel_cell"),
    (-4, "water_generator"),
    (-3, "dc_dc_charger"),
    (-2, "ac_charger"),
    (-1, "generic_source"),
    (0, "battery_monitor"),
    (1, "generic_load"),
    (2, "electric_drive"),
    (3, "fridge"),
    (4, "water_pump"),
    (5, "bilge_pump"),
    (6, "dc_system"),
    (7, "inverter"),
    (8, "water_heater"),
];

/// The name of a monitor mode code ([`MONITOR_MODES`]).
pub fn monitor_mode_name(code: i64) -> Option<&'static str> {
    name_of(MONITOR_MODES, code)
}

/// `AR` / `WARN` bits.
pub const ALARM_BITS: &[(u32, &str)] = &[
    (1, "low_voltage"),
    (2, "high_voltage"),
    (4, "low_soc"),
    (8, "low_starter_voltage"),
    (16, "high_starter_voltage"),
    (32, "low_temperature"),
    (64, "high_temperature"),
    (128, "mid_voltage"),
    (256, "overload"),
    (512, "dc_ripple"),
    (1024, "low_ac_output_voltage"),
    (2048, "high_ac_output_voltage"),
    (4096, "short_circuit"),
    (8192, "bms_lockout"),
];

/// `OR` bits.
pub const OFF_REASON_BITS: &[(u32, &str)] = &[
    (0x001, "no_input_power"),
    (0x002, "power_switch"),
    (0x004, "device_mode_register"),
    (0x008, "remote_input"),
    (0x010, "protection_active"),
    (0x020, "paygo"),
    (0x040, "bms"),
    (0x080, "engine_shutdown"),
    (0x100, "analysing_input_voltage"),
    (0x200, "battery_temperature"),
];

/// `CAP_BLE` bits.
pub const BLUETOOTH_BITS: &[(u32, &str)] =
    &[(1, "switch_off_supported"), (2, "switch_off_permanent")];

fn mask_names(mask: u32, table: &[(u32, &'static str)]) -> Vec<Cow<'static, str>> {
    (0..32)
        .map(|bit| 1u32 << bit)
        .filter(|b| mask & b != 0)
        .map(|b| match table.iter().find(|(v, _)| *v == b) {
            Some((_, name)) => Cow::Borrowed(*name),
            None => Cow::Owned(format!("bit_{}", b.trailing_zeros())),
        })
        .collect()
}

/// `FW` (16-bit form): `159` → 1.59, `0308` → 3.08, `C208` → 2.08-rc-C.
pub fn firmware(value: &str) -> Option<String> {
    let (rc, digits) = match value.chars().next()? {
        c if c.is_ascii_alphabetic() => (Some(c.to_ascii_uppercase()), &value[1..]),
        _ => (None, value),
    };
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 2);
    let major: u32 = major.parse().ok()?;
    Some(match rc {
        Some(letter) => format!("{major}.{minor}-rc-{letter}"),
        None => format!("{major}.{minor}"),
    })
}

/// `FWE` (24-bit form): `0208FF`/`208FF` → 2.08, `020801` → 2.08-beta-01.
pub fn firmware_extended(value: &str) -> Option<String> {
    if value.len() < 5 || !value.is_ascii() {
        return None;
    }
    let (version, suffix) = value.split_at(value.len() - 2);
    let base = firmware(version)?;
    if suffix.eq_ignore_ascii_case("FF") {
        Some(base)
    } else if suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(format!("{base}-beta-{suffix}"))
    } else {
        None
    }
}

/// Merges the blocks of one device into one reading. Battery monitors send a main block
/// (`PID`, `V`, `I`, ...) and a history block (`H1`..) alternately; the reading is their
/// union, and it is complete once both kinds were merged. Only accepted blocks reach here
/// (a [`TextBlock`] only comes out of the parser after its checksum passed), so fields of
/// a rejected block are never merged.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    reading: Reading,
    family: Option<Family>,
    seen_main: bool,
    seen_history: bool,
    battery_monitor: bool,
}

impl Accumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merge one accepted block; returns whether the reading is complete enough to publish.
    pub fn update(&mut self, block: &TextBlock) -> bool {
        let decoded = Reading::from_block(block);
        if let Some(pid) = block.get("PID").and_then(products::parse_pid) {
            self.family = products::lookup(pid).map(|(f, _)| f);
        }
        if block.get("PID").is_some() || block.get("V").is_some() {
            self.seen_main = true;
        }
        if block.get("H1").is_some() {
            self.seen_history = true;
        }
        self.battery_monitor = self.family == Some(Family::BatteryMonitor)
            || block.get("BMV").is_some()
            || self.seen_history;
        for (name, value) in decoded.fields {
            self.reading.set(name, value);
        }
        self.reading.errors = decoded.errors;
        self.is_complete()
    }

    pub fn is_complete(&self) -> bool {
        self.seen_main && (!self.battery_monitor || self.seen_history)
    }

    pub fn reading(&self) -> &Reading {
        &self.reading
    }

    /// The product family, once a block with a known `PID` was merged.
    pub fn family(&self) -> Option<Family> {
        self.family
    }

    /// Forget everything (e.g. when the device was replaced or stayed silent too long).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(label: &str, value: &str) -> String {
        let r = Reading {
            fields: decode_field(label, value).unwrap(),
            errors: vec![],
        };
        r.to_json(None)
    }

    #[test]
    fn scaling_and_names() {
        assert_eq!(json("V", "12540"), r#"{"battery_voltage":12.54}"#);
        assert_eq!(json("I", "-7625"), r#"{"battery_current":-7.625}"#);
        assert_eq!(json("SOC", "876"), r#"{"state_of_charge":87.6}"#);
        assert_eq!(json("SOC", "1000"), r#"{"state_of_charge":100}"#);
        assert_eq!(json("H20", "5"), r#"{"yield_today":0.05}"#);
        assert_eq!(json("TTG", "-1"), r#"{"time_to_go":null}"#);
        assert_eq!(json("TTG", "942"), r#"{"time_to_go":56520}"#);
        assert_eq!(json("T", "---"), r#"{"battery_temperature":null}"#);
        assert_eq!(json("CS", "5"), r#"{"charge_state":"float"}"#);
        assert_eq!(json("CS", "99"), r#"{"charge_state":99}"#);
        assert_eq!(json("Relay", "Off"), r#"{"relay":false}"#);
        assert_eq!(
            json("OR", "0x00000009"),
            r#"{"off_reason":["no_input_power","remote_input"]}"#
        );
        assert_eq!(
            json("AR", "5"),
            r#"{"alarm_reason":["low_voltage","low_soc"]}"#
        );
        assert_eq!(json("AR", "16384"), r#"{"alarm_reason":["bit_14"]}"#);
        assert_eq!(
            json("PID", "0xA2F1"),
            r#"{"product_id":"0xA2F1","model":null}"#
        );
        assert_eq!(json("XYZ", "---"), r#"{"XYZ":"---"}"#);
        assert_eq!(json("AC_OUT_V", "23002"), r#"{"ac_output_voltage":230.02}"#);
    }

    #[test]
    fn enumeration_tables_have_unique_codes_and_names() {
        for table in [
            CHARGE_STATES,
            ERRORS,
            TRACKER_MODES,
            DEVICE_MODES,
            MONITOR_MODES,
        ] {
            let mut codes: Vec<i64> = table.iter().map(|(c, _)| *c).collect();
            let mut names: Vec<&str> = names(table).collect();
            let n = table.len();
            codes.sort_unstable();
            codes.dedup();
            names.sort_unstable();
            names.dedup();
            assert_eq!((codes.len(), names.len()), (n, n), "{table:?}");
        }
        assert_eq!(error_name(2), Some("battery_voltage_too_high"));
        assert_eq!(error_name(99), None);
        assert_eq!(json("ERR", "99"), r#"{"error":99}"#);
        assert_eq!(json("MPPT", "2"), r#"{"tracker_mode":"mppt_active"}"#);
    }

    #[test]
    fn firmware_versions() {
        assert_eq!(firmware("0308").as_deref(), Some("3.08"));
        assert_eq!(firmware("159").as_deref(), Some("1.59"));
        assert_eq!(firmware("C208").as_deref(), Some("2.08-rc-C"));
        assert_eq!(firmware_extended("0208FF").as_deref(), Some("2.08"));
        assert_eq!(firmware_extended("208FF").as_deref(), Some("2.08"));
        assert_eq!(firmware_extended("020801").as_deref(), Some("2.08-beta-01"));
        assert_eq!(firmware("1x"), None);
    }

    #[test]
    fn bad_values_are_errors_naming_the_field() {
        let e = decode_field("V", "12.5").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"field V: value "12.5" is not a decimal integer"#
        );
        assert!(decode_field("LOAD", "MAYBE").is_err());
    }
}
