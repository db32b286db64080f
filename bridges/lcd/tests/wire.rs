//! The real driver against the wire-level MCP23017 + HD44780 model on a simulated bus.

use embedded_hal::i2c::I2c;
use hd44780_mcp23017::sim::PlateModel;
use hd44780_mcp23017::{Button, ButtonSet, Color, Plate, StdDelay};
use pvbus_hardware::i2c::{I2cBus, SimI2cBus};

fn plate() -> (Plate<I2cBus, StdDelay>, PlateModel, SimI2cBus) {
    let bus = SimI2cBus::new();
    let model = PlateModel::new();
    bus.attach(0x20, Box::new(model.clone()));
    let plate = Plate::new(I2cBus::Sim(bus.clone()), 0x20, StdDelay).unwrap();
    (plate, model, bus)
}

#[test]
fn lines_appear_on_the_screen_as_a_person_reads_them() {
    let (mut plate, model, _bus) = plate();
    assert!(model.state().four_bit_two_lines());
    assert_eq!(model.screen(), [" ".repeat(16), " ".repeat(16)]);
    assert_eq!(model.backlight(), Color::Off, "no flash of light at start");

    plate.write_line(0, "BA:87%  P:-120W").unwrap();
    plate.write_line(1, "25.3°C and a long tail").unwrap();
    assert_eq!(model.screen(), ["BA:87%  P:-120W ", "25.3°C and a lon"]);

    // Overwriting a line leaves no trace of the longer text before it.
    plate.write_line(0, "PV:0W").unwrap();
    assert_eq!(model.screen()[0], "PV:0W           ");
    assert!(plate.write_line(2, "x").is_err());

    plate.set_display(false).unwrap();
    assert_eq!(model.screen()[0], " ".repeat(16));
    plate.set_display(true).unwrap();
    assert_eq!(model.screen()[0], "PV:0W           ");
    assert_eq!(model.state().lcd_reads(), 0, "RW is never raised");
}

#[test]
fn a_line_is_one_i2c_write() {
    let (mut plate, model, _bus) = plate();
    let before = model.state().transactions;
    plate.write_line(1, "0123456789abcdef").unwrap();
    let after = model.state();
    assert_eq!(after.transactions - before, 1);
    assert_eq!(after.screen()[1], "0123456789abcdef");
}

#[test]
fn every_backlight_colour_lights_the_right_leds() {
    let (mut plate, model, _bus) = plate();
    plate.write_line(0, "hello").unwrap();
    for color in Color::ALL {
        plate.set_backlight(color).unwrap();
        assert_eq!(model.backlight(), color);
        // The blue LED shares port B with the LCD: text writes must keep it.
        plate.write_line(1, color.name()).unwrap();
        assert_eq!(model.backlight(), color);
        assert_eq!(model.screen()[1].trim_end(), color.name());
    }
}

#[test]
fn each_button_is_read_as_itself() {
    let (mut plate, model, _bus) = plate();
    assert_eq!(plate.buttons().unwrap().0, 0);
    for button in Button::ALL {
        model.set_button(button, true);
        let set = plate.buttons().unwrap();
        assert!(set.contains(button), "{button:?}");
        assert_eq!(set.0.count_ones(), 1);
        model.set_button(button, false);
    }
}

#[test]
fn a_restart_finds_the_expander_in_bank_1_and_still_works() {
    let (mut plate, model, bus) = plate();
    plate.set_backlight(Color::Green).unwrap();
    drop(plate);
    // A second process: the chip is still in bank 1 with SEQOP set.
    let mut again = Plate::new(I2cBus::Sim(bus.clone()), 0x20, StdDelay).unwrap();
    again.write_line(0, "again").unwrap();
    again.set_backlight(Color::Red).unwrap();
    assert_eq!(model.screen()[0].trim_end(), "again");
    assert_eq!(model.backlight(), Color::Red);
    assert!(model.state().four_bit_two_lines());
}

#[test]
fn the_model_decodes_bank_0_register_writes_too() {
    // Drive the expander by hand as a pin-by-pin library would (bank 0, GPIOB at 0x13):
    // the model must see the same LCD protocol.
    let bus = SimI2cBus::new();
    let model = PlateModel::new();
    bus.attach(0x20, Box::new(model.clone()));
    let mut i2c = I2cBus::Sim(bus);
    i2c.write(0x20, &[0x01, 0x00]).unwrap(); // IODIRB: outputs
    let mut nibble = |rs: bool, n: u8| {
        let mut port = if rs { 0x80 } else { 0 };
        for (bit, pin) in [(1, 1 << 4), (2, 1 << 3), (4, 1 << 2), (8, 1 << 1)] {
            if n & bit != 0 {
                port |= pin;
            }
        }
        i2c.write(0x20, &[0x13, port | 0x20]).unwrap();
        i2c.write(0x20, &[0x13, port]).unwrap();
    };
    for n in [3, 3, 3, 2] {
        nibble(false, n);
    }
    for byte in [0x28u8, 0x0C, 0x01, 0x06] {
        nibble(false, byte >> 4);
        nibble(false, byte & 0xF);
    }
    for byte in *b"Hi" {
        nibble(true, byte >> 4);
        nibble(true, byte & 0xF);
    }
    assert_eq!(model.screen()[0].trim_end(), "Hi");
}

#[test]
fn a_tap_between_two_polls_is_seen_through_the_expander_latch() {
    let (mut plate, model, _bus) = plate();
    assert_eq!(
        plate.button_changes().unwrap(),
        None,
        "nothing happened yet"
    );
    // Down and up again before the next poll: GPIOA alone would show nothing.
    model.set_button(Button::Right, true);
    model.set_button(Button::Right, false);
    assert!(model.state().interrupt_a(), "INTA asserted");
    let changes = plate
        .button_changes()
        .unwrap()
        .expect("a change was latched");
    assert_eq!(changes.presses(ButtonSet::default()), [Button::Right]);
    assert_eq!(changes.now, ButtonSet::default());
    assert!(!model.state().interrupt_a(), "the read released INTA");
    assert_eq!(plate.button_changes().unwrap(), None, "seen once");
}

#[test]
fn a_held_button_is_one_press_and_its_release_none() {
    let (mut plate, model, _bus) = plate();
    model.set_button(Button::Select, true);
    let changes = plate.button_changes().unwrap().expect("pressed");
    assert_eq!(changes.presses(ButtonSet::default()), [Button::Select]);
    let held = changes.now;
    assert!(held.contains(Button::Select));
    assert_eq!(
        plate.button_changes().unwrap(),
        None,
        "still held: no change"
    );
    model.set_button(Button::Select, false);
    let changes = plate.button_changes().unwrap().expect("released");
    assert!(changes.presses(held).is_empty());
}

#[test]
fn after_the_first_change_the_present_state_still_shows_later_presses() {
    let (mut plate, model, _bus) = plate();
    // Up tapped, then Down pressed and held, all before one poll: the chip latched
    // only the first change (Up); Down is seen in GPIOA.
    model.set_button(Button::Up, true);
    model.set_button(Button::Up, false);
    model.set_button(Button::Down, true);
    let changes = plate.button_changes().unwrap().expect("changes");
    assert_eq!(
        changes.presses(ButtonSet::default()),
        [Button::Up, Button::Down]
    );
}

#[test]
fn the_inta_wire_asserts_at_a_press_and_releases_when_read() {
    let (mut plate, model, _bus) = plate();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let wire = seen.clone();
    model.connect_interrupt_a(move |active| wire.lock().unwrap().push(active));
    model.set_button(Button::Left, true);
    model.set_button(Button::Left, false); // latched already: INTA stays asserted
    assert_eq!(*seen.lock().unwrap(), [true]);
    let changes = plate.button_changes().unwrap().expect("latched");
    assert_eq!(changes.presses(ButtonSet::default()), [Button::Left]);
    assert_eq!(*seen.lock().unwrap(), [true, false]);
}
