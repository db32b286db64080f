//! `pvbus lcd`: pages of bus values on the 16x2 plate, buttons to change page and wake
//! the screen, a backlight coloured by the state of charge and dark at night. Also on
//! MQTT: each line, the backlight, the page, and every button press.
//!
//! One task: bus events, the button poll, the end of a wake-up, and the next dusk or
//! dawn of the night hours. The plate does not wire the expander's INT line to the Pi,
//! so we poll its latched change flags (no press is lost, however short): every
//! `poll_every` while in use, every `idle_poll_every` when no button was pressed for
//! `active_for`, on a kernel timer: one wake-up per poll (`crate::scan`). When a user
//! wired INTA to a GPIO (`int_pin`), there is no poll at all: a thread sleeps on the
//! pin's falling edge and wakes the task, which reads the latch. Lines are written
//! only when their text changed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hd44780_mcp23017::sim::PlateModel;
use hd44780_mcp23017::{Button, ButtonChanges, ButtonSet, Color, Plate, StdDelay};
use pvbus_bus::contract::now_ts;
use pvbus_bus::{Bus, BusConfig, Event, Message, Shutdown, Topics};
use pvbus_hardware::i2c::{I2cBus, SimI2cBus};
use pvbus_hardware::sim::SimBoard;
use pvbus_hardware::{BackendKind, Edge, EdgeLine, GpioConfig, Level, Pull};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{LcdBackend, LcdConfig};
use crate::scan::{Pace, ScanTicker};
use crate::template::Template;
use crate::values::Values;

pub const PROCESS: &str = "lcd";
/// Where the simulated plate draws itself: `<sim_dir>/lcd.txt`.
pub const SIM_PICTURE: &str = "lcd.txt";
const COLUMNS: usize = hd44780_mcp23017::plate::COLUMNS;

/// The plate, and its model when the backend is `sim`.
pub struct Hardware {
    plate: Plate<I2cBus, StdDelay>,
    /// The GPIO wired to the expander's INTA, when there is one.
    int: Option<EdgeLine>,
    sim: Option<SimPlate>,
    lines: [Option<String>; 2],
    color: Option<Color>,
    failing: bool,
}

pub struct SimPlate {
    model: PlateModel,
    picture: PathBuf,
    last_picture: String,
    presses: VecDeque<Button>,
    held: Option<Button>,
    next_step: Option<Instant>,
}

fn is_raspberry_pi() -> bool {
    std::fs::read("/proc/device-tree/model")
        .is_ok_and(|m| String::from_utf8_lossy(&m).contains("Raspberry Pi"))
}

impl Hardware {
    pub fn open(config: &LcdConfig) -> anyhow::Result<Hardware> {
        let mut sim = None;
        let bus = match config.backend {
            LcdBackend::Sim => {
                let dir = config
                    .sim_dir
                    .clone()
                    .context("lcd.sim_dir is needed for the sim backend")?;
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let bus = SimI2cBus::new();
                let model = PlateModel::new();
                bus.attach(config.address, Box::new(model.clone()));
                sim = Some(SimPlate {
                    model,
                    picture: dir.join(SIM_PICTURE),
                    last_picture: String::new(),
                    presses: VecDeque::new(),
                    held: None,
                    next_step: None,
                });
                I2cBus::Sim(bus)
            }
            LcdBackend::Rppal => I2cBus::rppal(config.i2c_bus)?,
            LcdBackend::I2cdev => I2cBus::linux(config.i2c_bus)?,
            LcdBackend::Auto if is_raspberry_pi() => I2cBus::rppal(config.i2c_bus)?,
            LcdBackend::Auto => I2cBus::linux(config.i2c_bus)?,
        };
        let int = match config.int_pin {
            None => None,
            Some(pin) => Some(open_int_line(config, pin, sim.as_ref())?),
        };
        let plate = Plate::new(bus, config.address, StdDelay).map_err(|e| {
            anyhow::anyhow!("LCD plate at I2C address 0x{:02x}: {e}", config.address)
        })?;
        info!(backend = ?config.backend, address = config.address, int_pin = ?config.int_pin, "LCD plate ready");
        Ok(Hardware {
            plate,
            int,
            sim,
            lines: [None, None],
            color: None,
            failing: false,
        })
    }

    fn show(&mut self, lines: &[String; 2], color: Color) {
        for (row, text) in lines.iter().enumerate() {
            if self.lines[row].as_ref() == Some(text) {
                continue;
            }
            match self.plate.write_line(row, text) {
                Ok(()) => self.lines[row] = Some(text.clone()),
                Err(e) => warn!(row, error = %e, "cannot write the LCD"),
            }
        }
        if self.color != Some(color) {
            match self.plate.set_backlight(color) {
                Ok(()) => self.color = Some(color),
                Err(e) => warn!(error = %e, "cannot set the backlight"),
            }
        }
        self.draw_sim();
    }

    /// What changed on the buttons since the last poll; `None` when nothing did or the
    /// plate did not answer.
    fn button_changes(&mut self) -> Option<ButtonChanges> {
        match self.plate.button_changes() {
            Ok(changes) => {
                if self.failing {
                    info!("the LCD plate answers again");
                    self.failing = false;
                }
                changes
            }
            Err(e) => {
                if !self.failing {
                    warn!(error = %e, "cannot read the buttons; retrying at every poll");
                }
                self.failing = true;
                // Written lines may be lost if the plate lost power: rewrite them.
                self.lines = [None, None];
                self.color = None;
                None
            }
        }
    }

    fn draw_sim(&mut self) {
        let Some(sim) = &mut self.sim else { return };
        let picture = sim.model.render();
        if picture != sim.last_picture {
            let temp = sim.picture.with_extension("txt.tmp");
            if let Err(e) =
                std::fs::write(&temp, &picture).and_then(|()| std::fs::rename(&temp, &sim.picture))
            {
                warn!(path = %sim.picture.display(), error = %e, "cannot draw the simulated plate");
            }
            sim.last_picture = picture;
        }
    }

    fn sim_press(&mut self, button: Button, poll_every: Duration) {
        let Some(sim) = &mut self.sim else { return };
        sim.presses.push_back(button);
        if sim.next_step.is_none() {
            self.sim_step(poll_every);
        }
    }

    fn sim_step(&mut self, poll_every: Duration) {
        let Some(sim) = &mut self.sim else { return };
        if let Some(button) = sim.held.take() {
            sim.model.set_button(button, false);
            sim.next_step = Some(Instant::now() + 2 * poll_every);
        } else if let Some(button) = sim.presses.pop_front() {
            sim.model.set_button(button, true);
            sim.held = Some(button);
            sim.next_step = Some(Instant::now() + 3 * poll_every);
        } else {
            sim.next_step = None;
        }
    }

    fn sim_next_step(&self) -> Option<Instant> {
        self.sim.as_ref().and_then(|s| s.next_step)
    }
}

/// Opens the GPIO wired to INTA (active low, push-pull: a pull-up keeps it defined
/// while the expander is unpowered). With the sim backend, the plate model's INTA
/// drives that pin of a simulated board kept in `sim_dir`.
fn open_int_line(config: &LcdConfig, pin: u8, sim: Option<&SimPlate>) -> anyhow::Result<EdgeLine> {
    let gpio: Box<dyn pvbus_hardware::Gpio> = match sim {
        Some(sim) => {
            let dir = config
                .sim_dir
                .clone()
                .context("lcd.sim_dir is needed for the sim backend")?;
            let board = SimBoard::open(&dir)
                .with_context(|| format!("opening the simulated board in {}", dir.display()))?;
            let wire = board.clone();
            sim.model.connect_interrupt_a(move |active| {
                let level = if active { Level::Low } else { Level::High };
                if let Err(e) = wire.drive_from_device(pin, Some(level)) {
                    warn!(error = %e, "the simulated INTA wire");
                }
            });
            Box::new(board)
        }
        None => {
            let backend = match config.backend {
                LcdBackend::Rppal => BackendKind::Rppal,
                LcdBackend::I2cdev => BackendKind::Gpiochip,
                LcdBackend::Auto | LcdBackend::Sim => BackendKind::Auto,
            };
            pvbus_hardware::open_gpio(&GpioConfig {
                backend,
                ..GpioConfig::default()
            })
            .context("opening the GPIO for lcd.int_pin")?
        }
    };
    gpio.edge_input(pin, Pull::Up, Edge::Falling)
        .with_context(|| format!("lcd.int_pin: GPIO {pin}"))
}

/// What wakes the task to read the buttons: the poll timer, or the INTA line.
enum ButtonWake {
    Poll(ScanTicker),
    /// Each message is a falling edge (or the waiting thread's error).
    Interrupt(mpsc::Receiver<Result<(), String>>),
}

impl ButtonWake {
    /// With an INTA line, a thread that sleeps on its falling edges; else the timer.
    fn start(int: Option<EdgeLine>, period: Duration) -> anyhow::Result<ButtonWake> {
        let Some(mut line) = int else {
            let ticker = ScanTicker::new(period).context("starting the button poll timer")?;
            return Ok(ButtonWake::Poll(ticker));
        };
        let (tx, rx) = mpsc::channel(1);
        // A change may have latched INTA low before the line was watched: its edge was
        // never seen, and INTA stays low until read. Read once at start.
        let _ = tx.try_send(Ok(()));
        std::thread::Builder::new()
            .name("lcd-int".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    match line.wait(None) {
                        // Full: a read is already due, it will see this change too.
                        Ok(_) => {
                            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(())) {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e.to_string()));
                            return;
                        }
                    }
                }
            })
            .context("starting the INTA thread")?;
        Ok(ButtonWake::Interrupt(rx))
    }

    /// Waits for the next reason to read the buttons. Cancel-safe.
    async fn wait(&mut self) -> anyhow::Result<()> {
        match self {
            ButtonWake::Poll(ticker) => ticker
                .tick()
                .await
                .context("waiting for the button poll timer"),
            ButtonWake::Interrupt(edges) => match edges.recv().await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(anyhow::anyhow!("waiting for lcd.int_pin: {e}")),
                None => Err(anyhow::anyhow!("the INTA thread stopped")),
            },
        }
    }

    /// The hold time of a simulated press: a few polls, or 300 ms.
    fn period(&self) -> Duration {
        match self {
            ButtonWake::Poll(ticker) => ticker.period(),
            ButtonWake::Interrupt(_) => Duration::from_millis(100),
        }
    }

    fn set_period(&mut self, period: Duration) -> anyhow::Result<()> {
        if let ButtonWake::Poll(ticker) = self {
            ticker
                .set_period(period)
                .context("setting the button poll timer")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Boot,
    Online,
    Offline,
}

/// Minutes since local midnight, and seconds into the minute.
fn local_clock() -> (u16, u16) {
    let now = jiff::Zoned::now();
    (
        now.hour() as u16 * 60 + now.minute() as u16,
        now.second() as u16,
    )
}

/// Whether `minute` falls in the night `[from, until)`, which may span midnight.
pub fn in_night(minute: u16, (from, until): (u16, u16)) -> bool {
    if from <= until {
        (from..until).contains(&minute)
    } else {
        minute >= from || minute < until
    }
}

/// How long until the night starts or ends, from `minute`:`second`.
pub fn until_next_boundary(minute: u16, second: u16, (from, until): (u16, u16)) -> Duration {
    let ahead = |boundary: u16| {
        let minutes = (u32::from(boundary) + 1440 - u32::from(minute)) % 1440;
        let minutes = if minutes == 0 { 1440 } else { minutes };
        u64::from(minutes) * 60 - u64::from(second)
    };
    Duration::from_secs(ahead(from).min(ahead(until)).max(1))
}

struct Screen {
    config: LcdConfig,
    pages: Vec<[Template; 2]>,
    relays: Vec<String>,
    values: Values,
    link: Link,
    page: usize,
    line_override: [Option<String>; 2],
    color_override: Option<Color>,
    night: bool,
    woken_until: Option<Instant>,
    held: ButtonSet,
    published: Option<([String; 2], Color, usize)>,
}

impl Screen {
    fn lines(&self) -> [String; 2] {
        let fit = |s: String| -> String { s.chars().take(COLUMNS).collect() };
        if self.link == Link::Boot {
            return ["pvbus".into(), "starting...".into()];
        }
        let page = &self.pages[self.page];
        let line = |row: usize| -> String {
            match &self.line_override[row] {
                Some(text) => fit(text.clone()),
                None => fit(page[row].render(&self.values, &self.relays)),
            }
        };
        let second = if self.link == Link::Offline {
            "(no bus)".to_string()
        } else {
            line(1)
        };
        [line(0), second]
    }

    fn soc_color(&self) -> Color {
        let (device, field) = self.config.soc.split_once('.').expect("validated");
        match self.values.number(device, field) {
            None => Color::Blue,
            Some(soc) if soc >= self.config.green_from => Color::Green,
            Some(soc) if soc <= self.config.red_at_or_below => Color::Red,
            Some(_) => Color::Yellow,
        }
    }

    fn dark(&self) -> bool {
        self.night && self.woken_until.is_none()
    }

    fn color(&self) -> Color {
        if self.dark() {
            return Color::Off;
        }
        self.color_override.unwrap_or_else(|| self.soc_color())
    }

    fn press(&mut self, bus: &Bus, button: Button) {
        let payload = serde_json::json!({"event_type": "press", "ts": now_ts()});
        bus.publish(
            bus.topics().panel_button(PROCESS, button.name()),
            payload.to_string(),
        );
        if self.night {
            // At night the first press only lights the screen; later ones page, and
            // each keeps it lit a while longer.
            let was_dark = self.dark();
            self.woken_until = Some(Instant::now() + self.config.wake_for);
            if was_dark {
                return;
            }
        }
        let pages = self.pages.len();
        self.page = match button {
            Button::Right | Button::Down => (self.page + 1) % pages,
            Button::Left | Button::Up => (self.page + pages - 1) % pages,
            Button::Select => 0,
        };
    }

    fn command(&mut self, bus: &Bus, message: &Message) {
        let Some(item) = bus.topics().parse_panel_command(PROCESS, &message.topic) else {
            return;
        };
        if message.retain {
            warn!(topic = %message.topic, "ignoring a retained command");
            return;
        }
        let text = match message.text() {
            Ok(t) => t.trim_end_matches(['\n', '\r']).to_string(),
            Err(e) => return bus.report_error(&message.topic, e),
        };
        let result: Result<(), String> = match item {
            "backlight" => {
                let name = text.trim().to_ascii_lowercase();
                if name == "auto" || name.is_empty() {
                    self.color_override = None;
                    Ok(())
                } else {
                    Color::from_name(&name)
                        .map(|c| self.color_override = Some(c))
                        .ok_or_else(|| format!("unknown colour {name:?}: expected auto, off, red, green, blue, yellow, teal, violet or white"))
                }
            }
            "page" => match text.trim().parse::<usize>() {
                Ok(n) if (1..=self.pages.len()).contains(&n) => {
                    self.page = n - 1;
                    Ok(())
                }
                _ => Err(format!("expected a page number 1..{}", self.pages.len())),
            },
            "line/1" | "line/2" => {
                let row = if item == "line/1" { 0 } else { 1 };
                self.line_override[row] = (!text.is_empty()).then_some(text);
                Ok(())
            }
            _ => Err(format!(
                "unknown command {item:?}: expected line/1, line/2, backlight or page"
            )),
        };
        if let Err(error) = result {
            bus.report_error(&message.topic, error);
        }
    }

    fn publish(&mut self, bus: &Bus, lines: &[String; 2], color: Color) {
        let topics = bus.topics();
        let now = (lines.clone(), color, self.page);
        let before = self.published.replace(now);
        for (row, text) in lines.iter().enumerate() {
            if before.as_ref().is_none_or(|b| &b.0[row] != text) {
                bus.publish_retained(
                    topics.panel_item(PROCESS, &format!("line/{}", row + 1)),
                    text.clone(),
                );
            }
        }
        if before.as_ref().is_none_or(|b| b.1 != color) {
            bus.publish_retained(topics.panel_item(PROCESS, "backlight"), color.name());
        }
        if before.as_ref().is_none_or(|b| b.2 != self.page) {
            bus.publish_retained(
                topics.panel_item(PROCESS, "page"),
                (self.page + 1).to_string(),
            );
        }
    }
}

/// One poll at `now`: the buttons that went down since the poll that left `held`
/// (updated), with the pace told of them. Nothing when nothing changed or the plate did
/// not answer (logged).
fn poll_buttons(
    hardware: &mut Hardware,
    held: &mut ButtonSet,
    pace: &mut Pace,
    now: std::time::Instant,
) -> Vec<Button> {
    let Some(changes) = hardware.button_changes() else {
        return Vec::new();
    };
    let presses = changes.presses(*held);
    if !presses.is_empty() {
        pace.pressed(now);
    }
    *held = changes.now;
    presses
}

/// Runs the LCD until `shutdown` fires.
pub async fn run(
    config: LcdConfig,
    relays: Vec<String>,
    bus_config: BusConfig,
    mut hardware: Hardware,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (bus, mut inbox) = Bus::connect(&bus_config, PROCESS);
    let topics: Topics = bus.topics().clone();
    for filter in Values::subscriptions(&topics) {
        bus.subscribe(filter);
    }
    for filter in topics.panel_command_filters(PROCESS) {
        bus.subscribe(filter);
    }
    let sim_topic = topics.panel_sim_press(PROCESS);
    if hardware.sim.is_some() {
        bus.subscribe(sim_topic.clone());
    }
    let mut pace = Pace::new(config.poll_every, config.idle_poll_every, config.active_for);
    let mut poll = ButtonWake::start(hardware.int.take(), pace.period(std::time::Instant::now()))?;
    let night_hours = config.night_minutes();
    let mut screen = Screen {
        pages: config.templates()?,
        relays,
        values: Values::default(),
        link: Link::Boot,
        page: 0,
        line_override: [None, None],
        color_override: None,
        night: false,
        woken_until: None,
        held: ButtonSet::default(),
        published: None,
        config,
    };
    let mut next_boundary = None;
    if let Some(hours) = night_hours {
        let (minute, second) = local_clock();
        screen.night = in_night(minute, hours);
        next_boundary = Some(Instant::now() + until_next_boundary(minute, second, hours));
    }
    hardware.show(&screen.lines(), screen.color());

    loop {
        let woken_until = screen.woken_until;
        let sim_step = hardware.sim_next_step();
        tokio::select! {
            _ = shutdown.wait() => break,
            // Never reached a broker: from "boot" to the bus-lost sign.
            _ = bus.wait_unreachable(), if screen.link == Link::Boot => screen.link = Link::Offline,
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Connected) => screen.link = Link::Online,
                Some(Event::Disconnected) => screen.link = Link::Offline,
                Some(Event::Message(message)) => {
                    if message.topic == sim_topic && message.retain {
                        warn!(topic = %message.topic, "ignoring a retained press");
                    } else if message.topic == sim_topic {
                        match message.text().ok().and_then(|t| Button::from_name(t.trim())) {
                            Some(button) => hardware.sim_press(button, poll.period()),
                            None => bus.report_error(&message.topic, "expected select, right, down, up or left"),
                        }
                    } else if topics.parse_panel_command(PROCESS, &message.topic).is_some() {
                        screen.command(&bus, &message);
                    } else if let Err(e) = screen.values.update(&topics, &message) {
                        warn!(error = %e, "ignoring a reading");
                    }
                }
            },
            woken = poll.wait() => {
                woken?;
                let now = std::time::Instant::now();
                for button in poll_buttons(&mut hardware, &mut screen.held, &mut pace, now) {
                    screen.press(&bus, button);
                }
                poll.set_period(pace.period(now))?;
            }
            _ = tokio::time::sleep_until(woken_until.unwrap_or_else(Instant::now)), if woken_until.is_some() => {
                screen.woken_until = None;
            }
            _ = tokio::time::sleep_until(next_boundary.unwrap_or_else(Instant::now)), if next_boundary.is_some() => {
                if let Some(hours) = night_hours {
                    let (minute, second) = local_clock();
                    screen.night = in_night(minute, hours);
                    next_boundary = Some(Instant::now() + until_next_boundary(minute, second, hours));
                    info!(night = screen.night, "night hours");
                }
            }
            _ = tokio::time::sleep_until(sim_step.unwrap_or_else(Instant::now)), if sim_step.is_some() => hardware.sim_step(poll.period()),
        }
        let lines = screen.lines();
        let color = screen.color();
        hardware.show(&lines, color);
        if screen.link == Link::Online {
            screen.publish(&bus, &lines, color);
        }
    }
    screen.link = Link::Offline;
    hardware.show(&screen.lines(), screen.color());
    bus.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The real driver and the wire-level plate model, polled at the times the pace
    /// chooses, in simulated time, while a finger taps RIGHT at `tap_at` for `tap_for`.
    /// Returns the poll times and the times the tap was seen.
    fn tap(tap_at: Duration, tap_for: Duration, until: Duration) -> (Vec<Duration>, Vec<Duration>) {
        let dir = tempfile::tempdir().unwrap();
        let config = LcdConfig {
            backend: LcdBackend::Sim,
            sim_dir: Some(dir.path().to_path_buf()),
            ..LcdConfig::default()
        };
        let mut hardware = Hardware::open(&config).unwrap();
        let model = hardware.sim.as_ref().unwrap().model.clone();
        let mut pace = Pace::new(config.poll_every, config.idle_poll_every, config.active_for);
        let mut held = ButtonSet::default();
        let t0 = std::time::Instant::now();
        let (mut polls, mut seen) = (Vec::new(), Vec::new());
        let mut t = pace.period(t0);
        let mut edges = [(tap_at, true), (tap_at + tap_for, false)]
            .into_iter()
            .peekable();
        while t < until {
            // The finger moves between two polls, maybe down and up again.
            while let Some((_, down)) = edges.next_if(|(at, _)| *at <= t) {
                model.set_button(Button::Right, down);
            }
            if poll_buttons(&mut hardware, &mut held, &mut pace, t0 + t) == [Button::Right] {
                seen.push(t);
            }
            polls.push(t);
            t += pace.period(t0 + t);
        }
        (polls, seen)
    }

    #[tokio::test]
    async fn with_inta_wired_a_tap_wakes_the_task_and_nothing_polls_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let config = LcdConfig {
            backend: LcdBackend::Sim,
            sim_dir: Some(dir.path().to_path_buf()),
            int_pin: Some(25),
            ..LcdConfig::default()
        };
        let mut hardware = Hardware::open(&config).unwrap();
        let model = hardware.sim.as_ref().unwrap().model.clone();
        let mut pace = Pace::new(config.poll_every, config.idle_poll_every, config.active_for);
        let mut held = ButtonSet::default();
        let mut wake = ButtonWake::start(hardware.int.take(), config.idle_poll_every).unwrap();
        let now = std::time::Instant::now;
        // The read at start, in case INTA fell before it was watched.
        wake.wait().await.unwrap();
        assert!(poll_buttons(&mut hardware, &mut held, &mut pace, now()).is_empty());
        // Idle: nothing wakes the task, nothing reads the plate (a poll at the idle
        // rate would have read it twice in this time).
        let reads = model.state().reads;
        let idle = tokio::time::timeout(ms(600), wake.wait()).await;
        assert!(idle.is_err(), "woken with nothing pressed");
        assert_eq!(model.state().reads, reads);
        // A tap: INTA falls on the wire, the thread wakes the task, the latch tells.
        model.set_button(Button::Right, true);
        model.set_button(Button::Right, false);
        tokio::time::timeout(Duration::from_secs(5), wake.wait())
            .await
            .expect("woken by INTA")
            .unwrap();
        assert_eq!(
            poll_buttons(&mut hardware, &mut held, &mut pace, now()),
            [Button::Right]
        );
        let log = std::fs::read_to_string(dir.path().join("pins.log")).unwrap();
        assert_eq!(
            log.lines()
                .filter(|l| l.contains("\"pin\":25") && l.contains("\"by\":\"device\""))
                .count(),
            2,
            "INTA fell and rose once on the wire:\n{log}"
        );
    }

    #[test]
    fn at_the_idle_rate_even_a_30_ms_tap_is_seen_whatever_its_phase() {
        for phase in (0..250).step_by(5) {
            let (polls, seen) = tap(ms(1000 + phase), ms(30), ms(2000));
            assert!(
                polls
                    .windows(2)
                    .take_while(|w| w[1] < ms(1000))
                    .all(|w| w[1] - w[0] == ms(250)),
                "idle polls every 250 ms: {polls:?}"
            );
            assert_eq!(seen.len(), 1, "phase {phase} ms: {seen:?}");
            // Then polls come every 100 ms: someone is using the panel.
            assert!(
                polls
                    .windows(2)
                    .filter(|w| w[0] >= seen[0])
                    .all(|w| w[1] - w[0] == ms(100))
            );
        }
    }

    #[test]
    fn nights_may_span_midnight() {
        let night = (22 * 60, 7 * 60);
        assert!(in_night(23 * 60, night));
        assert!(in_night(3 * 60, night));
        assert!(!in_night(7 * 60, night));
        assert!(!in_night(12 * 60, night));
        let siesta = (13 * 60, 15 * 60);
        assert!(in_night(14 * 60, siesta));
        assert!(!in_night(23 * 60, siesta));
    }

    #[test]
    fn the_next_boundary_is_the_nearest_of_dusk_and_dawn() {
        let night = (22 * 60, 7 * 60);
        assert_eq!(
            until_next_boundary(21 * 60 + 59, 30, night),
            Duration::from_secs(30)
        );
        assert_eq!(
            until_next_boundary(6 * 60, 0, night),
            Duration::from_secs(3600)
        );
        assert_eq!(
            until_next_boundary(22 * 60, 0, night),
            Duration::from_secs(9 * 3600)
        );
    }
}
