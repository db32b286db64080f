//! What `pvbus plugins` says about each plugin, retained on
//! `<base>/plugins/<id>/health` (JSON), so that `pvbus status`, Home Assistant or a
//! person with mosquitto_sub sees a plugin that crashes, floods or never connects.

use pvbus_bus::Bus;
use pvbus_bus::contract::now_ts;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Running,
    /// Exited; started again after a delay.
    Restarting,
    /// Stopped for good (its file was removed, or pvbus is stopping).
    Stopped,
    /// Will not run: a library refused at load, a plugin that panicked, a file that
    /// cannot be executed.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub ts: u64,
    /// `program` (an executable of the folder), `exec` or `dylib`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Starts after the first.
    pub restarts: u32,
    /// Runs (exec) or calls (dylib) so far.
    #[serde(skip_serializing_if = "is_zero")]
    pub runs: u64,
    #[serde(skip_serializing_if = "is_zero32")]
    pub failures_in_a_row: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Whether its `<base>/<id>/status` is `online` (programs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_log_lines: u64,
    /// What is wrong, in words; absent when nothing is.
    pub problem: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

impl Health {
    pub fn new(kind: &'static str, path: Option<String>) -> Health {
        Health {
            ts: now_ts(),
            kind,
            path,
            state: State::Starting,
            pid: None,
            restarts: 0,
            runs: 0,
            failures_in_a_row: 0,
            last_exit: None,
            online: None,
            dropped_log_lines: 0,
            problem: None,
        }
    }

    pub fn publish(&mut self, bus: &Bus, id: &str) {
        self.ts = now_ts();
        let json = serde_json::to_string(self).expect("health serialises");
        bus.publish_retained(bus.topics().plugin_health(id), json);
    }
}

/// Removes a plugin's health (its file is gone: it is no longer a plugin).
pub fn clear(bus: &Bus, id: &str) {
    bus.clear_retained(bus.topics().plugin_health(id));
}
