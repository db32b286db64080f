//! Loading the shared captures and their expectations (shared/vedirect/captures).
#![allow(dead_code)]

use serde::Deserialize;
use std::path::PathBuf;

pub use pvbus_testkit::ordered::Ordered;

pub fn captures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vedirect/captures"
    ))
}

#[derive(Debug, Deserialize)]
pub struct Capture {
    pub name: String,
    pub file: String,
    pub expected: Expected,
    #[serde(default)]
    pub resync_may_accept: Vec<usize>,
    #[serde(default)]
    pub requests: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub blocks: Vec<ExpectedBlock>,
    pub hex_frames: Vec<ExpectedHex>,
    pub trailing_incomplete_bytes: usize,
}

#[derive(Debug, Deserialize)]
pub struct ExpectedBlock {
    pub checksum_ok: bool,
    pub fields: Option<Ordered>,
    pub rejected: Option<String>,
    pub checksum_byte: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ExpectedHex {
    pub raw: String,
    pub valid: bool,
    pub command: u8,
    pub register: Option<String>,
    pub flags: Option<u8>,
    pub value: Option<String>,
    pub word: Option<String>,
    pub payload: String,
    pub uint: Option<u64>,
    pub int: Option<i64>,
    pub string: Option<String>,
    pub product_id: Option<String>,
}

pub struct LoadedCapture {
    pub capture: Capture,
    pub bytes: Vec<u8>,
}

pub fn load_all() -> Vec<LoadedCapture> {
    let dir = captures_dir();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("captures directory {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let capture: Capture =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let bytes = std::fs::read(dir.join(&capture.file)).unwrap();
            LoadedCapture { capture, bytes }
        })
        .collect()
}

pub fn load(name: &str) -> LoadedCapture {
    load_all()
        .into_iter()
        .find(|c| c.capture.name == name)
        .unwrap_or_else(|| panic!("no capture {name}"))
}

/// Small deterministic PRNG (xorshift64*) for chunkings.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
