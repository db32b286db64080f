//! A configuration file never panics a loader: whatever the text, `Settings::from_toml`
//! and every section's loader and validation give settings or an error that says what
//! is wrong. (The rules' own parser of `[rules]` has its own target, `rules`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvbus_bus::config::Settings;

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
    note(
        settings
            .section::<pvbus_broker::BrokerConfig>("broker")
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.to_string())),
    );
    note(
        pvbus_vedirect_bridge::config::load(&settings)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        pvbus_relays::config::load(&settings)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        settings
            .section::<pvbus_homeassistant::config::HomeAssistantConfig>("homeassistant")
            .and_then(|c| c.validate())
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        pvbus_plugins::config::load(&settings)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        pvbus_panel::load_tm1638(&settings)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    note(
        pvbus_panel::load_lcd(&settings)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    for e in errors {
        assert!(!e.trim().is_empty(), "an error without a message");
    }
});
