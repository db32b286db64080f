//! Values that rules compare: readings with their timestamps, and how they read in reasons.

use std::collections::BTreeMap;

/// A value as the rule language sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
    /// Seconds.
    Duration(f64),
    /// Seconds since local midnight.
    TimeOfDay(f64),
    List(Vec<Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Number(_) => "a number",
            Value::Bool(_) => "true/false",
            Value::Text(_) => "a text",
            Value::Duration(_) => "a duration",
            Value::TimeOfDay(_) => "a time of day",
            Value::List(_) => "a list",
        }
    }

    /// Converts one field of a device's JSON state; `None` for null (e.g. an infinite
    /// time-to-go), which the rules see as missing.
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        match v {
            serde_json::Value::Number(n) => n.as_f64().map(Value::Number),
            serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
            serde_json::Value::String(s) => Some(Value::Text(s.clone())),
            serde_json::Value::Array(items) => Some(Value::List(
                items.iter().filter_map(Value::from_json).collect(),
            )),
            _ => None,
        }
    }

    /// How the value reads in a reason, with the unit its name implies.
    pub fn show(&self, unit: &str) -> String {
        match self {
            Value::Number(n) if unit.is_empty() => show_number(*n),
            Value::Number(n) => format!("{} {unit}", show_number(*n)),
            Value::Bool(b) => b.to_string(),
            Value::Text(s) => format!("\"{s}\""),
            Value::Duration(d) => show_duration(*d),
            Value::TimeOfDay(t) => show_time_of_day(*t),
            Value::List(items) => {
                let inner: Vec<String> = items.iter().map(|v| v.show(unit)).collect();
                format!("[{}]", inner.join(", "))
            }
        }
    }
}

pub fn show_number(n: f64) -> String {
    let r = (n * 100.0).round() / 100.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// `45 s`, `12 min`, `2 h 10 min`, `1 d 3 h`.
pub fn show_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as i64;
    if s < 60 {
        return format!("{s} s");
    }
    if s < 3600 {
        let (m, rest) = (s / 60, s % 60);
        return if rest == 0 || m >= 10 {
            format!("{m} min")
        } else {
            format!("{m} min {rest} s")
        };
    }
    if s < 86400 {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        return if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        };
    }
    let (d, h) = (s / 86400, (s % 86400) / 3600);
    if h == 0 {
        format!("{d} d")
    } else {
        format!("{d} d {h} h")
    }
}

pub fn show_time_of_day(secs: f64) -> String {
    let s = secs.round() as i64;
    let (day, s) = (s.div_euclid(86400), s.rem_euclid(86400));
    let hm = format!("{:02}:{:02}", s / 3600, (s % 3600) / 60);
    if day == 0 {
        hm
    } else {
        format!("{hm} (+{day} d)")
    }
}

/// The unit a reading's name implies (the topic contract uses SI units).
pub fn unit_of(name: &str) -> &'static str {
    let field = name.rsplit('.').next().unwrap_or(name);
    if field.ends_with("state_of_charge") || field == "midpoint_deviation" {
        "%"
    } else if field.ends_with("power")
        || field == "consumption"
        || field == "surplus"
        || field == "load_power"
    {
        "W"
    } else if field.ends_with("apparent_power") {
        "VA"
    } else if field.contains("voltage") {
        "V"
    } else if field.contains("current") {
        "A"
    } else if field.contains("temperature") {
        "°C"
    } else if field.starts_with("yield") || field.ends_with("energy") {
        "kWh"
    } else if field == "consumed_charge"
        || field == "cumulative_ah_drawn"
        || field.ends_with("discharge")
    {
        "Ah"
    } else {
        ""
    }
}

/// One value of a device's state, with the time it was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: Value,
    /// Unix seconds.
    pub ts: i64,
}

/// The latest state of every device, by device then field.
#[derive(Debug, Default, Clone)]
pub struct Readings {
    devices: BTreeMap<String, BTreeMap<String, Reading>>,
}

/// A device state payload that is not a JSON object.
#[derive(Debug, thiserror::Error)]
#[error("state of `{device}` must be a JSON object with a `ts` and named values, found {found}")]
pub struct ReadingError {
    pub device: String,
    pub found: String,
}

impl Readings {
    /// Merges one device state (`{"ts":..,"name":value,..}`). Fields set to null are
    /// removed. Without `ts`, `received` stands for the time of measure.
    pub fn update(
        &mut self,
        device: &str,
        state: &serde_json::Value,
        received: i64,
    ) -> Result<usize, ReadingError> {
        let serde_json::Value::Object(map) = state else {
            let mut found = state.to_string();
            found.truncate(60);
            return Err(ReadingError {
                device: device.to_string(),
                found,
            });
        };
        let ts = map
            .get("ts")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(received);
        let fields = self.devices.entry(device.to_string()).or_default();
        let mut n = 0;
        for (k, v) in map {
            if k == "ts" {
                continue;
            }
            match Value::from_json(v) {
                Some(value) => {
                    fields.insert(k.clone(), Reading { value, ts });
                    n += 1;
                }
                None => {
                    fields.remove(k);
                }
            }
        }
        Ok(n)
    }

    /// Names of the devices seen.
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    pub fn get(&self, device: &str, field: &str) -> Option<&Reading> {
        self.devices.get(device)?.get(field)
    }

    /// Sets one value directly (scenarios, surplus estimate).
    pub fn set(&mut self, device: &str, field: &str, reading: Reading) {
        self.devices
            .entry(device.to_string())
            .or_default()
            .insert(field.to_string(), reading);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(show_duration(45.0), "45 s");
        assert_eq!(show_duration(12.0 * 60.0), "12 min");
        assert_eq!(show_duration(130.0), "2 min 10 s");
        assert_eq!(show_duration(7800.0), "2 h 10 min");
        assert_eq!(show_duration(3.0 * 3600.0), "3 h");
        assert_eq!(show_time_of_day(63000.0), "17:30");
        assert_eq!(Value::Number(93.456).show("%"), "93.46 %");
    }

    #[test]
    fn readings_merge_and_drop_nulls() {
        let mut r = Readings::default();
        r.update(
            "bmv",
            &serde_json::json!({"ts": 100, "state_of_charge": 93.5, "time_to_go": 3600}),
            200,
        )
        .unwrap();
        r.update(
            "bmv",
            &serde_json::json!({"ts": 160, "time_to_go": null}),
            200,
        )
        .unwrap();
        assert_eq!(
            r.get("bmv", "state_of_charge"),
            Some(&Reading {
                value: Value::Number(93.5),
                ts: 100
            })
        );
        assert_eq!(r.get("bmv", "time_to_go"), None);
        assert!(r.update("bmv", &serde_json::json!([1]), 0).is_err());
    }
}
