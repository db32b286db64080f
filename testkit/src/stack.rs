//! [`DemoStack`]: the pvbus stack of the binary under test on a temp dir and free ports,
//! as the fault, soak, Home Assistant and bench runs need it: a broker (the embedded one
//! on a free port, or one the caller started), simulated VE.Direct devices on ptys, relays
//! on the simulated GPIO board, optionally the simulated panel, and `pvbus run` (or single
//! processes started one by one). What differs between those runs is set on
//! [`DemoStackBuilder`]; the rest of the configuration (rules, site, Home Assistant) is
//! the caller's text.
//!
//! Every path in the configuration text may use `{dir}` for the temp dir.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Child, Recorder, free_port, wait_for_listener};

const PROCESS_TABLE: &str = "pvbus/supervisor/processes";

/// Where the stack's broker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoBroker {
    /// `pvbus broker` on a free port (`[broker]`), started by `pvbus run`.
    Embedded,
    /// A broker the caller runs, e.g. a [`crate::Mosquitto`] (`[bus] external_broker`).
    External(SocketAddr),
}

/// A simulated VE.Direct device: `pvbus sim vedirect --kind <kind>` behind the link
/// `{dir}/<name>`, read by the bridge as device `<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    pub kind: String,
    pub name: String,
    pub serial: String,
}

/// Something the stack could not do, with the run's log.
#[derive(Debug)]
pub struct DemoStackError {
    pub what: String,
    pub log: String,
}

impl std::fmt::Display for DemoStackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n--- log ---\n{}", self.what, self.log)
    }
}

impl std::error::Error for DemoStackError {}

/// What a [`DemoStack`] is made of; [`DemoStack::builder`] starts one.
#[derive(Debug, Clone)]
pub struct DemoStackBuilder {
    pvbus: PathBuf,
    broker: DemoBroker,
    broker_config: String,
    devices: Vec<SimDevice>,
    vedirect_config: String,
    start_time: String,
    time_scale: Option<f64>,
    relays: Vec<(String, u8)>,
    active_low: Option<bool>,
    relays_config: String,
    panel: bool,
    processes: Option<Vec<String>>,
    supervisor_config: String,
    config: String,
    log_level: String,
    record: String,
}

impl DemoStackBuilder {
    /// Which broker (default: the embedded one).
    pub fn broker(mut self, broker: DemoBroker) -> Self {
        self.broker = broker;
        self
    }

    /// Extra lines of the `[broker]` section (embedded broker only).
    pub fn broker_config(mut self, lines: &str) -> Self {
        self.broker_config = lines.to_string();
        self
    }

    /// A simulated device (see [`SimDevice`]); each becomes a port of the bridge and a
    /// `[[supervisor.simulator]]`.
    pub fn device(mut self, kind: &str, name: &str, serial: &str) -> Self {
        self.devices.push(SimDevice {
            kind: kind.into(),
            name: name.into(),
            serial: serial.into(),
        });
        self
    }

    /// Extra lines of the `[vedirect]` section.
    pub fn vedirect_config(mut self, lines: &str) -> Self {
        self.vedirect_config = lines.to_string();
        self
    }

    /// The simulated devices' time of day at start (UTC, `HH:MM`; default 12:00).
    pub fn start_time(mut self, hh_mm: &str) -> Self {
        self.start_time = hh_mm.to_string();
        self
    }

    /// Virtual seconds per real second of the simulated devices (default 1). They still
    /// write one block per real second: only their day runs faster.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = Some(scale);
        self
    }

    /// A relay on the simulated GPIO board.
    pub fn relay(mut self, id: &str, pin: u8) -> Self {
        self.relays.push((id.into(), pin));
        self
    }

    /// Whether the relays are driven low when on (unset: the relay bridge's default).
    pub fn active_low(mut self, active_low: bool) -> Self {
        self.active_low = Some(active_low);
        self
    }

    /// Extra lines of the `[relays]` section.
    pub fn relays_config(mut self, lines: &str) -> Self {
        self.relays_config = lines.to_string();
        self
    }

    /// The simulated TM1638 board and LCD (`[tm1638]`, `[lcd]`).
    pub fn panel(mut self) -> Self {
        self.panel = true;
        self
    }

    /// The processes `pvbus run` starts (`[supervisor] processes`; unset: its default).
    pub fn processes(mut self, names: &[&str]) -> Self {
        self.processes = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Extra lines of the `[supervisor]` section.
    pub fn supervisor_config(mut self, lines: &str) -> Self {
        self.supervisor_config = lines.to_string();
        self
    }

    /// Configuration text appended as it is (rules, site, Home Assistant, ...).
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// `PVBUS_LOG` of the processes (default `info`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    /// What the stack's own [`Recorder`] subscribes to (default `pvbus/#`). A measurement
    /// that must not count the recorder's traffic passes the process table's topic.
    pub fn record(mut self, filter: &str) -> Self {
        self.record = filter.to_string();
        self
    }

    /// The configuration file's text for the temp dir `dir` and the broker port `port`.
    pub fn config_text(&self, dir: &Path, port: u16) -> String {
        let mut t = String::new();
        match self.broker {
            DemoBroker::Embedded => {
                let _ = writeln!(
                    t,
                    "[broker]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{{dir}}/broker\"\n{}",
                    self.broker_config
                );
            }
            DemoBroker::External(addr) => {
                let _ = writeln!(t, "[bus]\nexternal_broker = \"{addr}\"\n");
            }
        }
        if !self.devices.is_empty() {
            let _ = writeln!(
                t,
                "[vedirect]\nauto_detect = false\n{}",
                self.vedirect_config
            );
            for d in &self.devices {
                let _ = writeln!(t, "[[vedirect.ports]]\npath = \"{{dir}}/{}\"", d.name);
            }
            t.push_str("[vedirect.devices]\n");
            for d in &self.devices {
                let _ = writeln!(t, "{} = \"{}\"", d.serial, d.name);
            }
            t.push('\n');
        }
        if !self.relays.is_empty() {
            let _ = writeln!(
                t,
                "[relays]\nstate_dir = \"{{dir}}/relays\"\n{}\n[relays.gpio]\nbackend = \"sim\"\nsim_dir = \"{{dir}}/gpio\"",
                self.relays_config
            );
            for (id, pin) in &self.relays {
                let _ = writeln!(t, "[[relays.relay]]\nid = \"{id}\"\npin = {pin}");
                if let Some(low) = self.active_low {
                    let _ = writeln!(t, "active_low = {low}");
                }
            }
            t.push('\n');
        }
        if self.panel {
            t.push_str(
                "[tm1638]\nstb = [16]\nclk = 21\ndio = 20\n[tm1638.gpio]\nbackend = \"sim\"\n\
                 sim_dir = \"{dir}/tm1638\"\n\n[lcd]\nbackend = \"sim\"\nsim_dir = \"{dir}/lcd\"\n\n",
            );
        }
        t.push_str(&self.config);
        if self.processes.is_some()
            || !self.supervisor_config.is_empty()
            || !self.devices.is_empty()
        {
            t.push_str("\n[supervisor]\n");
        }
        if let Some(names) = &self.processes {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            let _ = writeln!(t, "processes = [{}]", quoted.join(", "));
        }
        let _ = writeln!(t, "{}", self.supervisor_config);
        for d in &self.devices {
            let _ = writeln!(
                t,
                "[[supervisor.simulator]]\nkind = \"{}\"\nlink = \"{{dir}}/{}\"\nserial = \"{}\"\nstart_time = \"{}\"",
                d.kind, d.name, d.serial, self.start_time
            );
            if let Some(scale) = self.time_scale {
                let _ = writeln!(t, "time_scale = {scale}");
            }
        }
        t.replace("{dir}", &dir.display().to_string())
    }

    /// Writes the configuration and starts `pvbus run` on it; returns once the broker
    /// listens (the processes may still be starting: see [`DemoStack::wait_running`]).
    pub fn start(self) -> Result<DemoStack, DemoStackError> {
        let mut stack = self.prepare()?;
        let log = std::fs::File::create(stack.path("run.log")).map_err(|e| DemoStackError {
            what: format!("cannot create run.log: {e}"),
            log: String::new(),
        })?;
        let run = Child::spawn(
            "pvbus run",
            Command::new(&stack.pvbus)
                .args(["run", "--config"])
                .arg(&stack.config)
                .env("NO_COLOR", "1")
                .env("PVBUS_LOG", &stack.log_level)
                .stdout(Stdio::null())
                .stderr(log),
        );
        stack.run = Some(run);
        if !wait_for_listener(stack.addr, Duration::from_secs(20)) {
            return Err(stack.error(format!("the broker never listened on {}", stack.addr)));
        }
        stack.rec = Some(Recorder::start(stack.addr, &stack.record));
        Ok(stack)
    }

    /// Writes the configuration without starting anything: for a test that starts
    /// processes one by one ([`DemoStack::spawn`], [`DemoStack::spawn_simulators`]).
    pub fn prepare(self) -> Result<DemoStack, DemoStackError> {
        let dir = tempfile::tempdir().map_err(|e| DemoStackError {
            what: format!("no temp dir: {e}"),
            log: String::new(),
        })?;
        let addr = match self.broker {
            DemoBroker::Embedded => SocketAddr::from(([127, 0, 0, 1], free_port())),
            DemoBroker::External(addr) => addr,
        };
        let config = dir.path().join("pvbus.toml");
        std::fs::write(&config, self.config_text(dir.path(), addr.port())).map_err(|e| {
            DemoStackError {
                what: format!("cannot write {}: {e}", config.display()),
                log: String::new(),
            }
        })?;
        Ok(DemoStack {
            rec: None,
            run: None,
            children: Vec::new(),
            addr,
            config,
            pvbus: self.pvbus,
            log_level: self.log_level,
            record: self.record,
            devices: self.devices,
            start_time: self.start_time,
            time_scale: self.time_scale,
            dir,
        })
    }
}

/// A running stack; dropping it kills every process it started (SIGKILL), the supervisor
/// first, then the temp dir goes.
pub struct DemoStack {
    // Fields drop in order: the recorder, then the processes, then the folder.
    rec: Option<Recorder>,
    run: Option<Child>,
    children: Vec<Child>,
    pub addr: SocketAddr,
    /// The configuration file.
    pub config: PathBuf,
    pvbus: PathBuf,
    log_level: String,
    record: String,
    devices: Vec<SimDevice>,
    start_time: String,
    time_scale: Option<f64>,
    pub dir: tempfile::TempDir,
}

impl DemoStack {
    /// A stack of the `pvbus` binary at `pvbus`: the embedded broker and nothing else
    /// until the builder adds it.
    pub fn builder(pvbus: impl AsRef<Path>) -> DemoStackBuilder {
        DemoStackBuilder {
            pvbus: pvbus.as_ref().to_path_buf(),
            broker: DemoBroker::Embedded,
            broker_config: String::new(),
            devices: Vec::new(),
            vedirect_config: String::new(),
            start_time: "12:00".into(),
            time_scale: None,
            relays: Vec::new(),
            active_low: None,
            relays_config: String::new(),
            panel: false,
            processes: None,
            supervisor_config: String::new(),
            config: String::new(),
            log_level: "info".into(),
            record: "pvbus/#".into(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything the stack's recorder saw (see [`DemoStackBuilder::record`]).
    pub fn recorder(&self) -> &Recorder {
        self.rec
            .as_ref()
            .expect("the stack records only once started with DemoStackBuilder::start")
    }

    /// The log of `pvbus run`.
    pub fn logs(&self) -> String {
        self.log("run")
    }

    /// The log `<name>.log` in the temp dir (`run`, or a process started by [`Self::spawn`]).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{}.log", name.replace(' ', "_"))))
            .unwrap_or_default()
    }

    fn error(&self, what: String) -> DemoStackError {
        DemoStackError {
            what,
            log: self.logs(),
        }
    }

    /// The pid of `pvbus run`, 0 when it is not running.
    pub fn supervisor_pid(&self) -> u32 {
        self.run.as_ref().map(Child::pid).unwrap_or(0)
    }

    /// `pvbus run` itself, e.g. to terminate it.
    pub fn supervisor(&mut self) -> &mut Child {
        self.run.as_mut().expect("pvbus run was started")
    }

    /// SIGTERM to `pvbus run` and its clean exit (it stops its children first).
    pub fn stop(mut self) {
        self.rec = None;
        if let Some(mut run) = self.run.take() {
            run.terminate(Duration::from_secs(15));
        }
    }

    /// The supervisor's process table (the `processes` object of
    /// `pvbus/supervisor/processes`) once `pred` holds for it.
    pub fn table(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, DemoStackError> {
        let rec = self.recorder();
        let parse = |p: &str| {
            serde_json::from_str::<Value>(p)
                .ok()
                .map(|v| v["processes"].clone())
        };
        let found = rec.wait_for(PROCESS_TABLE, timeout, |p| {
            parse(p).is_some_and(|t| pred(&t))
        });
        found.and_then(|p| parse(&p)).ok_or_else(|| {
            self.error(format!(
                "the process table never got there within {timeout:?}; last: {:?}",
                rec.last(PROCESS_TABLE)
            ))
        })
    }

    /// Once every process in `names` runs: each process of the table (those in `names`
    /// and any other, simulators included) with its pid and role.
    pub fn wait_running(
        &self,
        names: &[&str],
        timeout: Duration,
    ) -> Result<BTreeMap<String, (u32, String)>, DemoStackError> {
        let table = self.table(timeout, |t| {
            names.iter().all(|n| t[n]["state"] == "running")
        })?;
        let mut out = BTreeMap::new();
        if let Some(map) = table.as_object() {
            for (name, p) in map {
                if let Some(pid) = p["pid"].as_u64() {
                    let role = p["role"].as_str().unwrap_or("").to_string();
                    out.insert(name.clone(), (pid as u32, role));
                }
            }
        }
        Ok(out)
    }

    /// `pvbus <args>` as the process `name`, its log in `<name>.log` of the temp dir
    /// (appended, so a restarted process keeps its earlier log); returns its index for
    /// [`Self::child`].
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{}.log", name.replace(' ', "_"))))
            .expect("log file in the temp dir");
        let child = Child::spawn(
            name,
            Command::new(&self.pvbus)
                .args(args)
                .env("PVBUS_LOG", &self.log_level)
                .stdout(Stdio::null())
                .stderr(log),
        );
        self.children.push(child);
        self.children.len() - 1
    }

    /// `pvbus <process> --config <the stack's file>`.
    pub fn spawn_process(&mut self, process: &str) -> usize {
        let config = self.config.display().to_string();
        self.spawn(process, &[process, "--config", &config])
    }

    /// `pvbus sim vedirect` for every device, outside any supervisor; returns once each
    /// link exists.
    pub fn spawn_simulators(&mut self) -> Result<(), DemoStackError> {
        for d in self.devices.clone() {
            let link = self.path(&d.name).display().to_string();
            let scale = self.time_scale.unwrap_or(1.0).to_string();
            let start_time = self.start_time.clone();
            self.spawn(
                &format!("sim {}", d.name),
                &[
                    "sim",
                    "vedirect",
                    "--kind",
                    &d.kind,
                    "--link",
                    &link,
                    "--serial",
                    &d.serial,
                    "--start-time",
                    &start_time,
                    "--time-scale",
                    &scale,
                ],
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.path(&d.name).exists() {
                if Instant::now() >= deadline {
                    return Err(self.error(format!("{link} never appeared")));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// A process started by [`Self::spawn`].
    pub fn child(&mut self, index: usize) -> &mut Child {
        &mut self.children[index]
    }
}
