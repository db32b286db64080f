//! `pvbus get <path>`: one value from the bus's retained state, printed bare so that a
//! script can write `v=$(pvbus get mppt_roof.battery_voltage)`.
//!
//! Paths name things the way rules do:
//! - `<device>.<reading>` (`mppt_roof.battery_voltage`), `<device>` for the whole object,
//!   `<bridge>.<device>.<reading>` when two bridges have a device of the same name;
//! - `site.<total>` (`site.pv_power`), `site.surplus`;
//! - `relays.<id>` (its mode), `relays.<id>.<state|mode|reason|override|stats>[.<field>]`;
//! - `rules.<relay>` (what the rule waits for);
//! - or a topic below the base, with slashes: `relays/pump/state`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::session::Session;
use crate::{CliError, ConfigArg, bus_config, list};

/// Prints one value from the bus.
#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    /// What to read: mppt_roof.battery_voltage, site.pv_power, relays.pump.state,
    /// rules.pump, or a topic below the base such as relays/pump/reason.
    pub path: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// A value found, and what a script should know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub value: String,
    /// E.g. the device is offline: printed on stderr, the value is still printed.
    pub warning: Option<String>,
}

pub async fn run(args: GetArgs) -> Result<Got, CliError> {
    let bus = bus_config(args.config.config.as_deref())?;
    let mut session = Session::connect(&bus).await?;
    let topics = session.topics().clone();
    let retained = session.subscribe_and_sync(&[topics.all()]).await?;
    session.close().await;
    let mut state = BTreeMap::new();
    for m in retained {
        if m.retain && !m.payload.is_empty() {
            state.insert(m.topic.clone(), m.text());
        }
    }
    resolve(topics.base(), &state, &args.path)
}

/// Finds `path` in the retained state (`topic → payload`).
pub fn resolve(base: &str, state: &BTreeMap<String, String>, path: &str) -> Result<Got, CliError> {
    let path = path.trim();
    let not_found = |hint: String| CliError::NotFound {
        path: path.to_string(),
        hint,
    };
    if path.is_empty() {
        return Err(CliError::Usage(
            "give a path such as mppt_roof.battery_voltage".into(),
        ));
    }
    if path.contains('/') {
        let topic = if path.starts_with(&format!("{base}/")) {
            path.to_string()
        } else {
            format!("{base}/{path}")
        };
        return match state.get(&topic) {
            Some(v) => Ok(Got {
                value: v.clone(),
                warning: None,
            }),
            None => Err(not_found(format!(
                "no retained value on {topic} (`pvbus watch` shows what there is)"
            ))),
        };
    }
    let parts: Vec<&str> = path.split('.').collect();
    let topic = |rest: &str| format!("{base}/{rest}");
    match parts.as_slice() {
        ["relays"] => Err(not_found(format!(
            "relays: {}",
            list(&ids_of(state, &format!("{base}/relays/"), "/mode"))
        ))),
        ["relays", id, rest @ ..] => {
            let (leaf, fields) = match rest {
                [] => ("mode", &[][..]),
                [leaf, fields @ ..] => (*leaf, fields),
            };
            let t = topic(&format!("relays/{id}/{leaf}"));
            let Some(payload) = state.get(&t) else {
                let relays = ids_of(state, &format!("{base}/relays/"), "/mode");
                return Err(if relays.iter().any(|r| r == id) {
                    not_found(format!(
                        "relay {id} has no {leaf}; try state, mode, reason, override or stats"
                    ))
                } else {
                    not_found(format!("relays on the bus: {}", list(&relays)))
                });
            };
            field_of(payload, fields, path).map(|value| Got {
                value,
                warning: None,
            })
        }
        ["rules", relay] => state
            .get(&topic(&format!("rules/{relay}/status")))
            .map(|v| Got {
                value: v.clone(),
                warning: None,
            })
            .ok_or_else(|| {
                not_found(format!(
                    "rules with a status: {}",
                    list(&ids_of(state, &format!("{base}/rules/"), "/status"))
                ))
            }),
        ["site", "surplus", fields @ ..] if state.contains_key(&topic("site/surplus")) => {
            let fields = if fields.is_empty() {
                &["surplus"][..]
            } else {
                fields
            };
            field_of(&state[&topic("site/surplus")], fields, path).map(|value| Got {
                value,
                warning: None,
            })
        }
        ["site", fields @ ..] => match state.get(&topic("site/state")) {
            Some(p) => field_of(p, fields, path).map(|value| Got {
                value,
                warning: None,
            }),
            None => Err(not_found(
                "no site totals on the bus (pvbus/site/state)".into(),
            )),
        },
        [first, rest @ ..] => {
            let devices = devices(base, state);
            // `<bridge>.<device>...` first, then `<device>...` under any bridge.
            let by_bridge = rest
                .first()
                .and_then(|d| devices.iter().find(|(b, dev)| b == first && dev == d))
                .map(|(b, d)| (b.clone(), d.clone(), &rest[1..]));
            let (bridge, device, fields) = match by_bridge {
                Some(found) => found,
                None => {
                    let matching: Vec<_> = devices.iter().filter(|(_, d)| d == first).collect();
                    match matching.as_slice() {
                        [(b, d)] => (b.clone(), d.clone(), rest),
                        [] => {
                            let mut names: Vec<String> =
                                devices.iter().map(|(_, d)| d.clone()).collect();
                            names.sort();
                            names.dedup();
                            return Err(not_found(if names.is_empty() {
                                "no device on the bus; also try site, relays and rules".into()
                            } else {
                                format!(
                                    "devices on the bus: {}; also site, relays and rules",
                                    list(&names)
                                )
                            }));
                        }
                        several => {
                            let names: Vec<String> =
                                several.iter().map(|(b, d)| format!("{b}.{d}")).collect();
                            return Err(CliError::Usage(format!(
                                "`{first}` is a device of several bridges: say which, e.g. {}",
                                list(&names)
                            )));
                        }
                    }
                }
            };
            let payload = &state[&topic(&format!("{bridge}/{device}/state"))];
            let value = field_of(payload, fields, path)?;
            let availability = state.get(&topic(&format!("{bridge}/{device}/availability")));
            let process = state.get(&topic(&format!("{bridge}/status")));
            let warning = if availability.is_some_and(|a| a == "offline") {
                Some(format!("{device} is offline: this value is stale"))
            } else if process.is_some_and(|p| p == "offline") {
                Some(format!("{bridge} is offline: this value may be stale"))
            } else {
                None
            };
            Ok(Got { value, warning })
        }
        [] => unreachable!("split yields at least one part"),
    }
}

/// The ids under `prefix` whose topic ends in `leaf` (`pvbus/relays/<id>/mode`).
fn ids_of(state: &BTreeMap<String, String>, prefix: &str, leaf: &str) -> Vec<String> {
    state
        .keys()
        .filter_map(|t| t.strip_prefix(prefix)?.strip_suffix(leaf))
        .filter(|id| !id.contains('/'))
        .map(str::to_string)
        .collect()
}

/// `(bridge, device)` of every device state object.
fn devices(base: &str, state: &BTreeMap<String, String>) -> Vec<(String, String)> {
    state
        .keys()
        .filter_map(|t| {
            let rest = t.strip_prefix(&format!("{base}/"))?;
            let mut p = rest.split('/');
            let (b, d, leaf) = (p.next()?, p.next()?, p.next()?);
            (leaf == "state" && p.next().is_none() && b != "relays")
                .then(|| (b.to_string(), d.to_string()))
        })
        .collect()
}

/// The value at `fields` in `payload` (JSON), or the payload itself.
fn field_of(payload: &str, fields: &[&str], path: &str) -> Result<String, CliError> {
    if fields.is_empty() {
        return Ok(payload.to_string());
    }
    let mut value: Value = serde_json::from_str(payload).map_err(|_| CliError::NotFound {
        path: path.to_string(),
        hint: format!("the value there is not a JSON object: {payload}"),
    })?;
    for f in fields {
        let next = value.get(*f).cloned();
        match next {
            Some(v) => value = v,
            None => {
                let keys: Vec<String> = value
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                return Err(CliError::NotFound {
                    path: path.to_string(),
                    hint: if keys.is_empty() {
                        format!("{payload} has no field {f}")
                    } else {
                        format!("its readings are: {}", list(&keys))
                    },
                });
            }
        }
    }
    Ok(match value {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> BTreeMap<String, String> {
        [
            (
                "pvbus/vedirect/mppt/state",
                r#"{"ts":1,"battery_voltage":13.54,"charge_state":"float","time_to_go":null}"#,
            ),
            ("pvbus/vedirect/mppt/availability", "offline"),
            (
                "pvbus/vedirect/bmv/state",
                r#"{"ts":1,"state_of_charge":93.5}"#,
            ),
            ("pvbus/script/bmv/state", r#"{"ts":1,"temperature":12.5}"#),
            ("pvbus/site/state", r#"{"ts":1,"pv_power":245}"#),
            (
                "pvbus/site/surplus",
                r#"{"ts":1,"surplus":120,"method":"x"}"#,
            ),
            ("pvbus/relays/pump/mode", "auto_off"),
            ("pvbus/relays/pump/state", "OFF"),
            (
                "pvbus/relays/pump/reason",
                r#"{"ts":1,"by":"rules","text":"soc < 95"}"#,
            ),
            ("pvbus/rules/pump/status", "on: soc 93.5 < 95"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    fn get(path: &str) -> Result<Got, CliError> {
        resolve("pvbus", &state(), path)
    }

    #[test]
    fn values_by_path() {
        let v = get("mppt.battery_voltage").unwrap();
        assert_eq!(v.value, "13.54");
        assert!(v.warning.unwrap().contains("offline"));
        assert_eq!(get("mppt.charge_state").unwrap().value, "float");
        assert_eq!(get("mppt.time_to_go").unwrap().value, "null");
        assert_eq!(get("vedirect.bmv.state_of_charge").unwrap().value, "93.5");
        assert_eq!(get("script.bmv.temperature").unwrap().value, "12.5");
        assert_eq!(get("site.pv_power").unwrap().value, "245");
        assert_eq!(get("site.surplus").unwrap().value, "120");
        assert_eq!(get("relays.pump").unwrap().value, "auto_off");
        assert_eq!(get("relays.pump.state").unwrap().value, "OFF");
        assert_eq!(get("relays.pump.reason.by").unwrap().value, "rules");
        assert_eq!(get("rules.pump").unwrap().value, "on: soc 93.5 < 95");
        assert_eq!(get("relays/pump/state").unwrap().value, "OFF");
        assert_eq!(get("pvbus/relays/pump/state").unwrap().value, "OFF");
    }

    #[test]
    fn misses_say_what_exists() {
        let e = |p| get(p).unwrap_err().to_string();
        assert!(
            e("mppt.battery_volts").contains("battery_voltage"),
            "{}",
            e("mppt.battery_volts")
        );
        assert!(
            e("roof.pv_power").contains("devices on the bus: bmv and mppt"),
            "{}",
            e("roof.pv_power")
        );
        assert!(
            e("bmv.state_of_charge").contains("script.bmv and vedirect.bmv"),
            "{}",
            e("bmv.state_of_charge")
        );
        assert!(e("relays.heater").contains("relays on the bus: pump"));
        assert!(e("relays/heater/state").contains("pvbus/relays/heater/state"));
    }
}
