//! A configuration file never panics a loader: whatever the text, `Settings::from_toml`
//! and every section's loader and validation give settings or an error that says what
//! is wrong. (The rules' own parser of `[rules]` has its own target, `rules`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvbus_bus::config::{Section, Settings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings = match Settings::from_toml(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let mut errors: Vec<String> = Vec::new();
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(e);
        }
    };
    note(settings.bus().map(drop).map_err(|e| e.to_string()));
    fn load<T: Section>(settings: &Settings) -> Result<(), String> {
        settings
            .load_section::<T>()
            .map(drop)
            .map_err(|e| e.to_string())
    }
    note(load::<pvbus_broker::BrokerConfig>(&settings));
    note(load::<pvbus_vedirect_bridge::VedirectConfig>(&settings));
    note(load::<pvbus_relays::config::RelaysConfig>(&settings));
    note(load::<pvbus_homeassistant::config::HomeAssistantConfig>(
        &settings,
    ));
    note(load::<pvbus_plugins::config::PluginsConfig>(&settings));
    note(load::<pvbus_panel::Tm1638Config>(&settings));
    note(load::<pvbus_panel::LcdConfig>(&settings));
    for e in errors {
        assert!(!e.trim().is_empty(), "an error without a message");
    }
});
