//! The Raspberry Pi binaries (aarch64 and armv7, from scripts/cross-build.sh) run the demo
//! under qemu-user: `pvbus --version`, then `pvbus run` on a copy of examples/demo.toml
//! (free port, temporary folders), checked from a native MQTT client: every process the
//! demo runs comes online (the list is checked against the supervisor's own), VE.Direct
//! readings flow from the simulated MPPT and BMV, the relays and rules report, and the
//! simulated panel works both ways (a TM1638 button sets a relay's mode through the relay
//! bridge and its digit follows; the LCD shows the BMV's state of charge and turns its
//! page on a button). Then SIGTERM stops it all cleanly.
//!
//! Ignored by default, because it needs two release cross builds (3 to 4.5 minutes each
//! on 2 cores, docs/performance.md), the cross compilers, qemu-user and root once for
//! binfmt:
//!
//! ```sh
//! scripts/cross-build.sh            # target/cross/<triple>/pvbus
//! sudo scripts/qemu-binfmt.sh       # the kernel hands ARM executables to qemu
//! cargo test --test cross_qemu -- --ignored --nocapture            # both targets
//! cargo test --test cross_qemu -- --ignored --nocapture armv7      # one
//! ```
//!
//! `PVBUS_CROSS_DIR` points at another output folder. binfmt is needed because `pvbus run`
//! starts its children by executing its own binary. qemu-user (7.2 in Debian 12; upstream
//! support was still a patch in late 2025) lacks the termios2 ioctls that the serialport
//! crate uses, so tests/qemu/termios2_shim.c is compiled with the cross gcc and preloaded
//! into the ARM processes (a stand-in for the missing emulation, not for any pvbus code).

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "support/demo.rs"]
mod support_demo;

use pvbus_testkit::{Child, Recorder, free_port, mosquitto_pub, wait_for_listener};
use serde_json::Value;
use support_demo::{DEMO_PROCESSES, demo_copy};

/// Emulated start-up is slow (each process is a qemu instance translating code).
const ONLINE_WITHIN: Duration = Duration::from_secs(90);
/// Once everything is up, how long a round trip through the emulated processes may take.
const WAIT: Duration = Duration::from_secs(30);
/// The relays of examples/demo.toml, in order: TM1638 button and digit n are relay n.
const RELAYS: [&str; 2] = ["water_heater", "pump"];

/// One target at a time: two emulated demos at once would starve a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Target {
    /// The Rust target triple (folder of scripts/cross-build.sh's output).
    triple: &'static str,
    /// `qemu-<arch>`, and the name binfmt handlers carry.
    qemu_arch: &'static str,
    /// The GNU triple: `<gnu>-gcc`, and `/usr/<gnu>` holds the ARM C library.
    gnu: &'static str,
    /// Its name for scripts/cross-build.sh.
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
#[ignore = "opt-in: needs scripts/cross-build.sh and qemu-user, see docs/raspberry-pi.md"]
fn aarch64_binary_runs_the_demo_under_qemu() {
    run_demo(&AARCH64);
}

#[test]
#[ignore = "opt-in: needs scripts/cross-build.sh and qemu-user, see docs/raspberry-pi.md"]
fn armv7_binary_runs_the_demo_under_qemu() {
    run_demo(&ARMV7);
}

fn run_demo(target: &Target) {
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
    let config = demo_config(dir.path(), port);

    let log = dir.path().join("run.log");
    let started = Instant::now();
    let mut run = Child::spawn(
        "pvbus run (emulated)",
        Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("QEMU_LD_PREFIX", &sysroot)
            // Inherited by the children too. (The host's ld.so, starting qemu for each
            // child through binfmt, sees LD_PRELOAD as well, warns in the log that it
            // cannot preload an ARM library into qemu, and ignores it.)
            .env("QEMU_SET_ENV", format!("LD_PRELOAD={}", shim.display()))
            .env("NO_COLOR", "1")
            // The LCD lit whatever the hour: at night its first press only wakes it.
            .env("PVBUS_LCD__NIGHT", "")
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
    eprintln!(
        "{}: broker listening {:?} after `pvbus run`",
        target.triple,
        started.elapsed()
    );
    let recorder = Recorder::start(addr, "pvbus/#");
    let fail = |what: String| -> ! { panic!("{}: {what}\n{}", target.triple, logs(&log)) };

    // Every process the demo runs is online, and the supervisor runs no other.
    for process in DEMO_PROCESSES {
        let topic = format!("pvbus/{process}/status");
        if recorder
            .wait_for(&topic, ONLINE_WITHIN, |p| p == "online")
            .is_none()
        {
            fail(format!(
                "{topic} never said online (last: {:?})",
                recorder.last(&topic)
            ));
        }
    }
    let last_online = recorder
        .all()
        .iter()
        .filter(|s| s.topic.ends_with("/status") && s.payload == "online")
        .map(|s| s.at)
        .max()
        .unwrap();
    eprintln!(
        "{}: every process online {:?} after `pvbus run`",
        target.triple,
        last_online - started
    );
    let supervised = supervised_processes(&recorder)
        .unwrap_or_else(|| fail("no pvbus/supervisor/processes with every child running".into()));
    let expected: BTreeSet<String> = DEMO_PROCESSES
        .iter()
        .filter(|p| **p != "supervisor")
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        supervised, expected,
        "{}: the processes of examples/demo.toml are not those this test checks",
        target.triple
    );

    // Readings flow: each simulated device publishes state, and it keeps changing.
    for device in ["mppt", "bmv"] {
        let topic = format!("pvbus/vedirect/{device}/state");
        let first = wait_reading(&recorder, &topic, None)
            .unwrap_or_else(|| fail(format!("no reading on {topic}")));
        let voltage = first["battery_voltage"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (10.0..16.0).contains(&voltage),
            "{}: {topic}: battery_voltage {voltage} is not a 12 V battery's: {first}",
            target.triple
        );
        let first_ts = first["ts"].as_i64();
        if wait_reading(&recorder, &topic, first_ts).is_none() {
            fail(format!(
                "{topic} stopped after one reading (ts {first_ts:?})"
            ));
        }
    }
    eprintln!(
        "{}: VE.Direct readings flowing {:?} after `pvbus run`",
        target.triple,
        started.elapsed()
    );

    // The relay bridge reports each relay, and the rules say what each one waits for.
    for relay in RELAYS {
        let state = format!("pvbus/relays/{relay}/state");
        if recorder
            .wait_for(&state, WAIT, |p| p == "ON" || p == "OFF")
            .is_none()
        {
            fail(format!("{state}: {:?}", recorder.last(&state)));
        }
        let rule = format!("pvbus/rules/{relay}/status");
        if recorder.wait_for(&rule, WAIT, |p| !p.is_empty()).is_none() {
            fail(format!("{rule}: nothing from the rules"));
        }
    }

    // The panel. The TM1638's digits show each relay's mode (`-` until heard of), on the
    // bus and on the simulated board.
    let tm1638 = dir.path().join("demo/tm1638/tm1638.txt");
    let modes_known = |text: &str| {
        let digits: Vec<char> = text
            .chars()
            .filter(|c| *c != '.')
            .take(RELAYS.len())
            .collect();
        digits.len() == RELAYS.len() && digits.iter().all(|c| "0123".contains(*c))
    };
    if recorder
        .wait_for("pvbus/tm1638/display", WAIT, modes_known)
        .is_none()
    {
        fail(format!(
            "pvbus/tm1638/display never showed the relay modes: {:?}",
            recorder.last("pvbus/tm1638/display")
        ));
    }
    picture_shows(&tm1638, |t| t.strip_prefix('[').is_some_and(modes_known)).unwrap_or_else(
        |last| {
            fail(format!(
                "{} never showed the relay modes:\n{last}",
                tm1638.display()
            ))
        },
    );
    // Its button 2 cycles the pump to forced on: sent to the relay bridge after
    // `apply_after` (2 s), which switches the pin; LED and digit follow what it reports.
    let pressed = Instant::now();
    mosquitto_pub(
        addr,
        &["-q", "1", "-t", "pvbus/tm1638/sim/press", "-m", "2"],
    );
    for (topic, wanted) in [
        ("pvbus/tm1638/button/2", "press"),
        ("pvbus/relays/pump/mode", "forced_on"),
        ("pvbus/relays/pump/state", "ON"),
    ] {
        if recorder
            .wait_for(topic, WAIT, |p| p.contains(wanted))
            .is_none()
        {
            fail(format!(
                "after TM1638 button 2, {topic} never said {wanted} (last: {:?})",
                recorder.last(topic)
            ));
        }
    }
    picture_shows(&tm1638, |t| {
        t.chars().nth(2) == Some('3') && t.contains("LEDs: ") && {
            let leds: Vec<&str> = t.split("LEDs: ").nth(1).unwrap_or("").split(' ').collect();
            leds.get(1).is_some_and(|l| l.starts_with('*'))
        }
    })
    .unwrap_or_else(|last| {
        fail(format!(
            "the pump's digit and LED never showed forced on:\n{last}"
        ))
    });
    eprintln!(
        "{}: TM1638 button 2 -> pump forced on, shown on the board, in {:?}",
        target.triple,
        pressed.elapsed()
    );

    // The LCD's first page shows the BMV's state of charge (`--` while unknown), on the
    // bus and on the simulated plate; its `right` button turns to page 2.
    let lcd = dir.path().join("demo/lcd/lcd.txt");
    let soc_shown = |line: &str| {
        line.strip_prefix("BA:")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    if recorder
        .wait_for("pvbus/lcd/line/1", WAIT, soc_shown)
        .is_none()
    {
        fail(format!(
            "pvbus/lcd/line/1 never showed the state of charge: {:?}",
            recorder.last("pvbus/lcd/line/1")
        ));
    }
    picture_shows(&lcd, |t| {
        t.lines()
            .any(|l| l.strip_prefix('|').is_some_and(soc_shown))
    })
    .unwrap_or_else(|last| {
        fail(format!(
            "{} never showed the state of charge:\n{last}",
            lcd.display()
        ))
    });
    let pressed = Instant::now();
    mosquitto_pub(
        addr,
        &["-q", "1", "-t", "pvbus/lcd/sim/press", "-m", "right"],
    );
    if recorder
        .wait_for("pvbus/lcd/page", WAIT, |p| p == "2")
        .is_none()
    {
        fail(format!(
            "the LCD's right button did not turn the page: {:?}",
            recorder.last("pvbus/lcd/page")
        ));
    }
    picture_shows(&lcd, |t| t.contains("|PV:"))
        .unwrap_or_else(|last| fail(format!("the LCD never drew page 2:\n{last}")));
    eprintln!(
        "{}: LCD button right -> page 2, drawn, in {:?}",
        target.triple,
        pressed.elapsed()
    );

    let stopping = Instant::now();
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}: pvbus run did not stop cleanly on SIGTERM: {status:?}\n{}",
        target.triple,
        logs(&log)
    );
    eprintln!(
        "{}: stopped cleanly {:?} after SIGTERM; the whole demo check took {:?}",
        target.triple,
        stopping.elapsed(),
        started.elapsed()
    );
}

/// The children of `pvbus run` that are processes of the home (not simulators), once the
/// supervisor reports every child running.
fn supervised_processes(recorder: &Recorder) -> Option<BTreeSet<String>> {
    let payload = recorder.wait_for("pvbus/supervisor/processes", WAIT, |p| {
        serde_json::from_str::<Value>(p).is_ok_and(|v| {
            v["processes"]
                .as_object()
                .is_some_and(|m| m.values().all(|c| c["state"] == "running"))
        })
    })?;
    let report: Value = serde_json::from_str(&payload).ok()?;
    Some(
        report["processes"]
            .as_object()?
            .iter()
            .filter(|(_, child)| child["role"] != "simulator")
            .map(|(name, _)| name.clone())
            .collect(),
    )
}

/// Waits until the picture a simulated panel draws satisfies `pred`; else returns the
/// last picture.
fn picture_shows(picture: &Path, pred: impl Fn(&str) -> bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = fs::read_to_string(picture).unwrap_or_default();
        if pred(&text) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
fn demo_config(dir: &Path, port: u16) -> PathBuf {
    demo_copy(
        dir,
        &[
            ("/tmp/pvbus-demo", &dir.join("demo").display().to_string()),
            ("127.0.0.1:1883", &format!("127.0.0.1:{port}")),
        ],
    )
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
