//! examples/demo.toml for tests that run the demo itself: its processes, and a copy with
//! what cannot be shared between runs (the broker's port, the /tmp/pvbus-demo folder)
//! moved.

#![allow(dead_code)] // each test crate uses its own part of it

use std::path::{Path, PathBuf};

/// Every process examples/demo.toml runs, as named on `pvbus/<process>/status`.
pub const DEMO_PROCESSES: [&str; 8] = [
    "broker",
    "supervisor",
    "vedirect",
    "relays",
    "rules",
    "homeassistant",
    "tm1638",
    "lcd",
];

/// Writes examples/demo.toml to `dir/demo.toml` with each `(from, to)` replaced (every
/// occurrence). Each `from` must be in the file: if the demo changes, the test says what
/// to update rather than silently run something else.
pub fn demo_copy(dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml");
    let mut text = std::fs::read_to_string(&demo).expect("examples/demo.toml");
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "examples/demo.toml no longer contains {from:?}: update this test"
        );
        text = text.replace(from, to);
    }
    let path = dir.join("demo.toml");
    std::fs::write(&path, text).unwrap();
    path
}
