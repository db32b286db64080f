//! The real driver against the wire-level chip model, on a simulated board.

use pvbus_hardware::sim::SimBoard;
use pvbus_hardware::{BidirectionalLine, Gpio, InitialLevel, Level, OutputLine, Pull};
use tm1638::sim::{ChipPins, Tm1638Model};
use tm1638::{BoardKind, Brightness, SpinDelay, Tm1638, font};

const CLK: u8 = 21;
const DIO: u8 = 20;

fn chain(
    stbs: &[u8],
    pull: Pull,
) -> (
    Tm1638<OutputLine, BidirectionalLine, SpinDelay>,
    Vec<Tm1638Model>,
) {
    let board = SimBoard::in_memory();
    let models: Vec<Tm1638Model> = stbs
        .iter()
        .map(|&stb| {
            let model = Tm1638Model::new(ChipPins {
                stb,
                clk: CLK,
                dio: DIO,
            });
            board.attach(Box::new(model.clone()));
            model
        })
        .collect();
    let stb_lines = stbs
        .iter()
        .map(|&stb| board.output(stb, InitialLevel::Level(Level::High)).unwrap())
        .collect();
    let clk = board.output(CLK, InitialLevel::Level(Level::High)).unwrap();
    let dio = board.bidirectional(DIO, pull).unwrap();
    (Tm1638::new(stb_lines, clk, dio, SpinDelay).unwrap(), models)
}

fn show(
    driver: &mut Tm1638<OutputLine, BidirectionalLine, SpinDelay>,
    board: usize,
    text: &str,
    leds: u8,
) {
    let digits: [u8; 8] = font::encode(text, 8).unwrap().try_into().unwrap();
    driver
        .write_ram(board, 0, &BoardKind::LedAndKey.ram(&digits, leds))
        .unwrap();
    driver
        .display(board, true, Brightness::new(3).unwrap())
        .unwrap();
}

#[test]
fn text_and_leds_reach_the_chip_as_a_person_sees_them() {
    let (mut driver, models) = chain(&[16], Pull::Up);
    show(&mut driver, 0, "boot", 0b0000_0101);
    let view = models[0].view(BoardKind::LedAndKey);
    assert_eq!(view.text, "boot    ");
    assert!(view.on);
    assert_eq!(view.brightness, 3);
    assert!(view.led(0) && !view.led(1) && view.led(2));
    assert_eq!(
        view.render(),
        "[boot    ]  brightness 3\n LEDs: * . * . . . . .\n\
         \n\
         \x20|_   _   _  |_\n\
         \x20|_| |_| |_| |_\n"
    );

    // One LED alone, in fixed-address mode, leaves the digits as they were.
    driver.write_at(0, 3, 1).unwrap();
    let view = models[0].view(BoardKind::LedAndKey);
    assert!(view.led(1));
    assert_eq!(view.text, "boot    ");

    driver.display(0, false, Brightness::MAX).unwrap();
    let view = models[0].view(BoardKind::LedAndKey);
    assert!(!view.on);
    assert_eq!(view.leds, 0);
    assert_eq!(models[0].state().contentions, 0);
    assert_eq!(models[0].state().bad_commands, 0);
}

#[test]
fn every_button_of_both_board_kinds_is_read_back() {
    for kind in [BoardKind::LedAndKey, BoardKind::Keys16] {
        let (mut driver, models) = chain(&[16], Pull::Up);
        assert_eq!(kind.pressed(&driver.read_keys(0).unwrap()), 0);
        for button in 0..kind.buttons() {
            models[0].set_button(kind, button, true);
            let scan = driver.read_keys(0).unwrap();
            assert_eq!(kind.pressed(&scan), 1 << button, "{kind:?} S{}", button + 1);
            models[0].set_button(kind, button, false);
        }
        // Two at once.
        models[0].set_button(kind, 0, true);
        models[0].set_button(kind, kind.buttons() - 1, true);
        let pressed = kind.pressed(&driver.read_keys(0).unwrap());
        assert_eq!(pressed, 1 | 1 << (kind.buttons() - 1));
        let state = models[0].state();
        assert_eq!(
            state.contentions, 0,
            "the driver released DIO for every scan"
        );
        assert_eq!(state.scans, kind.buttons() as u64 + 2);
    }
}

#[test]
fn without_a_pull_up_no_key_is_ever_seen() {
    // The chip's DIO is open drain: it can only pull low, and a pressed key is a 1. This
    // is why DIO must be opened with a pull-up; the model shows the failure.
    let (mut driver, models) = chain(&[16], Pull::None);
    models[0].set_button(BoardKind::LedAndKey, 2, true);
    assert_eq!(driver.read_keys(0).unwrap().0, [0; 4]);
    let (mut driver, models) = chain(&[16], Pull::Up);
    models[0].set_button(BoardKind::LedAndKey, 2, true);
    assert_eq!(
        BoardKind::LedAndKey.pressed(&driver.read_keys(0).unwrap()),
        1 << 2
    );
}

#[test]
fn a_chain_of_boards_shares_clk_and_dio_with_one_stb_each() {
    let (mut driver, models) = chain(&[16, 12], Pull::Up);
    show(&mut driver, 0, "A0 12", 1);
    show(&mut driver, 1, "-3.5", 0x80);
    assert_eq!(models[0].view(BoardKind::LedAndKey).text, "A0 12   ");
    assert_eq!(models[1].view(BoardKind::LedAndKey).text, "-3.5     ");
    assert_eq!(models[1].view(BoardKind::LedAndKey).leds, 0x80);

    models[1].set_button(BoardKind::LedAndKey, 4, true);
    assert_eq!(
        BoardKind::LedAndKey.pressed(&driver.read_keys(0).unwrap()),
        0
    );
    assert_eq!(
        BoardKind::LedAndKey.pressed(&driver.read_keys(1).unwrap()),
        1 << 4
    );
    assert!(driver.read_keys(2).is_err());
}

#[test]
fn the_16_button_board_shows_text_through_its_transposed_ram() {
    let (mut driver, models) = chain(&[16], Pull::Up);
    let digits: [u8; 8] = font::encode("12345678", 8).unwrap().try_into().unwrap();
    driver
        .write_ram(0, 0, &BoardKind::Keys16.ram(&digits, 0))
        .unwrap();
    driver.display(0, true, Brightness::MAX).unwrap();
    assert_eq!(models[0].view(BoardKind::Keys16).text, "12345678");
    // Read as the other board, the same RAM is garbage: the layouts really differ.
    assert_ne!(models[0].view(BoardKind::LedAndKey).text, "12345678");
}

/// The driver's waits, measured on the wire clock its delay advances: every CLK pulse,
/// STB gap, DIO setup and hold, and Twait of a display update and a key scan meet the
/// datasheet. The same workload with a delay that waits for nothing breaks them, so the
/// check can fail.
#[test]
fn the_driver_keeps_the_chips_timing() {
    use embedded_hal::delay::DelayNs;
    use tm1638::sim::WireClock;

    fn run<T: DelayNs>(delay: T, clock: &WireClock) -> tm1638::sim::ChipState {
        let board = SimBoard::in_memory();
        let pins = ChipPins {
            stb: 16,
            clk: CLK,
            dio: DIO,
        };
        let model = Tm1638Model::with_clock(pins, clock.clone());
        board.attach(Box::new(model.clone()));
        let stb = board.output(16, InitialLevel::Level(Level::High)).unwrap();
        let clk = board.output(CLK, InitialLevel::Level(Level::High)).unwrap();
        let dio = board.bidirectional(DIO, Pull::Up).unwrap();
        let mut driver = Tm1638::new(vec![stb], clk, dio, delay).unwrap();
        let digits: [u8; 8] = font::encode("boot", 8).unwrap().try_into().unwrap();
        model.set_button(BoardKind::LedAndKey, 2, true);
        for _ in 0..3 {
            driver
                .write_ram(0, 0, &BoardKind::LedAndKey.ram(&digits, 0b101))
                .unwrap();
            driver.write_at(0, 3, 1).unwrap();
            driver
                .display(0, true, Brightness::new(3).unwrap())
                .unwrap();
            let scan = driver.read_keys(0).unwrap();
            assert_eq!(BoardKind::LedAndKey.pressed(&scan), 1 << 2);
        }
        model.state()
    }

    /// Waits for nothing: what a driver without its delays would do.
    struct NoWait;
    impl DelayNs for NoWait {
        fn delay_ns(&mut self, _: u32) {}
    }

    let clock = WireClock::default();
    let state = run(clock.clone(), &clock);
    assert_eq!(state.timing_violations, 0, "{:#?}", state.timing);
    assert!(clock.now_ns() > 0);
    assert_eq!(state.scans, 3);

    let state = run(NoWait, &WireClock::default());
    assert!(state.timing_violations > 100, "{}", state.timing_violations);
    for kind in ["CLK", "STB", "setup", "Twait"] {
        assert!(
            state.timing.iter().any(|v| v.contains(kind)),
            "no {kind} violation in {:#?}",
            state.timing
        );
    }
}
