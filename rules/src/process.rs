//! `pvbus rules`: the engine on the bus. Readings and relay states come in; `auto/set`
//! commands, statuses, decisions, the surplus estimate and the heartbeat go out. A pass
//! runs on every message and whenever the engine asked to be woken; nothing polls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pvbus_bus::{Bus, BusConfig, Event, Message, Shutdown};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{self, RuleSet};
use crate::engine::{Engine, PassReport};
use crate::history::{DayFigures, Mode};
use crate::simulate::{self, SimOptions};

/// The process name on the bus.
pub const PROCESS: &str = "rules";

/// Runs the rules: every relay's on/off conditions, evaluated when readings arrive,
/// with a reason for every decision and non-decision.
#[derive(Debug, clap::Args)]
pub struct Cli {
    /// The configuration file (its `[rules]`, `[site]` and `[bus]` sections).
    #[arg(long, short, env = "PVBUS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<RulesCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Check the rules: every error with its file, line and column, and close names for
    /// a value name that does not exist.
    Check,
    /// Replay a scenario (timed readings and events, see docs/rules.md) in virtual time
    /// and print every decision as a JSON line; exits with an error when the scenario's
    /// `expect` lines are not met.
    Simulate {
        /// The scenario file.
        #[arg(long, value_name = "FILE")]
        scenario: PathBuf,
        /// Also print every change of a relay's status as a JSON line.
        #[arg(long)]
        statuses: bool,
    },
}

/// Runs `pvbus rules` (or `check`, `simulate`).
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let path = cli
        .config
        .as_deref()
        .context("pvbus rules needs --config FILE (or PVBUS_CONFIG)")?;
    match cli.command {
        Some(RulesCommand::Check) => {
            let rules = match simulate::check(path) {
                Ok(r) => r,
                Err(errors) => {
                    eprintln!("{errors}");
                    anyhow::bail!(
                        "{} error(s) in the rules of {}",
                        errors.0.len(),
                        path.display()
                    );
                }
            };
            let names: Vec<&str> = rules.relays.iter().map(|r| r.name.as_str()).collect();
            println!(
                "{}: ok, {} relay rule(s): {}",
                path.display(),
                names.len(),
                names.join(", ")
            );
            Ok(())
        }
        Some(RulesCommand::Simulate { scenario, statuses }) => {
            let mut out = std::io::stdout().lock();
            let summary = simulate::simulate(path, &scenario, SimOptions { statuses }, &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for f in &summary.faults {
                eprintln!("rule error: {f}");
            }
            for f in &summary.failures {
                eprintln!("{f}");
            }
            if !summary.failures.is_empty() {
                anyhow::bail!(
                    "{} expectation(s) of {} not met",
                    summary.failures.len(),
                    scenario.display()
                );
            }
            // A rule that fails while evaluating is broken even if the scenario expected
            // nothing of it: on the real bus it would answer "unknown" and say so on
            // pvbus/rules/error.
            if !summary.faults.is_empty() {
                anyhow::bail!(
                    "{} rule error(s) while simulating {}",
                    summary.faults.len(),
                    scenario.display()
                );
            }
            Ok(())
        }
        None => {
            pvbus_bus::logging::init(PROCESS);
            let (rules, bus) = load(path)?;
            let (shutdown, _trigger) = Shutdown::on_signals();
            run(rules, bus, shutdown).await
        }
    }
}

/// Reads the rules and the `[bus]` section of one file.
pub fn load(path: &Path) -> anyhow::Result<(RuleSet, BusConfig)> {
    let rules = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = pvbus_bus::config::Settings::load(Some(path))?;
    Ok((rules, settings.bus()?))
}

/// Runs the rules on the bus until `shutdown` fires.
pub async fn run(
    rules: RuleSet,
    bus_config: BusConfig,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let heartbeat_every = Duration::from_secs(rules.heartbeat.clamp(1, 60) as u64);
    let (bus, mut inbox) = Bus::connect(&bus_config, PROCESS);
    let topics = bus.topics().clone();
    bus.subscribe(topics.device_state_filter());
    bus.subscribe(topics.site_state());
    bus.subscribe(topics.relay_state_filter());
    bus.subscribe(topics.relay_mode_filter());
    // The relay bridge's day figures give back "ran today" after a restart of the rules.
    bus.subscribe(topics.relay_stats("+"));
    // Statuses the broker keeps for relays that have no rule (any more) are cleared:
    // nothing would ever update them. Ours come back too, at most every QUIET seconds.
    bus.subscribe(topics.rule_status_filter());
    let ruled: std::collections::BTreeSet<String> =
        rules.relays.iter().map(|r| r.name.clone()).collect();
    info!(relays = rules.relays.len(), "rules loaded");
    let mut engine = Engine::new(rules);
    let mut last_surplus: Option<(f64, i64)> = None;
    let mut board = StatusBoard::default();
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wake_at: Option<i64> = None;
    loop {
        let sleep_for = wake_at.map(|w| Duration::from_millis(((w - now()) * 1000).max(0) as u64));
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = heartbeat.tick() => {
                bus.publish_volatile(topics.rules_heartbeat(), now().to_string());
                for (relay, status) in board.due(now()) {
                    bus.publish_retained(topics.rule_status(&relay), status);
                }
                continue;
            }
            _ = async { tokio::time::sleep(sleep_for.unwrap_or_default()).await }, if sleep_for.is_some() => {}
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Message(m)) => {
                    if let Some(relay) = topics.parse_rule_status(&m.topic) {
                        if !m.payload.is_empty() && !ruled.contains(relay) {
                            info!(relay, "no rule for this relay: its status cleared");
                            bus.clear_retained(m.topic.clone());
                        }
                        continue;
                    }
                    if !take(&mut engine, &bus, &m) {
                        continue;
                    }
                }
                Some(_) => continue,
            },
        }
        let t = now();
        let report = engine.pass(t);
        wake_at = report.next_wake;
        publish(&bus, &report, &mut last_surplus, &mut board, t);
    }
    info!("shutting down");
    bus.shutdown().await;
    Ok(())
}

fn now() -> i64 {
    Clock::Real.now()
}

/// Feeds one message to the engine; false when it changes nothing.
fn take(engine: &mut Engine, bus: &Bus, m: &Message) -> bool {
    let topics = bus.topics();
    let Ok(text) = m.text() else {
        warn!(topic = %m.topic, "payload is not UTF-8");
        return false;
    };
    if let Some((relay, leaf)) = topics.parse_relay_topic(&m.topic) {
        match leaf {
            "state" => match text.trim() {
                "ON" => engine.relay_state(relay, true, now()),
                "OFF" => engine.relay_state(relay, false, now()),
                other => {
                    warn!(topic = %m.topic, payload = other, "relay state is neither ON nor OFF");
                    return false;
                }
            },
            "mode" => match Mode::parse(text) {
                Some(mode) => engine.relay_mode(relay, mode),
                None => {
                    warn!(topic = %m.topic, payload = text, "unknown relay mode");
                    return false;
                }
            },
            "stats" => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
                    warn!(topic = %m.topic, "relay stats are not JSON");
                    return false;
                };
                let int = |k: &str| v.get(k).and_then(serde_json::Value::as_i64);
                let (Some(ts), Some(on_time_today)) = (int("ts"), int("on_time_today")) else {
                    warn!(topic = %m.topic, "relay stats without ts or on_time_today");
                    return false;
                };
                engine.relay_day_figures(
                    relay,
                    DayFigures {
                        ts,
                        on_time_today,
                        last_off: int("last_off"),
                        on_since: int("on_since"),
                    },
                );
            }
            _ => return false,
        }
        return true;
    }
    let device = if m.topic == topics.site_state() {
        "site"
    } else if let Some((_bridge, device)) = topics.parse_device_state(&m.topic) {
        device
    } else {
        return false;
    };
    if text.trim().is_empty() {
        return false; // a cleared retained state
    }
    let state: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            warn!(topic = %m.topic, error = %e, "device state is not JSON");
            return false;
        }
    };
    match engine.reading(device, &state, now()) {
        Ok(_) => true,
        Err(e) => {
            warn!(topic = %m.topic, error = %e, "device state ignored");
            false
        }
    }
}

/// Seconds between two publications of a status of the same kind, and of the surplus.
const QUIET: i64 = 30;

/// Status texts go out at once when their words change, but a text that differs from the
/// last one only in its numbers goes out at most every [`QUIET`] seconds: a value that
/// moves with every reading ("surplus 451 W < load ...") must not cost one retained
/// message per reading. Held-back texts go out with the next heartbeat after that.
#[derive(Default)]
struct StatusBoard {
    published: std::collections::BTreeMap<String, (String, i64)>,
    pending: std::collections::BTreeMap<String, String>,
    /// The last rule error reported per relay, and when: a broken rule fails at every
    /// pass (every reading), and must not flood the log and the error topic with it.
    faults: std::collections::BTreeMap<String, (String, i64)>,
}

/// A rule error already reported is reported again after this long (for whoever started
/// listening since), or at once when it changes.
const FAULT_REPEAT: i64 = 300;

/// The text with its numbers blanked: two statuses of the same kind differ only in numbers.
fn kind(status: &str) -> String {
    let mut out = String::with_capacity(status.len());
    let mut in_number = false;
    for c in status.chars() {
        let digit = c.is_ascii_digit() || (in_number && c == '.');
        if digit && !in_number {
            out.push('#');
        } else if !digit {
            out.push(c);
        }
        in_number = digit;
    }
    out
}

impl StatusBoard {
    /// Whether a rule error is news: new or different for this relay, or last said more
    /// than [`FAULT_REPEAT`] seconds ago.
    fn fault_is_news(&mut self, relay: &str, error: &str, t: i64) -> bool {
        let news = self
            .faults
            .get(relay)
            .is_none_or(|(last, at)| last != error || t - at >= FAULT_REPEAT);
        if news {
            self.faults
                .insert(relay.to_string(), (error.to_string(), t));
        }
        news
    }

    /// The text to publish now, if any.
    fn offer(&mut self, relay: &str, status: &str, t: i64) -> Option<String> {
        let quiet = self
            .published
            .get(relay)
            .is_some_and(|(last, at)| kind(last) == kind(status) && t - at < QUIET);
        if quiet {
            self.pending.insert(relay.to_string(), status.to_string());
            return None;
        }
        self.pending.remove(relay);
        self.published
            .insert(relay.to_string(), (status.to_string(), t));
        Some(status.to_string())
    }

    /// Held-back texts whose quiet time is over.
    fn due(&mut self, t: i64) -> Vec<(String, String)> {
        let ready: Vec<String> = self
            .pending
            .keys()
            .filter(|r| self.published.get(*r).is_none_or(|(_, at)| t - at >= QUIET))
            .cloned()
            .collect();
        ready
            .into_iter()
            .filter_map(|r| {
                let status = self.pending.remove(&r)?;
                self.published.insert(r.clone(), (status.clone(), t));
                Some((r, status))
            })
            .collect()
    }
}

fn publish(
    bus: &Bus,
    report: &PassReport,
    last_surplus: &mut Option<(f64, i64)>,
    board: &mut StatusBoard,
    t: i64,
) {
    let topics = bus.topics();
    for d in &report.decisions {
        info!(relay = %d.relay, command = d.command.payload(), reason = %d.reason, "decision");
        let command = pvbus_bus::contract::AutoSet {
            on: d.command == crate::engine::Command::On,
            reason: Some(d.reason.clone()),
        };
        bus.publish(topics.relay_auto_set(&d.relay), command.to_payload());
        bus.publish(
            topics.rule_decisions(),
            serde_json::to_vec(d).expect("decision serialises"),
        );
    }
    for (relay, status) in &report.statuses {
        if let Some(text) = board.offer(relay, status, t) {
            bus.publish_retained(topics.rule_status(relay), text);
        }
    }
    for f in &report.faults {
        let error = f.error.to_string();
        if board.fault_is_news(&f.relay, &error, t) {
            warn!(relay = %f.relay, error = %error, "rule error");
            bus.report_error(&topics.rule_status(&f.relay), &error);
        }
    }
    if let Some(s) = &report.surplus {
        // On a change of 20 W or more, else every QUIET seconds if it moved at all, and
        // at least every minute (the estimate carries its time).
        let due = last_surplus.is_none_or(|(w, at)| {
            (w - s.surplus).abs() >= 20.0 || (w != s.surplus && t - at >= QUIET) || t - at >= 60
        });
        if due {
            bus.publish_retained(
                topics.site_surplus(),
                serde_json::to_vec(s).expect("surplus serialises"),
            );
            *last_surplus = Some((s.surplus, t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_the_same_kind_are_held_back() {
        let mut b = StatusBoard::default();
        assert!(b.offer("pump", "on: soc 93 % < 95", 100).is_some());
        assert!(b.offer("pump", "on: soc 93.5 % < 95", 101).is_none());
        assert!(b.due(120).is_empty());
        assert_eq!(
            b.due(130),
            vec![("pump".to_string(), "on: soc 93.5 % < 95".to_string())]
        );
        assert!(b.due(200).is_empty());
        // Other words go out at once, and replace what was held back.
        assert!(b.offer("pump", "on: soc 94 % < 95", 140).is_none());
        assert_eq!(
            b.offer("pump", "on: soc missing", 141).as_deref(),
            Some("on: soc missing")
        );
        assert_eq!(
            b.offer("pump", "switched on: on: soc 95 % >= 95", 141)
                .as_deref(),
            Some("switched on: on: soc 95 % >= 95")
        );
        assert!(b.due(500).is_empty());
    }
}
