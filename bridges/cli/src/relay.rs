//! `pvbus relay <id> <mode> [--for D | --until T]`: the same command as
//! `mosquitto_pub -t pvbus/relays/<id>/mode/set -m <mode>`, but it checks the relay
//! exists first and waits for the relay bridge to confirm (the new `mode`) or refuse
//! (its `error` topic) before it returns.

use std::time::Duration;

use pvbus_bus::contract::{ErrorReport, ModeRequest, RelayMode, parse_duration, validate_id};
use serde_json::Value;

use crate::session::Session;
use crate::{CliError, ConfigArg, bus_config, list};

/// Sets a relay's mode, for good or for a while.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// The relay id, as in the configuration (`pvbus watch relays` lists them).
    pub id: String,
    /// forced-on, forced-off or auto (also on, off, auto-on, auto-off, or 0..3).
    pub mode: String,
    /// Only for this long, then back to the mode before: 90s, 20m, 2h, 1h30m, 1d.
    #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
    pub lasting: Option<String>,
    /// Only until this time: 18:00 (the next one), 2026-06-21T18:00, or unix seconds.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// How long the relay bridge has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The payload of `.../mode/set` for these arguments; errors are usage errors.
pub fn command_payload(args: &RelayArgs) -> Result<String, CliError> {
    validate_id(&args.id).map_err(|e| CliError::Usage(e.to_string()))?;
    let request: ModeRequest = args
        .mode
        .parse()
        .map_err(|e: pvbus_bus::contract::ContractError| CliError::Usage(e.to_string()))?;
    let word = match request {
        ModeRequest::ForcedOff => "forced_off",
        ModeRequest::Auto => "auto",
        ModeRequest::ForcedOn => "forced_on",
        ModeRequest::Exact(m) => m.as_str(),
    };
    if let Some(d) = &args.lasting {
        let lasting = parse_duration(d).map_err(|e| CliError::Usage(format!("--for: {e}")))?;
        if lasting.is_zero() {
            return Err(CliError::Usage("--for: must be longer than 0 s".into()));
        }
        return Ok(serde_json::json!({"mode": word, "for": d.trim()}).to_string());
    }
    if let Some(t) = &args.until {
        let until = match t.trim().parse::<u64>() {
            Ok(secs) => Value::from(secs),
            Err(_) => Value::from(t.trim()),
        };
        return Ok(serde_json::json!({"mode": word, "until": until}).to_string());
    }
    Ok(word.to_string())
}

/// The modes that fulfil a request.
fn fulfils(request: ModeRequest, mode: RelayMode) -> bool {
    match request {
        ModeRequest::Auto => mode.is_auto(),
        other => other.target() == mode,
    }
}

/// Sends the command and returns the confirmation to print.
pub async fn run(args: RelayArgs) -> Result<String, CliError> {
    let payload = command_payload(&args)?;
    let request: ModeRequest = args.mode.parse().expect("checked by command_payload");
    let timed = args.lasting.is_some() || args.until.is_some();
    let id = args.id.as_str();
    let bus = bus_config(args.config.config.as_deref())?;
    let mut session = Session::connect(&bus).await?;
    let t = session.topics().clone();
    let (mode_topic, override_topic) = (t.relay_mode(id), t.relay_override(id));
    let (status_topic, error_topic) = (t.process_status("relays"), t.process_error("relays"));
    let set_topic = t.relay_mode_set(id);
    let retained = session
        .subscribe_and_sync(&[
            t.relay_mode_filter(),
            override_topic.clone(),
            status_topic.clone(),
            error_topic.clone(),
        ])
        .await?;

    let mut relays = Vec::new();
    let mut before: Option<RelayMode> = None;
    let mut status = "not running (no status on the bus)".to_string();
    for m in &retained {
        if let Some((rid, "mode")) = t.parse_relay_topic(&m.topic) {
            if !m.payload.is_empty() {
                relays.push(rid.to_string());
            }
            if rid == id {
                before = m.text().parse().ok();
            }
        } else if m.topic == status_topic {
            status = m.text();
        }
    }
    if !relays.iter().any(|r| r == id) {
        let known = if relays.is_empty() {
            format!("no relay at all: is `pvbus relays` running? (its status: {status})")
        } else {
            format!("relays on the bus: {}", list(&relays))
        };
        return Err(CliError::UnknownRelay {
            id: id.to_string(),
            known,
        });
    }

    session.publish(&set_topic, &payload);
    let already = before.is_some_and(|m| fulfils(request, m)) && !timed;
    let deadline = tokio::time::Instant::now()
        + if already {
            Duration::from_secs(1)
        } else {
            ANSWER_TIMEOUT
        };
    let mut now_mode = before;
    let mut mode_confirmed = false;
    let mut new_override: Option<String> = None;
    loop {
        let next = tokio::time::timeout_at(deadline, session.next()).await;
        let m = match next {
            Err(_) if already => {
                session.close().await;
                return Ok(format!("{id}: already {}", fmt_mode(before)));
            }
            Err(_) => {
                session.close().await;
                return Err(CliError::NoAnswer {
                    id: id.to_string(),
                    secs: ANSWER_TIMEOUT.as_secs(),
                    status,
                });
            }
            Ok(m) => m?,
        };
        if m.topic == error_topic {
            if let Ok(report) = serde_json::from_slice::<ErrorReport>(&m.payload)
                && report.topic == set_topic
            {
                session.close().await;
                return Err(CliError::Rejected {
                    id: id.to_string(),
                    error: report.error,
                });
            }
        } else if m.topic == mode_topic {
            now_mode = m.text().parse().ok();
            mode_confirmed = now_mode.is_some_and(|mode| fulfils(request, mode));
        } else if m.topic == override_topic && !m.payload.is_empty() {
            // Retained values arrived before the sync: this one answers our command,
            // even when it is the same as before (the same end, to the second).
            new_override = Some(m.text());
        } else if m.topic == status_topic {
            status = m.text();
        }
        let done = if timed {
            new_override.is_some() && now_mode.is_some_and(|mode| fulfils(request, mode))
        } else {
            mode_confirmed
        };
        if done {
            session.close().await;
            let mut line = format!("{id}: {}", fmt_mode(now_mode));
            if let Some(o) = new_override.and_then(|o| serde_json::from_str::<Value>(&o).ok()) {
                if let Some(until) = o.get("until_local").and_then(Value::as_str) {
                    line.push_str(&format!(" until {until}"));
                }
                if let Some(then) = o.get("then").and_then(Value::as_str) {
                    line.push_str(&format!(", then {then}"));
                }
            }
            if before != now_mode {
                line.push_str(&format!(" (was {})", fmt_mode(before)));
            }
            return Ok(line);
        }
    }
}

fn fmt_mode(m: Option<RelayMode>) -> String {
    m.map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(id: &str, mode: &str, lasting: Option<&str>, until: Option<&str>) -> RelayArgs {
        RelayArgs {
            id: id.into(),
            mode: mode.into(),
            lasting: lasting.map(Into::into),
            until: until.map(Into::into),
            config: ConfigArg { config: None },
        }
    }

    #[test]
    fn payloads_follow_the_contract() {
        let p = |a| command_payload(&a).unwrap();
        assert_eq!(p(args("pump", "forced-on", None, None)), "forced_on");
        assert_eq!(p(args("pump", "auto", None, None)), "auto");
        assert_eq!(p(args("pump", "0", None, None)), "forced_off");
        assert_eq!(
            p(args("pump", "forced-on", Some("2h"), None)),
            r#"{"for":"2h","mode":"forced_on"}"#
        );
        assert_eq!(
            p(args("pump", "on", None, Some("18:00"))),
            r#"{"mode":"forced_on","until":"18:00"}"#
        );
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let e = |a| command_payload(&a).unwrap_err().to_string();
        assert!(e(args("Pump", "auto", None, None)).contains("bad id \"Pump\""));
        assert!(e(args("pump", "turbo", None, None)).contains("unknown mode \"turbo\""));
        assert!(e(args("pump", "on", Some("2x"), None)).contains("--for: bad duration"));
        assert!(e(args("pump", "on", Some("0s"), None)).contains("longer than 0"));
    }
}
