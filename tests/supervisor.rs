//! `pvbus run` with the real binary, real children and a real broker (the embedded one, or a
//! mosquitto of the test kit as `[bus] external_broker`): every process comes online, a
//! child killed with SIGKILL goes offline and comes back, the broker starts first, comes back
//! after a crash and stops last, a child in a crash loop backs off without taking the others
//! down, SIGTERM stops everything cleanly with exit code 0, and SIGKILL of the supervisor
//! takes its children with it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pvbus_testkit::{Child, Mosquitto, Recorder};
use serde_json::Value;

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");
const WAIT: Duration = Duration::from_secs(10);

const VEDIRECT: &str = "\
[vedirect]
auto_detect = false
[[vedirect.ports]]
path = \"{dir}/mppt\"
[[vedirect.ports]]
path = \"{dir}/bmv\"
[[supervisor.simulator]]
kind = \"mppt\"
link = \"{dir}/mppt\"
[[supervisor.simulator]]
kind = \"bmv\"
link = \"{dir}/bmv\"
";

/// A temp dir with a config for `pvbus run`: the relay bridge on the simulated GPIO board,
/// plus `extra` TOML; the bus is `external` (a mosquitto of the test kit) or, without one,
/// the embedded broker started by the supervisor on a free port.
///
/// [`VEDIRECT`] adds the VE.Direct bridge reading two simulated devices (MPPT and BMV) on
/// pseudo-terminals, the simulators being children of the supervisor too.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    addr: SocketAddr,
}

impl Setup {
    fn new(external: Option<&Mosquitto>, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let (bus, addr) = match external {
            Some(m) => (
                format!("[bus]\nexternal_broker = \"127.0.0.1:{}\"\n", m.port),
                m.addr(),
            ),
            None => {
                let port = pvbus_testkit::free_port();
                (
                    format!("[broker]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{d}/broker\"\n"),
                    SocketAddr::from(([127, 0, 0, 1], port)),
                )
            }
        };
        let text = format!(
            "{bus}\n\
             [relays]\nstate_dir = \"{d}/relays\"\n\
             [relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{d}/gpio\"\n\
             [[relays.relay]]\nid = \"pump\"\npin = 17\n\n\
             [supervisor]\nrestart_delay_secs = 0.2\nrestart_delay_max_secs = 5\nstop_timeout_secs = 3\n\
             {extra}",
            extra = extra.replace("{dir}", &d.to_string())
        );
        let config = dir.path().join("pvbus.toml");
        fs::write(&config, text).unwrap();
        Setup { dir, config, addr }
    }

    /// A recorder of `pvbus/#`, once the (embedded) broker listens.
    fn recorder(&self) -> Recorder {
        assert!(
            pvbus_testkit::wait_for_listener(self.addr, WAIT),
            "nothing listens on {}:\n{}",
            self.addr,
            self.logs()
        );
        Recorder::start(self.addr, "pvbus/#")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("run.log")
    }

    /// `pvbus run`, its logs (no colours) in `run.log`.
    fn run(&self) -> Child {
        let log = fs::File::create(self.log()).unwrap();
        Child::spawn(
            "pvbus run",
            Command::new(PVBUS)
                .args(["run", "--config"])
                .arg(&self.config)
                .env("NO_COLOR", "1")
                .env("PVBUS_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log),
        )
    }

    fn logs(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// The supervisor's table, once `pred` holds for it.
fn wait_processes(rec: &Recorder, pred: impl Fn(&Value) -> bool) -> Value {
    let found = rec.wait_for("pvbus/supervisor/processes", WAIT, |p| {
        serde_json::from_str::<Value>(p).is_ok_and(|v| pred(&v["processes"]))
    });
    let found = found.unwrap_or_else(|| {
        panic!(
            "the process table never got there; last: {:?}",
            rec.last("pvbus/supervisor/processes")
        )
    });
    serde_json::from_str::<Value>(&found).unwrap()["processes"].clone()
}

fn pid_of(table: &Value, name: &str) -> i32 {
    table[name]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no pid in {table}")) as i32
}

/// Gone, or a zombie nobody reaps (some containers have no init that reaps).
fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if is_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Payloads `topic` took, in order.
fn history(rec: &Recorder, topic: &str) -> Vec<String> {
    rec.all()
        .into_iter()
        .filter(|s| s.topic == topic)
        .map(|s| s.payload)
        .collect()
}

#[test]
fn children_come_online_come_back_after_kill9_and_stop_on_sigterm() {
    // The embedded broker, as users run it.
    let setup = Setup::new(None, VEDIRECT);
    let mut run = setup.run();
    let rec = setup.recorder();
    rec.expect("pvbus/broker/status", "online", WAIT);

    rec.expect("pvbus/supervisor/status", "online", WAIT);
    rec.expect("pvbus/relays/status", "online", WAIT);
    rec.expect("pvbus/vedirect/status", "online", WAIT);
    let table = wait_processes(&rec, |t| {
        ["relays", "vedirect", "sim_mppt", "sim_bmv"]
            .iter()
            .all(|p| t[p]["state"] == "running")
    });
    let sim_pid = pid_of(&table, "sim_mppt");
    // The bridge reads the simulated devices: the simulators were up before it.
    let reading = |rec: &Recorder| {
        rec.all().iter().any(|s| {
            s.topic.starts_with("pvbus/vedirect/")
                && s.topic.ends_with("/state")
                && s.payload.contains("battery_voltage")
        })
    };
    let deadline = Instant::now() + WAIT;
    while !reading(&rec) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        reading(&rec),
        "no VE.Direct reading came through: {:?}",
        rec.latest()
    );
    let first_pid = pid_of(&table, "relays");
    assert_eq!(table["relays"]["restarts"], 0);

    // SIGKILL: the broker publishes the last will, the supervisor starts it again.
    kill(Pid::from_raw(first_pid), Signal::SIGKILL).unwrap();
    let table = wait_processes(&rec, |t| {
        t["relays"]["state"] == "running" && t["relays"]["restarts"] == 1
    });
    let second_pid = pid_of(&table, "relays");
    assert_ne!(second_pid, first_pid);
    assert_eq!(table["relays"]["last_exit"]["signal"], "SIGKILL");
    rec.expect("pvbus/relays/status", "online", WAIT);
    let statuses = history(&rec, "pvbus/relays/status");
    let offline_at = statuses
        .iter()
        .position(|s| s == "offline")
        .unwrap_or_else(|| panic!("relays never went offline: {statuses:?}"));
    assert!(
        statuses[offline_at..].iter().any(|s| s == "online"),
        "relays did not come back online after going offline: {statuses:?}"
    );

    // SIGTERM: every child stops, `offline` is published, exit code 0.
    let status = run
        .terminate(Duration::from_secs(10))
        .expect("pvbus run did not stop on SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        setup.logs()
    );
    assert!(
        is_gone(second_pid),
        "relays (pid {second_pid}) outlived the supervisor"
    );
    assert!(
        is_gone(sim_pid),
        "the simulator (pid {sim_pid}) outlived the supervisor"
    );
    rec.expect("pvbus/relays/status", "offline", WAIT);
    rec.expect("pvbus/vedirect/status", "offline", WAIT);
    rec.expect("pvbus/supervisor/status", "offline", WAIT);
    let table = wait_processes(&rec, |t| {
        ["relays", "vedirect", "sim_mppt", "sim_bmv"]
            .iter()
            .all(|p| t[p]["state"] == "stopped")
    });
    assert_eq!(table["relays"]["last_exit"]["code"], 0, "{table}");

    // The child's logs came through, under its name; the bridge stopped before the
    // simulated hardware it reads.
    let logs = setup.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("relays ready") && l.contains("process=\"relays\"")),
        "{logs}"
    );
    let stopped = |name: &str| {
        logs.lines()
            .position(|l| l.contains("stopped (") && l.contains(&format!("process=\"{name}\"")))
            .unwrap_or_else(|| panic!("{name} never stopped:\n{logs}"))
    };
    assert!(stopped("vedirect") < stopped("sim_mppt"), "{logs}");
}

#[test]
fn json_logs_stay_one_json_object_per_line() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let setup = Setup::new(Some(&broker), "");
    let log = fs::File::create(setup.log()).unwrap();
    let mut run = Child::spawn(
        "pvbus run",
        Command::new(PVBUS)
            .args(["run", "--config"])
            .arg(&setup.config)
            .env("PVBUS_LOG_FORMAT", "json")
            .env("PVBUS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    );
    rec.expect("pvbus/relays/status", "online", WAIT);
    let status = run
        .terminate(Duration::from_secs(10))
        .expect("no clean stop");
    assert!(status.success());
    let logs = setup.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["process"] == "relays"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("relays ready"))),
        "{logs}"
    );
}

#[test]
fn a_crash_loop_backs_off_and_takes_nothing_down() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let setup = Setup::new(
        Some(&broker),
        // A script that fails at once, and the rules given a rule they reject.
        "[[supervisor.program]]\nname = \"crasher\"\n\
         command = [\"sh\", \"-c\", \"echo boom: no such sensor >&2; exit 3\"]\n\
         [[supervisor.program]]\nname = \"missing\"\ncommand = [\"/nonexistent/pvbus-plugin\"]\n\
         [rules.relays.pump]\non = \"bmv.state_of_charge >= \"\noff = \"true\"\n",
    );
    let mut run = setup.run();

    let table = wait_processes(&rec, |t| {
        t["relays"]["state"] == "running"
            && t["crasher"]["state"] == "crash_loop"
            && t["rules"]["state"] == "crash_loop"
            && t["missing"]["state"] == "crash_loop"
    });
    let relays_pid = pid_of(&table, "relays");
    assert_eq!(table["crasher"]["last_exit"]["code"], 3, "{table}");
    assert!(
        table["rules"]["last_exit"]["code"]
            .as_i64()
            .is_some_and(|c| c != 0),
        "{table}"
    );
    assert!(table["crasher"]["failures_in_a_row"].as_u64().unwrap() >= 3);

    // The delay doubles with each crash (0.2, 0.4, 0.8 ... capped at 5 s).
    let table = wait_processes(&rec, |t| {
        t["crasher"]["failures_in_a_row"].as_u64() >= Some(5)
    });
    let mut delays: Vec<f64> = history(&rec, "pvbus/supervisor/processes")
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["processes"]["crasher"]["retry_in_secs"].as_f64())
        .collect();
    delays.dedup();
    assert!(delays.len() >= 4, "{delays:?}");
    assert!(
        delays.windows(2).all(|w| w[1] > w[0] || w[1] >= 5.0),
        "the restart delay did not grow: {delays:?}"
    );

    // Meanwhile the relay bridge ran on, untouched.
    assert_eq!(pid_of(&table, "relays"), relays_pid);
    assert_eq!(table["relays"]["restarts"], 0);
    assert_eq!(rec.last("pvbus/relays/status").as_deref(), Some("online"));
    assert!(!history(&rec, "pvbus/relays/status").contains(&"offline".to_string()));

    let logs = setup.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("boom: no such sensor") && l.contains("process=\"crasher\"")),
        "{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("process=\"missing\"")
            && l.contains("cannot start")
            && l.contains("/nonexistent/pvbus-plugin")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("process=\"rules\"") && l.contains("rules.relays.pump")),
        "the rules' own error did not come through:\n{logs}"
    );
    let status = run
        .terminate(Duration::from_secs(10))
        .expect("no clean stop");
    assert!(status.success(), "{status}");
}

#[test]
fn children_die_with_a_killed_supervisor() {
    let broker = Mosquitto::start();
    let rec = Recorder::start(broker.addr(), "pvbus/#");
    let setup = Setup::new(Some(&broker), "");
    let mut run = setup.run();
    let table = wait_processes(&rec, |t| t["relays"]["state"] == "running");
    let relays_pid = pid_of(&table, "relays");
    rec.expect("pvbus/relays/status", "online", WAIT);

    run.kill9();
    assert!(
        wait_gone(relays_pid, Duration::from_secs(5)),
        "relays (pid {relays_pid}) survived the SIGKILL of its supervisor"
    );
    // The last wills of the supervisor and of its child.
    rec.expect("pvbus/supervisor/status", "offline", WAIT);
    rec.expect("pvbus/relays/status", "offline", WAIT);
}

#[test]
fn a_bad_supervisor_section_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pvbus.toml");
    fs::write(
        &config,
        "[bus]\nexternal_broker = \"127.0.0.1:1\"\n[supervisor]\nprocesses = [\"relays\", \"pumps\"]\n",
    )
    .unwrap();
    let out = Command::new(PVBUS)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("supervisor.processes[1]") && err.contains("pumps"),
        "{err}"
    );
    assert!(config_check(&config).contains("supervisor.processes[1]"));
}

fn config_check(config: &Path) -> String {
    let out = Command::new(PVBUS)
        .args(["config", "check"])
        .arg(config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_embedded_broker_starts_first_restarts_and_stops_last() {
    let setup = Setup::new(None, "");
    let mut run = setup.run();
    let rec = setup.recorder();
    rec.expect("pvbus/relays/status", "online", WAIT);
    rec.expect("pvbus/supervisor/status", "online", WAIT);
    let table = wait_processes(&rec, |t| {
        t["broker"]["state"] == "running" && t["relays"]["state"] == "running"
    });
    let broker_pid = pid_of(&table, "broker");
    let relays_pid = pid_of(&table, "relays");
    // The broker accepted connections before the others started.
    let log = setup.logs();
    let line_of = |what: &str, name: &str| {
        log.lines()
            .position(|l| l.contains(what) && l.contains(&format!("process=\"{name}\"")))
            .unwrap_or_else(|| panic!("no {what:?} of {name}:\n{log}"))
    };
    assert!(
        line_of("started", "broker") < line_of("started", "relays"),
        "{log}"
    );

    // The broker crashes: it is restarted, and everyone comes back to it.
    kill(Pid::from_raw(broker_pid), Signal::SIGKILL).unwrap();
    rec.clear();
    let table = wait_processes(&rec, |t| {
        t["broker"]["state"] == "running" && t["broker"]["restarts"] == 1
    });
    assert_ne!(pid_of(&table, "broker"), broker_pid);
    assert_eq!(
        pid_of(&table, "relays"),
        relays_pid,
        "relays was restarted too"
    );
    rec.expect("pvbus/relays/status", "online", WAIT);
    rec.expect("pvbus/supervisor/status", "online", WAIT);

    // SIGTERM: relays stops before the broker, whose pid is gone with the rest.
    let new_broker_pid = pid_of(&table, "broker");
    let status = run.terminate(WAIT).expect("no clean stop");
    assert!(status.success(), "{status}:\n{}", setup.logs());
    let log = setup.logs();
    let line_of = |what: &str, name: &str| {
        log.lines()
            .position(|l| l.contains(what) && l.contains(&format!("process=\"{name}\"")))
            .unwrap_or_else(|| panic!("no {what:?} of {name}:\n{log}"))
    };
    assert!(
        line_of("stopped (", "relays") < line_of("stopped (", "broker"),
        "{log}"
    );
    assert!(is_gone(relays_pid) && is_gone(new_broker_pid));
}

/// `PVBUS_LOG`, `PVBUS_LOG_FORMAT` and `PVBUS_CONFIG` set how a process runs, not what the
/// file says: `config check` (and the systemd unit's ExecStartPre that runs it) accepts
/// the demo with them set, while a `PVBUS_<SECTION>__<KEY>` override is still checked.
#[test]
fn process_settings_in_the_environment_are_not_config_sections() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml");
    let check = |env: &[(&str, &str)]| {
        Command::new(PVBUS)
            .args(["config", "check"])
            .arg(&demo)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = check(&[
        ("PVBUS_LOG", "debug"),
        ("PVBUS_LOG_FORMAT", "json"),
        ("PVBUS_CONFIG", "/nowhere.toml"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check(&[("PVBUS_LOG", "debug"), ("PVBUS_RELAYS__STALE_AFTER", "0s")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("relays.stale_after"), "{err}");
    assert!(!err.contains("[log]"), "{err}");
}
