//! docs/cookbook.md never lies: every `sh` block of it runs, in order, against the demo
//! (`pvbus run` on examples/demo.toml, moved to a temp directory, its processes on a real
//! mosquitto at a free port as `[bus] external_broker`), and the `<!-- check: ... -->`
//! comment under each block is verified:
//!
//! - `forever`: the command runs until stopped (it is stopped after a few seconds);
//! - `stdout contains TEXT`, `stdout number`, `stdout nonempty`, `stdout lines N`;
//! - `topic T == V`, `topic T starts V`, `topic T contains V`, `topic T empty`: the
//!   retained (or last) value of a topic afterwards;
//! - `skip (why)`: shown, not run;
//! - `needs TOOL`: run only where TOOL is installed (.ci/run installs it), said otherwise.
//!
//! The commands are run as written: `mosquitto_sub`/`mosquitto_pub` find the port in their
//! own configuration files (`$XDG_CONFIG_HOME/mosquitto_sub`), `pvbus` is the binary under
//! test and finds the configuration in `PVBUS_CONFIG`.

#[path = "ha/stack.rs"]
mod stack;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvbus_testkit::{Mosquitto, Recorder};
use stack::PVBUS;

/// One runnable block of the cookbook.
#[derive(Debug)]
struct Recipe {
    line: usize,
    script: String,
    checks: Vec<String>,
}

fn recipes(markdown: &str) -> Vec<Recipe> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```sh" {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "```" {
                end += 1;
            }
            let script = lines[start..end].join("\n");
            let spec = lines
                .get(end + 1)
                .and_then(|l| l.trim().strip_prefix("<!-- check:"))
                .and_then(|l| l.strip_suffix("-->"))
                .unwrap_or_else(|| {
                    panic!(
                        "docs/cookbook.md:{}: a sh block needs a <!-- check: ... --> line after it",
                        start
                    )
                });
            out.push(Recipe {
                line: start,
                script,
                checks: spec
                    .split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect(),
            });
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

struct Ran {
    stdout: String,
    stderr: String,
}

fn run(recipe: &Recipe, env: &[(&str, String)], forever: bool) -> Ran {
    let mut cmd = Command::new("bash");
    cmd.args(["-e", "-o", "pipefail", "-c", &recipe.script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("bash");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let limit = if forever {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(20)
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        // The whole group: bash and what it started.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let ran = Ran {
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    let where_ = format!("docs/cookbook.md:{}:\n{}", recipe.line, recipe.script);
    match (forever, status) {
        (true, Some(s)) => panic!(
            "{where_}\nshould run until stopped, but exited ({s}): {}",
            ran.stderr
        ),
        (false, None) => panic!("{where_}\ndid not finish within {limit:?}"),
        (false, Some(s)) if !s.success() => panic!(
            "{where_}\nfailed ({s})\nstdout: {}\nstderr: {}",
            ran.stdout, ran.stderr
        ),
        _ => ran,
    }
}

fn verify(recipe: &Recipe, ran: &Ran, bus: &Recorder) {
    let where_ = format!("docs/cookbook.md:{}:\n{}\n", recipe.line, recipe.script);
    let out = ran.stdout.trim();
    for check in &recipe.checks {
        if check == "forever" || check.starts_with("needs ") {
            continue;
        }
        if let Some(what) = check.strip_prefix("stdout ") {
            let ok = if let Some(text) = what.strip_prefix("contains ") {
                out.contains(text)
            } else if what == "number" {
                out.parse::<f64>().is_ok()
            } else if what == "nonempty" {
                !out.is_empty()
            } else if let Some(n) = what.strip_prefix("lines ") {
                out.lines().count() == n.parse::<usize>().expect("lines N")
            } else {
                panic!("{where_}unknown check {check}")
            };
            assert!(
                ok,
                "{where_}check `{check}` failed; stdout:\n{}\nstderr:\n{}",
                ran.stdout, ran.stderr
            );
        } else if let Some(rest) = check.strip_prefix("topic ") {
            let (topic, cond) = rest.split_once(' ').expect("topic T COND");
            let (op, value) = cond.split_once(' ').unwrap_or((cond, ""));
            let pred = |p: &str| match op {
                "==" => p == value,
                "starts" => p.starts_with(value),
                "contains" => p.contains(value),
                "empty" => p.is_empty(),
                other => panic!("{where_}unknown topic check {other}"),
            };
            assert!(
                bus.wait_for(topic, Duration::from_secs(10), pred).is_some(),
                "{where_}check `{check}` failed: {topic} is {:?}",
                bus.last(topic)
            );
        } else {
            panic!("{where_}unknown check `{check}`");
        }
    }
}

#[test]
fn every_command_of_the_cookbook_works_on_the_demo() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let markdown = std::fs::read_to_string(root.join("docs/cookbook.md")).unwrap();
    let recipes = recipes(&markdown);
    assert!(recipes.len() >= 15, "only {} recipes found", recipes.len());

    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let port = broker.port;
    let (mut demo, config) = stack::start_demo(&broker, dir.path());
    let bus = Recorder::start(broker.addr(), "#");

    let xdg = dir.path().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    for client in ["mosquitto_sub", "mosquitto_pub"] {
        std::fs::write(xdg.join(client), format!("-h 127.0.0.1\n-p {port}\n")).unwrap();
    }
    let bin_dir = Path::new(PVBUS).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("XDG_CONFIG_HOME", xdg.display().to_string()),
        ("PVBUS_CONFIG", config.display().to_string()),
        ("PATH", path),
    ];

    let (mut ran, mut skipped) = (0, Vec::new());
    for recipe in &recipes {
        if recipe.checks.iter().any(|c| c.starts_with("skip")) {
            skipped.push(format!(
                "line {}: {}",
                recipe.line,
                recipe.checks.join("; ")
            ));
            continue;
        }
        let missing = recipe.checks.iter().find_map(|c| {
            let tool = c.strip_prefix("needs ")?;
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            (!found).then(|| tool.to_string())
        });
        if let Some(tool) = missing {
            eprintln!(
                "NOT RUN: docs/cookbook.md:{} needs {tool}, which is not installed (apt-get install {tool})",
                recipe.line
            );
            skipped.push(format!("line {}: {tool} not installed", recipe.line));
            continue;
        }
        let forever = recipe.checks.iter().any(|c| c == "forever");
        let result = run(recipe, &env, forever);
        verify(recipe, &result, &bus);
        ran += 1;
    }
    println!(
        "cookbook: {ran} commands run and checked, {} shown only:\n  {}",
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(
        demo.terminate(Duration::from_secs(15)).is_some(),
        "the demo did not stop on SIGTERM"
    );
}
