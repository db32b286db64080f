//! What the bus says exists: devices (from their retained `state` objects), relays (from
//! their retained `mode`), the site, rule statuses, and which availability topics are
//! alive. Only messages that change the *shape* of what Home Assistant should be told
//! (a new device, a new reading, a new enumeration value, a new firmware) count as a
//! change; a new battery voltage does not.

use std::collections::{BTreeMap, BTreeSet};

use pvbus_bus::Topics;
use serde_json::{Map, Value};

use crate::readings::{self, Kind};

/// A device learned from its `state` object (or the site from `site/state`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSeen {
    /// Reading name → how it is shown, decided when the reading is first seen.
    pub readings: BTreeMap<String, Kind>,
    /// Values seen for enumeration readings that the table does not list.
    pub extra_options: BTreeMap<String, BTreeSet<String>>,
    pub identity: Identity,
}

/// The device's own description of itself, when it gives one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub model: Option<String>,
    pub product_id: Option<String>,
    pub serial_number: Option<String>,
    pub firmware: Option<String>,
}

/// Everything learned from the bus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// `(bridge, device)` → what it publishes.
    pub devices: BTreeMap<(String, String), DeviceSeen>,
    pub site: Option<DeviceSeen>,
    pub surplus: bool,
    pub relays: BTreeSet<String>,
    /// Relays that have a rule status.
    pub rules: BTreeSet<String>,
    /// Processes whose status topic holds a value.
    pub processes: BTreeSet<String>,
    /// Devices whose availability topic holds a value.
    pub availability: BTreeSet<(String, String)>,
}

/// What a message did to the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Not a topic we learn from, or nothing new.
    Nothing,
    /// What HA should know has changed: recompute the announcements.
    Changed,
    /// A state payload that is not a JSON object: kept out, the rest goes on.
    Invalid(String),
}

/// The bridge name under which relays publish; its `state` is `ON`/`OFF`, not a device.
const RELAYS: &str = "relays";

impl Inventory {
    /// Learns from one message. An empty payload is a cleared retained topic: the thing
    /// is gone.
    pub fn observe(&mut self, topics: &Topics, topic: &str, payload: &[u8]) -> Observed {
        let gone = payload.is_empty();
        if let Some((id, leaf)) = topics.parse_relay_topic(topic) {
            if leaf != "mode" {
                return Observed::Nothing;
            }
            return changed(if gone {
                self.relays.remove(id)
            } else {
                self.relays.insert(id.to_string())
            });
        }
        if let Some(relay) = topics.parse_rule_status(topic) {
            return changed(if gone {
                self.rules.remove(relay)
            } else {
                self.rules.insert(relay.to_string())
            });
        }
        if topic == topics.site_surplus() {
            let before = self.surplus;
            self.surplus = !gone;
            return changed(before != self.surplus);
        }
        if topic == topics.site_state() {
            if gone {
                return changed(self.site.take().is_some());
            }
            let site = self.site.get_or_insert_with(DeviceSeen::default);
            return learn(site, topic, payload);
        }
        if let Some((bridge, device)) = topics.parse_device_state(topic)
            && bridge != RELAYS
        {
            let key = (bridge.to_string(), device.to_string());
            if gone {
                return changed(self.devices.remove(&key).is_some());
            }
            let new = !self.devices.contains_key(&key);
            let seen = self.devices.entry(key.clone()).or_default();
            return match learn(seen, topic, payload) {
                Observed::Invalid(e) => {
                    if new {
                        self.devices.remove(&key);
                    }
                    Observed::Invalid(e)
                }
                Observed::Nothing if new => Observed::Changed,
                other => other,
            };
        }
        if let Some((bridge, device)) = topics.parse_device_availability(topic) {
            let key = (bridge.to_string(), device.to_string());
            return changed(if gone {
                self.availability.remove(&key)
            } else {
                self.availability.insert(key)
            });
        }
        if let Some(process) = topics.parse_process_status(topic) {
            return changed(if gone {
                self.processes.remove(process)
            } else {
                self.processes.insert(process.to_string())
            });
        }
        Observed::Nothing
    }
}

fn changed(yes: bool) -> Observed {
    if yes {
        Observed::Changed
    } else {
        Observed::Nothing
    }
}

/// Learns readings and identity from one state object.
fn learn(seen: &mut DeviceSeen, topic: &str, payload: &[u8]) -> Observed {
    let object: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(o)) => o,
        Ok(other) => {
            return Observed::Invalid(format!(
                "{topic}: expected a JSON object of readings, got {}",
                kind_of(&other)
            ));
        }
        Err(e) => return Observed::Invalid(format!("{topic}: not JSON: {e}")),
    };
    let mut change = false;
    for (name, value) in &object {
        let kind = match readings::lookup(name) {
            Some(r) => r.kind,
            None if value.is_null() => continue, // decide when a value shows its type
            None => readings::unknown_kind(value),
        };
        if !seen.readings.contains_key(name) {
            seen.readings.insert(name.clone(), kind);
            change = true;
        }
        // A value the table does not name (a code the vedirect crate does not know stays
        // a number; a script may send any text) becomes one more option.
        let unnamed = match value {
            Value::String(v) => Some(v.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let (Kind::Enum(table), Some(v)) = (kind, unnamed)
            && !vedirect::decode::names(table).any(|n| n == v)
        {
            change |= seen
                .extra_options
                .entry(name.clone())
                .or_default()
                .insert(v);
        }
    }
    let identity = Identity {
        model: text_of(object.get("model")),
        product_id: text_of(object.get("product_id")),
        serial_number: text_of(object.get("serial_number")),
        firmware: text_of(object.get("firmware")),
    };
    if identity != seen.identity {
        seen.identity = identity;
        change = true;
    }
    changed(change)
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn see(inv: &mut Inventory, topic: &str, payload: &str) -> Observed {
        inv.observe(&Topics::default(), topic, payload.as_bytes())
    }

    #[test]
    fn devices_are_learned_from_state_and_forgotten_when_cleared() {
        let mut inv = Inventory::default();
        let state = r#"{"ts":1,"battery_voltage":13.5,"charge_state":"float","model":"SmartSolar MPPT 100|20","serial_number":"HQ1","firmware":"1.61","product_id":"0xA060"}"#;
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", state),
            Observed::Changed
        );
        let seen = &inv.devices[&("vedirect".into(), "mppt".into())];
        assert_eq!(seen.readings["battery_voltage"], Kind::Sensor);
        assert_eq!(seen.identity.serial_number.as_deref(), Some("HQ1"));
        // A new value is not a new shape.
        let next = state.replace("13.5", "13.6");
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", &next),
            Observed::Nothing
        );
        // A new reading is.
        let more = state.replace("\"ts\":1,", "\"ts\":2,\"pv_power\":240,");
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", &more),
            Observed::Changed
        );
        // An enumeration value the table does not list becomes an option.
        let odd = more.replace("\"float\"", "\"hibernating\"");
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", &odd),
            Observed::Changed
        );
        assert!(
            inv.devices[&("vedirect".into(), "mppt".into())].extra_options["charge_state"]
                .contains("hibernating")
        );
        // So does a code the vedirect crate does not name (kept as a number).
        let code = odd.replace("\"hibernating\"", "99");
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", &code),
            Observed::Changed
        );
        assert!(
            inv.devices[&("vedirect".into(), "mppt".into())].extra_options["charge_state"]
                .contains("99")
        );
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", &code),
            Observed::Nothing
        );
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/mppt/state", ""),
            Observed::Changed
        );
        assert!(inv.devices.is_empty());
    }

    #[test]
    fn bad_state_is_reported_and_changes_nothing() {
        let mut inv = Inventory::default();
        match see(&mut inv, "pvbus/script/cellar/state", "12.5") {
            Observed::Invalid(e) => assert!(
                e.contains("pvbus/script/cellar/state") && e.contains("a number"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            see(&mut inv, "pvbus/script/cellar/state", "{oops"),
            Observed::Invalid(_)
        ));
        assert!(inv.devices.is_empty());
        see(
            &mut inv,
            "pvbus/script/cellar/state",
            r#"{"temperature":12.5}"#,
        );
        assert!(matches!(
            see(&mut inv, "pvbus/script/cellar/state", "[1]"),
            Observed::Invalid(_)
        ));
        assert_eq!(
            inv.devices.len(),
            1,
            "a bad message does not forget the device"
        );
    }

    #[test]
    fn relays_rules_site_and_availability() {
        let mut inv = Inventory::default();
        assert_eq!(
            see(&mut inv, "pvbus/relays/pump/mode", "auto_off"),
            Observed::Changed
        );
        assert_eq!(
            see(&mut inv, "pvbus/relays/pump/mode", "forced_on"),
            Observed::Nothing
        );
        assert_eq!(
            see(&mut inv, "pvbus/relays/pump/state", "ON"),
            Observed::Nothing
        );
        assert!(
            inv.devices.is_empty(),
            "a relay's ON/OFF state is not a device"
        );
        assert_eq!(
            see(&mut inv, "pvbus/rules/pump/status", "on: soc < 95"),
            Observed::Changed
        );
        assert_eq!(
            see(&mut inv, "pvbus/site/state", r#"{"ts":1,"pv_power":3}"#),
            Observed::Changed
        );
        assert_eq!(
            see(&mut inv, "pvbus/site/surplus", r#"{"surplus":3}"#),
            Observed::Changed
        );
        assert_eq!(
            see(&mut inv, "pvbus/relays/status", "online"),
            Observed::Changed
        );
        assert_eq!(
            see(&mut inv, "pvbus/relays/status", "offline"),
            Observed::Nothing
        );
        assert_eq!(
            see(&mut inv, "pvbus/vedirect/bmv/availability", "online"),
            Observed::Changed
        );
        assert!(inv.relays.contains("pump") && inv.rules.contains("pump") && inv.surplus);
        assert!(inv.processes.contains("relays"));
        assert_eq!(
            see(&mut inv, "pvbus/relays/pump/mode", ""),
            Observed::Changed
        );
        assert!(inv.relays.is_empty());
    }
}
