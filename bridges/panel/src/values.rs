//! What the panel knows of the bus: the latest reading of every device, the site totals,
//! and every relay's state and mode. Fed by retained messages, so a panel that starts
//! (or reconnects) knows everything at once.

use std::collections::HashMap;

use pvbus_bus::contract::parse_on_off;
use pvbus_bus::{Message, RelayMode, Topics};
use serde_json::{Map, Value};

#[derive(Debug, Default)]
pub struct Values {
    devices: HashMap<String, Map<String, Value>>,
    pub relay_states: HashMap<String, bool>,
    pub relay_modes: HashMap<String, RelayMode>,
}

/// A message we could not read, with why.
#[derive(Debug, thiserror::Error)]
#[error("{topic}: {problem}")]
pub struct BadValue {
    pub topic: String,
    pub problem: String,
}

/// Which of our subscriptions a message belongs to.
pub enum Update {
    /// Something shown may have changed.
    Changed,
    /// Not a topic of ours.
    Ignored,
}

impl Values {
    /// Readings and relays (the LCD).
    pub fn subscriptions(topics: &Topics) -> Vec<String> {
        let mut filters = vec![topics.device_state_filter(), topics.site_state()];
        filters.extend(Values::relay_subscriptions(topics));
        filters
    }

    /// Relays only (the TM1638).
    pub fn relay_subscriptions(topics: &Topics) -> Vec<String> {
        vec![topics.relay_state_filter(), topics.relay_mode_filter()]
    }

    pub fn update(&mut self, topics: &Topics, message: &Message) -> Result<Update, BadValue> {
        let bad = |problem: String| BadValue {
            topic: message.topic.clone(),
            problem,
        };
        if let Some((id, leaf)) = topics.parse_relay_topic(&message.topic) {
            let text = message.text().map_err(|e| bad(e.to_string()))?;
            if text.is_empty() {
                // A retained topic cleared: the relay is gone.
                self.relay_states.remove(id);
                self.relay_modes.remove(id);
                return Ok(Update::Changed);
            }
            match leaf {
                "state" => {
                    let on = parse_on_off(text).map_err(|e| bad(e.to_string()))?;
                    self.relay_states.insert(id.to_string(), on);
                }
                "mode" => {
                    let mode: RelayMode = text
                        .parse()
                        .map_err(|e: pvbus_bus::contract::ContractError| bad(e.to_string()))?;
                    self.relay_modes.insert(id.to_string(), mode);
                }
                _ => return Ok(Update::Ignored),
            }
            return Ok(Update::Changed);
        }
        let device = if message.topic == topics.site_state() {
            "site"
        } else if let Some((_bridge, device)) = topics.parse_device_state(&message.topic) {
            device
        } else {
            return Ok(Update::Ignored);
        };
        if message.payload.is_empty() {
            self.devices.remove(device);
            return Ok(Update::Changed);
        }
        match serde_json::from_slice::<Value>(&message.payload) {
            Ok(Value::Object(map)) => {
                self.devices.insert(device.to_string(), map);
                Ok(Update::Changed)
            }
            Ok(_) => Err(bad("expected a JSON object".into())),
            Err(e) => Err(bad(format!("not JSON: {e}"))),
        }
    }

    /// `device.field` (`site.pv_power`, `bmv.state_of_charge`).
    pub fn get(&self, device: &str, field: &str) -> Option<&Value> {
        self.devices.get(device)?.get(field)
    }

    pub fn number(&self, device: &str, field: &str) -> Option<f64> {
        self.get(device, field)?.as_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.to_string().into(),
            retain: true,
        }
    }

    #[test]
    fn bad_payloads_are_refused_by_topic_and_change_nothing() {
        let topics = Topics::default();
        let mut values = Values::default();
        values
            .update(&topics, &message("pvbus/relays/pump/state", "ON"))
            .unwrap();
        values
            .update(
                &topics,
                &message("pvbus/vedirect/bmv/state", r#"{"state_of_charge":90}"#),
            )
            .unwrap();
        for (topic, payload, problem) in [
            ("pvbus/relays/pump/state", "MAYBE", "ON or OFF"),
            ("pvbus/relays/pump/mode", "turbo", "unknown mode"),
            ("pvbus/vedirect/bmv/state", "[1,2]", "JSON object"),
            ("pvbus/vedirect/bmv/state", "{", "not JSON"),
        ] {
            let error = values
                .update(&topics, &message(topic, payload))
                .err()
                .unwrap();
            assert_eq!(error.topic, topic);
            assert!(error.problem.contains(problem), "{error}");
        }
        assert_eq!(values.relay_states.get("pump"), Some(&true));
        assert_eq!(values.number("bmv", "state_of_charge"), Some(90.0));
    }

    #[test]
    fn cleared_topics_forget_and_others_are_ignored() {
        let topics = Topics::default();
        let mut values = Values::default();
        values
            .update(&topics, &message("pvbus/relays/pump/mode", "forced_on"))
            .unwrap();
        values
            .update(&topics, &message("pvbus/relays/pump/mode", ""))
            .unwrap();
        assert!(values.relay_modes.is_empty());
        assert!(matches!(
            values
                .update(&topics, &message("pvbus/rules/pump/status", "x"))
                .unwrap(),
            Update::Ignored
        ));
    }
}
