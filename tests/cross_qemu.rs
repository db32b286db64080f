//! The Raspberry Pi binaries (aarch64 and armv7, from scripts/cross-build.sh) run the demo
//! under qemu-user: `pvbus --version`, then `pvbus run` on a copy of examples/demo.toml
//! (free port, temporary folders), checked from a native MQTT client: every process comes
//! online and VE.Direct readings flow from the simulated MPPT and BMV.
//!
//! Opt-in, because it needs two release cross builds (2.5 to 4 minutes each on 2 cores,
//! docs/raspberry-pi.md) and root once for binfmt:
//!
//! ```sh
//! scripts/cross-build.sh            # target/cross/<triple>/pvbus
//! sudo scripts/qemu-binfmt.sh       # the kernel hands ARM executables to qemu
//! PVBUS_CROSS=1 cargo test --test cross_qemu -- --nocapture
//! ```
//!
//! `PVBUS_CROSS=aarch64` or `=armv7` runs one target; `PVBUS_CROSS_DIR` points at another
//! output folder. binfmt is needed because `pvbus run` starts its children by executing its
//! own binary. qemu-user (7.2 in Debian 12; upstream support was still a patch in late
//! 2025) lacks the termios2 ioctls that the serialport crate uses, so tests/qemu/termios2_shim.c is compiled with the cross gcc and preloaded into
//! the ARM processes (a stand-in for the missing emulation, not for any pvbus code).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pvbus_testkit::{Child, Recorder, free_port, wait_for_listener};
use serde_json::Value;

/// Emulated start-up is slow (each process is a qemu instance translating code).
const ONLINE_WITHIN: Duration = Duration::from_secs(90);
const PROCESSES: [&str; 6] = [
    "broker",
    "supervisor",
    "vedirect",
    "relays",
    "rules",
    "homeassistant",
];

/// One target at a time: two emulated demos at once would starve a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Target {
    /// The Rust target triple (folder of scripts/cross-build.sh's output).
    triple: &'static str,
    /// `qemu-<arch>`, and the name binfmt handlers carry.
    qemu_arch: &'static str,
    /// The GNU triple: `<gnu>-gcc`, and `/usr/<gnu>` holds the ARM C library.
    gnu: &'static str,
    /// What `PVBUS_CROSS` may say to choose it.
    short: &'static str,
}

const AARCH64: Target = Target {
    triple: "aarch64-unknown-linux-gnu",
    qemu_arch: "aarch64",
    gnu: "aarch64-linux-gnu",
    short: "aarch64",
};

const ARMV7: Target = Target {
    triple: "armv7-unknown-linux-gnueabihf",
    qemu_arch: "arm",
    gnu: "arm-linux-gnueabihf",
    short: "armv7",
};

#[test]
fn aarch64_binary_runs_the_demo_under_qemu() {
    run_demo(&AARCH64);
}

#[test]
fn armv7_binary_runs_the_demo_under_qemu() {
    run_demo(&ARMV7);
}

/// Whether this run asked for `target` (PVBUS_CROSS=1, or naming it).
fn wanted(target: &Target) -> bool {
    match std::env::var("PVBUS_CROSS") {
        Ok(v) if v == "1" || v == "all" => true,
        Ok(v) => v.split(',').any(|t| t.trim() == target.short),
        Err(_) => false,
    }
}

fn run_demo(target: &Target) {
    if !wanted(target) {
        eprintln!(
            "skipped: set PVBUS_CROSS=1 (or ={}) after scripts/cross-build.sh and \
             scripts/qemu-binfmt.sh to run the {} binary under qemu-user",
            target.short, target.triple
        );
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let binary = binary_of(target);
    let sysroot = PathBuf::from(format!("/usr/{}", target.gnu));

    // 1. It runs at all: explicit qemu, no binfmt needed.
    let started = Instant::now();
    let version = Command::new(format!("qemu-{}", target.qemu_arch))
        .arg("-L")
        .arg(&sysroot)
        .arg(&binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run qemu-{}: {e} (apt-get install qemu-user)",
                target.qemu_arch
            )
        });
    let printed = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success(),
        "{}: --version failed: {version:?}",
        target.triple
    );
    assert_eq!(
        printed.trim(),
        format!("pvbus {}", env!("CARGO_PKG_VERSION"))
    );
    eprintln!(
        "{}: `pvbus --version` under qemu in {:?}",
        target.triple,
        started.elapsed()
    );

    // 2. The demo, through binfmt (the supervisor executes its own binary for each child).
    assert!(
        binfmt_handles(target.qemu_arch),
        "no enabled binfmt handler runs {} executables with qemu-{}: run scripts/qemu-binfmt.sh as root",
        target.triple,
        target.qemu_arch
    );
    let dir = tempfile::tempdir().unwrap();
    let shim = compile_shim(target, dir.path());
    let port = free_port();
    let config = demo_copy(dir.path(), port);

    let log = dir.path().join("run.log");
    let started = Instant::now();
    let mut run = Child::spawn(
        "pvbus run (emulated)",
        Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("QEMU_LD_PREFIX", &sysroot)
            .env("QEMU_SET_ENV", format!("LD_PRELOAD={}", shim.display()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap()),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_for_listener(addr, ONLINE_WITHIN),
        "{}: no broker on {addr}\n{}",
        target.triple,
        logs(&log)
    );
    let recorder = Recorder::start(addr, "pvbus/#");

    for process in PROCESSES {
        let topic = format!("pvbus/{process}/status");
        let online = recorder.wait_for(&topic, ONLINE_WITHIN, |p| p == "online");
        assert!(
            online.is_some(),
            "{}: {topic} never said online (last: {:?})\n{}",
            target.triple,
            recorder.last(&topic),
            logs(&log)
        );
    }
    eprintln!(
        "{}: every process online {:?} after `pvbus run`",
        target.triple,
        started.elapsed()
    );

    // Readings flow: each simulated device publishes state, and it keeps changing.
    for device in ["mppt", "bmv"] {
        let topic = format!("pvbus/vedirect/{device}/state");
        let first = wait_reading(&recorder, &topic, None)
            .unwrap_or_else(|| panic!("{}: no reading on {topic}\n{}", target.triple, logs(&log)));
        let voltage = first["battery_voltage"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (10.0..16.0).contains(&voltage),
            "{}: {topic}: battery_voltage {voltage} is not a 12 V battery's: {first}",
            target.triple
        );
        let first_ts = first["ts"].as_i64();
        let later = wait_reading(&recorder, &topic, first_ts);
        assert!(
            later.is_some(),
            "{}: {topic} stopped after one reading (ts {first_ts:?})\n{}",
            target.triple,
            logs(&log)
        );
    }
    eprintln!(
        "{}: VE.Direct readings flowing {:?} after `pvbus run`",
        target.triple,
        started.elapsed()
    );

    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}: pvbus run did not stop cleanly on SIGTERM: {status:?}\n{}",
        target.triple,
        logs(&log)
    );
}

/// The cross-built binary, or a panic that says how to build it.
fn binary_of(target: &Target) -> PathBuf {
    let dir = std::env::var_os("PVBUS_CROSS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cross"));
    let binary = dir.join(target.triple).join("pvbus");
    assert!(
        binary.is_file(),
        "{} is missing: run scripts/cross-build.sh {}",
        binary.display(),
        target.short
    );
    binary
}

/// Whether an enabled binfmt_misc entry hands this architecture to qemu.
fn binfmt_handles(qemu_arch: &str) -> bool {
    let Ok(entries) = fs::read_dir("/proc/sys/fs/binfmt_misc") else {
        return false;
    };
    let interpreter = format!("qemu-{qemu_arch}");
    entries.flatten().any(|entry| {
        fs::read_to_string(entry.path()).is_ok_and(|text| {
            text.starts_with("enabled")
                && text.lines().any(|l| {
                    l.strip_prefix("interpreter ").is_some_and(|path| {
                        let name = path.rsplit('/').next().unwrap_or(path);
                        name == interpreter || name == format!("{interpreter}-static")
                    })
                })
        })
    })
}

/// tests/qemu/termios2_shim.c built for the target.
fn compile_shim(target: &Target, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qemu/termios2_shim.c");
    let shim = dir.join("termios2_shim.so");
    let gcc = format!("{}-gcc", target.gnu);
    let status = Command::new(&gcc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {gcc}: {e} (apt-get install gcc-{})", target.gnu));
    assert!(
        status.success(),
        "{gcc} could not build {}",
        source.display()
    );
    shim
}

/// examples/demo.toml with its folders under `dir` and its embedded broker on `port`.
fn demo_copy(dir: &Path, port: u16) -> PathBuf {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml");
    let text = fs::read_to_string(&demo).unwrap();
    assert!(text.contains("/tmp/pvbus-demo") && text.contains("127.0.0.1:1883"));
    let text = text
        .replace("/tmp/pvbus-demo", &dir.join("demo").display().to_string())
        .replace("127.0.0.1:1883", &format!("127.0.0.1:{port}"));
    let path = dir.join("demo.toml");
    fs::write(&path, text).unwrap();
    path
}

/// The next state of `topic` (JSON) whose `ts` differs from `not_ts`.
fn wait_reading(recorder: &Recorder, topic: &str, not_ts: Option<i64>) -> Option<Value> {
    recorder
        .wait_for(topic, ONLINE_WITHIN, |payload| {
            serde_json::from_str::<Value>(payload)
                .is_ok_and(|v| v["ts"].as_i64().is_some() && v["ts"].as_i64() != not_ts)
        })
        .map(|payload| serde_json::from_str(&payload).unwrap())
}

fn logs(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    format!(
        "--- last lines of the pvbus run log ---\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}
