//! The host of dynamic-library plugins: one bus connection (the plugins process's) for
//! every library, messages routed to the plugins whose filters match, ticks, and the
//! plugins' actions applied to the bus. A library refused at load, or a plugin that
//! panicked, is reported on its health topic and left alone; the others keep running.
//!
//! - [`ffi`]: loading and calling (the unsafe code of the host).

// Calling through a C vtable cannot be written without unsafe; see the module's comments.
#[allow(unsafe_code)]
pub mod ffi;

use std::time::Duration;

use pvbus_bus::contract::{ONLINE, now_ts};
use pvbus_bus::{Bus, Message};
use pvbus_plugin_abi::{Actions, Start};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::DylibConfig;
use crate::health::{Health, State};

pub use ffi::{Instance, Library, LoadError, Outcome};

struct Hosted {
    id: String,
    instance: Option<Instance>,
    /// Absolute topic filters it subscribed to.
    filters: Vec<String>,
    tick: Duration,
    next_tick: Instant,
    health: Health,
}

/// Every `[[plugins.dylib]]` of the configuration.
pub struct DylibHost {
    bus: Bus,
    plugins: Vec<Hosted>,
}

impl DylibHost {
    /// Loads and starts every library; a failure is reported and the others go on.
    pub fn start(configs: &[DylibConfig], bus: &Bus) -> DylibHost {
        let mut host = DylibHost {
            bus: bus.clone(),
            plugins: Vec::new(),
        };
        for cfg in configs {
            let mut hosted = Hosted {
                id: cfg.id.clone(),
                instance: None,
                filters: Vec::new(),
                tick: cfg.tick(),
                next_tick: Instant::now() + cfg.tick(),
                health: Health::new("dylib", Some(cfg.path.display().to_string())),
            };
            let library = match Library::load(&cfg.path) {
                Ok(lib) => lib,
                Err(e) => {
                    error!(plugin = %cfg.id, "{e}");
                    hosted.health.state = State::Failed;
                    hosted.health.problem = Some(e.to_string());
                    hosted.health.publish(bus, &cfg.id);
                    host.plugins.push(hosted);
                    continue;
                }
            };
            let start = Start {
                id: cfg.id.clone(),
                base: bus.topics().base().to_string(),
                config: cfg.config_json(),
            };
            let input = serde_json::to_vec(&start).expect("start parameters serialise");
            let (instance, outcome) = library.start(&input);
            hosted.instance = instance;
            host.plugins.push(hosted);
            let i = host.plugins.len() - 1;
            host.apply(i, outcome, "start");
            if host.plugins[i].instance.is_some() {
                info!(plugin = %cfg.id, "loaded {}", cfg.path.display());
                host.plugins[i].health.state = State::Running;
            } else if host.plugins[i].health.state != State::Failed {
                host.plugins[i].health.state = State::Failed;
            }
            let h = &mut host.plugins[i];
            h.health.publish(bus, &h.id);
        }
        host
    }

    /// The next plugin tick: when, and which plugin. `None` when no plugin runs.
    pub fn next_tick(&self) -> Option<(Instant, usize)> {
        self.plugins
            .iter()
            .enumerate()
            .filter(|(_, p)| p.instance.is_some())
            .min_by_key(|(_, p)| p.next_tick)
            .map(|(i, p)| (p.next_tick, i))
    }

    pub fn tick(&mut self, i: usize) {
        let p = &mut self.plugins[i];
        p.next_tick = Instant::now() + p.tick;
        let Some(instance) = p.instance.as_mut() else {
            return;
        };
        let outcome = instance.on_tick(now_ts());
        self.apply(i, outcome, "tick");
    }

    /// Hands `m` to every running plugin subscribed to its topic.
    pub fn on_message(&mut self, m: &Message) {
        let Some(relative) = self.bus.topics().relative(&m.topic).map(str::to_string) else {
            return;
        };
        for i in 0..self.plugins.len() {
            let p = &mut self.plugins[i];
            if !p.filters.iter().any(|f| filter_matches(f, &m.topic)) {
                continue;
            }
            let Some(instance) = p.instance.as_mut() else {
                continue;
            };
            let outcome = instance.on_message(&relative, &m.payload);
            self.apply(i, outcome, "message");
        }
    }

    /// Ids of the plugins that are running.
    pub fn running(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter(|p| p.instance.is_some())
            .map(|p| p.id.as_str())
            .collect()
    }

    fn apply(&mut self, i: usize, outcome: Outcome, call: &str) {
        let bus = self.bus.clone();
        let p = &mut self.plugins[i];
        p.health.runs += 1;
        match outcome {
            Outcome::Ok(actions) => {
                if p.health.failures_in_a_row > 0 {
                    p.health.failures_in_a_row = 0;
                    p.health.problem = None;
                    p.health.publish(&bus, &p.id);
                }
                let problems = apply_actions(&bus, &p.id, &mut p.filters, actions);
                for problem in problems {
                    warn!(plugin = %p.id, "{call}: {problem}");
                }
            }
            Outcome::Error(e) => {
                warn!(plugin = %p.id, "{call}: {e}");
                p.health.failures_in_a_row += 1;
                p.health.problem = Some(format!("{call}: {e}"));
                p.health.publish(&bus, &p.id);
            }
            Outcome::Panicked(message) => {
                // The instance may be half-updated: it is never called again. The ABI has
                // no destructor call, so its memory stays with the library (a few bytes,
                // once per panic).
                p.instance = None;
                let problem =
                    format!("panicked in {call}: {message}; stopped, the other plugins go on");
                error!(plugin = %p.id, "{problem}");
                p.health.state = State::Failed;
                p.health.problem = Some(problem);
                p.health.publish(&bus, &p.id);
            }
        }
    }
}

/// Applies a plugin's actions; returns what was refused.
fn apply_actions(bus: &Bus, id: &str, filters: &mut Vec<String>, actions: Actions) -> Vec<String> {
    let topics = bus.topics();
    let mut problems = Vec::new();
    for f in actions.subscribe {
        if !valid_relative(&f, true) {
            problems.push(format!(
                "subscription {f:?} refused: not a topic filter relative to the base prefix"
            ));
            continue;
        }
        let absolute = topics.absolute(&f);
        if !filters.contains(&absolute) {
            bus.subscribe(absolute.clone());
            filters.push(absolute);
        }
    }
    for p in actions.publish {
        if !valid_relative(&p.topic, false) {
            problems.push(format!(
                "publication on {:?} refused: not a topic relative to the base prefix",
                p.topic
            ));
            continue;
        }
        let topic = topics.absolute(&p.topic);
        if p.retain {
            bus.publish_retained(topic, p.payload);
        } else {
            bus.publish(topic, p.payload);
        }
    }
    for s in actions.states {
        if !crate::config::pvbus_plugin_abi_id_ok(&s.device) {
            problems.push(format!(
                "device name {:?} refused: use letters, digits, `_` or `-`",
                s.device
            ));
            continue;
        }
        let mut readings = s.readings;
        readings.insert("ts".into(), Value::from(now_ts()));
        bus.publish_retained(
            topics.device_state(id, &s.device),
            Value::Object(readings).to_string(),
        );
        bus.publish_retained(topics.device_availability(id, &s.device), ONLINE);
    }
    problems
}

/// A topic (or filter, with `+`/`#`) that stays under the base prefix.
fn valid_relative(t: &str, filter: bool) -> bool {
    if t.is_empty() || t.starts_with('/') || t.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = t.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        if l.contains(['+', '#']) {
            filter && (*l == "+" || (*l == "#" && i == levels.len() - 1))
        } else {
            !l.is_empty()
        }
    })
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            level => {
                if t.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_mqtt() {
        assert!(filter_matches("pvbus/site/state", "pvbus/site/state"));
        assert!(filter_matches("pvbus/+/state", "pvbus/site/state"));
        assert!(filter_matches("pvbus/#", "pvbus/a/b/c"));
        assert!(!filter_matches("pvbus/+/state", "pvbus/a/b/state"));
        assert!(!filter_matches("pvbus/site", "pvbus/site/state"));
        assert!(!filter_matches("pvbus/site/state/x", "pvbus/site/state"));
    }

    #[test]
    fn topics_stay_under_the_base() {
        assert!(valid_relative("relays/+/state", true));
        assert!(valid_relative("x/#", true));
        assert!(!valid_relative("relays/+/state", false));
        assert!(!valid_relative("/abs", false));
        assert!(!valid_relative("a//b", false));
        assert!(!valid_relative("#/a", true));
        assert!(!valid_relative("a/b+", true));
    }
}
