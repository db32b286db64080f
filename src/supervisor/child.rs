//! One child's life under the supervisor: start it (as its own process, in its own process
//! group, bound to die with the supervisor), forward its logs, wait for it to exit, restart
//! it after a growing delay, and stop it with SIGTERM then SIGKILL when asked.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::backoff::RestartBackoff;
use super::logs::{self, Stream};
use super::plan::ChildSpec;
use super::report::{ChildState, ExitReport, Table};

/// A log line longer than this is forwarded in pieces: a child printing without newlines
/// must not grow the supervisor's memory.
const MAX_LINE: usize = 16 * 1024;

/// What every child task shares.
pub struct Context {
    pub table: Table,
    /// The configuration file, absolute, for `PVBUS_CONFIG`.
    pub config: PathBuf,
    pub json_logs: bool,
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    pub healthy_after: Duration,
    pub stop_timeout: Duration,
}

/// Runs `spec` until `stop` turns true, restarting it whenever it exits.
pub async fn supervise(spec: ChildSpec, ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let name = spec.name.as_str();
    let mut backoff =
        RestartBackoff::new(ctx.restart_delay, ctx.restart_delay_max, ctx.healthy_after);
    let mut starts: u32 = 0;
    while !*stop.borrow() {
        let started = Instant::now();
        let exit = match spawn(&spec, &ctx) {
            Ok((mut child, log_tasks)) => {
                let pid = child.id();
                starts += 1;
                info!(process = name, pid, "started");
                ctx.table.update(name, |r| {
                    r.state = ChildState::Running;
                    r.pid = pid;
                    r.restarts = starts - 1;
                    r.retry_in_secs = None;
                });
                tokio::select! {
                    status = child.wait() => {
                        drain(log_tasks).await;
                        status
                    }
                    _ = stopped(&mut stop) => {
                        ctx.table.update(name, |r| r.state = ChildState::Stopping);
                        let status = terminate(name, &mut child, ctx.stop_timeout).await;
                        drain(log_tasks).await;
                        ctx.table.update(name, |r| {
                            r.state = ChildState::Stopped;
                            r.pid = None;
                            r.last_exit = status.ok().map(|s| exit_report(s, started.elapsed()));
                        });
                        return;
                    }
                }
            }
            Err(e) => Err(e),
        };
        let ran = started.elapsed();
        let delay = backoff.after_exit(ran);
        let report = match &exit {
            Ok(status) => {
                warn!(
                    process = name,
                    "exited ({}) after {:.1} s; restarting in {:.1} s",
                    describe(*status),
                    ran.as_secs_f64(),
                    delay.as_secs_f64()
                );
                Some(exit_report(*status, ran))
            }
            Err(e) => {
                error!(
                    process = name,
                    "cannot start or watch {:?}: {e}; retrying in {:.1} s",
                    spec.program,
                    delay.as_secs_f64()
                );
                None
            }
        };
        ctx.table.update(name, |r| {
            r.state = if backoff.is_crash_loop() {
                ChildState::CrashLoop
            } else {
                ChildState::Restarting
            };
            r.pid = None;
            r.failures_in_a_row = backoff.failures_in_a_row();
            r.retry_in_secs = Some(delay.as_secs_f64());
            if report.is_some() {
                r.last_exit = report;
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    ctx.table.update(name, |r| {
        r.state = ChildState::Stopped;
        r.pid = None;
        r.retry_in_secs = None;
    });
}

/// Completes when `stop` turns true (holding no borrow of the channel across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn spawn(spec: &ChildSpec, ctx: &Context) -> io::Result<(Child, Vec<JoinHandle<()>>)> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env("PVBUS_CONFIG", &ctx.config)
        // Children write to a pipe: no colour codes in what we forward.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the terminal reaches only the supervisor,
        // which then stops the children in order (broker last).
        .process_group(0)
        .kill_on_drop(true);
    die_with_supervisor(&mut cmd);
    let mut child = cmd.spawn()?;
    let mut tasks = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        tasks.push(tokio::spawn(forward_lines(
            spec.name.clone(),
            Stream::Stdout,
            out,
            ctx.json_logs,
        )));
    }
    if let Some(err) = child.stderr.take() {
        tasks.push(tokio::spawn(forward_lines(
            spec.name.clone(),
            Stream::Stderr,
            err,
            ctx.json_logs,
        )));
    }
    Ok((child, tasks))
}

/// Makes the kernel kill the child when the supervisor dies, even by SIGKILL, so that no
/// orphan keeps a serial port or a relay. Linux only (`PR_SET_PDEATHSIG`).
///
/// SIGKILL rather than SIGTERM: with the supervisor gone, the child's stderr is a broken
/// pipe, and a child that logs while stopping may hang or panic there (tracing-subscriber
/// reports a failed write with `eprintln!`, which panics on a closed stderr) — an orphan
/// that never stops is worse than one that stops hard. Bus peers still see it go: the
/// broker publishes its last will.
///
/// The signal fires when the *thread* that forked exits: pvbus runs a current-thread tokio
/// runtime, so children are always forked by the main thread, which lives as long as the
/// supervisor.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // pre_exec is the only way to run prctl(2) in the child before exec.
fn die_with_supervisor(cmd: &mut Command) {
    let supervisor = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // operations are allowed. It makes two raw syscalls (prctl, getppid) and builds an
    // io::Error from an errno, which does not allocate; it touches no lock and no memory
    // of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The supervisor may have died between fork and prctl: then nobody would
            // signal us, so do not start at all.
            if nix::unistd::getppid() != supervisor {
                return Err(io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_supervisor(_cmd: &mut Command) {}

/// SIGTERM, then SIGKILL after `timeout`.
async fn terminate(name: &str, child: &mut Child, timeout: Duration) -> io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            if let Ok(s) = &status {
                info!(process = name, "stopped ({})", describe(*s));
            }
            status
        }
        Err(_) => {
            warn!(
                process = name,
                "did not stop within {:.1} s of SIGTERM; killing it",
                timeout.as_secs_f64()
            );
            child.kill().await?;
            child.wait().await
        }
    }
}

/// Waits for the log forwarders to reach the end of the child's output, but not for a
/// grandchild that kept the pipe open.
async fn drain(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
}

async fn forward_lines(
    name: String,
    stream: Stream,
    reader: impl AsyncRead + Unpin,
    json_logs: bool,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if complete || line.len() >= MAX_LINE {
            logs::forward(&name, stream, &String::from_utf8_lossy(&line), json_logs);
            line.clear();
        }
    }
    if !line.is_empty() {
        logs::forward(&name, stream, &String::from_utf8_lossy(&line), json_logs);
    }
}

fn exit_report(status: ExitStatus, ran: Duration) -> ExitReport {
    use std::os::unix::process::ExitStatusExt;
    ExitReport {
        ts: pvbus_bus::contract::now_ts(),
        code: status.code(),
        signal: status.signal().map(signal_name),
        ran_secs: (ran.as_secs_f64() * 10.0).round() / 10.0,
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => signal_name(sig),
        _ => status.to_string(),
    }
}

/// The program and arguments of a child, for messages.
pub fn command_line(spec: &ChildSpec) -> String {
    std::iter::once(&spec.program)
        .chain(spec.args.iter())
        .map(|a: &OsString| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
