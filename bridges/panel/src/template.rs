//! LCD page lines as templates over bus values: `BA:{bmv.state_of_charge:0}%` shows the
//! battery's state of charge with no decimals.
//!
//! Placeholders: `{device.field}` and `{device.field:N}` (N decimals; `site` is the site
//! totals), `{relay.<id>}` (ON/OFF), `{relay.<id>.mode}`, `{relay_states}` (one
//! character per relay: `*` on, `.` off, `-` unknown), `{relay_modes}` (PvMonit's 0..3
//! per relay). `{{` and `}}` are braces. A value that is missing shows `--`.

use pvbus_bus::RelayMode;
use serde_json::Value;

use crate::values::Values;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Reading {
        device: String,
        field: String,
        decimals: Option<usize>,
    },
    RelayState(String),
    RelayMode(String),
    RelayStates,
    RelayModes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` at character {0}")]
    Unclosed(usize),
    #[error("a lone `}}` at character {0} (write `}}}}` for a brace)")]
    LoneClose(usize),
    #[error(
        "{{{0}}}: expected {{device.field}}, {{device.field:N}}, {{relay.ID}}, {{relay.ID.mode}}, {{relay_states}} or {{relay_modes}}"
    )]
    Unknown(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::LoneClose(at)),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) => inner.push(c),
                            None => return Err(TemplateError::Unclosed(at)),
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(&inner).ok_or(TemplateError::Unknown(inner))?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The line, with values from `values`; `relays` is the relay order.
    pub fn render(&self, values: &Values, relays: &[String]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Reading {
                    device,
                    field,
                    decimals,
                } => out.push_str(&format_value(values.get(device, field), *decimals)),
                Part::RelayState(id) => out.push_str(match values.relay_states.get(id) {
                    Some(true) => "ON",
                    Some(false) => "OFF",
                    None => "--",
                }),
                Part::RelayMode(id) => {
                    out.push_str(values.relay_modes.get(id).map_or("--", |m| m.as_str()))
                }
                Part::RelayStates => {
                    out.extend(relays.iter().map(|id| match values.relay_states.get(id) {
                        Some(true) => '*',
                        Some(false) => '.',
                        None => '-',
                    }))
                }
                Part::RelayModes => out.extend(relays.iter().map(|id| {
                    values
                        .relay_modes
                        .get(id)
                        .map_or('-', |m: &RelayMode| char::from(b'0' + m.number()))
                })),
            }
        }
        out
    }
}

fn placeholder(inner: &str) -> Option<Part> {
    let inner = inner.trim();
    match inner {
        "relay_states" => return Some(Part::RelayStates),
        "relay_modes" => return Some(Part::RelayModes),
        _ => {}
    }
    if let Some(rest) = inner.strip_prefix("relay.") {
        return match rest.split_once('.') {
            None if !rest.is_empty() => Some(Part::RelayState(rest.to_string())),
            Some((id, "mode")) if !id.is_empty() => Some(Part::RelayMode(id.to_string())),
            _ => None,
        };
    }
    let (path, decimals) = match inner.split_once(':') {
        Some((path, n)) => (path, Some(n.parse::<usize>().ok().filter(|n| *n <= 6)?)),
        None => (inner, None),
    };
    let (device, field) = path.split_once('.')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (ok(device) && ok(field)).then(|| Part::Reading {
        device: device.to_string(),
        field: field.to_string(),
        decimals,
    })
}

fn format_value(value: Option<&Value>, decimals: Option<usize>) -> String {
    match value {
        None | Some(Value::Null) => "--".into(),
        Some(Value::Number(n)) => match (decimals, n.as_i64()) {
            (None, Some(i)) => i.to_string(),
            (Some(d), _) => format!("{:.*}", d, n.as_f64().unwrap_or(0.0)),
            (None, None) => {
                let f = n.as_f64().unwrap_or(0.0);
                let s = format!("{f:.2}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        },
        Some(Value::Bool(b)) => if *b { "ON" } else { "OFF" }.into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::{Message, Topics};

    fn values(pairs: &[(&str, &str)]) -> Values {
        let topics = Topics::default();
        let mut v = Values::default();
        for (topic, payload) in pairs {
            let m = Message {
                topic: topic.to_string(),
                payload: payload.to_string().into(),
                retain: true,
            };
            v.update(&topics, &m).unwrap();
        }
        v
    }

    #[test]
    fn a_line_shows_what_a_person_expects() {
        let v = values(&[
            (
                "pvbus/vedirect/bmv/state",
                r#"{"ts":1,"state_of_charge":87.4,"battery_voltage":12.8,"charge_state":"float"}"#,
            ),
            (
                "pvbus/site/state",
                r#"{"ts":1,"battery_power":-120,"pv_power":245.6}"#,
            ),
        ]);
        let t = Template::parse("BA:{bmv.state_of_charge:0}%  P:{site.battery_power:0}W").unwrap();
        assert_eq!(t.render(&v, &[]), "BA:87%  P:-120W");
        let t =
            Template::parse("{bmv.battery_voltage}V {bmv.charge_state} {site.pv_power}").unwrap();
        assert_eq!(t.render(&v, &[]), "12.8V float 245.6");
        let t = Template::parse("{{x}} {mppt.pv_power}W").unwrap();
        assert_eq!(t.render(&v, &[]), "{x} --W");
    }

    #[test]
    fn relays_show_in_order() {
        let v = values(&[
            ("pvbus/relays/pump/state", "ON"),
            ("pvbus/relays/pump/mode", "auto_on"),
            ("pvbus/relays/heater/state", "OFF"),
            ("pvbus/relays/heater/mode", "forced_off"),
        ]);
        let order = [
            "heater".to_string(),
            "pump".to_string(),
            "spare".to_string(),
        ];
        let t = Template::parse("{relay_states}|{relay_modes}|{relay.pump}|{relay.heater.mode}")
            .unwrap();
        assert_eq!(t.render(&v, &order), ".*-|02-|ON|forced_off");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert_eq!(Template::parse("a{b.c"), Err(TemplateError::Unclosed(1)));
        assert_eq!(Template::parse("a}"), Err(TemplateError::LoneClose(1)));
        for bad in ["{soc}", "{bmv.soc:x}", "{relay.}", "{relay.a.b}", "{a b.c}"] {
            assert!(
                matches!(Template::parse(bad), Err(TemplateError::Unknown(_))),
                "{bad}"
            );
        }
    }
}
