//! `pvbus tm1638`: relay n's real state on LED n, its mode on digit n, and button n to
//! choose its mode (forced on, forced off, auto), sent to the relay bridge 2 s after the
//! last press so that several presses choose. Everything is also on MQTT: the text on the
//! digits, each LED, the brightness, and every button press.
//!
//! One task: bus events, the key-scan tick, and the timer of a pending choice. The chip
//! has no interrupt line and answers a scan with the keys held at that instant, so we
//! scan: every `scan_every` while the panel is in use, every `idle_scan_every` when no
//! key was pressed for `active_for` (a press shorter than the idle period can fall
//! between two scans). The scan is done inline (about 85 µs of bit-banging on a Pi),
//! on a kernel timer: one wake-up per scan (`crate::scan`). The display is only
//! written when what it should show changed.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pvbus_bus::contract::{now_ts, parse_on_off};
use pvbus_bus::{Bus, BusConfig, Event, Message, ModeRequest, RelayMode, Shutdown, Topics};
use pvbus_hardware::sim::SimBoard;
use pvbus_hardware::{BackendKind, BidirectionalLine, Gpio, InitialLevel, Level, OutputLine, Pull};
use tm1638::sim::{ChipPins, Tm1638Model};
use tm1638::{BoardKind, Brightness, SpinDelay, Tm1638, font};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Tm1638Config;
use crate::scan::{Pace, ScanTicker};
use crate::values::Values;

pub const PROCESS: &str = "tm1638";

type Chain = Tm1638<OutputLine, BidirectionalLine, SpinDelay>;

/// The chain of boards, and the simulated chips when the backend is `sim`.
pub struct Hardware {
    chain: Chain,
    kind: BoardKind,
    sim: Option<SimPanel>,
    /// What each board's RAM and display control hold, as last written.
    written: Vec<Option<([u8; 16], bool, u8)>>,
    failing: bool,
}

/// The simulated boards: their chips, the file their picture is written to, and the
/// presses asked for on `<base>/tm1638/sim/press`.
pub struct SimPanel {
    models: Vec<Tm1638Model>,
    picture: PathBuf,
    last_picture: String,
    presses: VecDeque<usize>,
    held: Option<usize>,
    next_step: Option<Instant>,
}

/// Where the simulated panel draws itself: `<sim_dir>/tm1638.txt`.
pub const SIM_PICTURE: &str = "tm1638.txt";

impl Hardware {
    pub fn open(config: &Tm1638Config) -> anyhow::Result<Hardware> {
        let (gpio, sim): (Box<dyn Gpio>, Option<SimPanel>) =
            if config.gpio.backend == BackendKind::Sim {
                let dir = config
                    .gpio
                    .sim_dir
                    .clone()
                    .context("tm1638.gpio.sim_dir is needed for the sim backend")?;
                let board = SimBoard::open(&dir)
                    .with_context(|| format!("opening the simulated board in {}", dir.display()))?;
                // Every edge of a bit-banged bus would otherwise be a line in pins.log.
                let mut pins = config.stb.clone();
                pins.extend([config.clk, config.dio]);
                board.unrecorded(&pins);
                let models: Vec<Tm1638Model> = config
                    .stb
                    .iter()
                    .map(|&stb| {
                        let model = Tm1638Model::new(ChipPins {
                            stb,
                            clk: config.clk,
                            dio: config.dio,
                        });
                        board.attach(Box::new(model.clone()));
                        model
                    })
                    .collect();
                let sim = SimPanel {
                    models,
                    picture: dir.join(SIM_PICTURE),
                    last_picture: String::new(),
                    presses: VecDeque::new(),
                    held: None,
                    next_step: None,
                };
                (Box::new(board), Some(sim))
            } else {
                (
                    pvbus_hardware::open_gpio(&config.gpio).context("opening the GPIO")?,
                    None,
                )
            };
        info!(
            backend = gpio.name(),
            boards = config.stb.len(),
            "TM1638 GPIO open"
        );
        let stbs = config
            .stb
            .iter()
            .map(|&pin| gpio.output(pin, InitialLevel::Level(Level::High)))
            .collect::<Result<Vec<_>, _>>()
            .context("opening the STB lines")?;
        let clk = gpio
            .output(config.clk, InitialLevel::Level(Level::High))
            .context("opening CLK")?;
        // The chip's DIO is open drain when it answers a key scan: it needs a pull-up.
        let dio = gpio
            .bidirectional(config.dio, Pull::Up)
            .context("opening DIO")?;
        let chain =
            Tm1638::new(stbs, clk, dio, SpinDelay).map_err(|e| anyhow::anyhow!("TM1638: {e}"))?;
        Ok(Hardware {
            chain,
            kind: config.board.kind(),
            sim,
            written: vec![None; config.stb.len()],
            failing: false,
        })
    }

    /// Puts `frame` on the boards, writing only the boards whose picture changed.
    fn show(&mut self, frame: &Frame) {
        for board in 0..self.chain.boards() {
            let digits: [u8; 8] = frame.segments[board * 8..board * 8 + 8]
                .try_into()
                .expect("8 digits per board");
            let leds = (0..self.kind.leds())
                .filter(|&n| {
                    frame
                        .leds
                        .get(board * self.kind.leds() + n)
                        .copied()
                        .unwrap_or(false)
                })
                .fold(0u8, |bits, n| bits | 1 << n);
            let ram = self.kind.ram(&digits, leds);
            let wanted = (ram, frame.on, frame.brightness);
            if self.written[board] == Some(wanted) {
                continue;
            }
            let brightness = Brightness::new(frame.brightness).unwrap_or(Brightness::MAX);
            let result = self
                .chain
                .write_ram(board, 0, &ram)
                .and_then(|()| self.chain.display(board, frame.on, brightness));
            match result {
                Ok(()) => self.written[board] = Some(wanted),
                Err(e) => warn!(board, error = %e, "cannot write the TM1638"),
            }
        }
        self.draw_sim();
    }

    /// Buttons held now, numbered across the chain (board 2's first button is 8 or 16).
    fn scan(&mut self) -> Option<Vec<bool>> {
        let per_board = self.kind.buttons();
        let mut held = vec![false; per_board * self.chain.boards()];
        for board in 0..self.chain.boards() {
            match self.chain.read_keys(board) {
                Ok(scan) => {
                    let set = self.kind.pressed(&scan);
                    for n in 0..per_board {
                        held[board * per_board + n] = set & (1 << n) != 0;
                    }
                }
                Err(e) => {
                    if !self.failing {
                        warn!(board, error = %e, "key scan failed; retrying at every scan");
                    }
                    self.failing = true;
                    return None;
                }
            }
        }
        if self.failing {
            info!("key scan works again");
            self.failing = false;
        }
        Some(held)
    }

    fn draw_sim(&mut self) {
        let Some(sim) = &mut self.sim else { return };
        let mut picture = String::new();
        for (n, model) in sim.models.iter().enumerate() {
            if sim.models.len() > 1 {
                picture.push_str(&format!("board {}\n", n + 1));
            }
            picture.push_str(&model.view(self.kind).render());
        }
        if picture != sim.last_picture {
            let temp = sim.picture.with_extension("txt.tmp");
            let written =
                std::fs::write(&temp, &picture).and_then(|()| std::fs::rename(&temp, &sim.picture));
            if let Err(e) = written {
                warn!(path = %sim.picture.display(), error = %e, "cannot draw the simulated panel");
            }
            sim.last_picture = picture;
        }
    }

    /// A press asked for on the sim topic: held for 3 scans, then released for 2, one
    /// after another, as a finger would.
    fn sim_press(&mut self, button: usize, scan_every: Duration) {
        let Some(sim) = &mut self.sim else { return };
        sim.presses.push_back(button);
        if sim.next_step.is_none() {
            self.sim_step(scan_every);
        }
    }

    fn sim_step(&mut self, scan_every: Duration) {
        let kind = self.kind;
        let Some(sim) = &mut self.sim else { return };
        let per_board = kind.buttons();
        if let Some(button) = sim.held.take() {
            sim.models[button / per_board].set_button(kind, button % per_board, false);
            sim.next_step = Some(Instant::now() + 2 * scan_every);
        } else if let Some(button) = sim.presses.pop_front() {
            sim.models[button / per_board].set_button(kind, button % per_board, true);
            sim.held = Some(button);
            sim.next_step = Some(Instant::now() + 3 * scan_every);
        } else {
            sim.next_step = None;
        }
    }

    fn sim_next_step(&self) -> Option<Instant> {
        self.sim.as_ref().and_then(|s| s.next_step)
    }
}

/// What the boards should show.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    segments: Vec<u8>,
    leds: Vec<bool>,
    on: bool,
    brightness: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Boot,
    Online,
    Offline,
}

/// The panel's logic, apart from hardware and bus.
struct Panel {
    config: Tm1638Config,
    relays: Vec<String>,
    glyphs: [char; 4],
    link: Link,
    values: Values,
    pending: BTreeMap<usize, ModeRequest>,
    apply_at: Option<Instant>,
    text_override: Option<String>,
    led_override: Vec<Option<bool>>,
    on: bool,
    brightness: u8,
    held: Vec<bool>,
    /// What we last published: display text, LEDs, brightness.
    published: Option<(String, Vec<bool>, String)>,
}

fn request_name(request: ModeRequest) -> &'static str {
    match request {
        ModeRequest::ForcedOff => "forced_off",
        ModeRequest::ForcedOn => "forced_on",
        ModeRequest::Auto => "auto",
        ModeRequest::Exact(mode) => mode.as_str(),
    }
}

impl Panel {
    fn new(config: Tm1638Config, relays: Vec<String>) -> Panel {
        let glyphs: Vec<char> = config.mode_digits.chars().collect();
        let glyphs = [glyphs[0], glyphs[1], glyphs[2], glyphs[3]];
        Panel {
            led_override: vec![None; config.leds()],
            held: vec![false; config.buttons()],
            on: true,
            brightness: config.brightness,
            relays,
            glyphs,
            link: Link::Boot,
            values: Values::default(),
            pending: BTreeMap::new(),
            apply_at: None,
            text_override: None,
            published: None,
            config,
        }
    }

    fn text(&self) -> String {
        match self.link {
            Link::Boot => return self.config.boot_text.clone(),
            Link::Offline => return self.config.offline_text.clone(),
            Link::Online => {}
        }
        if let Some(text) = &self.text_override {
            return text.clone();
        }
        let mut text = String::new();
        for (n, id) in self.relays.iter().enumerate().take(self.config.digits()) {
            if let Some(request) = self.pending.get(&n) {
                text.push(match request {
                    ModeRequest::ForcedOff => self.glyphs[0],
                    ModeRequest::ForcedOn => self.glyphs[3],
                    _ => 'A',
                });
                // The lit point says "chosen, not yet sent".
                text.push('.');
            } else {
                text.push(
                    self.values
                        .relay_modes
                        .get(id)
                        .map_or('-', |m| self.glyphs[usize::from(m.number())]),
                );
            }
        }
        text
    }

    fn frame(&self) -> Frame {
        let digits = self.config.digits();
        let segments = font::encode(&self.text(), digits).unwrap_or_else(|e| {
            warn!(error = %e, "cannot show the text; showing dashes");
            font::encode(&"-".repeat(digits), digits).expect("dashes fit")
        });
        let leds = (0..self.config.leds())
            .map(|n| {
                if self.link != Link::Online {
                    return false;
                }
                if let Some(forced) = self.led_override[n] {
                    return forced;
                }
                self.relays
                    .get(n)
                    .and_then(|id| self.values.relay_states.get(id))
                    .copied()
                    .unwrap_or(false)
            })
            .collect();
        Frame {
            segments,
            leds,
            on: self.on,
            brightness: self.brightness,
        }
    }

    /// Button `n` (0-based) went down.
    fn press(&mut self, bus: &Bus, n: usize) {
        let payload = serde_json::json!({"event_type": "press", "ts": now_ts()});
        bus.publish(
            bus.topics().panel_button(PROCESS, &(n + 1).to_string()),
            payload.to_string(),
        );
        let Some(id) = self.relays.get(n) else { return };
        if self.link != Link::Online {
            return;
        }
        let current = self.values.relay_modes.get(id).copied();
        let next = match self.pending.get(&n).copied() {
            Some(ModeRequest::ForcedOn) => ModeRequest::ForcedOff,
            Some(ModeRequest::ForcedOff) => ModeRequest::Auto,
            Some(_) => ModeRequest::ForcedOn,
            None => match current {
                Some(RelayMode::ForcedOn) => ModeRequest::ForcedOff,
                Some(RelayMode::ForcedOff) => ModeRequest::Auto,
                _ => ModeRequest::ForcedOn,
            },
        };
        self.pending.insert(n, next);
        self.apply_at = Some(Instant::now() + self.config.apply_after);
    }

    /// The pause after the last press is over: send the choices.
    fn apply(&mut self, bus: &Bus) {
        self.apply_at = None;
        for (n, request) in std::mem::take(&mut self.pending) {
            let id = &self.relays[n];
            let current = self.values.relay_modes.get(id).copied();
            let unchanged = match (request, current) {
                (ModeRequest::Auto, Some(mode)) => mode.is_auto(),
                (request, Some(mode)) => request.target() == mode,
                (_, None) => false,
            };
            if unchanged {
                continue;
            }
            info!(relay = %id, mode = request_name(request), "mode chosen with the buttons");
            bus.publish(bus.topics().relay_mode_set(id), request_name(request));
        }
    }

    fn command(&mut self, bus: &Bus, message: &Message) {
        let topics = bus.topics();
        let Some(item) = topics.parse_panel_command(PROCESS, &message.topic) else {
            return;
        };
        if message.retain {
            warn!(topic = %message.topic, "ignoring a retained command");
            return;
        }
        let text = match message.text() {
            Ok(t) => t.trim().to_string(),
            Err(e) => return bus.report_error(&message.topic, e),
        };
        let result: Result<(), String> = match item.split_once('/') {
            None if item == "display" => {
                if text.is_empty() || text == "auto" {
                    self.text_override = None;
                    Ok(())
                } else {
                    font::encode(&text, self.config.digits())
                        .map(|_| self.text_override = Some(text.clone()))
                        .map_err(|e| e.to_string())
                }
            }
            None if item == "brightness" => match text.to_ascii_lowercase().as_str() {
                "off" => {
                    self.on = false;
                    Ok(())
                }
                "on" => {
                    self.on = true;
                    Ok(())
                }
                level => match level.parse::<u8>() {
                    Ok(level) if level <= 7 => {
                        self.brightness = level;
                        self.on = true;
                        Ok(())
                    }
                    _ => Err(format!("expected 0..7, on or off, got {text:?}")),
                },
            },
            Some(("led", n)) => match n.parse::<usize>() {
                Ok(n) if (1..=self.config.leds()).contains(&n) => {
                    if text.eq_ignore_ascii_case("auto") || text.is_empty() {
                        self.led_override[n - 1] = None;
                        Ok(())
                    } else {
                        parse_on_off(&text)
                            .map(|on| self.led_override[n - 1] = Some(on))
                            .map_err(|e| format!("{e}, or auto"))
                    }
                }
                _ => Err(format!(
                    "there is no LED {n} (LEDs are 1..{})",
                    self.config.leds()
                )),
            },
            _ => Err(format!(
                "unknown command {item:?}: expected display, brightness or led/<n>"
            )),
        };
        if let Err(error) = result {
            bus.report_error(&message.topic, error);
        }
    }

    /// Publishes what the panel shows, when it changed (retained).
    fn publish(&mut self, bus: &Bus, frame: &Frame) {
        let topics = bus.topics();
        let text = font::decode_all(&frame.segments);
        let brightness = if frame.on {
            frame.brightness.to_string()
        } else {
            "off".to_string()
        };
        let now = (text, frame.leds.clone(), brightness);
        let before = self.published.replace(now.clone());
        let (text, leds, brightness) = now;
        if before.as_ref().is_none_or(|b| b.0 != text) {
            bus.publish_retained(topics.panel_item(PROCESS, "display"), text);
        }
        for (n, on) in leds.iter().enumerate() {
            if before.as_ref().is_none_or(|b| b.1.get(n) != Some(on)) {
                bus.publish_retained(
                    topics.panel_item(PROCESS, &format!("led/{}", n + 1)),
                    pvbus_bus::contract::on_off(*on),
                );
            }
        }
        if before.as_ref().is_none_or(|b| b.2 != brightness) {
            bus.publish_retained(topics.panel_item(PROCESS, "brightness"), brightness);
        }
    }
}

/// One key scan at `now`: the buttons that went down since the scan that left `held`
/// (updated), with the pace told of them. Nothing when the scan failed (logged).
fn scan_keys(
    hardware: &mut Hardware,
    held: &mut Vec<bool>,
    pace: &mut Pace,
    now: std::time::Instant,
) -> Vec<usize> {
    let Some(now_held) = hardware.scan() else {
        return Vec::new();
    };
    let presses: Vec<usize> = (0..now_held.len())
        .filter(|&n| now_held[n] && !held.get(n).copied().unwrap_or(false))
        .collect();
    if !presses.is_empty() {
        pace.pressed(now);
    }
    *held = now_held;
    presses
}

/// Runs the panel until `shutdown` fires.
pub async fn run(
    config: Tm1638Config,
    relays: Vec<String>,
    bus_config: BusConfig,
    mut hardware: Hardware,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (bus, mut inbox) = Bus::connect(&bus_config, PROCESS);
    let topics: Topics = bus.topics().clone();
    for filter in Values::relay_subscriptions(&topics) {
        bus.subscribe(filter);
    }
    for filter in topics.panel_command_filters(PROCESS) {
        bus.subscribe(filter);
    }
    let sim_topic = topics.panel_sim_press(PROCESS);
    if hardware.sim.is_some() {
        bus.subscribe(sim_topic.clone());
    }
    let mut pace = Pace::new(config.scan_every, config.idle_scan_every, config.active_for);
    let mut scan = ScanTicker::new(pace.period(std::time::Instant::now()))
        .context("starting the key-scan timer")?;
    let mut panel = Panel::new(config, relays);
    let mut frame = panel.frame();
    hardware.show(&frame);

    loop {
        let apply_at = panel.apply_at;
        let sim_step = hardware.sim_next_step();
        tokio::select! {
            _ = shutdown.wait() => break,
            // Never reached a broker: from "boot" to the bus-lost sign.
            _ = bus.wait_unreachable(), if panel.link == Link::Boot => panel.link = Link::Offline,
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Connected) => panel.link = Link::Online,
                Some(Event::Disconnected) => {
                    panel.link = Link::Offline;
                    // A choice in progress cannot be sent; forget it rather than send
                    // it minutes later.
                    panel.pending.clear();
                    panel.apply_at = None;
                }
                Some(Event::Message(message)) => {
                    if message.topic == sim_topic && message.retain {
                        warn!(topic = %message.topic, "ignoring a retained press");
                    } else if message.topic == sim_topic {
                        match message.text().ok().and_then(|t| t.trim().parse::<usize>().ok()) {
                            Some(n) if (1..=panel.held.len()).contains(&n) => hardware.sim_press(n - 1, scan.period()),
                            _ => bus.report_error(&message.topic, format!("expected a button number 1..{}", panel.held.len())),
                        }
                    } else if topics.parse_panel_command(PROCESS, &message.topic).is_some() {
                        panel.command(&bus, &message);
                    } else if let Err(e) = panel.values.update(&topics, &message) {
                        warn!(error = %e, "ignoring a relay message");
                    }
                }
            },
            ticked = scan.tick() => {
                ticked.context("waiting for the key-scan timer")?;
                let now = std::time::Instant::now();
                for n in scan_keys(&mut hardware, &mut panel.held, &mut pace, now) {
                    panel.press(&bus, n);
                }
                scan.set_period(pace.period(now)).context("setting the key-scan timer")?;
            }
            _ = tokio::time::sleep_until(apply_at.unwrap_or_else(Instant::now)), if apply_at.is_some() => panel.apply(&bus),
            _ = tokio::time::sleep_until(sim_step.unwrap_or_else(Instant::now)), if sim_step.is_some() => hardware.sim_step(scan.period()),
        }
        let next = panel.frame();
        if next != frame {
            hardware.show(&next);
            frame = next;
        }
        if panel.link == Link::Online {
            panel.publish(&bus, &frame);
        }
    }
    // Stopped: say so on the digits rather than leave stale LEDs lit.
    panel.link = Link::Offline;
    hardware.show(&panel.frame());
    bus.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The real driver and the wire-level chip model, scanned at the times the pace
    //! chooses, in simulated time: a finger holds a key from one instant to another.
    use std::time::Instant as Clock;

    use super::*;

    struct Bench {
        hardware: Hardware,
        pace: Pace,
        held: Vec<bool>,
        t0: Clock,
        _dir: tempfile::TempDir,
    }

    impl Bench {
        fn new() -> Bench {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Tm1638Config::default();
            config.gpio.backend = BackendKind::Sim;
            config.gpio.sim_dir = Some(dir.path().to_path_buf());
            let pace = Pace::new(config.scan_every, config.idle_scan_every, config.active_for);
            let hardware = Hardware::open(&config).unwrap();
            Bench {
                held: vec![false; config.buttons()],
                hardware,
                pace,
                t0: Clock::now(),
                _dir: dir,
            }
        }

        /// Scans from `from` to `until` (after t0), as the ticker does: the next scan
        /// one period after each, the period chosen after each scan. Button 1 is held
        /// during each `(down_at, for)` of `presses`. Returns the scan times and the
        /// times of the presses seen.
        fn run(
            &mut self,
            from: Duration,
            until: Duration,
            presses: &[(Duration, Duration)],
        ) -> (Vec<Duration>, Vec<Duration>) {
            let kind = self.hardware.kind;
            let model = self.hardware.sim.as_ref().unwrap().models[0].clone();
            let (mut scans, mut seen) = (Vec::new(), Vec::new());
            let mut t = from + self.pace.period(self.t0 + from);
            while t < until {
                let down = presses.iter().any(|&(at, hold)| at <= t && t < at + hold);
                model.set_button(kind, 0, down);
                let now = self.t0 + t;
                if scan_keys(&mut self.hardware, &mut self.held, &mut self.pace, now) == [0] {
                    seen.push(t);
                }
                scans.push(t);
                t += self.pace.period(now);
            }
            (scans, seen)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn at_the_idle_rate_a_150_ms_press_is_seen_whatever_its_phase() {
        let mut missed_short = 0;
        for phase in 0..150 {
            let mut bench = Bench::new();
            let (scans, seen) = bench.run(ms(0), ms(1500), &[(ms(1000 + phase), ms(150))]);
            assert!(
                scans
                    .windows(2)
                    .take_while(|w| w[1] < ms(1000))
                    .all(|w| w[1] - w[0] == ms(150)),
                "idle scans every 150 ms: {scans:?}"
            );
            assert_eq!(seen.len(), 1, "phase {phase} ms: {seen:?}");
            // The honest limit: a press shorter than the idle period can fall between
            // two scans.
            let mut bench = Bench::new();
            let (_, seen) = bench.run(ms(0), ms(1500), &[(ms(1000 + phase), ms(100))]);
            missed_short += usize::from(seen.is_empty());
        }
        assert!(
            (1..150).contains(&missed_short),
            "a 100 ms press is lost at some phases only: {missed_short}/150"
        );
    }

    #[test]
    fn after_a_press_the_fast_rate_resumes_then_idle_again() {
        let mut bench = Bench::new();
        // A press at 1 s; then scans every 100 ms for 30 s after it.
        let (scans, seen) = bench.run(ms(0), ms(20_000), &[(ms(1000), ms(150))]);
        assert_eq!(seen.len(), 1);
        let pressed_at = seen[0];
        assert!(
            scans
                .windows(2)
                .filter(|w| w[0] >= pressed_at)
                .all(|w| w[1] - w[0] == ms(100)),
            "fast after the press: {scans:?}"
        );
        let from = *scans.last().unwrap();
        let (scans, _) = bench.run(from, ms(40_000), &[]);
        let gaps: Vec<Duration> = scans.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.contains(&ms(100)) && gaps.contains(&ms(150)));
        let idle_from = pressed_at + ms(30_000);
        for (w, gap) in scans.windows(2).zip(&gaps) {
            let expected = if w[0] < idle_from { ms(100) } else { ms(150) };
            assert_eq!(*gap, expected, "gap after {:?}", w[0]);
        }
    }
}
