//! `pvbus vedirect decode` on every capture of `../shared/vedirect/captures/`: the real
//! binary must print exactly the accepted blocks of each `.json`, in order, with their
//! fields in the order received, and count the rejected ones on stderr with their reason;
//! with `--hex` it must also print every HEX frame.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pvbus_testkit::ordered::Ordered;
use serde_json::Value;

fn captures() -> Vec<PathBuf> {
    let dir = pvbus_testkit::shared_dir(env!("CARGO_MANIFEST_DIR")).join("vedirect/captures");
    let mut bins: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    bins.sort();
    assert!(bins.len() >= 20, "captures missing in {}", dir.display());
    bins
}

struct Run {
    stdout: String,
    stderr: String,
}

fn decode(args: &[&str], file: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["vedirect", "decode"])
        .args(args)
        .arg(file)
        .output()
        .expect("run pvbus");
    assert!(out.status.success(), "{}: {:?}", file.display(), out);
    Run {
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn expected(bin: &Path) -> Value {
    let text = std::fs::read_to_string(bin.with_extension("json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The `fields` objects of a capture's JSON, in key order, read with [`Ordered`].
fn expected_blocks(bin: &Path) -> Vec<Option<Ordered>> {
    #[derive(serde::Deserialize)]
    struct Capture {
        expected: Expect,
    }
    #[derive(serde::Deserialize)]
    struct Expect {
        blocks: Vec<Block>,
    }
    #[derive(serde::Deserialize)]
    struct Block {
        fields: Option<Ordered>,
    }
    let text = std::fs::read_to_string(bin.with_extension("json")).unwrap();
    let c: Capture = serde_json::from_str(&text).unwrap();
    c.expected.blocks.into_iter().map(|b| b.fields).collect()
}

#[test]
fn every_capture_decodes_to_exactly_its_expected_blocks() {
    let mut checked_blocks = 0;
    for bin in captures() {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let json = expected(&bin);
        let blocks = expected_blocks(&bin);
        let may_resync: Vec<u64> = json["resync_may_accept"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let run = decode(&[], &bin);
        let got: Vec<Ordered> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {l:?}: {e}")))
            .collect();

        // Walk the expected segments in order; a rejected one that the capture marks as
        // intact may also come out (a parser that resynchronises on CR LF).
        let raw = std::fs::read(&bin).unwrap();
        let mut g = got.iter().peekable();
        let mut rejected_seen = 0;
        let mut resync_accepted = 0;
        for (i, want) in blocks.iter().enumerate() {
            match want {
                Some(fields) => {
                    let line = g
                        .next()
                        .unwrap_or_else(|| panic!("{name}: block {i} missing"));
                    assert_eq!(line, fields, "{name}: block {i}");
                    checked_blocks += 1;
                }
                None if may_resync.contains(&(i as u64)) => {
                    // Accepted only if every field really is in the capture's bytes.
                    let next_expected = blocks[i + 1..].iter().flatten().next();
                    if let Some(line) = g.peek().filter(|l| Some(**l) != next_expected) {
                        for (label, value) in &line.0 {
                            let field = format!("\r\n{label}\t{value}");
                            assert!(
                                raw.windows(field.len()).any(|w| w == field.as_bytes()),
                                "{name}: resynchronised block has {label}={value}, not in the capture"
                            );
                        }
                        g.next();
                        resync_accepted += 1;
                    } else {
                        rejected_seen += 1;
                    }
                }
                None => rejected_seen += 1,
            }
        }
        assert!(
            g.next().is_none(),
            "{name}: more blocks than expected:\n{}",
            run.stdout
        );

        // Rejections are counted on stderr, with their reasons.
        assert!(
            run.stderr.contains(&format!("{rejected_seen} rejected")),
            "{name}: stderr does not count {rejected_seen} rejected block(s) (resync accepted {resync_accepted}):\n{}",
            run.stderr
        );
        for b in json["expected"]["blocks"].as_array().unwrap() {
            if let Some(reason) = b["rejected"].as_str()
                && resync_accepted == 0
            {
                assert!(
                    run.stderr.contains(&format!("({reason})")),
                    "{name}: reason {reason:?} not on stderr:\n{}",
                    run.stderr
                );
            }
        }
    }
    assert!(
        checked_blocks > 280,
        "only {checked_blocks} blocks compared"
    );
}

#[test]
fn hex_frames_are_printed_with_hex() {
    let mut frames = 0;
    for bin in captures() {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let json = expected(&bin);
        let want = json["expected"]["hex_frames"].as_array().unwrap();
        let run = decode(&["--hex"], &bin);
        let got: Vec<Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v.get("hex").is_some())
            .collect();
        assert_eq!(got.len(), want.len(), "{name}:\n{}", run.stdout);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["hex"], w["raw"], "{name}");
            assert_eq!(g["valid"], w["valid"], "{name}: {}", w["raw"]);
            if let (Some(gr), Some(wr)) = (g.get("register"), w.get("register")) {
                assert_eq!(gr, wr, "{name}: {}", w["raw"]);
            }
            frames += 1;
        }
        // Without --hex, no frame is printed.
        let plain = decode(&[], &bin);
        assert!(!plain.stdout.contains("\"hex\""), "{name}");
    }
    assert!(frames > 100, "only {frames} frames compared");
}

#[test]
fn decoded_prints_si_readings_and_stdin_works() {
    let dir = pvbus_testkit::shared_dir(env!("CARGO_MANIFEST_DIR")).join("vedirect/captures");
    let bin = dir.join("bmv700_two_blocks.bin");
    let run = decode(&["--decoded"], &bin);
    let first: BTreeMap<String, Value> =
        serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    // V 12065 mV, I -7625 mA, SOC 839 per mille, TTG 942 min.
    assert_eq!(first["battery_voltage"], serde_json::json!(12.065));
    assert_eq!(first["battery_current"], serde_json::json!(-7.625));
    assert_eq!(first["state_of_charge"], serde_json::json!(83.9));
    assert_eq!(first["time_to_go"], serde_json::json!(942 * 60));
    assert_eq!(first["alarm"], serde_json::json!(false));

    let out = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["vedirect", "decode"])
        .stdin(std::fs::File::open(&bin).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        decode(&[], &bin).stdout
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_pvbus"))
        .args(["vedirect", "decode", "/nonexistent/capture.bin"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/capture.bin"));
}
