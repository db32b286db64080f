//! The process: glues the state machine to the GPIO lines, the disk and the bus.
//!
//! Order of every change, so that what others see is always true:
//! 1. a command that changes the saved view (a forced mode, an override) is first
//!    written and fsynced; if that fails (disk full) the command is refused with an
//!    error and nothing changes;
//! 2. the output is written and read back (first for the rules' auto changes, which are
//!    not saved: latency);
//! 3. the saved view of timed changes (an override's end), then the history;
//! 4. only then `override`, `reason`, `stats`, `state` and, last, `mode` are
//!    published: a `mode` that anyone saw is already on disk.
//!
//! One task, one `select!`: commands, the next deadline (an override's end, the
//! stale-data safety, midnight for the statistics) and shutdown. The deadline is
//! a sleep to the exact instant, not a poll, and it runs whether the broker is
//! up or not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::tz::TimeZone;
use pvbus_bus::contract::on_off;
use pvbus_bus::topics::RelayCommand;
use pvbus_bus::{Bus, BusConfig, Event, Message, Shutdown};
use pvbus_hardware::{Gpio, InitialLevel, Level, OutputLine};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::command::{CommandError, parse_auto_set, parse_mode_set};
use crate::config::{RelayConfig, RelaysConfig};
use crate::machine::{Change, Machine, Moment, RelaySetup, format_ts};
use crate::stats::{DayStats, next_midnight_ms};
use crate::store::{HistoryEvent, Store, read_history};

/// The name of this process on the bus.
pub const PROCESS: &str = "relays";

/// Both clocks, read together.
struct Clock {
    started: Instant,
}

impl Clock {
    fn now(&self) -> Moment {
        Moment {
            wall_ms: now_wall_ms(),
            mono_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

fn now_wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One relay's output line.
struct Output {
    line: OutputLine,
    on_level: Level,
    /// What the line really is, as last read back.
    on: bool,
}

impl Output {
    fn set(&mut self, on: bool) -> Result<(), pvbus_hardware::HardwareError> {
        let level = if on { self.on_level } else { !self.on_level };
        self.line.write(level)?;
        self.on = self.line.read_back()? == self.on_level;
        Ok(())
    }
}

#[derive(Serialize)]
struct OverridePayload {
    mode: pvbus_bus::RelayMode,
    /// Unix seconds.
    until: u64,
    /// The same, in local time, for people.
    until_local: String,
    /// The mode the relay returns to.
    then: pvbus_bus::RelayMode,
}

struct Relays {
    config: RelaysConfig,
    machine: Machine,
    outputs: BTreeMap<String, Output>,
    stats: BTreeMap<String, DayStats>,
    store: Store,
    bus: Bus,
    clock: Clock,
    tz: TimeZone,
}

/// Runs the relay bridge until `shutdown` fires. The GPIO backend is given so
/// that tests and the benchmark can hand in a simulated board.
pub async fn run(
    config: RelaysConfig,
    bus_config: BusConfig,
    gpio: Box<dyn Gpio>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let clock = Clock {
        started: Instant::now(),
    };
    let tz = config.zone.clone().unwrap_or_else(TimeZone::system);
    let (store, loaded) = Store::open(&config.state_dir, config.history_max_bytes)
        .context("opening the relay state directory")?;
    let history = read_history(&config.state_dir).context("reading the relay history")?;
    for skipped in &history.skipped {
        warn!(%skipped, "history line skipped");
    }

    // Open every output at the level it is at now: opening itself never
    // changes a relay. The boot decisions below then switch what must change.
    let mut outputs = BTreeMap::new();
    for relay in &config.relay {
        let on_level = if relay.active_low {
            Level::Low
        } else {
            Level::High
        };
        let mut line = gpio
            .output(
                relay.pin,
                InitialLevel::Keep {
                    if_unknown: !on_level,
                },
            )
            .with_context(|| format!("relay {}: opening GPIO {}", relay.id, relay.pin))?;
        let on = line.read_back()? == on_level;
        outputs.insert(relay.id.clone(), Output { line, on_level, on });
    }

    let now = clock.now();
    let setup: Vec<RelaySetup> = config
        .relay
        .iter()
        .map(|r| RelaySetup {
            id: r.id.clone(),
            on_stale: r.on_stale,
        })
        .collect();
    let stale_after_ms = config.stale_after.as_millis() as u64;
    let (machine, boot) = Machine::boot(&setup, &loaded.saved, stale_after_ms, now);
    let machine = machine.in_zone(tz.clone());
    let stats = config
        .relay
        .iter()
        .map(|r| {
            let events = history.events.iter().filter(|e| e.relay == r.id);
            let mut stats = DayStats::from_history(events, now.wall_ms, &tz);
            stats.align(outputs[&r.id].on, now.wall_ms);
            (r.id.clone(), stats)
        })
        .collect();

    let (bus, mut inbox) = Bus::connect(&bus_config, PROCESS);
    let mut relays = Relays {
        config,
        machine,
        outputs,
        stats,
        store,
        bus,
        clock,
        tz,
    };
    // Told on the error topic once connected: a report sent now would be lost.
    let mut unreadable_state = loaded.problem.clone();
    if let Some(problem) = &unreadable_state {
        error!(%problem, "saved relay state unreadable");
    }
    let boot_saves = boot.iter().any(|c| c.save);
    for change in boot {
        relays.carry_out(change, true, false);
    }
    if !boot_saves && loaded.saved.is_empty() {
        // A first start leaves a state file that says what it decided.
        relays.save();
    }
    for filter in relays.bus.topics().relay_command_filters() {
        relays.bus.subscribe(filter);
    }
    // The retained modes tell which relays the broker still shows: those no longer in
    // the configuration are cleared (see `forget_unconfigured`). Our own modes come back
    // too, but only when they change.
    relays
        .bus
        .subscribe(relays.bus.topics().relay_mode_filter());
    relays.bus.subscribe(relays.bus.topics().rules_heartbeat());
    info!(
        relays = relays.config.relay.len(),
        state_dir = %relays.config.state_dir.display(),
        "relays ready"
    );

    loop {
        let sleep = relays.until_next_deadline();
        tokio::select! {
            () = shutdown.wait() => break,
            event = inbox.recv() => match event {
                Some(Event::Message(message)) => relays.handle(message),
                Some(Event::Connected) => {
                    debug!("bus connected; state is being republished");
                    if let Some(problem) = unreadable_state.take() {
                        let file = relays.config.state_dir.join("state.json");
                        relays.bus.report_error(&file.display().to_string(), problem);
                    }
                }
                Some(Event::Disconnected) => warn!("bus lost; safety and overrides keep running"),
                None => break,
            },
            () = tokio::time::sleep(sleep) => relays.on_deadline(),
        }
    }
    // Outputs stay as they are (no reset on drop): a restart does not click
    // the relays, and forced modes are on disk for the next start.
    info!("relays stopping; outputs left as they are");
    relays.bus.shutdown().await;
    Ok(())
}

impl Relays {
    fn relay_config(&self, id: &str) -> Option<&RelayConfig> {
        self.config.relay.iter().find(|r| r.id == id)
    }

    fn until_next_deadline(&mut self) -> Duration {
        let now = self.clock.now();
        let (wall, mono) = self.machine.next_deadline();
        let midnight = next_midnight_ms(now.wall_ms, &self.tz);
        let wall = wall.map_or(midnight, |w| w.min(midnight));
        let mut wait = wall.saturating_sub(now.wall_ms);
        if let Some(mono) = mono {
            wait = wait.min(mono.saturating_sub(now.mono_ms));
        }
        Duration::from_millis(wait)
    }

    fn on_deadline(&mut self) {
        let now = self.clock.now();
        for change in self.machine.tick(now) {
            info!(relay = %change.id, from = %change.from, to = %change.to, reason = %change.reason.text, "timer");
            self.carry_out(change, false, false);
        }
        // Midnight: a new day of statistics.
        let ids: Vec<String> = self.stats.keys().cloned().collect();
        for id in ids {
            let before = self.stats[&id].payload(now.wall_ms).day;
            self.stats
                .get_mut(&id)
                .expect("stats")
                .roll(now.wall_ms, &self.tz);
            if self.stats[&id].payload(now.wall_ms).day != before {
                self.publish_stats(&id, now.wall_ms);
            }
        }
    }

    fn handle(&mut self, message: Message) {
        let topics = self.bus.topics().clone();
        if message.topic == topics.rules_heartbeat() {
            if !message.retain {
                self.machine.heartbeat(self.clock.now());
            }
            return;
        }
        if let Some((id, "mode")) = topics.parse_relay_topic(&message.topic) {
            if !message.payload.is_empty() && self.relay_config(id).is_none() {
                self.forget_unconfigured(id);
            }
            return;
        }
        let Some((id, kind)) = topics.parse_relay_command(&message.topic) else {
            return;
        };
        if message.retain {
            // A retained command would replay at every reconnect, switching the
            // relay back to some old wish: never obeyed.
            warn!(topic = %message.topic, "retained command ignored; commands must not be retained");
            return;
        }
        let now = self.clock.now();
        let result = if self.relay_config(id).is_none() {
            Err(CommandError::UnknownRelay(id.to_string()))
        } else {
            match kind {
                RelayCommand::ModeSet => parse_mode_set(&message.payload, now.wall_ms, &self.tz),
                RelayCommand::AutoSet => parse_auto_set(&message.payload),
            }
            .and_then(|command| {
                // Kept to undo a change that must be saved but cannot be (disk full):
                // a mode change is acknowledged only once it is on disk.
                let before = self.machine.clone();
                self.machine
                    .apply(id, command, now)
                    .map(|outcome| (outcome, before))
            })
        };
        match result {
            Err(error) => self.bus.report_error(&message.topic, error),
            Ok((Err(unchanged), _)) => {
                debug!(relay = id, ?unchanged, "command changes nothing")
            }
            Ok((Ok(change), before)) => {
                if change.save
                    && let Err(e) = self.store.save(&self.machine.saved())
                {
                    error!(relay = %change.id, error = %e, "relay state NOT saved: command refused");
                    self.machine = before;
                    self.bus.report_error(
                        &message.topic,
                        format!("not applied: the relay state cannot be saved ({e})"),
                    );
                    return;
                }
                info!(relay = %change.id, from = %change.from, to = %change.to, by = ?change.reason.by, "mode");
                self.carry_out(change, false, true);
            }
        }
    }

    /// A relay the broker still shows but the configuration no longer has (removed, or
    /// renamed): its retained topics are cleared, so that nothing (Home Assistant, the
    /// panel, `pvbus status`) shows a relay that no longer exists. This process is the one
    /// owner of `<base>/relays/<id>/…`, so only it can tell that a relay is gone.
    fn forget_unconfigured(&self, id: &str) {
        info!(
            relay = id,
            "not in the configuration: its retained topics cleared"
        );
        let topics = self.bus.topics();
        for topic in [
            topics.relay_override(id),
            topics.relay_reason(id),
            topics.relay_stats(id),
            topics.relay_state(id),
            // Last: the mode is how others learn that a relay exists.
            topics.relay_mode(id),
        ] {
            self.bus.clear_retained(topic);
        }
    }

    fn save(&mut self) {
        if let Err(e) = self.store.save(&self.machine.saved()) {
            error!(error = %e, "relay state NOT saved");
            self.bus
                .report_error("state.json", format!("relay state not saved: {e}"));
        }
    }

    /// Output, disk, bus: in that order (see the module comment). `saved` when the
    /// caller has already written the saved view (a command that needed it).
    fn carry_out(&mut self, change: Change, boot: bool, saved: bool) {
        let now_ms = now_wall_ms();
        let want_on = change.to.wants_on();
        let output = self
            .outputs
            .get_mut(&change.id)
            .expect("every relay has an output");
        let was_on = output.on;
        if output.on != want_on
            && let Err(e) = output.set(want_on)
        {
            error!(relay = %change.id, error = %e, "output write failed");
            self.bus
                .report_error(&self.bus.topics().relay_state(&change.id), e);
        }
        let on = output.on;
        if change.save && !saved {
            self.save();
        }
        if change.from != change.to || was_on != on {
            let event = HistoryEvent {
                ts: now_ms as f64 / 1000.0,
                relay: change.id.clone(),
                prev_mode: change.from,
                mode: change.to,
                prev_on: was_on,
                on,
                by: change.reason.by,
                text: change.reason.text.clone(),
            };
            if let Err(e) = self.store.record(&event) {
                error!(error = %e, "history event NOT recorded");
            }
        }
        if was_on != on {
            self.stats
                .get_mut(&change.id)
                .expect("stats")
                .switch(on, now_ms, &self.tz);
        }
        self.publish_relay(&change.id, now_ms, boot || change.override_changed);
    }

    fn publish_stats(&self, id: &str, now_ms: u64) {
        let payload = self.stats[id].payload(now_ms);
        self.bus.publish_retained(
            self.bus.topics().relay_stats(id),
            serde_json::to_vec(&payload).expect("stats serialise"),
        );
    }

    /// Publishes a relay's retained topics; `with_override` when the override
    /// may have changed (an empty retained payload clears an ended one).
    fn publish_relay(&self, id: &str, now_ms: u64, with_override: bool) {
        let topics = self.bus.topics();
        match self.machine.running_override(id) {
            _ if !with_override => {}
            Some(o) => {
                let payload = OverridePayload {
                    mode: o.mode,
                    until: o.until_ms / 1000,
                    until_local: format_ts(o.until_ms / 1000, &self.tz),
                    then: o.previous,
                };
                self.bus.publish_retained(
                    topics.relay_override(id),
                    serde_json::to_vec(&payload).expect("override serialises"),
                );
            }
            None => self.bus.clear_retained(topics.relay_override(id)),
        }
        if let Some(reason) = self.machine.reason(id) {
            self.bus.publish_retained(
                topics.relay_reason(id),
                serde_json::to_vec(reason).expect("reason serialises"),
            );
        }
        self.publish_stats(id, now_ms);
        self.bus
            .publish_retained(topics.relay_state(id), on_off(self.outputs[id].on));
        if let Some(mode) = self.machine.mode(id) {
            self.bus
                .publish_retained(topics.relay_mode(id), mode.as_str());
        }
    }
}
