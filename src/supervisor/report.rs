//! The table of children the supervisor publishes, retained, on
//! `<base>/supervisor/processes`:
//!
//! ```json
//! {"ts":1764040000,"processes":{
//!   "broker":{"role":"broker","state":"running","pid":4242,"restarts":0,"failures_in_a_row":0,
//!             "since":1764039990,"retry_in_secs":null,"last_exit":null},
//!   "relays":{"role":"process","state":"crash_loop","pid":null,"restarts":4,
//!             "failures_in_a_row":5,"since":1764039999,"retry_in_secs":16.0,
//!             "last_exit":{"ts":1764039999,"code":2,"signal":null,"ran_secs":0.1}}}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::plan::Role;

/// Where a child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Not started yet (waiting for the broker or a simulator).
    Waiting,
    Running,
    /// Exited; restarts after `retry_in_secs`.
    Restarting,
    /// Exited again and again, soon after each start; still restarted, with a growing delay.
    CrashLoop,
    /// Asked to stop (SIGTERM), waiting for it to exit.
    Stopping,
    Stopped,
}

/// How a child last ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitReport {
    pub ts: u64,
    /// Exit code, when it exited by itself.
    pub code: Option<i32>,
    /// Signal name (`SIGKILL`), when a signal ended it.
    pub signal: Option<String>,
    /// How long it had run.
    pub ran_secs: f64,
}

/// One child in the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    /// `broker`, `simulator`, `process` or `program`.
    pub role: String,
    pub state: ChildState,
    pub pid: Option<u32>,
    /// Starts after the first one.
    pub restarts: u32,
    pub failures_in_a_row: u32,
    /// When `state` last changed (unix seconds).
    pub since: u64,
    /// Delay before the next start, while `restarting` or `crash_loop`.
    pub retry_in_secs: Option<f64>,
    pub last_exit: Option<ExitReport>,
}

impl ChildReport {
    pub fn new(role: &Role) -> ChildReport {
        let role = match role {
            Role::Broker => "broker",
            Role::Simulator { .. } => "simulator",
            Role::Process => "process",
            Role::Program => "program",
        };
        ChildReport {
            role: role.into(),
            state: ChildState::Waiting,
            pid: None,
            restarts: 0,
            failures_in_a_row: 0,
            since: pvbus_bus::contract::now_ts(),
            retry_in_secs: None,
            last_exit: None,
        }
    }
}

/// The payload of `<base>/supervisor/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessesReport {
    pub ts: u64,
    pub processes: BTreeMap<String, ChildReport>,
}

/// The live table: children update it, the reporter publishes each change.
#[derive(Clone)]
pub struct Table {
    tx: std::sync::Arc<watch::Sender<BTreeMap<String, ChildReport>>>,
}

impl Table {
    pub fn new(children: impl IntoIterator<Item = (String, ChildReport)>) -> Table {
        let (tx, _) = watch::channel(children.into_iter().collect());
        Table {
            tx: std::sync::Arc::new(tx),
        }
    }

    pub fn update(&self, name: &str, f: impl FnOnce(&mut ChildReport)) {
        self.tx.send_modify(|t| {
            if let Some(r) = t.get_mut(name) {
                let before = r.state;
                f(r);
                if r.state != before {
                    r.since = pvbus_bus::contract::now_ts();
                }
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, ChildReport>> {
        self.tx.subscribe()
    }

    pub fn snapshot(&self) -> ProcessesReport {
        ProcessesReport {
            ts: pvbus_bus::contract::now_ts(),
            processes: self.tx.borrow().clone(),
        }
    }
}
