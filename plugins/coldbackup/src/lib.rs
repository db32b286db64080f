//! The cold backup of PvMonit's author, as a plugin: a backup machine (a Raspberry Pi and
//! a 2.5" disk, about 3 W) is powered only for the nightly backup — its relay switched on
//! when the batteries allow, woken by wake-on-LAN if it needs it, powered off once it
//! reports done (after its own shutdown) or after a timeout.
//!
//! Layout:
//! - [`Settings`]: `[plugins.config.<id>]`, checked with errors that name the key;
//! - [`ColdBackup`]: the run as a state machine fed by bus messages and timers (pure: it
//!   returns what to publish, so the night can be followed step by step);
//! - `main.rs`: the `pvbus-coldbackup` plugin: the SDK connection, the timers, the
//!   messages.
//!
//! Topics (device `<device>`, default `backup`, under the plugin's id):
//! - `<base>/<id>/<device>/state` (retained): `{"ts":..,"phase":"idle|running|
//!   shutting_down","last_outcome":"ok|failed|timeout|skipped_low_battery|...",
//!   "last_duration":3512,"last_run":1764040000,"last_message":".."}`;
//! - `<base>/<id>/<device>/run/set`: start a run now (rules, Home Assistant, a person);
//! - `<base>/<id>/<device>/done/set`: the backup machine's report, `ok` or
//!   `failed: <why>` (examples/plugins/coldbackup-client.sh);
//! - it drives the relay with `<base>/relays/<relay>/mode/set`: an override
//!   `{"mode":"forced_on","for":"<max_duration + shutdown_grace>"}`, so that the relay
//!   bridge switches the machine off by itself if this plugin dies, then the mode the
//!   relay had before. A relay a person forced off is never switched on; one forced on is
//!   left on.

use std::time::Duration;

use pvbus_bus::RelayMode;
use serde::Deserialize;
use serde_json::{Value, json};

/// `[plugins.config.<id>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The relay that powers the backup machine.
    pub relay: String,
    /// The device whose `state_of_charge` decides (a battery monitor); none: no check.
    pub battery: Option<String>,
    /// Minimum state of charge (%) to start.
    pub min_soc: f64,
    /// Daily start time, `HH:MM` local time; none: only on `run/set`.
    pub start_at: Option<String>,
    /// A run that has not reported done by then is a timeout.
    pub max_duration: String,
    /// Between `done` and cutting the power: the machine's own shutdown.
    pub shutdown_grace: String,
    /// Wake-on-LAN, for a machine that does not start on power alone.
    pub wake_mac: Option<String>,
    pub wake_broadcast: String,
    /// After the relay is on, before the magic packet.
    pub wake_delay: String,
    /// The device name of the run on the bus.
    pub device: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            relay: String::new(),
            battery: None,
            min_soc: 50.0,
            start_at: None,
            max_duration: "2h".into(),
            shutdown_grace: "60s".into(),
            wake_mac: None,
            wake_broadcast: "255.255.255.255:9".into(),
            wake_delay: "20s".into(),
            device: "backup".into(),
        }
    }
}

/// [`Settings`] checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub relay: String,
    pub battery: Option<String>,
    pub min_soc: f64,
    pub start_at: Option<(i8, i8)>,
    pub max_duration: Duration,
    pub shutdown_grace: Duration,
    pub wake: Option<(pvbus_plugin_wol::Mac, std::net::SocketAddr)>,
    pub wake_delay: Duration,
    pub device: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("plugins.config.{id}.{key}: {message}")]
pub struct SettingsError {
    pub id: String,
    pub key: &'static str,
    pub message: String,
}

/// A span: the contract's durations, or milliseconds (`500ms`).
fn span(s: &str) -> Result<Duration, String> {
    pvbus_plugin_sdk::parse_span(s).map_err(|e| e.to_string())
}

impl Settings {
    pub fn check(&self, id: &str) -> Result<Plan, SettingsError> {
        let err = |key: &'static str, message: String| SettingsError {
            id: id.to_string(),
            key,
            message,
        };
        let level = pvbus_plugin_sdk::env::is_topic_level;
        if !level(&self.relay) {
            return Err(err(
                "relay",
                format!("{:?} is not a relay id (it is required)", self.relay),
            ));
        }
        if let Some(b) = &self.battery
            && !level(b)
        {
            return Err(err("battery", format!("{b:?} is not a device name")));
        }
        if !(0.0..=100.0).contains(&self.min_soc) {
            return Err(err(
                "min_soc",
                format!("{} is not a percentage", self.min_soc),
            ));
        }
        let start_at =
            match &self.start_at {
                None => None,
                Some(t) => {
                    let parsed = t.split_once(':').and_then(|(h, m)| {
                        let (h, m) = (h.trim().parse::<i8>().ok()?, m.trim().parse::<i8>().ok()?);
                        ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
                    });
                    Some(parsed.ok_or_else(|| {
                        err("start_at", format!("{t:?} is not a time such as 01:30"))
                    })?)
                }
            };
        let positive = |key: &'static str, v: &str| match span(v) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(err(key, "must be longer than zero".into())),
            Err(e) => Err(err(key, e)),
        };
        let max_duration = positive("max_duration", &self.max_duration)?;
        let shutdown_grace = span(&self.shutdown_grace).map_err(|e| err("shutdown_grace", e))?;
        let wake_delay = span(&self.wake_delay).map_err(|e| err("wake_delay", e))?;
        let wake = match &self.wake_mac {
            None => None,
            Some(m) => {
                let mac = m
                    .parse()
                    .map_err(|e: pvbus_plugin_wol::BadMac| err("wake_mac", e.to_string()))?;
                let to = self.wake_broadcast.parse().map_err(|_| {
                    err(
                        "wake_broadcast",
                        format!("{:?} is not address:port", self.wake_broadcast),
                    )
                })?;
                Some((mac, to))
            }
        };
        if !level(&self.device) {
            return Err(err(
                "device",
                format!("{:?} is not a device name", self.device),
            ));
        }
        Ok(Plan {
            relay: self.relay.clone(),
            battery: self.battery.clone(),
            min_soc: self.min_soc,
            start_at,
            max_duration,
            shutdown_grace,
            wake,
            wake_delay,
            device: self.device.clone(),
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The machine reported a failure (its message).
    Failed(String),
    Timeout,
    SkippedLowBattery,
    SkippedNoBatteryData,
    /// A person forced the relay off: their choice wins.
    SkippedForcedOff,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Timeout => "timeout",
            Outcome::SkippedLowBattery => "skipped_low_battery",
            Outcome::SkippedNoBatteryData => "skipped_no_battery_data",
            Outcome::SkippedForcedOff => "skipped_forced_off",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Idle,
    Running {
        since: u64,
        /// The relay's mode before: restored at the end; `None`: it was forced on and
        /// is left alone.
        restore: Option<RelayMode>,
    },
    ShuttingDown {
        since: u64,
        restore: Option<RelayMode>,
        outcome: Outcome,
    },
}

/// What the plugin must do after a step.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// `(relay mode/set payload)`.
    pub relay_command: Option<String>,
    /// The new retained state of the device.
    pub state: Option<Value>,
    /// Arm the timers (seconds from now): the timeout, the grace, the wake-up.
    pub arm_timeout: bool,
    pub arm_grace: bool,
    pub arm_wake: bool,
    /// A command that could not be obeyed: the answer for `<base>/<id>/error`.
    pub refused: Option<String>,
}

/// The run, step by step. Times are unix seconds, passed in (tests drive a whole night).
#[derive(Debug, Clone)]
pub struct ColdBackup {
    pub plan: Plan,
    pub phase: Phase,
    pub soc: Option<f64>,
    pub relay_mode: Option<RelayMode>,
    last: Option<(Outcome, u64, u64)>,
}

impl ColdBackup {
    pub fn new(plan: Plan) -> ColdBackup {
        ColdBackup {
            plan,
            phase: Phase::Idle,
            soc: None,
            relay_mode: None,
            last: None,
        }
    }

    /// A device state seen on the bus: keeps the battery's state of charge.
    pub fn on_device_state(&mut self, device: &str, state: &Value) {
        if self.plan.battery.as_deref() == Some(device)
            && let Some(soc) = state.get("state_of_charge").and_then(Value::as_f64)
        {
            self.soc = Some(soc);
        }
    }

    /// Start a run (scheduled or `run/set`).
    pub fn start(&mut self, now: u64) -> Effects {
        if self.phase != Phase::Idle {
            return Effects {
                refused: Some("a backup run is already under way".into()),
                ..Effects::default()
            };
        }
        let skip = |this: &mut ColdBackup, outcome: Outcome| {
            this.last = Some((outcome, now, 0));
            Effects {
                state: Some(this.state(now)),
                ..Effects::default()
            }
        };
        if self.relay_mode == Some(RelayMode::ForcedOff) {
            return skip(self, Outcome::SkippedForcedOff);
        }
        if self.plan.battery.is_some() {
            match self.soc {
                None => return skip(self, Outcome::SkippedNoBatteryData),
                Some(soc) if soc < self.plan.min_soc => {
                    return skip(self, Outcome::SkippedLowBattery);
                }
                Some(_) => {}
            }
        }
        let restore = match self.relay_mode {
            Some(RelayMode::ForcedOn) => None,
            Some(RelayMode::AutoOn) => Some(RelayMode::AutoOn),
            _ => Some(RelayMode::AutoOff),
        };
        let relay_command = restore.map(|_| {
            let secs = (self.plan.max_duration + self.plan.shutdown_grace)
                .as_secs()
                .max(1)
                + 60;
            json!({"mode": "forced_on", "for": format!("{secs}s")}).to_string()
        });
        self.phase = Phase::Running {
            since: now,
            restore,
        };
        Effects {
            relay_command,
            state: Some(self.state(now)),
            arm_timeout: true,
            arm_wake: self.plan.wake.is_some(),
            ..Effects::default()
        }
    }

    /// The machine's report on `done/set`.
    pub fn done(&mut self, report: &str, now: u64) -> Effects {
        let Phase::Running { since, restore } = self.phase.clone() else {
            return Effects {
                refused: Some("no backup run is under way".into()),
                ..Effects::default()
            };
        };
        let r = report.trim();
        let outcome = if r.eq_ignore_ascii_case("ok") || r.eq_ignore_ascii_case("done") {
            Outcome::Ok
        } else {
            let why = r
                .strip_prefix("failed")
                .unwrap_or(r)
                .trim_start_matches([':', ' ']);
            Outcome::Failed(if why.is_empty() {
                "no reason given".into()
            } else {
                why.into()
            })
        };
        self.phase = Phase::ShuttingDown {
            since,
            restore,
            outcome,
        };
        Effects {
            state: Some(self.state(now)),
            arm_grace: true,
            ..Effects::default()
        }
    }

    /// The run's timeout passed.
    pub fn timed_out(&mut self, now: u64) -> Effects {
        match self.phase.clone() {
            Phase::Running { since, restore } => self.finish(since, restore, Outcome::Timeout, now),
            _ => Effects::default(),
        }
    }

    /// The grace after `done` passed: power off.
    pub fn grace_over(&mut self, now: u64) -> Effects {
        match self.phase.clone() {
            Phase::ShuttingDown {
                since,
                restore,
                outcome,
            } => self.finish(since, restore, outcome, now),
            _ => Effects::default(),
        }
    }

    fn finish(
        &mut self,
        since: u64,
        restore: Option<RelayMode>,
        outcome: Outcome,
        now: u64,
    ) -> Effects {
        self.phase = Phase::Idle;
        self.last = Some((outcome, since, now.saturating_sub(since)));
        Effects {
            relay_command: restore.map(|m| m.as_str().to_string()),
            state: Some(self.state(now)),
            ..Effects::default()
        }
    }

    /// The retained state of the device.
    pub fn state(&self, now: u64) -> Value {
        let phase = match &self.phase {
            Phase::Idle => "idle",
            Phase::Running { .. } => "running",
            Phase::ShuttingDown { .. } => "shutting_down",
        };
        let mut v = json!({
            "phase": phase,
            "running_for": match &self.phase {
                Phase::Running { since, .. } | Phase::ShuttingDown { since, .. } => Some(now.saturating_sub(*since)),
                Phase::Idle => None,
            },
        });
        if let Some((outcome, at, duration)) = &self.last {
            v["last_outcome"] = json!(outcome.name());
            v["last_run"] = json!(at);
            v["last_duration"] = json!(duration);
            v["last_message"] = match outcome {
                Outcome::Failed(why) => json!(why),
                _ => Value::Null,
            };
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Settings {
            relay: "nas".into(),
            battery: Some("bmv".into()),
            min_soc: 60.0,
            ..Settings::default()
        }
        .check("coldbackup")
        .unwrap()
    }

    #[test]
    fn a_night_step_by_step() {
        let mut c = ColdBackup::new(plan());
        c.relay_mode = Some(RelayMode::AutoOff);
        // No battery data yet: skipped, nothing switched.
        let e = c.start(1000);
        assert_eq!(e.relay_command, None);
        assert_eq!(e.state.unwrap()["last_outcome"], "skipped_no_battery_data");
        c.on_device_state("bmv", &json!({"state_of_charge": 55}));
        assert_eq!(
            c.start(1000).state.unwrap()["last_outcome"],
            "skipped_low_battery"
        );
        c.on_device_state("bmv", &json!({"state_of_charge": 80.5}));

        let e = c.start(1000);
        assert_eq!(
            e.relay_command.as_deref(),
            Some(r#"{"for":"7320s","mode":"forced_on"}"#)
        );
        assert!(e.arm_timeout && !e.arm_wake);
        assert!(c.start(1001).refused.is_some());
        let e = c.done("failed: disk full", 4000);
        assert!(e.arm_grace && e.relay_command.is_none());
        assert_eq!(e.state.unwrap()["phase"], "shutting_down");
        let e = c.grace_over(4060);
        assert_eq!(e.relay_command.as_deref(), Some("auto_off"));
        let s = e.state.unwrap();
        assert_eq!(s["last_outcome"], "failed");
        assert_eq!(s["last_message"], "disk full");
        assert_eq!(s["last_duration"], 3060);
        assert!(c.done("ok", 4100).refused.is_some());

        // Forced on by a person: run, but leave it on; forced off: never.
        c.relay_mode = Some(RelayMode::ForcedOn);
        assert_eq!(c.start(5000).relay_command, None);
        assert_eq!(c.timed_out(12200).state.unwrap()["last_outcome"], "timeout");
        c.relay_mode = Some(RelayMode::ForcedOff);
        assert_eq!(
            c.start(13000).state.unwrap()["last_outcome"],
            "skipped_forced_off"
        );
    }

    #[test]
    fn a_machine_with_wake_on_lan_is_woken_after_power_on() {
        let plan = Settings {
            relay: "nas".into(),
            wake_mac: Some("02:42:ac:11:00:07".into()),
            wake_broadcast: "192.168.1.255:9".into(),
            ..Settings::default()
        }
        .check("coldbackup")
        .unwrap();
        assert_eq!(
            plan.wake,
            Some((
                "02:42:ac:11:00:07".parse().unwrap(),
                "192.168.1.255:9".parse().unwrap()
            ))
        );
        assert_eq!(plan.wake_delay, Duration::from_secs(20));
        let mut c = ColdBackup::new(plan);
        c.relay_mode = Some(RelayMode::AutoOff);
        let e = c.start(1000);
        assert!(e.relay_command.is_some() && e.arm_wake && e.arm_timeout);
        // A skipped night wakes nothing.
        c.relay_mode = Some(RelayMode::ForcedOff);
        c.phase = Phase::Idle;
        assert!(!c.start(2000).arm_wake);
    }

    #[test]
    fn settings_errors_name_the_key() {
        let bad = |s: Settings, key: &str| {
            let e = s.check("cb").unwrap_err().to_string();
            assert!(e.starts_with(&format!("plugins.config.cb.{key}:")), "{e}");
        };
        bad(Settings::default(), "relay");
        let ok = Settings {
            relay: "nas".into(),
            ..Settings::default()
        };
        bad(
            Settings {
                start_at: Some("25:00".into()),
                ..ok.clone()
            },
            "start_at",
        );
        bad(
            Settings {
                max_duration: "0s".into(),
                ..ok.clone()
            },
            "max_duration",
        );
        bad(
            Settings {
                wake_mac: Some("zz".into()),
                ..ok.clone()
            },
            "wake_mac",
        );
        bad(
            Settings {
                wake_mac: Some("02:42:ac:11:00:07".into()),
                wake_broadcast: "255.255.255.255".into(),
                ..ok.clone()
            },
            "wake_broadcast",
        );
        bad(
            Settings {
                min_soc: 120.0,
                ..ok.clone()
            },
            "min_soc",
        );
        assert_eq!(
            Settings {
                start_at: Some("01:30".into()),
                ..ok
            }
            .check("cb")
            .unwrap()
            .start_at,
            Some((1, 30))
        );
    }
}
