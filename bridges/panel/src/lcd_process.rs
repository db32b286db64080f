//! `pvbus lcd`: pages of bus values on the 16x2 plate, buttons to change page and wake
//! the screen, a backlight coloured by the state of charge and dark at night. Also on
//! MQTT: each line, the backlight, the page, and every button press.
//!
//! One task: bus events, the button poll (the plate does not wire the expander's INT
//! line to the Pi, so we read GPIOA at the slowest rate that still feels instant), the
//! end of a wake-up, and the next dusk or dawn of the night hours. Lines are written
//! only when their text changed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hd44780_mcp23017::sim::PlateModel;
use hd44780_mcp23017::{Button, ButtonSet, Color, Plate, StdDelay};
use pvbus_bus::contract::now_ts;
use pvbus_bus::{Bus, BusConfig, Event, Message, Shutdown, Topics};
use pvbus_hardware::i2c::{I2cBus, SimI2cBus};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::config::{LcdBackend, LcdConfig};
use crate::template::Template;
use crate::values::Values;

pub const PROCESS: &str = "lcd";
/// Where the simulated plate draws itself: `<sim_dir>/lcd.txt`.
pub const SIM_PICTURE: &str = "lcd.txt";
const COLUMNS: usize = hd44780_mcp23017::plate::COLUMNS;

/// The plate, and its model when the backend is `sim`.
pub struct Hardware {
    plate: Plate<I2cBus, StdDelay>,
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
        let plate = Plate::new(bus, config.address, StdDelay).map_err(|e| {
            anyhow::anyhow!("LCD plate at I2C address 0x{:02x}: {e}", config.address)
        })?;
        info!(backend = ?config.backend, address = config.address, "LCD plate ready");
        Ok(Hardware {
            plate,
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

    fn buttons(&mut self) -> Option<ButtonSet> {
        match self.plate.buttons() {
            Ok(set) => {
                if self.failing {
                    info!("the LCD plate answers again");
                    self.failing = false;
                }
                Some(set)
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
    let poll_every = config.poll_every;
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

    let mut poll = tokio::time::interval(poll_every);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let woken_until = screen.woken_until;
        let sim_step = hardware.sim_next_step();
        tokio::select! {
            _ = shutdown.wait() => break,
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Connected) => screen.link = Link::Online,
                Some(Event::Disconnected) => screen.link = Link::Offline,
                Some(Event::Message(message)) => {
                    if message.topic == sim_topic && message.retain {
                        warn!(topic = %message.topic, "ignoring a retained press");
                    } else if message.topic == sim_topic {
                        match message.text().ok().and_then(|t| Button::from_name(t.trim())) {
                            Some(button) => hardware.sim_press(button, poll_every),
                            None => bus.report_error(&message.topic, "expected select, right, down, up or left"),
                        }
                    } else if topics.parse_panel_command(PROCESS, &message.topic).is_some() {
                        screen.command(&bus, &message);
                    } else if let Err(e) = screen.values.update(&topics, &message) {
                        warn!(error = %e, "ignoring a reading");
                    }
                }
            },
            _ = poll.tick() => {
                if let Some(held) = hardware.buttons() {
                    for button in held.newly_pressed(screen.held) {
                        screen.press(&bus, button);
                    }
                    screen.held = held;
                }
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
            _ = tokio::time::sleep_until(sim_step.unwrap_or_else(Instant::now)), if sim_step.is_some() => hardware.sim_step(poll_every),
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
