//! One executable of the plugins folder, kept running: started with the environment
//! contract, its output logged under its id, restarted with a growing delay when it
//! exits, reported when it crashes in a loop, floods its output or never shows `online`
//! on the bus, and stopped (SIGTERM, then SIGKILL, its whole process group) when its file
//! goes away or pvbus stops.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pvbus_bus::Bus;
use pvbus_bus::contract::OFFLINE;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Timing;
use crate::health::{Health, State};
use crate::logs::LineBudget;

/// Exits in a row (each after less than `healthy_after`) that make a crash loop.
const CRASH_LOOP: u32 = 3;

/// Which plugins are `online` on the bus, by id (from `<base>/<id>/status`).
pub type OnlineMap = BTreeMap<String, bool>;

/// One executable and the environment it gets.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    pub id: String,
    pub path: PathBuf,
    pub env: Vec<(String, String)>,
    /// Fired by the process when the plugin floods the bus: it is stopped.
    pub flooded: std::sync::Arc<tokio::sync::Notify>,
}

/// `exit code 3`, `killed by SIGKILL`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(n) => match Signal::try_from(n) {
            Ok(sig) => format!("killed by {sig}"),
            Err(_) => format!("killed by signal {n}"),
        },
        None => status.to_string(),
    }
}

/// Signals the process group that `pid` leads (plugins are started in their own group,
/// so a shell script's children go with it).
pub fn kill_group(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
}

/// SIGTERM to the group, then SIGKILL after `timeout`.
async fn terminate(child: &mut Child, pid: u32, timeout: Duration) -> Option<ExitStatus> {
    kill_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            // Whatever it left behind in its group goes too.
            kill_group(pid, Signal::SIGKILL);
            status.ok()
        }
        Err(_) => {
            warn!("did not stop within {timeout:?} of SIGTERM; killing it");
            kill_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

fn forward_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    id: String,
    name: &'static str,
    budget: LineBudget,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => budget.log(&id, name, &line),
                Ok(None) => break,
                // Not UTF-8: skip the line, keep reading.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
                Err(_) => break,
            }
        }
    })
}

/// Keeps `spec` running until `stop` fires.
pub async fn supervise(
    spec: ProgramSpec,
    timing: Timing,
    bus: Bus,
    mut online: watch::Receiver<OnlineMap>,
    mut stop: watch::Receiver<bool>,
) {
    let id = spec.id.as_str();
    let budget = LineBudget::new(timing.log_lines_per_sec);
    let mut health = Health::new("program", Some(spec.path.display().to_string()));
    let mut delay = timing.restart_delay;
    let mut failures: u32 = 0;
    loop {
        let mut cmd = Command::new(&spec.path);
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut cmd);
        let started = Instant::now();
        let outcome = match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                info!(plugin = id, pid, "started {}", spec.path.display());
                health.pid = Some(pid);
                health.state = State::Running;
                let seen_online = online.borrow_and_update().get(id) == Some(&true);
                health.online = Some(seen_online);
                health.publish(&bus, id);
                let readers = [
                    forward_lines(
                        child.stdout.take().expect("piped"),
                        id.into(),
                        "stdout",
                        budget.clone(),
                    ),
                    forward_lines(
                        child.stderr.take().expect("piped"),
                        id.into(),
                        "stderr",
                        budget.clone(),
                    ),
                ];
                let result = watch_running(
                    &mut child,
                    pid,
                    id,
                    &timing,
                    &bus,
                    &budget,
                    &spec.flooded,
                    &mut health,
                    &mut online,
                    &mut stop,
                    seen_online,
                )
                .await;
                for r in readers {
                    // A grandchild that kept the pipe open must not keep us waiting.
                    if tokio::time::timeout(Duration::from_millis(500), r)
                        .await
                        .is_err()
                    {
                        warn!(plugin = id, "output still open after exit; no longer read");
                    }
                }
                kill_group(pid, Signal::SIGKILL);
                health.pid = None;
                // It is dead whatever its last will says, and its will may take a
                // keep-alive period to fire.
                bus.publish_retained(bus.topics().process_status(id), OFFLINE);
                result
            }
            Err(e) => Err(format!("cannot start {}: {e}", spec.path.display())),
        };
        let exit = match outcome {
            Ok(Some(status)) => describe_exit(status),
            Ok(None) => {
                info!(plugin = id, "stopped");
                health.state = State::Stopped;
                health.online = Some(false);
                health.problem = None;
                health.publish(&bus, id);
                return;
            }
            Err(cannot) => cannot,
        };
        if started.elapsed() >= timing.healthy_after {
            failures = 0;
            delay = timing.restart_delay;
        }
        failures += 1;
        health.last_exit = Some(exit.clone());
        health.failures_in_a_row = failures;
        health.online = Some(false);
        health.state = State::Restarting;
        health.dropped_log_lines = budget.dropped();
        let problem = if failures >= CRASH_LOOP {
            format!(
                "crash loop: exited {failures} times in a row (last: {exit}); next start in {:.1} s",
                delay.as_secs_f64()
            )
        } else {
            format!(
                "exited ({exit}); next start in {:.1} s",
                delay.as_secs_f64()
            )
        };
        warn!(plugin = id, "{problem}");
        health.problem = Some(problem);
        health.publish(&bus, id);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => {
                health.state = State::Stopped;
                health.publish(&bus, id);
                return;
            }
        }
        delay = (delay * 2).min(timing.restart_delay_max);
        health.restarts += 1;
    }
}

/// While the child runs: reports it online or not, flooding or not. `Ok(Some)`: it
/// exited; `Ok(None)`: stopped on request.
#[allow(clippy::too_many_arguments)]
async fn watch_running(
    child: &mut Child,
    pid: u32,
    id: &str,
    timing: &Timing,
    bus: &Bus,
    budget: &LineBudget,
    flooded: &tokio::sync::Notify,
    health: &mut Health,
    online: &mut watch::Receiver<OnlineMap>,
    stop: &mut watch::Receiver<bool>,
    mut seen_online: bool,
) -> Result<Option<ExitStatus>, String> {
    let online_deadline = tokio::time::sleep(timing.online_timeout);
    tokio::pin!(online_deadline);
    let mut deadline_passed = false;
    let mut online_open = true;
    loop {
        tokio::select! {
            status = child.wait() => {
                return status.map(Some).map_err(|e| format!("cannot wait for it: {e}"));
            }
            _ = stopped(&mut *stop) => {
                terminate(child, pid, timing.stop_timeout).await;
                return Ok(None);
            }
            _ = &mut online_deadline, if !seen_online && !deadline_passed => {
                deadline_passed = true;
                let problem = format!(
                    "not online on the bus {:.0} s after starting: it should connect with PVBUS_PLUGIN_ID ({id}) as its name and a last will on {}",
                    timing.online_timeout.as_secs_f64(),
                    bus.topics().process_status(id),
                );
                warn!(plugin = id, "{problem}");
                health.problem = Some(problem);
                health.publish(bus, id);
            }
            changed = online.changed(), if online_open => {
                if changed.is_err() {
                    // The process is stopping; `stop` follows.
                    online_open = false;
                    continue;
                }
                let now = online.borrow_and_update().get(id) == Some(&true);
                if health.online != Some(now) {
                    health.online = Some(now);
                    if now {
                        seen_online = true;
                        if health.problem.as_deref().is_some_and(|p| p.starts_with("not online")) {
                            health.problem = None;
                        }
                        if failures_cleared(health) {
                            health.problem = None;
                        }
                    }
                    health.publish(bus, id);
                }
            }
            _ = flooded.notified() => {
                terminate(child, pid, timing.stop_timeout).await;
                return Err(format!(
                    "stopped for flooding the bus: more than {} messages per second on {}/{id}/...",
                    timing.max_messages_per_sec,
                    bus.topics().base(),
                ));
            }
            _ = budget.flooding() => {
                health.dropped_log_lines = budget.dropped();
                let problem = format!(
                    "flooding its output: more than {} lines per second, the rest dropped",
                    timing.log_lines_per_sec
                );
                if health.problem.as_deref() != Some(problem.as_str()) {
                    warn!(plugin = id, "{problem}");
                }
                health.problem = Some(problem);
                health.publish(bus, id);
            }
        }
    }
}

/// Whether the health's problem is an old exit report that a running, online plugin has
/// made obsolete.
fn failures_cleared(health: &Health) -> bool {
    health
        .problem
        .as_deref()
        .is_some_and(|p| p.starts_with("exited") || p.starts_with("crash loop"))
}

/// Completes when `stop` says stop (or its sender is gone). The watch's `Ref` is dropped
/// inside, so the future stays `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Makes the kernel kill the plugin when `pvbus plugins` dies, even by SIGKILL, so that
/// no orphan plugin runs on unsupervised (the same as the supervisor does for its
/// children). SIGKILL: with us gone, its output is a broken pipe.
///
/// The signal fires when the *thread* that forked exits: `pvbus` runs a current-thread
/// tokio runtime, so plugins are forked by the main thread, which lives as long as we do.
#[allow(unsafe_code)] // pre_exec is the only way to run prctl(2) in the child before exec.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe operations are allowed: two raw syscalls (prctl, getppid) and an
    // io::Error built from an errno, which does not allocate; no lock, no parent memory.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // We may have died between fork and prctl: then nobody would signal it.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}
