//! Command payloads from the bus never panic, and what is accepted is well-formed: relay
//! `mode/set` (words, numbers, JSON overrides with `for`/`until`), relay `auto/set` (the
//! rules' ON/OFF with a reason), the VE.Direct settings (`load_output/set`,
//! `charge_current_limit/set`), and the command topics themselves.
//! The first byte picks the time of day the command arrives at.
#![no_main]

use jiff::tz::TimeZone;
use libfuzzer_sys::fuzz_target;
use pvbus_bus::Topics;
use pvbus_bus::contract::AutoSet;
use pvbus_relays::command::{Command, parse_auto_set, parse_mode_set};
use pvbus_vedirect_bridge::commands::Setting;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    // 2025-11-25 03:00 UTC plus up to a day, in 6-minute steps.
    let now_ms = 1_764_039_600_000 + u64::from(selector) * 6 * 60 * 1000 * 240 / 256;

    for tz in [TimeZone::UTC, TimeZone::fixed(jiff::tz::offset(2))] {
        match parse_mode_set(payload, now_ms, &tz) {
            Ok(Command::Override { until_ms, .. }) => {
                assert!(until_ms >= now_ms, "an override that ended before it began")
            }
            Ok(_) | Err(_) => {}
        }
    }

    match parse_auto_set(payload) {
        Ok(Command::Auto(set)) => {
            if let Some(reason) = &set.reason {
                assert!(!reason.is_empty());
                assert!(reason.chars().count() <= AutoSet::MAX_REASON);
            }
            let again = AutoSet::parse(&set.to_payload()).expect("our own payload parses");
            assert_eq!(again.on, set.on);
        }
        Ok(other) => panic!("auto/set gave {other:?}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    if let Ok(text) = std::str::from_utf8(payload) {
        for setting in Setting::ALL {
            if let Err(e) = setting.parse(text) {
                assert!(!e.to_string().is_empty());
            }
        }
        let _ = Setting::from_name(text);
        let topics = Topics::new("pvbus");
        if let Some((id, _)) = topics.parse_relay_command(text) {
            assert!(!id.is_empty() && !id.contains('/'));
        }
        if let Some((device, setting)) = topics.parse_device_setting_set("vedirect", text) {
            assert!(!device.contains('/') && !setting.contains('/'));
        }
    }
});
