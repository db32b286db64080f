//! Writing the pvbus configuration file: one section per process, each carried-over value
//! with a comment saying where it came from, and what was left out listed at the end.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::ids::id_from_name;
use crate::pvmonit::{LeftOut, PvmonitConfig, Relay};
use crate::wiringpi::{BcmPin, bcm_of};

/// The pins PvMonit's `tm1638.py` drove (BCM numbers written in the script itself, not
/// in config.yaml): STB, CLK, DIO.
const PVMONIT_TM1638_PINS: (u8, u8, u8) = (26, 13, 19);

/// A pvbus configuration made from a PvMonit one.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The TOML file, comments included.
    pub toml: String,
    /// Relays written as `[[relays.relay]]` (others are commented out, see `left_out`).
    pub relays: usize,
    /// Entries of `[vedirect.devices]`.
    pub devices: usize,
    /// Everything not carried over, with the reason (also written at the end of `toml`).
    pub left_out: Vec<LeftOut>,
}

/// One relay as it will be written.
struct RelayOut<'a> {
    relay: &'a Relay,
    id: String,
    /// `Err(reason)`: written commented out.
    pin: Result<u8, String>,
    /// A warning written above it.
    note: Option<String>,
}

pub fn render(config: &PvmonitConfig, source: &str) -> Imported {
    let mut left_out = config.left_out.clone();
    let mut out = String::new();
    let line = |out: &mut String, text: &str| {
        out.push_str(text);
        out.push('\n');
    };

    line(
        &mut out,
        &format!(
            "# pvbus configuration, imported from PvMonit's {} by `pvbus import-pvmonit`.",
            one_line(source)
        ),
    );
    line(
        &mut out,
        "# Check it with `pvbus config check FILE`. Settings that were not carried over are listed\n\
         # at the end, with what pvbus does instead; the migration guide is docs/pvmonit.md.\n",
    );
    line(&mut out, "[bus]\nbase = \"pvbus\"\n");
    line(
        &mut out,
        "[broker]                      # the embedded MQTT broker, on 127.0.0.1:1883\n\
         data_dir = \"/var/lib/pvbus/broker\"\n",
    );

    // VE.Direct devices.
    line(&mut out, "[vedirect]");
    if config.vedirect_by == "arduino" {
        line(
            &mut out,
            "# PvMonit read VE.Direct through an Arduino (vedirect.by: arduino); pvbus reads the\n\
             # cables on the Pi: connect them with Victron's VE.Direct-USB cables.",
        );
    }
    line(
        &mut out,
        "auto_detect = true            # every VE.Direct USB cable under /dev/serial/by-id",
    );
    let mut devices = 0;
    let mut device_ids = BTreeSet::new();
    let mut device_lines = String::new();
    let mut bmv_id = None;
    for (serial, name) in &config.devices {
        let key = format!("deviceCorrespondance.{serial}");
        if serial.is_empty() || serial.len() > 32 || !serial.bytes().all(|b| b.is_ascii_graphic()) {
            left_out.push(LeftOut {
                key,
                why: "not a serial number (SER#): 1..32 printable characters".into(),
            });
            continue;
        }
        let Some(id) = id_from_name(name).map(|id| unique(id, &mut device_ids)) else {
            left_out.push(LeftOut {
                key,
                why: format!("the name {name:?} has no letter or digit to make an id of"),
            });
            continue;
        };
        if bmv_id.is_none() && id.contains("bmv") {
            bmv_id = Some(id.clone());
        }
        let entry = format!("{} = {}", toml_key(serial), toml_string(&id));
        if id == *name {
            let _ = writeln!(device_lines, "{entry}");
        } else {
            let _ = writeln!(device_lines, "{entry:<38}# {}", one_line(name));
        }
        devices += 1;
    }
    if devices > 0 {
        line(
            &mut out,
            "[vedirect.devices]            # was deviceCorrespondance: SER# -> id in the topics",
        );
        out.push_str(&device_lines);
    }
    out.push('\n');

    // Relays.
    let tm1638_pins = [
        PVMONIT_TM1638_PINS.0,
        PVMONIT_TM1638_PINS.1,
        PVMONIT_TM1638_PINS.2,
    ];
    let relays = relay_outputs(config, &tm1638_pins);
    line(
        &mut out,
        "[relays]\nstate_dir = \"/var/lib/pvbus/relays\"   # modes, overrides and history",
    );
    line(
        &mut out,
        &format!(
            "stale_after = {:<16}# was domo.relay.secuDownNoData: auto-on relays go off without fresh data",
            config.secu_down_no_data_secs.max(1)
        ),
    );
    line(
        &mut out,
        "[relays.gpio]\nbackend = \"auto\"              # rppal on a Raspberry Pi\n",
    );
    let mut written = 0;
    for relay in &relays {
        let origin = format!(
            "# PvMonit relay {}, wiringPi {}{}",
            relay.relay.number,
            relay.relay.wiring_pi,
            match &relay.relay.name {
                Some(name) => format!(" ({})", one_line(name)),
                None => " (unnamed in PvMonit: aDefinir)".into(),
            }
        );
        line(&mut out, &origin);
        if let Some(note) = &relay.note {
            line(&mut out, &format!("# {note}"));
        }
        let mut block = format!("[[relays.relay]]\nid = {}\n", toml_string(&relay.id));
        if let Some(name) = &relay.relay.name {
            let _ = writeln!(block, "name = {}", toml_string(name));
        }
        match &relay.pin {
            Ok(pin) => {
                let _ = writeln!(block, "pin = {pin}\nactive_low = true");
                out.push_str(&block);
                written += 1;
            }
            Err(reason) => {
                line(&mut out, &format!("# Left out: {reason}"));
                let _ = writeln!(block, "pin = ?\nactive_low = true");
                for text in block.lines() {
                    line(&mut out, &format!("# {text}"));
                }
                left_out.push(LeftOut {
                    key: format!("domo.relayWiringPi.{}", relay.relay.number),
                    why: reason.clone(),
                });
            }
        }
        out.push('\n');
    }

    // TM1638.
    let clash: Vec<u8> = relays
        .iter()
        .filter_map(|r| r.pin.as_ref().ok().copied())
        .filter(|pin| tm1638_pins.contains(pin))
        .collect();
    let (stb, clk, dio) = PVMONIT_TM1638_PINS;
    let delay = config.tm1638.action_button_delay_secs;
    let apply_after = if delay.fract() == 0.0 {
        format!("{delay}s")
    } else {
        format!("{}ms", (delay * 1000.0).round() as u64)
    };
    let tm1638 = format!(
        "[tm1638]\nstb = [{stb}]\nclk = {clk}\ndio = {dio}\n\
         apply_after = {:<16}# was domo.tm1638.actionButtonDelay\n",
        toml_string(&apply_after)
    );
    line(
        &mut out,
        &format!(
            "# The TM1638 board: LED n = relay n, digit n = its mode, button n cycles it.\n\
             # PvMonit's tm1638.py had its pins in the script (BCM {stb} STB, {clk} CLK, {dio} DIO):\n\
             # these are those; change them if your board is wired elsewhere (docs/panel.md)."
        ),
    );
    if relays.iter().any(|r| r.pin.is_err()) {
        line(
            &mut out,
            "# Button n drives the n-th [[relays.relay]] above: a relay left out shifts the\n\
             # ones after it (list them in `relays = [...]` to choose).",
        );
    }
    if config.tm1638.in_use && clash.is_empty() {
        out.push_str(&tm1638);
    } else {
        let why = if config.tm1638.in_use {
            format!("GPIO {clash:?} of the board also drive relays: give the board other pins")
        } else {
            "not in use in PvMonit (domo.tm1638.daemon)".to_string()
        };
        line(&mut out, &format!("# Commented out: {why}."));
        for text in tm1638.lines() {
            line(&mut out, &format!("# {text}"));
        }
        if config.tm1638.in_use {
            left_out.push(LeftOut {
                key: "domo.tm1638".into(),
                why,
            });
        }
    }
    out.push('\n');

    // LCD plate.
    let night = if config.lcd.on_at == config.lcd.off_at {
        String::new()
    } else {
        format!("{:02}:00-{:02}:00", config.lcd.off_at, config.lcd.on_at)
    };
    let mut lcd = format!(
        "[lcd]\nnight = {:<22}# was lcd.offAt {} and lcd.onAt {}: backlight off between\n\
         wake_for = \"{}s\"              # was lcd.onTimer: a button lights it this long\n",
        toml_string(&night),
        config.lcd.off_at,
        config.lcd.on_at,
        config.lcd.on_timer_secs.max(1)
    );
    match &bmv_id {
        Some(id) if id != "bmv" => {
            let _ = writeln!(
                lcd,
                "soc = {}   # backlight colour; the default pages read bmv.*: adapt [lcd] pages",
                toml_string(&format!("{id}.state_of_charge"))
            );
        }
        Some(_) => {}
        None => {
            let _ = writeln!(
                lcd,
                "# soc = \"<your BMV's id>.state_of_charge\"   # default bmv.state_of_charge"
            );
        }
    }
    line(
        &mut out,
        "# The 16x2 RGB LCD plate: pages of values, colour by state of charge, dark at night.",
    );
    if config.lcd.in_use {
        out.push_str(&lcd);
    } else {
        line(
            &mut out,
            "# Commented out: not in use in PvMonit (lcd.daemon).",
        );
        for text in lcd.lines() {
            line(&mut out, &format!("# {text}"));
        }
    }
    out.push('\n');

    line(
        &mut out,
        "# Home Assistant finds every device and relay by MQTT discovery (the web page's heir):\n\
         # [homeassistant]\n",
    );
    rules_hint(&mut out, &relays, bmv_id.as_deref());

    if !left_out.is_empty() {
        line(
            &mut out,
            "\n# ------------------------------------------------------------------------",
        );
        line(
            &mut out,
            &format!(
                "# Not carried over from {} (values are not copied; passwords and keys stay there):",
                one_line(source)
            ),
        );
        for item in &left_out {
            line(
                &mut out,
                &format!("# - {}: {}", item.key, one_line(&item.why)),
            );
        }
    }

    Imported {
        toml: out,
        relays: written,
        devices,
        left_out,
    }
}

/// Ids, BCM pins and warnings of the relays; a relay whose pin cannot be used, or is
/// already taken, is kept with the reason, to be written commented out.
fn relay_outputs<'a>(config: &'a PvmonitConfig, tm1638_pins: &[u8]) -> Vec<RelayOut<'a>> {
    let mut ids = BTreeSet::new();
    let mut taken = BTreeSet::new();
    config
        .relays
        .iter()
        .map(|relay| {
            let id = relay
                .name
                .as_deref()
                .and_then(id_from_name)
                .unwrap_or_else(|| format!("relay_{}", relay.number));
            let id = unique(id, &mut ids);
            let mut note = None;
            let pin = match bcm_of(relay.wiring_pi) {
                None => Err(format!(
                    "wiringPi {} does not exist (0..31)",
                    relay.wiring_pi
                )),
                Some(BcmPin::HatEeprom(bcm)) => Err(format!(
                    "wiringPi {} is BCM {bcm}, the HAT EEPROM line: never for a relay",
                    relay.wiring_pi
                )),
                Some(BcmPin::P5Header(bcm)) => Err(format!(
                    "wiringPi {} is BCM {bcm}, on the P5 header of the first model B only",
                    relay.wiring_pi
                )),
                Some(BcmPin::I2c(bcm)) if config.lcd.in_use => Err(format!(
                    "wiringPi {} is BCM {bcm}, the I2C bus of the LCD plate",
                    relay.wiring_pi
                )),
                Some(BcmPin::I2c(bcm)) => {
                    note = Some(format!(
                        "BCM {bcm} is also the I2C bus: keep it free if an LCD plate is added"
                    ));
                    Ok(bcm)
                }
                Some(BcmPin::Uart(bcm)) => {
                    note = Some(format!(
                        "BCM {bcm} is also the serial console: turn the console off (raspi-config)"
                    ));
                    Ok(bcm)
                }
                Some(BcmPin::Usable(bcm)) => Ok(bcm),
            }
            .and_then(|bcm| {
                if taken.insert(bcm) {
                    Ok(bcm)
                } else {
                    Err(format!("BCM {bcm} already drives another relay"))
                }
            });
            if let Ok(bcm) = pin
                && config.tm1638.in_use
                && tm1638_pins.contains(&bcm)
            {
                note = Some(format!("BCM {bcm} is also a pin of the TM1638 board"));
            }
            RelayOut {
                relay,
                id,
                pin,
                note,
            }
        })
        .collect()
}

/// A commented example of the rules section, with the imported relays' ids.
fn rules_hint(out: &mut String, relays: &[RelayOut<'_>], bmv: Option<&str>) {
    let bmv = bmv.unwrap_or("bmv");
    out.push_str(
        "# Rules: PvMonit's relay scripts (domo/relay.script.d/<n>.php) are not converted.\n\
         # Write each as on/off conditions (docs/rules.md; docs/pvmonit.md has the helpers), e.g.:\n",
    );
    let _ = writeln!(
        out,
        "# [rules.devices]\n# {bmv} = {{ values = \"vedirect\", max_age = \"2m\" }}"
    );
    for relay in relays.iter().filter(|r| r.pin.is_ok()).take(2) {
        let _ = writeln!(
            out,
            "# [rules.relays.{}]\n# on = \"{bmv}.state_of_charge >= 95%\"\n# off = \"{bmv}.state_of_charge < 90%\"",
            relay.id
        );
    }
}

/// `id`, or `id_2`, `id_3`... when already used.
fn unique(id: String, used: &mut BTreeSet<String>) -> String {
    let mut candidate = id.clone();
    let mut n = 2;
    while used.contains(&candidate) {
        candidate = format!("{id}_{n}");
        n += 1;
    }
    used.insert(candidate.clone());
    candidate
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        toml_string(key)
    }
}

/// Text for a comment: one line, control characters removed.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
