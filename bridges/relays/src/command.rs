//! Relay commands: from the payload people and rules send to what they mean.
//! Parsing knows the clock (for `for` and `until`) but nothing of the relays.

use jiff::tz::TimeZone;
use jiff::{Timestamp, civil};
use pvbus_bus::contract::{AutoSet, ContractError, parse_duration};
use pvbus_bus::{ModeRequest, RelayMode};
use serde::Deserialize;

/// What a command asks of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `.../mode/set` with a mode: from people, Home Assistant, buttons.
    Mode(ModeRequest),
    /// `.../mode/set` with `{"mode":..,"for"|"until":..}`: a mode until a time,
    /// then back to the mode before.
    Override { mode: RelayMode, until_ms: u64 },
    /// `.../auto/set` `ON`/`OFF` (with the rule's reason, if given): from the rules,
    /// obeyed only in auto modes.
    Auto(AutoSet),
}

impl Command {
    /// An `auto/set` without a reason.
    pub fn rules(on: bool) -> Command {
        Command::Auto(AutoSet { on, reason: None })
    }
}

/// Why a command was refused. The text goes to the error topic as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown relay {0:?}")]
    UnknownRelay(String),
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    #[error(transparent)]
    Mode(ContractError),
    #[error(transparent)]
    OnOff(ContractError),
    #[error(
        "malformed JSON override: {0} (expected {{\"mode\":\"forced_on\",\"for\":\"2h\"}} or {{\"mode\":\"forced_on\",\"until\":\"18:00\"}})"
    )]
    Json(String),
    #[error("negative duration {0}: an override lasts some time from now")]
    NegativeDuration(String),
    #[error(transparent)]
    Duration(ContractError),
    #[error("an override needs a duration longer than 0 s")]
    ZeroDuration,
    #[error("give either \"for\" or \"until\", not both")]
    ForAndUntil,
    #[error(
        "bad \"until\" {0:?}: expected a time of day (18:00), a date and time (2026-06-21T18:00) or unix seconds"
    )]
    BadUntil(String),
    #[error("\"until\" {0} is already past")]
    UntilPast(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideJson {
    mode: String,
    #[serde(rename = "for")]
    lasting: Option<serde_json::Value>,
    until: Option<serde_json::Value>,
}

/// Parses a `.../mode/set` payload received at `now_ms` (unix milliseconds);
/// times of day are read in `tz`.
pub fn parse_mode_set(payload: &[u8], now_ms: u64, tz: &TimeZone) -> Result<Command, CommandError> {
    let text = std::str::from_utf8(payload).map_err(|_| CommandError::NotUtf8)?;
    let text = text.trim();
    if !text.starts_with('{') {
        return text
            .parse::<ModeRequest>()
            .map(Command::Mode)
            .map_err(CommandError::Mode);
    }
    let json: OverrideJson =
        serde_json::from_str(text).map_err(|e| CommandError::Json(e.to_string()))?;
    let request = json
        .mode
        .parse::<ModeRequest>()
        .map_err(CommandError::Mode)?;
    let until_ms = match (json.lasting, json.until) {
        (None, None) => return Ok(Command::Mode(request)),
        (Some(_), Some(_)) => return Err(CommandError::ForAndUntil),
        (Some(lasting), None) => now_ms.saturating_add(lasting_ms(&lasting)?),
        (None, Some(until)) => until_ms(&until, now_ms, tz)?,
    };
    Ok(Command::Override {
        mode: request.target(),
        until_ms,
    })
}

/// Parses a `.../auto/set` payload.
pub fn parse_auto_set(payload: &[u8]) -> Result<Command, CommandError> {
    let text = std::str::from_utf8(payload).map_err(|_| CommandError::NotUtf8)?;
    AutoSet::parse(text)
        .map(Command::Auto)
        .map_err(CommandError::OnOff)
}

fn lasting_ms(value: &serde_json::Value) -> Result<u64, CommandError> {
    let ms = match value {
        serde_json::Value::Number(number) => {
            let seconds = number
                .as_f64()
                .ok_or_else(|| CommandError::Json(format!("\"for\": {number} is not a number")))?;
            if seconds < 0.0 {
                return Err(CommandError::NegativeDuration(number.to_string()));
            }
            (seconds * 1000.0) as u64
        }
        serde_json::Value::String(text) => {
            if text.trim().starts_with('-') {
                return Err(CommandError::NegativeDuration(text.clone()));
            }
            let duration = parse_duration(text).map_err(CommandError::Duration)?;
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
        }
        other => {
            return Err(CommandError::Json(format!(
                "\"for\" must be a duration such as \"2h\" or seconds, got {other}"
            )));
        }
    };
    if ms == 0 {
        return Err(CommandError::ZeroDuration);
    }
    Ok(ms)
}

fn until_ms(value: &serde_json::Value, now_ms: u64, tz: &TimeZone) -> Result<u64, CommandError> {
    let shown = value.to_string();
    let until = match value {
        serde_json::Value::Number(number) => {
            let seconds = number
                .as_f64()
                .filter(|s| *s >= 0.0)
                .ok_or_else(|| CommandError::BadUntil(shown.clone()))?;
            (seconds * 1000.0) as u64
        }
        serde_json::Value::String(text) => time_text_ms(text.trim(), now_ms, tz)
            .ok_or_else(|| CommandError::BadUntil(text.clone()))?,
        _ => return Err(CommandError::BadUntil(shown)),
    };
    if until <= now_ms {
        return Err(CommandError::UntilPast(shown));
    }
    Ok(until)
}

/// `18:00` (the next one), `2026-06-21T18:00` (local), or a full timestamp.
fn time_text_ms(text: &str, now_ms: u64, tz: &TimeZone) -> Option<u64> {
    let to_ms = |ts: Timestamp| u64::try_from(ts.as_millisecond()).ok();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return to_ms(ts);
    }
    if let Ok(datetime) = text.parse::<civil::DateTime>() {
        return to_ms(datetime.to_zoned(tz.clone()).ok()?.timestamp());
    }
    let time = text.parse::<civil::Time>().ok()?;
    let now = Timestamp::from_millisecond(i64::try_from(now_ms).ok()?)
        .ok()?
        .to_zoned(tz.clone());
    let today = now.date().to_datetime(time).to_zoned(tz.clone()).ok()?;
    let next = if today.timestamp() > now.timestamp() {
        today
    } else {
        now.date()
            .tomorrow()
            .ok()?
            .to_datetime(time)
            .to_zoned(tz.clone())
            .ok()?
    };
    to_ms(next.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2025-11-25 14:00:00 UTC
    const NOW: u64 = 1_764_079_200_000;

    fn parse(text: &str) -> Result<Command, CommandError> {
        parse_mode_set(text.as_bytes(), NOW, &TimeZone::UTC)
    }

    #[test]
    fn plain_modes_and_numbers() {
        assert_eq!(parse("forced_on"), Ok(Command::Mode(ModeRequest::ForcedOn)));
        assert_eq!(parse(" auto\n"), Ok(Command::Mode(ModeRequest::Auto)));
        assert_eq!(
            parse("2"),
            Ok(Command::Mode(ModeRequest::Exact(RelayMode::AutoOn)))
        );
        assert!(matches!(parse("turbo"), Err(CommandError::Mode(_))));
    }

    #[test]
    fn overrides_for_a_duration_or_until_a_time() {
        assert_eq!(
            parse(r#"{"mode":"forced_on","for":"2h"}"#),
            Ok(Command::Override {
                mode: RelayMode::ForcedOn,
                until_ms: NOW + 7_200_000
            })
        );
        assert_eq!(
            parse(r#"{"mode":"forced_off","for":90}"#),
            Ok(Command::Override {
                mode: RelayMode::ForcedOff,
                until_ms: NOW + 90_000
            })
        );
        // 18:00 today; 13:00 is tomorrow.
        assert_eq!(
            parse(r#"{"mode":"forced_on","until":"18:00"}"#),
            Ok(Command::Override {
                mode: RelayMode::ForcedOn,
                until_ms: NOW + 4 * 3_600_000
            })
        );
        assert_eq!(
            parse(r#"{"mode":"forced_on","until":"13:00"}"#),
            Ok(Command::Override {
                mode: RelayMode::ForcedOn,
                until_ms: NOW + 23 * 3_600_000
            })
        );
        assert_eq!(
            parse(r#"{"mode":"forced_on","until":1764080000}"#),
            Ok(Command::Override {
                mode: RelayMode::ForcedOn,
                until_ms: 1_764_080_000_000
            })
        );
        assert_eq!(
            parse(r#"{"mode":"3"}"#),
            Ok(Command::Mode(ModeRequest::ForcedOn))
        );
    }

    #[test]
    fn each_bad_override_gets_its_own_error() {
        type Expect = fn(&CommandError) -> bool;
        let cases: [(&str, Expect); 9] = [
            (r#"{"mode":"forced_on","for":"-2h"}"#, |e| {
                matches!(e, CommandError::NegativeDuration(_))
            }),
            (r#"{"mode":"forced_on","for":-5}"#, |e| {
                matches!(e, CommandError::NegativeDuration(_))
            }),
            (r#"{"mode":"forced_on","for":"0s"}"#, |e| {
                matches!(e, CommandError::ZeroDuration)
            }),
            (r#"{"mode":"forced_on","for":"2 parsecs"}"#, |e| {
                matches!(e, CommandError::Duration(_))
            }),
            (r#"{"mode":"forced_on","for":"2h","until":"18:00"}"#, |e| {
                matches!(e, CommandError::ForAndUntil)
            }),
            (r#"{"mode":"forced_on","until":"teatime"}"#, |e| {
                matches!(e, CommandError::BadUntil(_))
            }),
            (r#"{"mode":"forced_on","until":1000}"#, |e| {
                matches!(e, CommandError::UntilPast(_))
            }),
            (r#"{"mode":"warp","for":"2h"}"#, |e| {
                matches!(e, CommandError::Mode(_))
            }),
            (r#"{"mode":"forced_on","for":"2h""#, |e| {
                matches!(e, CommandError::Json(_))
            }),
        ];
        for (payload, expected) in cases {
            let error = parse(payload).unwrap_err();
            assert!(expected(&error), "{payload}: {error:?}");
        }
        assert!(matches!(
            parse(r#"{"mode":"forced_on","fro":"2h"}"#),
            Err(CommandError::Json(message)) if message.contains("fro")
        ));
    }

    #[test]
    fn auto_set_is_on_or_off() {
        assert_eq!(parse_auto_set(b"ON"), Ok(Command::rules(true)));
        assert_eq!(parse_auto_set(b"off"), Ok(Command::rules(false)));
        assert_eq!(
            parse_auto_set(br#"{"state":"ON","reason":"float for 30 s"}"#),
            Ok(Command::Auto(AutoSet {
                on: true,
                reason: Some("float for 30 s".into())
            }))
        );
        assert!(matches!(
            parse_auto_set(b"maybe"),
            Err(CommandError::OnOff(_))
        ));
        assert_eq!(parse_auto_set(&[0xff]), Err(CommandError::NotUtf8));
    }
}
