//! `pvbus run --config FILE`: the supervisor. It starts the broker and every process the
//! configuration enables, each as a child process of its own, restarts a crashed one with a
//! growing delay, forwards their logs, and stops them all in order on SIGTERM or Ctrl-C.
//!
//! Layout:
//! - [`config`]: the `[supervisor]` section and the list of pvbus processes it can start.
//! - [`plan`]: what to start, decided from the whole configuration before anything starts.
//! - `child`: one child's life: spawn (dies with us), log forwarding, restart, stop.
//! - `backoff`: the restart delay, doubling with crashes in a row.
//! - `logs`: child log lines re-emitted with the child's name.
//! - [`report`]: the table of children, published retained on
//!   `<base>/supervisor/processes`.
//! - this file: the order of things — broker first (once it accepts connections), then the
//!   simulators (once their serial links exist), then the processes and programs; on
//!   shutdown the reverse, the broker last.

mod backoff;
mod child;
pub mod config;
mod logs;
pub mod plan;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use pvbus_bus::config::Settings;
use pvbus_bus::{Bus, Shutdown};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use self::child::Context;
use self::plan::{Plan, Role};
use self::report::{ChildReport, Table};

/// How often readiness is probed while starting (the broker's port, a simulator's link).
/// Only during start-up, and bounded by `ready_timeout_secs`.
const READY_PROBE: Duration = Duration::from_millis(50);

/// Runs until SIGTERM or Ctrl-C; `Ok` after a clean stop. `available(path)` tells whether
/// this binary has the subcommand `path`.
pub async fn run(config: &Path, available: &dyn Fn(&[&str]) -> bool) -> Result<()> {
    pvbus_bus::logging::init("supervisor");
    let config = std::path::absolute(config)
        .with_context(|| format!("{}: not a usable path", config.display()))?;
    let settings = Settings::load(Some(&config))?;
    let exe = std::env::current_exe().context("cannot find the pvbus executable")?;
    let plan = Plan::build(&settings, &exe, &config, available)?;
    if let Some(external) = &plan.bus.external_broker {
        info!("using the broker at {external} ([bus] external_broker); no embedded broker");
    }
    for skipped in &plan.skipped {
        warn!(
            "section [{skipped}] is present but this build of pvbus has no `{skipped}` process; not started"
        );
    }
    let (shutdown, _trigger) = Shutdown::on_signals();
    Supervisor::new(plan, config).run(shutdown).await
}

/// Children start tier by tier and stop in the reverse order: the broker, then the
/// simulators (the hardware), then the processes and programs that use both.
const TIERS: usize = 3;

fn tier(role: &Role) -> usize {
    match role {
        Role::Broker => 0,
        Role::Simulator { .. } => 1,
        Role::Process | Role::Program => 2,
    }
}

struct Supervisor {
    plan: Plan,
    ctx: Arc<Context>,
    /// Per tier: the signal that stops its children, and their tasks.
    tiers: Vec<(watch::Sender<bool>, Vec<JoinHandle<()>>)>,
}

impl Supervisor {
    fn new(plan: Plan, config: PathBuf) -> Supervisor {
        let table = Table::new(
            plan.children
                .iter()
                .map(|c| (c.name.clone(), ChildReport::new(&c.role))),
        );
        let s = &plan.supervisor;
        let ctx = Arc::new(Context {
            table,
            config,
            json_logs: std::env::var("PVBUS_LOG_FORMAT")
                .is_ok_and(|f| f.eq_ignore_ascii_case("json")),
            restart_delay: s.restart_delay(),
            restart_delay_max: s.restart_delay_max(),
            healthy_after: s.healthy_after(),
            stop_timeout: s.stop_timeout(),
        });
        Supervisor {
            plan,
            ctx,
            tiers: (0..TIERS)
                .map(|_| (watch::channel(false).0, Vec::new()))
                .collect(),
        }
    }

    async fn run(mut self, mut shutdown: Shutdown) -> Result<()> {
        let children = self.plan.children.clone();
        let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
        info!("starting {}", names.join(", "));
        for c in &children {
            debug!(process = %c.name, "command: {}", child::command_line(c));
        }
        let ready_timeout = self.plan.supervisor.ready_timeout();

        // The broker first, and the others only once it accepts connections: otherwise
        // they would all start in reconnect backoff.
        if let Some(spec) = children.iter().find(|c| c.role == Role::Broker) {
            self.start(spec);
            let (host, port) = self.plan.bus.endpoint();
            tokio::select! {
                ready = wait_for_port(&host, port, ready_timeout) => if !ready {
                    warn!("the broker does not accept connections on {host}:{port} after {:.0} s; starting the others anyway", ready_timeout.as_secs_f64());
                },
                _ = shutdown.wait() => return self.stop(None).await,
            }
        }

        let (bus, _inbox) = Bus::connect(&self.plan.bus, "supervisor");
        let reporter = tokio::spawn(report_changes(bus.clone(), self.ctx.table.clone()));

        // The simulators, and the bridges only once the serial links they read exist.
        for spec in children.iter().filter(|c| tier(&c.role) == 1) {
            self.start(spec);
        }
        for spec in &children {
            if let Role::Simulator { link } = &spec.role {
                tokio::select! {
                    ready = wait_for_path(link, ready_timeout) => if !ready {
                        warn!(process = %spec.name, "{} did not appear after {:.0} s; starting the others anyway", link.display(), ready_timeout.as_secs_f64());
                    },
                    _ = shutdown.wait() => {
                        reporter.abort();
                        return self.stop(Some(bus)).await;
                    }
                }
            }
        }
        for spec in children.iter().filter(|c| tier(&c.role) == 2) {
            self.start(spec);
        }

        shutdown.wait().await;
        reporter.abort();
        self.stop(Some(bus)).await
    }

    fn start(&mut self, spec: &plan::ChildSpec) {
        let (stop, tasks) = &mut self.tiers[tier(&spec.role)];
        tasks.push(tokio::spawn(child::supervise(
            spec.clone(),
            self.ctx.clone(),
            stop.subscribe(),
        )));
    }

    /// Tier by tier from the last (within a tier all at once, each child with its own
    /// SIGKILL deadline); our own `offline` just before the broker goes.
    async fn stop(self, bus: Option<Bus>) -> Result<()> {
        info!("stopping");
        for (i, (stop, tasks)) in self.tiers.into_iter().enumerate().rev() {
            if i == 0
                && let Some(bus) = &bus
            {
                publish_report(bus, &self.ctx.table);
                bus.shutdown().await;
                // The broker has our last messages (it closed the connection after our
                // DISCONNECT), but may not have delivered them to every subscriber yet:
                // give it a moment before it goes, or they never see us `offline`.
                tokio::time::sleep(BROKER_DRAIN).await;
            }
            stop.send_replace(true);
            for task in tasks {
                let _ = task.await;
            }
        }
        info!("stopped");
        Ok(())
    }
}

/// Publishes the table after every change (changes that come in a burst are published
/// once: the watch channel keeps only the latest).
/// How long the broker keeps running after the last process said goodbye.
const BROKER_DRAIN: Duration = Duration::from_millis(300);

async fn report_changes(bus: Bus, table: Table) {
    let mut rx = table.subscribe();
    loop {
        publish_report(&bus, &table);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn publish_report(bus: &Bus, table: &Table) {
    let json = serde_json::to_vec(&table.snapshot()).expect("the report serialises");
    bus.publish_retained(bus.topics().supervisor_processes(), json);
}

async fn wait_for_port(host: &str, port: u16, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(READY_PROBE).await;
    }
    false
}

async fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::fs::try_exists(path).await.unwrap_or(false) {
            return true;
        }
        tokio::time::sleep(READY_PROBE).await;
    }
    false
}
