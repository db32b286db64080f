//! The glue: one async loop that takes parsed events from every port reader, MQTT
//! commands from the bus, and its own timers (staleness, HEX timeouts, volatile-setting
//! refresh, auto-detection), and publishes readings, availability and site totals.
//!
//! Everything per port and per device lives in this one task, so there is no locking and
//! the loop sleeps until the next event or the nearest deadline.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::contract::{OFFLINE, ONLINE, now_ts};
use pvbus_bus::{Bus, Event, Inbox, Message, Shutdown};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};
use vedirect::decode::{Accumulator, Value};
use vedirect::hex::Request;
use vedirect::registers;
use vedirect::text::TextBlock;

use crate::commands::{self, HexQueue, Job, Outcome, Purpose, Setting, Target};
use crate::config::VedirectConfig;
use crate::detect;
use crate::port::{self, PortEvent, PortWriter};
use crate::registry::{Kind, Registry};
use crate::site::{Contribution, Site};

/// The bridge's name on the bus and in topics.
pub const PROCESS: &str = "vedirect";

/// How often the by-id folder is looked at again for newly plugged cables. A directory
/// read every half minute costs nothing; cables already open reconnect by themselves.
const RESCAN: Duration = Duration::from_secs(30);

struct PortState {
    path: PathBuf,
    name: Option<String>,
    writer: Option<PortWriter>,
    accumulator: Accumulator,
    /// The id of the device on this port, once a block said who it is.
    device: Option<String>,
    /// Its serial number, when it told one.
    serial: Option<String>,
    /// `device` was confirmed since the port was (re)opened or went stale: another
    /// device may have been plugged in meanwhile, so nothing is published before.
    confirmed: bool,
    /// Availability published as `online`.
    online: bool,
    serial_query: SerialQuery,
    /// When the device goes stale without a new valid block.
    stale_at: Option<Instant>,
    hex: HexQueue,
}

/// The serial number of a device whose text blocks do not carry it.
#[derive(Debug, Clone, PartialEq)]
enum SerialQuery {
    NotAsked,
    Pending,
    /// `None`: the device did not tell (old firmware).
    Answered(Option<String>),
}

/// A volatile setting the bridge keeps in force.
struct Kept {
    set_topic: String,
    request: Request,
    next: Instant,
}

/// The running bridge.
pub struct Bridge {
    cfg: VedirectConfig,
    bus: Bus,
    registry: Registry,
    ports: Vec<PortState>,
    events: mpsc::Sender<(usize, PortEvent)>,
    site: Site,
    kept: BTreeMap<String, Kept>,
    census: Census,
}

/// The devices the broker held under `<base>/vedirect/` when we connected: read once
/// from the retained states, then the subscription ends (our own states would otherwise
/// come back every second).
///
/// A device that is unplugged stays there, `offline`: that is what people expect to see.
/// But one device is one serial number: when the serial number of a retained device is
/// now published under another id (its name in `[vedirect.devices]` changed, or it got
/// one), or the configuration names that serial number otherwise, the old id is a ghost
/// and its retained topics are cleared (Home Assistant then removes it).
#[derive(Debug, Default)]
struct Census {
    /// Until the echo of our sync message: the retained states are still coming.
    listening: bool,
    nonce: u64,
    /// Retained device id → its serial number.
    seen: BTreeMap<String, String>,
}

impl Bridge {
    /// Starts the port readers; returns the bridge and the receiving end of their events.
    pub fn new(
        cfg: VedirectConfig,
        bus: Bus,
    ) -> anyhow::Result<(Bridge, mpsc::Receiver<(usize, PortEvent)>)> {
        let (tx, rx) = mpsc::channel(64);
        let mut bridge = Bridge {
            registry: Registry::new(cfg.devices.clone()),
            cfg,
            bus,
            ports: Vec::new(),
            events: tx,
            site: Site::default(),
            kept: BTreeMap::new(),
            census: Census::default(),
        };
        for port in bridge.cfg.ports.clone() {
            bridge.add_port(port.path, port.name)?;
        }
        bridge.rescan()?;
        if bridge.ports.is_empty() {
            warn!(
                "no VE.Direct port configured or detected; waiting for a cable in {}",
                bridge.cfg.detect_dir.display()
            );
        }
        Ok((bridge, rx))
    }

    fn add_port(&mut self, path: PathBuf, name: Option<String>) -> anyhow::Result<()> {
        let index = self.ports.len();
        info!(port = %path.display(), "reading VE.Direct port");
        port::spawn(index, path.clone(), self.events.clone())
            .map_err(|e| anyhow::anyhow!("cannot start the reader of {}: {e}", path.display()))?;
        self.ports.push(PortState {
            path,
            name,
            writer: None,
            accumulator: Accumulator::new(),
            device: None,
            serial: None,
            confirmed: false,
            online: false,
            serial_query: SerialQuery::NotAsked,
            stale_at: None,
            hex: HexQueue::new(self.cfg.hex_timeout(), self.cfg.hex_attempts),
        });
        Ok(())
    }

    /// Opens cables that appeared in the by-id folder since the last look.
    fn rescan(&mut self) -> anyhow::Result<()> {
        if !self.cfg.auto_detect {
            return Ok(());
        }
        for path in detect::vedirect_cables(&self.cfg.detect_dir) {
            let real = std::fs::canonicalize(&path).ok();
            let known = self.ports.iter().any(|p| {
                p.path == path || (real.is_some() && std::fs::canonicalize(&p.path).ok() == real)
            });
            if !known {
                self.add_port(path, None)?;
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` fires; then marks its devices offline.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<(usize, PortEvent)>,
        mut inbox: Inbox,
        mut shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        self.bus
            .subscribe(self.bus.topics().device_setting_set_filter(PROCESS));
        // Our own retained limits: a limit set before a restart is still in force on the
        // bus, and must be kept in force on the device too (see `resume_kept`).
        self.bus.subscribe(self.bus.topics().device_setting(
            PROCESS,
            "+",
            Setting::ChargeCurrentLimit.name(),
        ));
        let mut next_rescan = Instant::now() + RESCAN;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.wait() => break,
                Some((index, event)) = events.recv() => self.on_port_event(index, event),
                event = inbox.recv() => match event {
                    Some(Event::Message(m)) => self.on_message(&m),
                    Some(Event::Connected) => self.take_census(),
                    Some(Event::Disconnected) => {}
                    None => break,
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_timers(Instant::now());
                }
                _ = sleep_until(next_rescan), if self.cfg.auto_detect => {
                    next_rescan = Instant::now() + RESCAN;
                    self.rescan()?;
                }
            }
            self.send_pending(Instant::now());
        }
        // Nobody will refresh these any more: say so rather than leave them looking live.
        let online: Vec<String> = self
            .ports
            .iter()
            .filter(|p| p.online)
            .filter_map(|p| p.device.clone())
            .collect();
        for device in online {
            self.device_offline(&device);
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ports = self
            .ports
            .iter()
            .flat_map(|p| [p.stale_at, p.hex.deadline().map(Instant::from_std)]);
        let kept = self.kept.values().map(|k| Some(k.next));
        ports.chain(kept).flatten().min()
    }

    fn on_port_event(&mut self, index: usize, event: PortEvent) {
        let now = Instant::now();
        match event {
            PortEvent::Opened { writer } => {
                let p = &mut self.ports[index];
                p.writer = Some(writer);
                p.stale_at.get_or_insert(now + self.cfg.stale_after());
            }
            PortEvent::Block(block) => self.on_block(index, &block, now),
            PortEvent::Hex(frame) => {
                let response = match frame.response() {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        debug!(port = index, raw = %frame.raw, error = %e, "HEX frame not understood");
                        return;
                    }
                    None => {
                        debug!(port = index, raw = %frame.raw, "damaged HEX frame");
                        return;
                    }
                };
                let answer = self.ports[index].hex.on_response(&response, now.into_std());
                self.on_hex_answer(index, answer);
            }
            PortEvent::Rejected(r) => {
                debug!(port = %self.ports[index].path.display(), "{r}");
            }
            PortEvent::IdleDiscard => {
                debug!(port = %self.ports[index].path.display(), "unfinished block dropped after silence");
            }
            PortEvent::Closed { error } => {
                let p = &mut self.ports[index];
                p.writer = None;
                let failed = p
                    .hex
                    .fail_all(&format!("the port {} was lost: {error}", p.path.display()));
                p.serial_query = SerialQuery::NotAsked;
                p.confirmed = false;
                p.accumulator.clear();
                for outcome in failed {
                    self.on_outcome(None, outcome);
                }
            }
        }
    }

    fn on_block(&mut self, index: usize, block: &TextBlock, now: Instant) {
        let stale_after = self.cfg.stale_after();
        let p = &mut self.ports[index];
        p.stale_at = Some(now + stale_after);
        let complete = p.accumulator.update(block);
        for e in &p.accumulator.reading().errors {
            debug!(port = %p.path.display(), "{e}");
        }
        // The main block says who the device is. Battery monitors send no SER# in text:
        // their serial number is asked over HEX first (old BMV-70x may not answer; then
        // the port decides the id).
        if block.get("PID").is_some() || block.get("SER#").is_some() {
            let serial = match (block.get("SER#"), &p.serial_query) {
                (Some(serial), _) => Some(Some(serial.to_string())),
                (None, SerialQuery::Answered(serial)) => Some(serial.clone()),
                (None, SerialQuery::Pending) => None,
                (None, SerialQuery::NotAsked) => {
                    p.serial_query = SerialQuery::Pending;
                    let job = Job {
                        request: Request::Get {
                            register: registers::SERIAL_NUMBER,
                        },
                        purpose: Purpose::Identify,
                    };
                    let _ = p.hex.push(job);
                    None
                }
            };
            if let Some(serial) = serial {
                p.confirmed = true;
                let kind = p
                    .accumulator
                    .family()
                    .map(Kind::from_family)
                    .unwrap_or_else(|| infer_kind(block));
                let id =
                    self.registry
                        .device_id(serial.as_deref(), kind, p.name.as_deref(), &p.path);
                p.serial = serial.clone();
                if p.device.as_deref() != Some(id.as_str()) {
                    let old = p.device.replace(id.clone());
                    let was_online = std::mem::replace(&mut p.online, false);
                    info!(port = %p.path.display(), device = %id, serial = serial.as_deref().unwrap_or("-"), "device identified");
                    if let (Some(old), true) = (old, was_online) {
                        self.device_offline(&old);
                    }
                    if let Some(serial) = &serial {
                        self.forget_renamed(&id, serial);
                    }
                }
            }
        }
        let p = &mut self.ports[index];
        let (Some(device), true) = (p.device.clone(), complete && p.confirmed) else {
            return;
        };
        let reading = p.accumulator.reading();
        let ts = Some(now_ts() as i64);
        let json = match (&p.serial, reading.get("serial_number")) {
            // A battery monitor tells its serial number over HEX only: it belongs in its
            // state all the same (Home Assistant's device, the census above).
            (Some(serial), None) => {
                let mut reading = reading.clone();
                reading.set(Cow::Borrowed("serial_number"), Value::Text(serial.clone()));
                reading.to_json(ts)
            }
            _ => reading.to_json(ts),
        };
        let contribution = Contribution {
            pv_power: reading.get("pv_power").and_then(|v| v.as_f64()),
            battery_power: reading.get("battery_power").and_then(|v| v.as_f64()),
        };
        let came_online = !std::mem::replace(&mut p.online, true);
        let topics = self.bus.topics();
        self.bus
            .publish_retained(topics.device_state(PROCESS, &device), json);
        if came_online {
            info!(device = %device, "device online");
            self.bus
                .publish_retained(topics.device_availability(PROCESS, &device), ONLINE);
            // The device forgot volatile settings while it was away: rewrite them now.
            if let Some(k) = self.kept.get_mut(&device) {
                k.next = now;
            }
        }
        if !contribution.is_empty() {
            self.site.update(&device, contribution);
            self.publish_site(now);
        }
    }

    fn device_offline(&mut self, device: &str) {
        info!(device, "device offline");
        self.bus.publish_retained(
            self.bus.topics().device_availability(PROCESS, device),
            OFFLINE,
        );
        self.site.set_offline(device);
        self.publish_site(Instant::now());
    }

    fn publish_site(&mut self, now: Instant) {
        if let Some(totals) = self.site.to_publish(now.into_std(), now_ts()) {
            let json = serde_json::to_string(&totals).expect("site totals serialise");
            self.bus
                .publish_retained(self.bus.topics().site_state(), json);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        for index in 0..self.ports.len() {
            let p = &mut self.ports[index];
            if p.stale_at.is_some_and(|t| t <= now) {
                p.stale_at = None;
                p.accumulator.clear();
                p.serial_query = SerialQuery::NotAsked;
                p.confirmed = false;
                if let (Some(device), true) = (p.device.clone(), p.online) {
                    p.online = false;
                    warn!(device = %device, port = %p.path.display(), "no valid block for {} s", self.cfg.stale_after);
                    self.device_offline(&device);
                }
            }
            let answer = self.ports[index].hex.on_timeout(now.into_std());
            self.on_hex_answer(index, answer);
        }
        let refresh = self.cfg.volatile_refresh();
        let due: Vec<String> = self
            .kept
            .iter()
            .filter(|(_, k)| k.next <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for device in due {
            let Some(k) = self.kept.get_mut(&device) else {
                continue;
            };
            k.next = now + refresh;
            let job = Job {
                request: k.request.clone(),
                purpose: Purpose::Refresh {
                    topic: k.set_topic.clone(),
                    device: device.clone(),
                },
            };
            if let Some(p) = self.port_of(&device)
                && p.hex.push(job).is_err()
            {
                warn!(device = %device, "HEX queue full: refresh skipped");
            }
        }
    }

    fn port_of(&mut self, device: &str) -> Option<&mut PortState> {
        self.ports
            .iter_mut()
            .find(|p| p.online && p.device.as_deref() == Some(device) && p.writer.is_some())
    }

    /// Writes the next queued HEX request of every idle port.
    fn send_pending(&mut self, now: Instant) {
        for p in &mut self.ports {
            let Some(writer) = p.writer.as_mut() else {
                continue;
            };
            if let Some(bytes) = p.hex.next_to_send(now.into_std())
                && let Err(e) = writer.send(&bytes)
            {
                // The reader notices a lost port by itself; the timeout retries.
                debug!(port = %p.path.display(), error = %e, "HEX write failed");
            }
        }
    }

    fn on_hex_answer(&mut self, index: usize, answer: Option<Result<Outcome, Vec<u8>>>) {
        match answer {
            None => {}
            Some(Ok(outcome)) => self.on_outcome(Some(index), outcome),
            Some(Err(resend)) => {
                let p = &mut self.ports[index];
                debug!(port = %p.path.display(), "HEX request sent again");
                if let Some(w) = p.writer.as_mut() {
                    let _ = w.send(&resend);
                }
            }
        }
    }

    fn on_outcome(&mut self, index: Option<usize>, outcome: Outcome) {
        match outcome {
            Outcome::Done { job, reply } => match job.purpose {
                Purpose::Command {
                    topic,
                    device,
                    setting,
                } => {
                    let value = commands::describe(setting, &reply.value);
                    info!(device = %device, setting = setting.name(), %value, "setting applied");
                    let topics = self.bus.topics();
                    self.bus.publish_retained(
                        topics.device_setting(PROCESS, &device, setting.name()),
                        value,
                    );
                    if setting == Setting::ChargeCurrentLimit {
                        self.kept.insert(
                            device,
                            Kept {
                                set_topic: topic,
                                request: job.request,
                                next: Instant::now() + self.cfg.volatile_refresh(),
                            },
                        );
                    }
                }
                Purpose::Refresh { device, .. } => {
                    debug!(device = %device, "volatile setting rewritten");
                }
                Purpose::Identify => {
                    let serial = reply.string();
                    let serial = (!serial.trim().is_empty()).then(|| serial.trim().to_string());
                    if let Some(p) = index.and_then(|i| self.ports.get_mut(i)) {
                        p.serial_query = SerialQuery::Answered(serial);
                    }
                }
            },
            Outcome::Failed { job, error } => {
                match job.purpose {
                    Purpose::Command { topic, .. } => self.bus.report_error(&topic, error),
                    Purpose::Identify => {
                        if let Some(p) = index.and_then(|i| self.ports.get_mut(i)) {
                            info!(port = %p.path.display(), %error, "no serial number over HEX; the port names the device");
                            p.serial_query = SerialQuery::Answered(None);
                        }
                    }
                    Purpose::Refresh { topic, device } => {
                        warn!(device = %device, %error, "rewriting the charge current limit failed");
                        self.bus.report_error(
                        &topic,
                        format!("keeping the charge current limit of {device} in force failed: {error}"),
                    );
                    }
                }
            }
        }
    }

    /// A limit this bridge confirmed before it restarted (its retained
    /// `<device>/charge_current_limit`, replayed by the broker) is kept in force again:
    /// the bus still says it holds, and the device forgets it within a minute unless
    /// it is rewritten. Only retained copies count, and only for devices not already kept.
    fn resume_kept(&mut self, m: &Message) -> bool {
        let topics = self.bus.topics().clone();
        let setting = Setting::ChargeCurrentLimit;
        let Some((device, _)) = topics.parse_device_setting(PROCESS, &m.topic, &[setting.name()])
        else {
            return false;
        };
        if !m.retain || self.kept.contains_key(device) {
            return true;
        }
        let Ok(text) = m.text() else { return true };
        match setting.parse(text) {
            Ok(target) if target != Target::NoLimit => {
                let Some(request) = target.request(setting) else {
                    return true;
                };
                info!(
                    device,
                    limit = text,
                    "keeping in force the charge current limit set before the restart"
                );
                self.kept.insert(
                    device.to_string(),
                    Kept {
                        set_topic: topics.device_setting_set(PROCESS, device, setting.name()),
                        request,
                        next: Instant::now(),
                    },
                );
            }
            Ok(_) => {}
            Err(e) => {
                warn!(topic = %m.topic, error = %e, "ignoring a retained limit that does not parse")
            }
        }
        true
    }

    /// After every connection: read which devices the broker holds (see [`Census`]).
    fn take_census(&mut self) {
        let topics = self.bus.topics();
        self.census.listening = true;
        self.census.nonce += 1;
        self.census.seen.clear();
        self.bus.subscribe(topics.device_state(PROCESS, "+"));
        self.bus.subscribe(topics.sync(PROCESS));
        self.bus.publish(
            topics.sync(PROCESS),
            format!("{}-{}", std::process::id(), self.census.nonce),
        );
    }

    /// A retained state or our sync echo, while the census runs; true when it was one.
    fn on_census(&mut self, m: &Message) -> bool {
        let topics = self.bus.topics().clone();
        if m.topic == topics.sync(PROCESS) {
            let expected = format!("{}-{}", std::process::id(), self.census.nonce);
            if self.census.listening && m.payload.as_ref() == expected.as_bytes() {
                self.census.listening = false;
                self.bus.unsubscribe(topics.device_state(PROCESS, "+"));
                debug!(devices = self.census.seen.len(), "retained devices read");
                self.forget_ghosts();
            }
            return true;
        }
        let Some((PROCESS, device)) = topics.parse_device_state(&m.topic) else {
            return false;
        };
        if !self.census.listening {
            return true; // the last of our own states before the unsubscription
        }
        let serial = serde_json::from_slice::<serde_json::Value>(&m.payload)
            .ok()
            .and_then(|v| v.get("serial_number")?.as_str().map(String::from));
        match serial {
            Some(serial) => {
                self.census.seen.insert(device.to_string(), serial);
            }
            None => {
                self.census.seen.remove(device);
            }
        }
        true
    }

    /// Once the census is complete: the retained devices whose serial number now goes by
    /// another id, live or configured.
    fn forget_ghosts(&mut self) {
        let seen = std::mem::take(&mut self.census.seen);
        for (device, serial) in &seen {
            let live = self
                .ports
                .iter()
                .find(|p| p.serial.as_deref() == Some(serial.as_str()))
                .and_then(|p| p.device.clone());
            let now = live.or_else(|| self.registry.configured_name(serial).map(String::from));
            match now {
                Some(id) if id != *device => self.forget_device(device, serial, &id),
                _ => {
                    self.census.seen.insert(device.clone(), serial.clone());
                }
            }
        }
    }

    /// The device with `serial` was just identified as `id`: any other retained id of
    /// that serial number is a ghost.
    fn forget_renamed(&mut self, id: &str, serial: &str) {
        if self.census.listening {
            return; // forget_ghosts sees it at the end of the census
        }
        let ghosts: Vec<String> = self
            .census
            .seen
            .iter()
            .filter(|(device, s)| *s == serial && device.as_str() != id)
            .map(|(device, _)| device.clone())
            .collect();
        for device in ghosts {
            self.census.seen.remove(&device);
            self.forget_device(&device, serial, id);
        }
    }

    /// Clears every retained topic of the device once known as `device`.
    fn forget_device(&self, device: &str, serial: &str, now: &str) {
        info!(
            device,
            serial,
            now,
            "this serial number is now another device id: the old id's retained topics cleared"
        );
        let topics = self.bus.topics();
        for setting in Setting::ALL {
            self.bus
                .clear_retained(topics.device_setting(PROCESS, device, setting.name()));
        }
        self.bus
            .clear_retained(topics.device_availability(PROCESS, device));
        // Last: the state is how others learn that a device exists.
        self.bus
            .clear_retained(topics.device_state(PROCESS, device));
    }

    fn on_message(&mut self, m: &Message) {
        if self.on_census(m) || self.resume_kept(m) {
            return;
        }
        let topics = self.bus.topics().clone();
        let Some((device, setting)) = topics.parse_device_setting_set(PROCESS, &m.topic) else {
            return;
        };
        if m.retain {
            warn!(topic = %m.topic, "retained command ignored");
            return;
        }
        if m.payload.is_empty() {
            // How a stray retained command is deleted (`mosquitto_pub -r -n`): not a command.
            debug!(topic = %m.topic, "empty payload ignored");
            return;
        }
        let result = (|| -> Result<(), String> {
            let setting = Setting::from_name(setting).map_err(|e| e.to_string())?;
            let text = m.text().map_err(|e| e.to_string())?;
            let target = setting.parse(text).map_err(|e| e.to_string())?;
            if target == Target::NoLimit {
                self.kept.remove(device);
                self.bus.publish_retained(
                    topics.device_setting(PROCESS, device, setting.name()),
                    "none",
                );
                info!(device, "charge current limit released");
                return Ok(());
            }
            let request = target
                .request(setting)
                .expect("targets other than NoLimit write");
            let port = self.port_of(device).ok_or_else(|| {
                format!("device {device:?} is not connected (unknown or offline)")
            })?;
            port.hex
                .push(Job {
                    request,
                    purpose: Purpose::Command {
                        topic: m.topic.clone(),
                        device: device.to_string(),
                        setting,
                    },
                })
                .map_err(|_| format!("device {device:?} has too many commands waiting"))
        })();
        if let Err(error) = result {
            self.bus.report_error(&m.topic, error);
        }
    }
}

/// The kind of a device whose PID is not in the product table, from its fields.
fn infer_kind(block: &TextBlock) -> Kind {
    if block.get("PPV").is_some() || block.get("VPV").is_some() {
        Kind::SolarCharger
    } else if block.get("AC_OUT_V").is_some() {
        Kind::Inverter
    } else if block.get("SOC").is_some() || block.get("CE").is_some() || block.get("BMV").is_some()
    {
        Kind::BatteryMonitor
    } else {
        Kind::Unknown
    }
}
