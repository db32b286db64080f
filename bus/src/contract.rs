//! Payloads of the topic contract. Parsing is strict and every error says what was
//! expected, because these strings come from people, scripts and Home Assistant.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Unix time in whole seconds: the `ts` of every payload.
pub fn now_ts() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The charger states of the topic contract (`charge_state` in a device's state), in
/// the order of Victron's CS codes. Rules check names against it; Home Assistant offers
/// it as the options of an `enum` sensor.
pub const CHARGE_STATES: &[&str] = &[
    "off",
    "low_power",
    "fault",
    "bulk",
    "absorption",
    "float",
    "storage",
    "equalize_manual",
    "passthru",
    "inverting",
    "assisting",
    "power_supply",
    "sustain",
    "starting_up",
    "repeated_absorption",
    "auto_equalize",
    "battery_safe",
    "external_control",
];

/// The four relay modes of PvMonit. Rules only move a relay between the two auto
/// modes; people and buttons choose between forced and auto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    ForcedOff,
    AutoOff,
    AutoOn,
    ForcedOn,
}

impl RelayMode {
    pub const ALL: [RelayMode; 4] = [
        RelayMode::ForcedOff,
        RelayMode::AutoOff,
        RelayMode::AutoOn,
        RelayMode::ForcedOn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RelayMode::ForcedOff => "forced_off",
            RelayMode::AutoOff => "auto_off",
            RelayMode::AutoOn => "auto_on",
            RelayMode::ForcedOn => "forced_on",
        }
    }

    /// PvMonit's number for the mode (0 forced off .. 3 forced on).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Whether the output should be energised in this mode.
    pub fn wants_on(self) -> bool {
        matches!(self, RelayMode::AutoOn | RelayMode::ForcedOn)
    }

    pub fn is_auto(self) -> bool {
        matches!(self, RelayMode::AutoOff | RelayMode::AutoOn)
    }
}

impl fmt::Display for RelayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RelayMode {
    type Err = ContractError;

    /// The published names and PvMonit's numbers 0..3.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "forced_off" | "0" => Ok(RelayMode::ForcedOff),
            "auto_off" | "1" => Ok(RelayMode::AutoOff),
            "auto_on" | "2" => Ok(RelayMode::AutoOn),
            "forced_on" | "3" => Ok(RelayMode::ForcedOn),
            other => Err(ContractError::UnknownMode(other.to_string())),
        }
    }
}

/// What a person (or Home Assistant, or a button) may ask of a relay on `.../mode/set`.
/// `Auto` hands the relay back to the rules, starting from off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeRequest {
    ForcedOff,
    Auto,
    ForcedOn,
    /// PvMonit's 1 and 2: an explicit auto mode with a starting state.
    Exact(RelayMode),
}

impl FromStr for ModeRequest {
    type Err = ContractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t.to_ascii_lowercase().replace('-', "_").as_str() {
            "forced_off" | "off" | "0" => Ok(ModeRequest::ForcedOff),
            "auto" => Ok(ModeRequest::Auto),
            "forced_on" | "on" | "3" => Ok(ModeRequest::ForcedOn),
            "auto_off" | "1" => Ok(ModeRequest::Exact(RelayMode::AutoOff)),
            "auto_on" | "2" => Ok(ModeRequest::Exact(RelayMode::AutoOn)),
            _ => Err(ContractError::UnknownMode(t.to_string())),
        }
    }
}

impl ModeRequest {
    /// The mode this request leads to.
    pub fn target(self) -> RelayMode {
        match self {
            ModeRequest::ForcedOff => RelayMode::ForcedOff,
            ModeRequest::Auto => RelayMode::AutoOff,
            ModeRequest::ForcedOn => RelayMode::ForcedOn,
            ModeRequest::Exact(m) => m,
        }
    }
}

/// `ON`/`OFF`, the payload of relay `state` and `auto/set` (as Home Assistant expects).
pub fn parse_on_off(s: &str) -> Result<bool, ContractError> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("on") || t == "1" || t.eq_ignore_ascii_case("true") => Ok(true),
        t if t.eq_ignore_ascii_case("off") || t == "0" || t.eq_ignore_ascii_case("false") => {
            Ok(false)
        }
        other => Err(ContractError::NotOnOff(other.to_string())),
    }
}

/// The payload of `.../auto/set`: `ON`/`OFF`, or `{"state":"ON","reason":"…"}` so that
/// the relay's retained `reason` says why the rules asked (not just that they did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoSet {
    pub on: bool,
    pub reason: Option<String>,
}

impl AutoSet {
    /// Longest reason kept; a longer one is cut (it ends up in a retained message).
    pub const MAX_REASON: usize = 200;

    pub fn parse(text: &str) -> Result<AutoSet, ContractError> {
        let t = text.trim();
        if !t.starts_with('{') {
            return parse_on_off(t).map(|on| AutoSet { on, reason: None });
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            state: String,
            reason: Option<String>,
        }
        let json: Json =
            serde_json::from_str(t).map_err(|e| ContractError::BadAutoSet(e.to_string()))?;
        let on = parse_on_off(&json.state)?;
        let reason = json
            .reason
            .map(|r| r.trim().chars().take(Self::MAX_REASON).collect::<String>())
            .filter(|r| !r.is_empty());
        Ok(AutoSet { on, reason })
    }

    pub fn to_payload(&self) -> String {
        match &self.reason {
            None => on_off(self.on).to_string(),
            Some(r) => serde_json::json!({ "state": on_off(self.on), "reason": r }).to_string(),
        }
    }
}

pub fn on_off(on: bool) -> &'static str {
    if on { "ON" } else { "OFF" }
}

/// Who caused a relay change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonSource {
    User,
    Rules,
    Safety,
    Boot,
    OverrideExpired,
}

/// The retained `reason` of a relay: why it is as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub ts: u64,
    pub by: ReasonSource,
    pub text: String,
}

impl Reason {
    pub fn now(by: ReasonSource, text: impl Into<String>) -> Reason {
        Reason {
            ts: now_ts(),
            by,
            text: text.into(),
        }
    }
}

/// Answer to an invalid command, on `<base>/<process>/error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub ts: u64,
    /// The topic the bad command came on.
    pub topic: String,
    pub error: String,
}

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Durations as people write them: `90s`, `20m`, `2h`, `1h30m`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ContractError> {
    let t = s.trim();
    let bad = || ContractError::BadDuration(t.to_string());
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut seen_unit = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        seen_unit = true;
    }
    if !digits.is_empty() || !seen_unit {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Topic segments we create from names in the config (device and relay ids): lower-case
/// snake_case, so that they are valid MQTT topic levels and Home Assistant object ids.
pub fn validate_id(id: &str) -> Result<(), ContractError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ContractError::BadId(id.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("unknown mode {0:?}: expected forced_off, auto, forced_on, auto_off, auto_on or 0..3")]
    UnknownMode(String),
    #[error("expected ON or OFF, got {0:?}")]
    NotOnOff(String),
    #[error(
        "malformed auto/set JSON: {0} (expected ON, OFF or {{\"state\":\"ON\",\"reason\":\"…\"}})"
    )]
    BadAutoSet(String),
    #[error("bad duration {0:?}: expected e.g. 90s, 20m, 2h, 1h30m, 1d")]
    BadDuration(String),
    #[error("bad id {0:?}: ids are 1..64 characters of a-z, 0-9 and _")]
    BadId(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_names_and_numbers() {
        for m in RelayMode::ALL {
            assert_eq!(m.as_str().parse::<RelayMode>().unwrap(), m);
            assert_eq!(m.number().to_string().parse::<RelayMode>().unwrap(), m);
        }
        assert!("auto".parse::<RelayMode>().is_err());
    }

    #[test]
    fn mode_requests() {
        assert_eq!(
            "auto".parse::<ModeRequest>().unwrap().target(),
            RelayMode::AutoOff
        );
        assert_eq!(
            "forced-on".parse::<ModeRequest>().unwrap(),
            ModeRequest::ForcedOn
        );
        assert_eq!("0".parse::<ModeRequest>().unwrap(), ModeRequest::ForcedOff);
        assert_eq!(
            "2".parse::<ModeRequest>().unwrap().target(),
            RelayMode::AutoOn
        );
        let err = "turbo".parse::<ModeRequest>().unwrap_err().to_string();
        assert!(err.contains("turbo") && err.contains("forced_on"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
        for bad in ["", "-2h", "2x", "h", "2h3", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn reason_serialises_with_kebab_source() {
        let r = Reason {
            ts: 5,
            by: ReasonSource::OverrideExpired,
            text: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ts":5,"by":"override-expired","text":"x"}"#
        );
    }

    #[test]
    fn auto_set_plain_or_with_reason() {
        assert_eq!(
            AutoSet::parse("ON").unwrap(),
            AutoSet {
                on: true,
                reason: None
            }
        );
        let a = AutoSet::parse(r#"{"state":"OFF","reason":"soc 88 % < 90"}"#).unwrap();
        assert_eq!(
            a,
            AutoSet {
                on: false,
                reason: Some("soc 88 % < 90".into())
            }
        );
        assert_eq!(AutoSet::parse(&a.to_payload()).unwrap(), a);
        let long = format!(r#"{{"state":"ON","reason":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            AutoSet::parse(&long).unwrap().reason.unwrap().len(),
            AutoSet::MAX_REASON
        );
        for bad in [
            r#"{"state":"maybe"}"#,
            r#"{"reason":"x"}"#,
            r#"{"state":"ON","why":1}"#,
            "{",
            "yes",
        ] {
            assert!(AutoSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("water_heater").is_ok());
        assert!(validate_id("3").is_ok());
        for bad in ["", "Water", "a/b", "a+", "#", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
