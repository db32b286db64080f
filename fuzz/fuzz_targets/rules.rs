//! The rules' parser never panics: a whole rules file (`[rules]`, `[site]`, conditions,
//! scripts) gives a rule set or errors that each name a place, and a lone condition
//! gives an expression or a parse error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = pvbus_rules::config::from_str(text, Path::new("fuzz.toml")) {
        assert!(!errors.0.is_empty(), "failed without saying why");
        for e in &errors.0 {
            assert!(!e.to_string().trim().is_empty());
        }
    }
    if let Err(e) = pvbus_rules::expr::parse(text, 0) {
        assert!(!e.to_string().is_empty());
    }
});
