//! HEX registers the bridge reads and writes, with their wire type and SI scaling.
//!
//! Values on the wire are little endian; `scale` turns the integer into the SI unit
//! (0.01 V → V, 0.1 A → A, 0.01 W → W, 0.01 kWh → kWh, 0.01 K → °C via `offset`).
//! "Not available" codes (0xFF, 0xFFFF, 0x7FFF, 0xFFFFFFFF, 0x7FFFFFFF) decode to
//! [`RegisterValue::NotAvailable`].

use crate::hex::RegisterFrame;

/// Wire type of a register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterType {
    U8,
    U16,
    S16,
    U32,
    S32,
    /// NUL-padded ASCII.
    String,
    /// Opaque bytes (history records, product id word).
    Bytes,
}

impl RegisterType {
    /// Width in bytes for numeric types.
    pub fn width(self) -> Option<usize> {
        match self {
            RegisterType::U8 => Some(1),
            RegisterType::U16 | RegisterType::S16 => Some(2),
            RegisterType::U32 | RegisterType::S32 => Some(4),
            RegisterType::String | RegisterType::Bytes => None,
        }
    }

    fn not_available(self, raw: i64) -> bool {
        match self {
            RegisterType::U8 => raw == 0xFF,
            RegisterType::U16 => raw == 0xFFFF,
            RegisterType::S16 => raw == 0x7FFF,
            RegisterType::U32 => raw == 0xFFFF_FFFF,
            RegisterType::S32 => raw == 0x7FFF_FFFF,
            RegisterType::String | RegisterType::Bytes => false,
        }
    }
}

/// One register: id, reading name (same style as the text readings), type and scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Register {
    pub id: u16,
    pub name: &'static str,
    pub kind: RegisterType,
    /// SI value = raw × scale + offset.
    pub scale: f64,
    pub offset: f64,
    pub unit: &'static str,
    pub writable: bool,
    /// Forgotten by the device a while after the last write (e.g. 0x2015, ~60 s): the
    /// host must rewrite it periodically to keep it in force.
    pub volatile: bool,
}

const fn reg(
    id: u16,
    name: &'static str,
    kind: RegisterType,
    scale: f64,
    unit: &'static str,
) -> Register {
    Register {
        id,
        name,
        kind,
        scale,
        offset: 0.0,
        unit,
        writable: false,
        volatile: false,
    }
}

const fn writable(mut r: Register) -> Register {
    r.writable = true;
    r
}

use RegisterType::*;

pub const PRODUCT_ID: u16 = 0x0100;
pub const SERIAL_NUMBER: u16 = 0x010A;
pub const MODEL_NAME: u16 = 0x010B;
pub const DEVICE_MODE: u16 = 0x0200;
pub const DEVICE_STATE: u16 = 0x0201;
pub const OFF_REASON: u16 = 0x0207;
pub const RELAY_CONTROL: u16 = 0x034E;
pub const CHARGE_CURRENT_LIMIT: u16 = 0x2015;
pub const LOAD_OUTPUT_CONTROL: u16 = 0xEDAB;
pub const LOAD_OUTPUT_STATE: u16 = 0xEDA8;
pub const LOAD_CURRENT: u16 = 0xEDAD;
pub const CHARGER_VOLTAGE: u16 = 0xEDD5;
pub const CHARGER_CURRENT: u16 = 0xEDD7;
pub const PANEL_POWER: u16 = 0xEDBC;
pub const PANEL_VOLTAGE: u16 = 0xEDBB;
pub const TRACKER_MODE: u16 = 0xEDB3;
pub const YIELD_TODAY: u16 = 0xEDD3;
pub const MAX_POWER_TODAY: u16 = 0xEDD2;
pub const CHARGER_ERROR: u16 = 0xEDDA;
pub const CHARGER_MAX_CURRENT: u16 = 0xEDDF;
pub const BATTERY_TEMPERATURE: u16 = 0xEDEC;
pub const MAIN_VOLTAGE: u16 = 0xED8D;
pub const AUX_VOLTAGE: u16 = 0xED7D;
pub const CURRENT: u16 = 0xED8F;
pub const CURRENT_HIGH_RES: u16 = 0xED8C;
pub const POWER: u16 = 0xED8E;
pub const CONSUMED_AH: u16 = 0xEEFF;
pub const STATE_OF_CHARGE: u16 = 0x0FFF;
pub const TIME_TO_GO: u16 = 0x0FFE;
pub const MIDPOINT_VOLTAGE: u16 = 0x0382;
pub const MIDPOINT_DEVIATION: u16 = 0x0383;
pub const SYNCHRONISATION_STATE: u16 = 0xEEB6;
pub const DC_MONITOR_MODE: u16 = 0xEEB8;
pub const BATTERY_CAPACITY: u16 = 0x1000;

/// The register table.
pub const REGISTERS: &[Register] = &[
    reg(PRODUCT_ID, "product_id", Bytes, 1.0, ""),
    reg(0x0104, "group_id", U8, 1.0, ""),
    reg(SERIAL_NUMBER, "serial_number", String, 1.0, ""),
    reg(MODEL_NAME, "model_name", String, 1.0, ""),
    reg(0x0120, "uptime", U32, 1.0, "s"),
    reg(0x0140, "capabilities", U32, 1.0, ""),
    writable(reg(DEVICE_MODE, "device_mode", U8, 1.0, "")),
    reg(DEVICE_STATE, "charge_state", U8, 1.0, ""),
    reg(0x0202, "remote_control_used", U32, 1.0, ""),
    reg(OFF_REASON, "off_reason", U32, 1.0, ""),
    reg(0x031C, "warning_reason", U16, 1.0, ""),
    reg(0x031E, "alarm_reason", U16, 1.0, ""),
    writable(reg(RELAY_CONTROL, "relay", U8, 1.0, "")),
    writable(reg(0x034F, "relay_mode", U8, 1.0, "")),
    // MPPT solar chargers.
    reg(CHARGER_VOLTAGE, "battery_voltage", U16, 0.01, "V"),
    reg(CHARGER_CURRENT, "battery_current", S16, 0.1, "A"),
    reg(PANEL_POWER, "pv_power", U32, 0.01, "W"),
    reg(PANEL_VOLTAGE, "pv_voltage", U16, 0.01, "V"),
    reg(0xEDBD, "pv_current", U16, 0.1, "A"),
    reg(TRACKER_MODE, "tracker_mode", U8, 1.0, ""),
    reg(YIELD_TODAY, "yield_today", U16, 0.01, "kWh"),
    reg(MAX_POWER_TODAY, "max_power_today", U16, 1.0, "W"),
    reg(0xEDD1, "yield_yesterday", U16, 0.01, "kWh"),
    reg(0xEDD0, "max_power_yesterday", U16, 1.0, "W"),
    reg(0xEDDC, "yield_total", U32, 0.01, "kWh"),
    reg(0xEDDD, "yield_system", U32, 0.01, "kWh"),
    reg(CHARGER_ERROR, "error", U8, 1.0, ""),
    reg(0xEDDB, "charger_temperature", S16, 0.01, "°C"),
    reg(CHARGER_MAX_CURRENT, "charger_max_current", U16, 0.1, "A"),
    Register {
        offset: -273.15,
        ..reg(BATTERY_TEMPERATURE, "battery_temperature", U16, 0.01, "°C")
    },
    reg(0xEDEF, "battery_system_voltage", U8, 1.0, "V"),
    reg(0xEDF0, "battery_max_current", U16, 0.1, "A"),
    reg(0xEDF6, "battery_float_voltage", U16, 0.01, "V"),
    reg(0xEDF7, "battery_absorption_voltage", U16, 0.01, "V"),
    reg(LOAD_CURRENT, "load_current", U16, 0.1, "A"),
    reg(0xEDA9, "load_output_voltage", U16, 0.01, "V"),
    reg(LOAD_OUTPUT_STATE, "load_output", U8, 1.0, ""),
    writable(reg(LOAD_OUTPUT_CONTROL, "load_output_control", U8, 1.0, "")),
    Register {
        volatile: true,
        ..writable(reg(
            CHARGE_CURRENT_LIMIT,
            "charge_current_limit",
            U16,
            0.1,
            "A",
        ))
    },
    reg(0x2027, "network_pv_power", U32, 0.01, "W"),
    reg(0x2030, "solar_activity", U8, 1.0, ""),
    reg(0x2031, "time_of_day", U16, 60.0, "s"),
    reg(0x104F, "history_total", Bytes, 1.0, ""),
    reg(0x1050, "history_today", Bytes, 1.0, ""),
    // Battery monitors (BMV-70x/71x, SmartShunt).
    reg(MAIN_VOLTAGE, "battery_voltage", S16, 0.01, "V"),
    reg(AUX_VOLTAGE, "auxiliary_voltage", S16, 0.01, "V"),
    reg(CURRENT, "battery_current", S16, 0.1, "A"),
    reg(CURRENT_HIGH_RES, "battery_current", S32, 0.001, "A"),
    reg(POWER, "battery_power", S16, 1.0, "W"),
    reg(CONSUMED_AH, "consumed_charge", S32, 0.1, "Ah"),
    reg(STATE_OF_CHARGE, "state_of_charge", U16, 0.01, "%"),
    reg(TIME_TO_GO, "time_to_go", U16, 60.0, "s"),
    reg(MIDPOINT_VOLTAGE, "midpoint_voltage", U16, 0.01, "V"),
    reg(MIDPOINT_DEVIATION, "midpoint_deviation", S16, 0.1, "%"),
    reg(SYNCHRONISATION_STATE, "synchronisation_state", U8, 1.0, ""),
    reg(DC_MONITOR_MODE, "dc_monitor_mode", S16, 1.0, ""),
    reg(0x0300, "deepest_discharge", S32, 0.1, "Ah"),
    reg(0x0301, "last_discharge", S32, 0.1, "Ah"),
    reg(0x0302, "average_discharge", S32, 0.1, "Ah"),
    reg(0x0303, "charge_cycles", U32, 1.0, ""),
    reg(0x0304, "full_discharges", U32, 1.0, ""),
    reg(0x0305, "cumulative_ah_drawn", S32, 0.1, "Ah"),
    reg(0x0306, "min_battery_voltage", S32, 0.01, "V"),
    reg(0x0307, "max_battery_voltage", S32, 0.01, "V"),
    reg(0x0308, "seconds_since_full_charge", U32, 1.0, "s"),
    reg(0x0309, "synchronisations", U32, 1.0, ""),
    reg(0x030A, "low_voltage_alarms", U32, 1.0, ""),
    reg(0x030B, "high_voltage_alarms", U32, 1.0, ""),
    reg(0x030E, "min_aux_voltage", S32, 0.01, "V"),
    reg(0x030F, "max_aux_voltage", S32, 0.01, "V"),
    reg(0x0310, "discharged_energy", U32, 0.01, "kWh"),
    reg(0x0311, "charged_energy", U32, 0.01, "kWh"),
    writable(reg(BATTERY_CAPACITY, "battery_capacity", U16, 1.0, "Ah")),
    writable(reg(0xEEFC, "alarm_buzzer", U8, 1.0, "")),
    // Phoenix inverters.
    reg(0x2200, "ac_output_voltage", S16, 0.01, "V"),
    reg(0x2201, "ac_output_current", S16, 0.1, "A"),
    reg(0x2205, "ac_output_apparent_power", S32, 1.0, "VA"),
];

/// Look a register up by id. Some ids mean the same quantity on different products
/// (0xEDEC on MPPT and BMV); the table holds one entry per id.
pub fn lookup(id: u16) -> Option<&'static Register> {
    REGISTERS.iter().find(|r| r.id == id)
}

/// A register value decoded to SI.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterValue {
    Number(f64),
    NotAvailable,
    Text(std::string::String),
    Bytes(Vec<u8>),
}

/// Why a register value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterValueError {
    #[error("register 0x{id:04X} value has {got} byte(s), its type needs {want}")]
    Width { id: u16, got: usize, want: usize },
}

fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
}

impl Register {
    /// Raw integer of a numeric value, sign-extended for signed types.
    pub fn raw(&self, value: &[u8]) -> Result<i64, RegisterValueError> {
        let want = self.kind.width().unwrap_or(value.len());
        if value.len() != want {
            return Err(RegisterValueError::Width {
                id: self.id,
                got: value.len(),
                want,
            });
        }
        let u = le_uint(value);
        Ok(match self.kind {
            S16 => i64::from(u as u16 as i16),
            S32 => i64::from(u as u32 as i32),
            _ => u as i64,
        })
    }

    pub fn decode(&self, value: &[u8]) -> Result<RegisterValue, RegisterValueError> {
        match self.kind {
            String => {
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                Ok(RegisterValue::Text(
                    std::string::String::from_utf8_lossy(&value[..end]).into_owned(),
                ))
            }
            Bytes => Ok(RegisterValue::Bytes(value.to_vec())),
            _ => {
                let raw = self.raw(value)?;
                Ok(if self.kind.not_available(raw) {
                    RegisterValue::NotAvailable
                } else {
                    RegisterValue::Number(raw as f64 * self.scale + self.offset)
                })
            }
        }
    }

    /// Decode to an exact [`crate::decode::Value`] (decimal scaling without float noise),
    /// `Null` for "not available".
    pub fn decode_exact(&self, value: &[u8]) -> Result<crate::decode::Value, RegisterValueError> {
        use crate::decode::Value;
        Ok(match self.kind {
            String | Bytes => match self.decode(value)? {
                RegisterValue::Text(t) => Value::Text(t),
                _ => Value::Text(crate::hex::to_hex_digits(value)),
            },
            _ => {
                let raw = self.raw(value)?;
                if self.kind.not_available(raw) {
                    return Ok(Value::Null);
                }
                // Scales are powers of ten (or whole multipliers); offsets are whole
                // hundredths (−273.15 °C).
                if self.scale >= 1.0 {
                    Value::Int(raw * self.scale as i64 + self.offset as i64)
                } else {
                    let exp = (-self.scale.log10()).round() as u8;
                    let offset = (self.offset * 10f64.powi(i32::from(exp))).round() as i64;
                    Value::Decimal {
                        raw: raw + offset,
                        exp,
                    }
                }
            }
        })
    }

    /// Encode an SI value for a Set (rounded to the register's resolution).
    pub fn encode(&self, si: f64) -> Vec<u8> {
        let raw = ((si - self.offset) / self.scale).round() as i64;
        let width = self.kind.width().unwrap_or(0);
        raw.to_le_bytes()[..width].to_vec()
    }
}

/// Decode a Get/Set/Async reply with the table; `None` for registers not in the table.
pub fn decode_frame(
    frame: &RegisterFrame,
) -> Option<(&'static Register, Result<RegisterValue, RegisterValueError>)> {
    let register = lookup(frame.register)?;
    Some((register, register.decode(&frame.value)))
}

/// Register 0x0100 holds four bytes; bytes 1..=2 are the PID.
pub fn product_id_from_register(value: &[u8]) -> Option<u16> {
    (value.len() == 4).then(|| u16::from_le_bytes([value[1], value[2]]))
}

/// Load output control (0xEDAB) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutputControl {
    Off,
    Automatic,
    On,
    /// Other values select alternative switching algorithms.
    Other(u8),
}

impl LoadOutputControl {
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Self::Off,
            1 => Self::Automatic,
            4 => Self::On,
            other => Self::Other(other),
        }
    }

    pub fn raw(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Automatic => 1,
            Self::On => 4,
            Self::Other(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_to_si() {
        let v = lookup(CHARGER_VOLTAGE).unwrap();
        assert_eq!(v.decode(&[0x09, 0x05]), Ok(RegisterValue::Number(12.89)));
        let i = lookup(CURRENT_HIGH_RES).unwrap();
        assert_eq!(i.raw(&[0x6A, 0xFF, 0xFF, 0xFF]), Ok(-150));
        let aux = lookup(AUX_VOLTAGE).unwrap();
        assert_eq!(aux.decode(&[0xFF, 0x7F]), Ok(RegisterValue::NotAvailable));
        let t = lookup(BATTERY_TEMPERATURE).unwrap();
        let RegisterValue::Number(c) = t.decode(&29815u16.to_le_bytes()).unwrap() else {
            panic!()
        };
        assert!((c - 25.0).abs() < 1e-9);
        assert_eq!(
            v.decode(&[1]),
            Err(RegisterValueError::Width {
                id: CHARGER_VOLTAGE,
                got: 1,
                want: 2
            })
        );
        let limit = lookup(CHARGE_CURRENT_LIMIT).unwrap();
        assert!(limit.volatile && limit.writable);
        assert_eq!(limit.encode(10.0), vec![100, 0]);
    }
}
