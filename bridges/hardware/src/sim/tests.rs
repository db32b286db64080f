use super::*;
use embedded_hal::digital::{InputPin, OutputPin, StatefulOutputPin};

use crate::line::BidirectionalPin;

#[test]
fn every_change_is_logged_with_time_pin_level_and_process() {
    let dir = tempfile::tempdir().unwrap();
    let board = SimBoard::open(dir.path()).unwrap();
    let mut relay = board.output(17, InitialLevel::Level(Level::High)).unwrap();
    relay.set_low().unwrap();
    relay.set_low().unwrap(); // not a change: not logged
    relay.set_high().unwrap();

    let log = SimLog::at(dir.path()).read().unwrap();
    let levels: Vec<(u8, Level, Level)> = log.iter().map(|e| (e.pin, e.prev, e.level)).collect();
    assert_eq!(
        levels,
        [
            (17, Level::Low, Level::High),
            (17, Level::High, Level::Low),
            (17, Level::Low, Level::High)
        ]
    );
    assert!(
        log.iter()
            .all(|e| e.pid == std::process::id() && e.by == WireSide::Host)
    );
    assert!(log.windows(2).all(|w| w[0].ts <= w[1].ts));
    assert!(log[0].ts > 1.7e9, "unix seconds, got {}", log[0].ts);
}

#[test]
fn levels_survive_a_restart_and_keep_opens_without_a_change() {
    let dir = tempfile::tempdir().unwrap();
    {
        let board = SimBoard::open(dir.path()).unwrap();
        let mut relay = board.output(22, InitialLevel::Level(Level::Low)).unwrap();
        relay.set_high().unwrap();
    } // the process "exits": the level stays on the wire
    assert_eq!(
        SimBoard::saved_levels(dir.path()).unwrap()[&22],
        Level::High
    );
    let before = SimLog::at(dir.path()).read().unwrap().len();

    let board = SimBoard::open(dir.path()).unwrap();
    assert_eq!(board.level(22), Level::High);
    let mut relay = board
        .output(
            22,
            InitialLevel::Keep {
                if_unknown: Level::Low,
            },
        )
        .unwrap();
    assert!(relay.is_set_high().unwrap());
    assert_eq!(
        SimLog::at(dir.path()).read().unwrap().len(),
        before,
        "no glitch"
    );
}

#[test]
fn a_restart_that_glitches_is_visible_as_a_pulse() {
    let dir = tempfile::tempdir().unwrap();
    {
        let board = SimBoard::open(dir.path()).unwrap();
        board.output(5, InitialLevel::Level(Level::High)).unwrap();
    }
    let restart = log::now();
    // A careless process opens low, then sets the level it meant.
    let board = SimBoard::open(dir.path()).unwrap();
    let mut relay = board.output(5, InitialLevel::Level(Level::Low)).unwrap();
    relay.set_high().unwrap();
    let pulses: Vec<_> = SimLog::at(dir.path())
        .pulses(5, 1.0)
        .unwrap()
        .into_iter()
        .filter(|(first, _)| first.ts >= restart)
        .collect();
    assert_eq!(pulses.len(), 1, "{pulses:?}");
    assert_eq!(pulses[0].0.level, Level::Low);
}

#[test]
fn a_line_cannot_be_opened_twice_but_can_after_it_is_dropped() {
    let board = SimBoard::in_memory();
    let first = board.output(4, InitialLevel::Level(Level::Low)).unwrap();
    assert!(matches!(
        board.input(4, Pull::None),
        Err(HardwareError::LineBusy { bcm: 4 })
    ));
    drop(first);
    board.input(4, Pull::Up).unwrap();
}

#[test]
fn inputs_read_the_pull_then_what_the_device_drives() {
    let dir = tempfile::tempdir().unwrap();
    let board = SimBoard::open(dir.path()).unwrap();
    let mut button = board.input(6, Pull::Up).unwrap();
    assert!(button.is_high().unwrap());
    board.drive_from_device(6, Some(Level::Low)).unwrap();
    assert!(button.is_low().unwrap());
    let log = SimLog::at(dir.path()).pin(6).unwrap();
    assert_eq!(log.last().unwrap().by, WireSide::Device);
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pins.json"), b"{ not json").unwrap();
    let message = SimBoard::open(dir.path()).err().unwrap().to_string();
    assert!(message.contains("pins.json"), "{message}");
}

#[test]
fn a_corrupt_log_line_is_an_error_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let board = SimBoard::open(dir.path()).unwrap();
    board.output(9, InitialLevel::Level(Level::High)).unwrap();
    let mut log = OpenOptions::new()
        .append(true)
        .open(dir.path().join("pins.log"))
        .unwrap();
    log.write_all(b"garbage\n").unwrap();
    let message = SimLog::at(dir.path()).read().unwrap_err().to_string();
    assert!(message.contains("line 2"), "{message}");
}

/// A device that answers a released line: it echoes CLK's level on DIO while
/// the host listens, the way a TM1638 shifts key bits out on CLK edges.
struct EchoClockOnData {
    clk: u8,
    dio: u8,
    seen: Arc<Mutex<Vec<HostChange>>>,
}

impl WireModel for EchoClockOnData {
    fn host_changed(&mut self, change: HostChange, wire: &mut Wire<'_>) {
        self.seen.lock().unwrap().push(change);
        if change.pin == self.clk && wire.host_drive(self.dio).is_none() {
            let clk = wire.level(self.clk);
            wire.drive(self.dio, Some(clk));
        }
        if change.pin == self.dio && change.drive.is_some() {
            wire.drive(self.dio, None);
        }
    }
}

#[test]
fn a_model_sees_host_edges_in_order_and_drives_released_lines() {
    let board = SimBoard::in_memory();
    let seen = Arc::new(Mutex::new(Vec::new()));
    board.attach(Box::new(EchoClockOnData {
        clk: 3,
        dio: 4,
        seen: seen.clone(),
    }));
    let mut clk = board.output(3, InitialLevel::Level(Level::Low)).unwrap();
    let mut dio = board.bidirectional(4, Pull::Up).unwrap();
    dio.set_low().unwrap();
    assert!(dio.is_low().unwrap(), "host drive wins");
    dio.release().unwrap();
    clk.set_high().unwrap();
    assert!(dio.is_high().unwrap());
    clk.set_low().unwrap();
    assert!(dio.is_low().unwrap(), "the device drives the released line");

    let seen = seen.lock().unwrap();
    let order: Vec<(u8, Option<Level>)> = seen.iter().map(|c| (c.pin, c.drive)).collect();
    assert_eq!(
        order,
        [
            (3, Some(Level::Low)),
            (4, Some(Level::Low)),
            (4, None),
            (3, Some(Level::High)),
            (3, Some(Level::Low)),
        ]
    );
}

#[test]
fn unrecorded_pins_stay_out_of_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let board = SimBoard::open(dir.path()).unwrap();
    board.unrecorded(&[3]);
    let mut clk = board.output(3, InitialLevel::Level(Level::Low)).unwrap();
    clk.set_high().unwrap();
    board.output(17, InitialLevel::Level(Level::High)).unwrap();
    let log = SimLog::at(dir.path()).read().unwrap();
    assert!(log.iter().all(|e| e.pin == 17), "{log:?}");
    assert!(!SimBoard::saved_levels(dir.path()).unwrap().contains_key(&3));
}

#[test]
fn an_edge_line_wakes_on_the_edges_it_asked_for_and_queues_them() {
    let board = SimBoard::in_memory();
    let mut int = board
        .edge_input(25, Pull::Up, crate::line::Edge::Falling)
        .unwrap();
    let short = Some(std::time::Duration::from_millis(20));
    assert_eq!(int.wait(short).unwrap(), None, "no edge yet");
    assert_eq!(int.read().unwrap(), Level::High, "pulled up");
    // A device pulls it low, lets it go, pulls it low again, all before the wait:
    // two falling edges are queued, the rising one is not asked for.
    board.drive_from_device(25, Some(Level::Low)).unwrap();
    board.drive_from_device(25, Some(Level::High)).unwrap();
    board.drive_from_device(25, Some(Level::Low)).unwrap();
    assert_eq!(int.wait(short).unwrap(), Some(Level::Low));
    assert_eq!(int.wait(short).unwrap(), Some(Level::Low));
    assert_eq!(int.wait(short).unwrap(), None);
    // A wait with no limit returns when another thread makes the edge.
    board.drive_from_device(25, Some(Level::High)).unwrap();
    let device = board.clone();
    let edge = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(10));
        device.drive_from_device(25, Some(Level::Low)).unwrap();
    });
    assert_eq!(int.wait(None).unwrap(), Some(Level::Low));
    edge.join().unwrap();
    assert!(
        matches!(
            board.edge_input(25, Pull::Up, crate::line::Edge::Both),
            Err(HardwareError::LineBusy { bcm: 25 })
        ),
        "one owner per line"
    );
}
