//! The relays' state machine: modes, overrides, the stale-data safety. Pure: it is
//! given the time with every input and says what changed; the process glue
//! writes the outputs, the disk and the bus. Tests drive it with virtual time.
//!
//! Two clocks: overrides end at a wall-clock time (people say "until 18:00"),
//! while the safety counts on the monotonic clock, so that a Pi without a
//! real-time clock that jumps its time at NTP sync neither delays nor hastens it.

use std::collections::BTreeMap;

use pvbus_bus::contract::{AutoSet, on_off};
use pvbus_bus::{ModeRequest, Reason, ReasonSource, RelayMode};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandError};
use crate::config::OnStale;

/// A moment on both clocks, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Unix time.
    pub wall_ms: u64,
    /// Since some fixed point (the process start).
    pub mono_ms: u64,
}

impl Moment {
    fn ts(self) -> u64 {
        self.wall_ms / 1000
    }
}

/// A mode forced until a time, after which the relay returns to `previous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub mode: RelayMode,
    /// Unix milliseconds.
    pub until_ms: u64,
    pub previous: RelayMode,
}

/// What the machine is told about a relay at start.
#[derive(Debug, Clone)]
pub struct RelaySetup {
    pub id: String,
    pub on_stale: OnStale,
}

/// A relay as it was saved: only what must outlive the process. Auto relays
/// start off whatever they were, so `auto_on` and `auto_off` are saved alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRelay {
    pub mode: SavedMode,
    #[serde(rename = "override", default, skip_serializing_if = "Option::is_none")]
    pub running_override: Option<Override>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedMode {
    ForcedOff,
    Auto,
    ForcedOn,
}

impl SavedMode {
    fn of(mode: RelayMode) -> SavedMode {
        match mode {
            RelayMode::ForcedOff => SavedMode::ForcedOff,
            RelayMode::AutoOff | RelayMode::AutoOn => SavedMode::Auto,
            RelayMode::ForcedOn => SavedMode::ForcedOn,
        }
    }
}

#[derive(Debug, Clone)]
struct Relay {
    mode: RelayMode,
    running_override: Option<Override>,
    reason: Reason,
    on_stale: OnStale,
    /// Last `auto/set` or heartbeat on the monotonic clock.
    last_rules_mono: u64,
    /// What the rules last asked for, even while a forced mode ignored it.
    rules_wish: Option<bool>,
}

/// One relay's change: what the glue has to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: String,
    pub from: RelayMode,
    pub to: RelayMode,
    pub reason: Reason,
    /// The override started, ended or was replaced.
    pub override_changed: bool,
    /// The saved view (forced modes, overrides) changed: write it before telling anyone.
    pub save: bool,
}

/// The answer to a command that changed nothing, and why (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    AlreadyInMode,
    /// Rules spoke to a relay in a forced mode.
    ForcedIgnoresRules,
}

#[derive(Debug, Clone)]
pub struct Machine {
    relays: BTreeMap<String, Relay>,
    stale_after_ms: u64,
    /// The site's time zone, for the times written in reasons.
    zone: jiff::tz::TimeZone,
}

impl Machine {
    /// Times in reasons are written in `zone` (the `[site] timezone`); the system's
    /// by default.
    pub fn in_zone(mut self, zone: jiff::tz::TimeZone) -> Machine {
        self.zone = zone;
        self
    }

    /// Starts the relays from what was saved. Forced modes and running overrides
    /// come back at once; auto relays start off until the rules ask again; an
    /// override that ended while the process was down ends now.
    pub fn boot(
        setup: &[RelaySetup],
        saved: &BTreeMap<String, SavedRelay>,
        stale_after_ms: u64,
        now: Moment,
    ) -> (Machine, Vec<Change>) {
        let mut relays = BTreeMap::new();
        let mut changes = Vec::new();
        for relay in setup {
            let saved = saved.get(&relay.id);
            let saved_mode = saved.map(|s| s.mode).unwrap_or(SavedMode::Auto);
            let mut mode = match saved_mode {
                SavedMode::ForcedOff => RelayMode::ForcedOff,
                SavedMode::Auto => RelayMode::AutoOff,
                SavedMode::ForcedOn => RelayMode::ForcedOn,
            };
            let mut running_override = saved.and_then(|s| s.running_override);
            let mut save = false;
            let text = match running_override {
                Some(o) if o.until_ms <= now.wall_ms => {
                    mode = boot_mode(o.previous);
                    running_override = None;
                    save = true;
                    "override ended while pvbus was stopped".to_string()
                }
                Some(o) => format!("restored {} override after restart", o.mode),
                None if mode.is_auto() => "auto relays start off until the rules ask again".into(),
                None => format!("restored {mode} after restart"),
            };
            let by = if save {
                ReasonSource::OverrideExpired
            } else {
                ReasonSource::Boot
            };
            let reason = Reason {
                ts: now.ts(),
                by,
                text,
            };
            changes.push(Change {
                id: relay.id.clone(),
                from: mode,
                to: mode,
                reason: reason.clone(),
                override_changed: save,
                save,
            });
            relays.insert(
                relay.id.clone(),
                Relay {
                    mode,
                    running_override,
                    reason,
                    on_stale: relay.on_stale,
                    last_rules_mono: now.mono_ms,
                    rules_wish: None,
                },
            );
        }
        (
            Machine {
                relays,
                stale_after_ms,
                zone: jiff::tz::TimeZone::system(),
            },
            changes,
        )
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.relays.keys().map(String::as_str)
    }

    pub fn mode(&self, id: &str) -> Option<RelayMode> {
        self.relays.get(id).map(|r| r.mode)
    }

    pub fn reason(&self, id: &str) -> Option<&Reason> {
        self.relays.get(id).map(|r| &r.reason)
    }

    pub fn running_override(&self, id: &str) -> Option<Override> {
        self.relays.get(id).and_then(|r| r.running_override)
    }

    /// What must be on disk for every relay.
    pub fn saved(&self) -> BTreeMap<String, SavedRelay> {
        self.relays
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    SavedRelay {
                        mode: SavedMode::of(r.mode),
                        running_override: r.running_override,
                    },
                )
            })
            .collect()
    }

    /// Applies a command to relay `id`.
    pub fn apply(
        &mut self,
        id: &str,
        command: Command,
        now: Moment,
    ) -> Result<Result<Change, Unchanged>, CommandError> {
        let relay = self
            .relays
            .get_mut(id)
            .ok_or_else(|| CommandError::UnknownRelay(id.to_string()))?;
        let (to, new_override, by, text) = match command {
            Command::Auto(AutoSet { on, reason }) => {
                relay.last_rules_mono = now.mono_ms;
                relay.rules_wish = Some(on);
                if !relay.mode.is_auto() {
                    return Ok(Err(Unchanged::ForcedIgnoresRules));
                }
                let to = if on {
                    RelayMode::AutoOn
                } else {
                    RelayMode::AutoOff
                };
                let text = match reason {
                    Some(why) => format!("rules asked {}: {why}", on_off(on)),
                    None => format!("rules asked {}", on_off(on)),
                };
                (to, relay.running_override, ReasonSource::Rules, text)
            }
            Command::Mode(request) => {
                let to = request.target();
                let text = match request {
                    ModeRequest::Auto => "handed back to the rules".to_string(),
                    _ => format!("set to {to}"),
                };
                // An explicit mode ends any running override.
                (to, None, ReasonSource::User, text)
            }
            Command::Override { mode, until_ms } => {
                let previous = relay
                    .running_override
                    .map(|o| o.previous)
                    .unwrap_or(relay.mode);
                let text = format!("{mode} until {}", format_ts(until_ms / 1000, &self.zone));
                let o = Override {
                    mode,
                    until_ms,
                    previous,
                };
                (mode, Some(o), ReasonSource::User, text)
            }
        };
        if to == relay.mode && new_override == relay.running_override {
            return Ok(Err(Unchanged::AlreadyInMode));
        }
        Ok(Ok(Self::switch(id, relay, to, new_override, by, text, now)))
    }

    /// The rules are alive: every relay's safety timer starts again.
    pub fn heartbeat(&mut self, now: Moment) {
        for relay in self.relays.values_mut() {
            relay.last_rules_mono = now.mono_ms;
        }
    }

    /// Ends overrides whose time has come and applies the stale-data safety.
    pub fn tick(&mut self, now: Moment) -> Vec<Change> {
        let stale_after_ms = self.stale_after_ms;
        let mut changes = Vec::new();
        for (id, relay) in &mut self.relays {
            if let Some(o) = relay.running_override
                && o.until_ms <= now.wall_ms
            {
                let rules_fresh = now.mono_ms < relay.last_rules_mono + stale_after_ms;
                let to = match (o.previous.is_auto(), relay.rules_wish) {
                    // Back to auto: follow the rules' last word if they are still alive.
                    (true, Some(true)) if rules_fresh => RelayMode::AutoOn,
                    (true, _) => RelayMode::AutoOff,
                    (false, _) => o.previous,
                };
                let text = format!("{} override ended, back to {to}", o.mode);
                changes.push(Self::switch(
                    id,
                    relay,
                    to,
                    None,
                    ReasonSource::OverrideExpired,
                    text,
                    now,
                ));
            }
            if relay.mode == RelayMode::AutoOn
                && relay.on_stale == OnStale::Off
                && now.mono_ms >= relay.last_rules_mono + stale_after_ms
            {
                let text = format!(
                    "no rules heartbeat or auto/set for {} s",
                    (now.mono_ms - relay.last_rules_mono) / 1000
                );
                changes.push(Self::switch(
                    id,
                    relay,
                    RelayMode::AutoOff,
                    relay.running_override,
                    ReasonSource::Safety,
                    text,
                    now,
                ));
            }
        }
        changes
    }

    /// When `tick` has something to do next: (wall ms, monotonic ms).
    pub fn next_deadline(&self) -> (Option<u64>, Option<u64>) {
        let wall = self
            .relays
            .values()
            .filter_map(|r| r.running_override.map(|o| o.until_ms))
            .min();
        let mono = self
            .relays
            .values()
            .filter(|r| r.mode == RelayMode::AutoOn && r.on_stale == OnStale::Off)
            .map(|r| r.last_rules_mono + self.stale_after_ms)
            .min();
        (wall, mono)
    }

    fn switch(
        id: &str,
        relay: &mut Relay,
        to: RelayMode,
        new_override: Option<Override>,
        by: ReasonSource,
        text: String,
        now: Moment,
    ) -> Change {
        let from = relay.mode;
        let override_changed = new_override != relay.running_override;
        let save = override_changed || SavedMode::of(from) != SavedMode::of(to);
        relay.mode = to;
        relay.running_override = new_override;
        relay.reason = Reason {
            ts: now.ts(),
            by,
            text,
        };
        Change {
            id: id.to_string(),
            from,
            to,
            reason: relay.reason.clone(),
            override_changed,
            save,
        }
    }
}

fn boot_mode(mode: RelayMode) -> RelayMode {
    if mode.is_auto() {
        RelayMode::AutoOff
    } else {
        mode
    }
}

/// Local time for reason texts.
pub fn format_ts(ts: u64, zone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_second(ts as i64) {
        Ok(t) => t
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => ts.to_string(),
    }
}

#[cfg(test)]
mod tests;
