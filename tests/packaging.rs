//! What we ship to a Raspberry Pi, checked without root and without a Pi: the
//! configuration file we install is valid, packaging/install.sh (staged into a temporary
//! DESTDIR) puts every file where the systemd units it installs will look for it, and
//! every binary we build for users is in the Debian package, the install script and the
//! cross build alike.
//!
//! The Debian package itself needs cargo-deb and a release build, so it is checked by
//! hand (docs/raspberry-pi.md, "Debian package"), not here.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PVBUS: &str = env!("CARGO_BIN_EXE_pvbus");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_shipped_configuration_passes_config_check() {
    let output = Command::new(PVBUS)
        .args(["config", "check"])
        .arg(repo().join("packaging/pvbus.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "packaging/pvbus.toml, installed as /etc/pvbus/pvbus.toml, is refused:\n{}",
        text(&output)
    );
}

/// The binaries users get: `pvbus`, and the `[[bin]]` of every crate under plugins/.
fn shipped_binaries() -> BTreeSet<String> {
    let mut bins = BTreeSet::from(["pvbus".to_string()]);
    for entry in fs::read_dir(repo().join("plugins")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(manifest) = fs::read_to_string(&manifest) else {
            continue;
        };
        let manifest: toml::Table = toml::from_str(&manifest).unwrap();
        for bin in manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            bins.insert(bin["name"].as_str().unwrap().to_string());
        }
    }
    bins
}

/// The words of the shell assignment `name="..."` in a script.
fn shell_list(script: &str, name: &str) -> Vec<String> {
    let source = fs::read_to_string(repo().join(script)).unwrap();
    let prefix = format!("{name}=\"");
    let line = source
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{script}: no {name}=\"...\" line"));
    line.trim_end_matches('"')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_shipped_binary_is_in_the_package_the_install_script_and_the_cross_build() {
    let shipped = shipped_binaries();
    assert!(
        shipped.len() > 1,
        "no plugin binaries found under plugins/: {shipped:?}"
    );

    let manifest: toml::Table =
        toml::from_str(&fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    let in_deb: BTreeSet<String> = assets
        .iter()
        .filter_map(|a| a[0].as_str()?.strip_prefix("target/release/"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        in_deb, shipped,
        "Cargo.toml [package.metadata.deb] assets (target/release/...)"
    );
    for asset in assets {
        if asset[0]
            .as_str()
            .is_some_and(|s| s.starts_with("target/release/"))
        {
            assert_eq!(
                (asset[1].as_str(), asset[2].as_str()),
                (Some("usr/bin/"), Some("755")),
                "{asset}"
            );
        }
    }

    let installed: BTreeSet<String> = shell_list("packaging/install.sh", "plugins")
        .into_iter()
        .chain(["pvbus".to_string()])
        .collect();
    assert_eq!(installed, shipped, "packaging/install.sh plugins=\"...\"");

    let cross: BTreeSet<String> = shell_list("scripts/cross-build.sh", "binaries")
        .into_iter()
        .collect();
    assert_eq!(cross, shipped, "scripts/cross-build.sh binaries=\"...\"");
}

/// A folder holding what `install.sh --binary` is given: the real `pvbus` (a link to the
/// one cargo built) and, beside it, a stand-in for each plugin binary (the script only
/// copies them; what they do is tested in plugins/).
fn build_folder(dir: &Path) -> PathBuf {
    let bin = dir.join("build");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(PVBUS, bin.join("pvbus")).unwrap();
    for plugin in shell_list("packaging/install.sh", "plugins") {
        let path = bin.join(&plugin);
        fs::write(&path, format!("#!/bin/sh\necho {plugin}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin.join("pvbus")
}

fn install(destdir: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg(repo().join("packaging/install.sh"))
        .args(args)
        .arg("--no-systemctl")
        .env("DESTDIR", destdir)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `destdir` + an absolute path of the installed system.
fn staged(destdir: &Path, path: &str) -> PathBuf {
    destdir.join(path.trim_start_matches('/'))
}

#[test]
fn install_sh_stages_every_file_where_the_units_look_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_folder(dir.path());
    let root = dir.path().join("root");
    let output = install(&root, &["--binary", binary.to_str().unwrap()]);
    assert!(output.status.success(), "install.sh: {}", text(&output));

    // The binaries; pvbus runs where it landed.
    for bin in shipped_binaries() {
        let path = staged(&root, &format!("/usr/local/bin/{bin}"));
        assert_eq!(mode(&path), 0o755, "{}", path.display());
    }
    let version = Command::new(staged(&root, "/usr/local/bin/pvbus"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("pvbus {}", env!("CARGO_PKG_VERSION"))
    );

    // The configuration: the shipped file, not readable by others (it may hold MQTT
    // credentials); the plugins folder, which the units make read-only for pvbus.
    let config = staged(&root, "/etc/pvbus/pvbus.toml");
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        fs::read_to_string(repo().join("packaging/pvbus.toml")).unwrap()
    );
    assert_eq!(mode(&config), 0o640);
    assert!(staged(&root, "/etc/pvbus/plugins.d").is_dir());

    // Every unit of packaging/systemd, and every path its commands name, present.
    let mut units = BTreeSet::new();
    for entry in fs::read_dir(repo().join("packaging/systemd")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".service") || name.ends_with(".target") {
            units.insert(name);
        }
    }
    assert!(units.contains("pvbus.service") && units.contains("pvbus@.service"));
    let mut commands = 0;
    for unit in &units {
        let path = staged(&root, &format!("/etc/systemd/system/{unit}"));
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{unit} not installed ({e}): {}", text(&output)));
        assert_eq!(mode(&path), 0o644, "{unit}");
        for line in text.lines() {
            let Some((key, command)) = line.split_once('=') else {
                continue;
            };
            if !key.starts_with("Exec") {
                continue;
            }
            commands += 1;
            let words: Vec<&str> = command.split_whitespace().collect();
            let program = words[0].trim_start_matches(['-', '@', ':', '+', '!']);
            assert_eq!(
                program, "/usr/local/bin/pvbus",
                "{unit}: {line}: not the installed binary"
            );
            assert_eq!(
                mode(&staged(&root, program)) & 0o111,
                0o111,
                "{unit}: {line}"
            );
            for pair in words.windows(2) {
                if pair[0] == "--config" {
                    assert!(
                        staged(&root, pair[1]).is_file(),
                        "{unit}: {line}: {} is not installed",
                        pair[1]
                    );
                }
            }
            for path in words.iter().filter(|w| w.starts_with("/etc/")) {
                assert!(staged(&root, path).exists(), "{unit}: {line}: {path}");
            }
        }
    }
    assert!(commands >= 3, "only {commands} Exec lines in {units:?}");

    // Run again over an edited configuration: kept.
    fs::write(&config, "# mine\n[bus]\nbase = \"home\"\n").unwrap();
    let again = install(&root, &["--binary", binary.to_str().unwrap()]);
    assert!(
        again.status.success(),
        "second install.sh: {}",
        text(&again)
    );
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "# mine\n[bus]\nbase = \"home\"\n"
    );
}

#[test]
fn install_sh_stops_at_a_wrong_configuration_before_installing_units() {
    let dir = tempfile::tempdir().unwrap();
    let binary = build_folder(dir.path());
    let wrong = dir.path().join("wrong.toml");
    fs::write(
        &wrong,
        "[relays]\n[[relays.relay]]\nid = \"pump\"\npin = 17\ncolour = \"red\"\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    let output = install(
        &root,
        &[
            "--binary",
            binary.to_str().unwrap(),
            "--config",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(
        !output.status.success(),
        "a wrong configuration was accepted: {}",
        text(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("relays.relay[0].colour"),
        "the error does not name the key: {}",
        text(&output)
    );
    assert!(
        !staged(&root, "/etc/systemd/system/pvbus.service").exists(),
        "units installed for a configuration that does not load"
    );
}
