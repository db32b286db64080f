//! `pvbus relays` as a user meets it: a real mosquitto, the real process, the
//! simulated board, and nothing but `mosquitto_pub` / subscribers to drive it.

mod relays_common;

use std::time::Duration;

use pvbus_hardware::{Level, SimLog};
use relays_common::{RelaysSetup, WAIT, saved_level};

const TWO_RELAYS: &str = "[[relays.relay]]\nid = \"water_heater\"\npin = 17\n\n\
                          [[relays.relay]]\nid = \"pump\"\npin = 27\nactive_low = false\n";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn a_user_forces_releases_overrides_and_watches_a_relay_with_mosquitto_tools() {
    let setup = RelaysSetup::new("600", TWO_RELAYS);
    let _relays = setup.start();
    let seen = setup.recorder("pvbus/relays/#");
    seen.expect("pvbus/relays/water_heater/mode", "auto_off", WAIT);
    seen.expect("pvbus/relays/water_heater/state", "OFF", WAIT);
    // Active-low: off is a high pin.
    assert_eq!(saved_level(&setup.board(), 17), Some(Level::High));

    setup.publish("pvbus/relays/water_heater/mode/set", "forced_on");
    seen.expect("pvbus/relays/water_heater/mode", "forced_on", WAIT);
    seen.expect("pvbus/relays/water_heater/state", "ON", WAIT);
    assert_eq!(saved_level(&setup.board(), 17), Some(Level::Low));
    let reason = json(&seen.last("pvbus/relays/water_heater/reason").unwrap());
    assert_eq!(reason["by"], "user");

    // Rules are not obeyed by a forced relay, then are once it is released.
    setup.publish("pvbus/relays/water_heater/auto/set", "OFF");
    setup.publish("pvbus/relays/water_heater/mode/set", "auto");
    seen.expect("pvbus/relays/water_heater/mode", "auto_off", WAIT);
    setup.publish("pvbus/relays/water_heater/auto/set", "ON");
    seen.expect("pvbus/relays/water_heater/mode", "auto_on", WAIT);
    seen.expect("pvbus/relays/water_heater/state", "ON", WAIT);
    let reason = json(&seen.last("pvbus/relays/water_heater/reason").unwrap());
    assert_eq!(reason["by"], "rules");

    // PvMonit's numbers work too.
    setup.publish("pvbus/relays/pump/mode/set", "3");
    seen.expect("pvbus/relays/pump/mode", "forced_on", WAIT);
    assert_eq!(
        saved_level(&setup.board(), 27),
        Some(Level::High),
        "active-high"
    );

    // An override for a duration ends by itself and is visible while it runs.
    setup.publish(
        "pvbus/relays/pump/mode/set",
        r#"{"mode":"forced_off","for":"2s"}"#,
    );
    seen.expect("pvbus/relays/pump/mode", "forced_off", WAIT);
    let running = json(&seen.last("pvbus/relays/pump/override").unwrap());
    assert_eq!(running["mode"], "forced_off");
    assert_eq!(running["then"], "forced_on");
    assert!(running["until"].as_u64().unwrap() > 1_700_000_000);
    seen.expect(
        "pvbus/relays/pump/mode",
        "forced_on",
        Duration::from_secs(5),
    );
    seen.expect("pvbus/relays/pump/override", "", WAIT);
    let reason = json(&seen.last("pvbus/relays/pump/reason").unwrap());
    assert_eq!(reason["by"], "override-expired");

    // Stats and the history command.
    let stats = json(&seen.last("pvbus/relays/pump/stats").unwrap());
    assert_eq!(stats["switch_count_today"], 3, "{stats}");
    let out = setup.pvbus(&["relays", "history", "pump"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("override-expired"), "{text}");
    assert!(!text.contains("water_heater"), "{text}");
}

#[test]
fn invalid_commands_change_nothing_and_get_specific_errors() {
    let setup = RelaysSetup::new("600", TWO_RELAYS);
    let _relays = setup.start();
    let seen = setup.recorder("pvbus/relays/#");
    setup.publish("pvbus/relays/pump/mode/set", "forced_on");
    seen.expect("pvbus/relays/pump/mode", "forced_on", WAIT);
    let history_before = std::fs::read_to_string(setup.state().join("history.jsonl")).unwrap();

    let bad = [
        (
            "pvbus/relays/toaster/mode/set",
            "forced_on",
            "unknown relay \"toaster\"",
        ),
        ("pvbus/relays/pump/mode/set", "turbo", "unknown mode"),
        (
            "pvbus/relays/pump/mode/set",
            r#"{"mode":"forced_off","for":"#,
            "malformed JSON",
        ),
        (
            "pvbus/relays/pump/mode/set",
            r#"{"mode":"forced_off","for":"-2h"}"#,
            "negative duration",
        ),
        (
            "pvbus/relays/pump/mode/set",
            r#"{"mode":"forced_off","until":"teatime"}"#,
            "bad \"until\"",
        ),
        ("pvbus/relays/pump/auto/set", "maybe", "expected ON or OFF"),
    ];
    for (topic, payload, expected) in bad {
        seen.clear();
        setup.publish(topic, payload);
        let error = seen
            .wait_for("pvbus/relays/error", WAIT, |_| true)
            .unwrap_or_else(|| panic!("no error for {payload}"));
        let error = json(&error);
        assert_eq!(error["topic"], topic);
        let text = error["error"].as_str().unwrap();
        assert!(text.contains(expected), "{payload}: {text}");
    }

    let history_after = std::fs::read_to_string(setup.state().join("history.jsonl")).unwrap();
    assert_eq!(history_after, history_before, "nothing changed");
    assert_eq!(
        seen.last("pvbus/relays/pump/mode"),
        None,
        "no mode republished"
    );
    assert_eq!(saved_level(&setup.board(), 27), Some(Level::High));
}

/// A retained command stays on the broker and is replayed to the process at
/// every (re)subscription: it must never be obeyed, or a restart would switch
/// the relay back to some old wish. (MQTT 3.1.1 brokers clear the retain flag
/// on live delivery, so a retained command is seen as such on replay.)
#[test]
fn a_retained_command_replayed_at_start_is_ignored() {
    let setup = RelaysSetup::new("600", TWO_RELAYS);
    let mut relays = setup.start();
    let seen = setup.recorder("pvbus/relays/#");
    setup.publish("pvbus/relays/pump/mode/set", "forced_on");
    seen.expect("pvbus/relays/pump/mode", "forced_on", WAIT);
    relays.terminate(WAIT).expect("stops on SIGTERM");

    pvbus_testkit::mosquitto_pub(
        setup.broker.addr(),
        &[
            "-q",
            "1",
            "-r",
            "-t",
            "pvbus/relays/pump/mode/set",
            "-m",
            "forced_off",
        ],
    );
    seen.clear();
    let _relays = setup.start();
    seen.expect("pvbus/relays/pump/mode", "forced_on", WAIT);
    // A later command proves the replayed one has been read (and ignored).
    setup.publish("pvbus/relays/water_heater/mode/set", "forced_on");
    seen.expect("pvbus/relays/water_heater/mode", "forced_on", WAIT);
    assert_eq!(
        seen.last("pvbus/relays/pump/mode").as_deref(),
        Some("forced_on")
    );
    assert_eq!(saved_level(&setup.board(), 27), Some(Level::High));
}

#[test]
fn the_stale_data_safety_switches_off_with_the_broker_stopped() {
    let mut setup = RelaysSetup::new(
        "2",
        "[[relays.relay]]\nid = \"water_heater\"\npin = 17\n\n\
         [[relays.relay]]\nid = \"internet_box\"\npin = 22\non_stale = \"keep\"\n",
    );
    let _relays = setup.start();
    let seen = setup.recorder("pvbus/relays/#");
    setup.publish("pvbus/relays/water_heater/auto/set", "ON");
    setup.publish("pvbus/relays/internet_box/auto/set", "ON");
    seen.expect("pvbus/relays/water_heater/state", "ON", WAIT);
    seen.expect("pvbus/relays/internet_box/state", "ON", WAIT);
    // Heartbeats of the rules keep it on past stale_after (2 s).
    for _ in 0..6 {
        setup.publish("pvbus/rules/heartbeat", "1764079200");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        seen.last("pvbus/relays/water_heater/state").as_deref(),
        Some("ON")
    );
    setup.publish("pvbus/rules/heartbeat", "1764079200");
    let switched_on = std::time::Instant::now();
    drop(seen);

    setup.broker.kill();
    // Watch the pin itself: the broker is gone.
    let log = SimLog::at(setup.board());
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while saved_level(&setup.board(), 17) != Some(Level::High) {
        assert!(std::time::Instant::now() < deadline, "safety never fired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = switched_on.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "fired early: {after:?}"
    );
    assert_eq!(
        saved_level(&setup.board(), 22),
        Some(Level::Low),
        "keep stays on"
    );
    let off = log.pin(17).unwrap();
    assert_eq!(off.last().unwrap().level, Level::High);

    // When the broker comes back, everyone learns what happened and why.
    setup.broker.restart();
    let seen = setup.recorder("pvbus/relays/#");
    seen.expect("pvbus/relays/water_heater/mode", "auto_off", WAIT);
    let reason = json(&seen.last("pvbus/relays/water_heater/reason").unwrap());
    assert_eq!(reason["by"], "safety");
    seen.expect("pvbus/relays/internet_box/mode", "auto_on", WAIT);
}

#[test]
fn restarts_never_glitch_the_outputs() {
    let setup = RelaysSetup::new(
        "600",
        "[[relays.relay]]\nid = \"heater\"\npin = 17\n\n\
         [[relays.relay]]\nid = \"pump\"\npin = 27\nactive_low = false\n\n\
         [[relays.relay]]\nid = \"charger\"\npin = 22\n\n\
         [[relays.relay]]\nid = \"server\"\npin = 5\n",
    );
    let mut relays = setup.start();
    let seen = setup.recorder("pvbus/relays/#");
    setup.publish("pvbus/relays/heater/mode/set", "forced_on");
    setup.publish("pvbus/relays/pump/mode/set", "forced_on");
    setup.publish("pvbus/relays/charger/mode/set", "forced_off");
    setup.publish("pvbus/relays/server/auto/set", "ON");
    seen.expect("pvbus/relays/heater/state", "ON", WAIT);
    seen.expect("pvbus/relays/pump/state", "ON", WAIT);
    seen.expect("pvbus/relays/charger/mode", "forced_off", WAIT);
    seen.expect("pvbus/relays/server/state", "ON", WAIT);

    for (round, clean) in [(1, true), (2, false), (3, true)] {
        let before = SimLog::at(setup.board()).read().unwrap().len();
        if clean {
            let status = relays.terminate(WAIT).expect("stops on SIGTERM");
            assert!(status.success(), "{status}");
        } else {
            relays.kill9();
        }
        seen.clear();
        relays = setup.start();
        seen.expect("pvbus/relays/heater/mode", "forced_on", WAIT);
        seen.expect("pvbus/relays/server/mode", "auto_off", WAIT);
        let changes: Vec<_> = SimLog::at(setup.board()).read().unwrap()[before..].to_vec();
        // The only change: the auto relay starts off until the rules ask again.
        let server_changes: Vec<_> = changes.iter().filter(|c| c.pin == 5).collect();
        let others: Vec<_> = changes.iter().filter(|c| c.pin != 5).collect();
        assert!(
            others.is_empty(),
            "round {round}: forced relays glitched: {others:?}"
        );
        if round == 1 {
            assert_eq!(server_changes.len(), 1, "{server_changes:?}");
            assert_eq!(server_changes[0].level, Level::High, "active-low off");
        } else {
            assert!(
                server_changes.is_empty(),
                "round {round}: {server_changes:?}"
            );
        }
    }
    assert_eq!(
        saved_level(&setup.board(), 17),
        Some(Level::Low),
        "heater on"
    );
    assert_eq!(
        saved_level(&setup.board(), 27),
        Some(Level::High),
        "pump on"
    );
}

#[test]
fn an_unreadable_state_file_is_reported_kept_aside_and_relays_start_in_auto() {
    let setup = RelaysSetup::new("600", TWO_RELAYS);
    std::fs::create_dir_all(setup.state()).unwrap();
    std::fs::write(
        setup.state().join("state.json"),
        "{\"version\":1,\"relays\":{\"pump\":",
    )
    .unwrap();
    let errors = setup.recorder("pvbus/relays/#");
    let _relays = setup.start();
    let error = errors
        .wait_for("pvbus/relays/error", WAIT, |_| true)
        .expect("the problem is reported");
    let error = json(&error);
    assert!(
        error["topic"].as_str().unwrap().ends_with("state.json"),
        "{error}"
    );
    assert!(
        error["error"].as_str().unwrap().contains("unreadable"),
        "{error}"
    );
    errors.expect("pvbus/relays/pump/mode", "auto_off", WAIT);
    let kept = std::fs::read_dir(setup.state())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("state.json.unreadable-")
        })
        .count();
    assert_eq!(kept, 1);
}

/// A second `pvbus relays` on the same state directory (a hand-started one beside the
/// service) would fight the first over the outputs: it refuses to start, says who holds
/// them, and the first goes on unaffected.
#[test]
fn a_second_relay_process_on_one_state_directory_refuses_to_start() {
    let setup = RelaysSetup::new("600", TWO_RELAYS);
    let first = setup.start();
    let seen = setup.recorder("pvbus/relays/#");
    let second = setup.pvbus(&["relays"]);
    assert!(!second.status.success(), "the second one ran");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&setup.state().display().to_string())
            && stderr.contains(&format!("pid {}", first.pid()))
            && stderr.contains("already used by another pvbus relays"),
        "{stderr}"
    );
    // The first one never saw a second client: still online, still obeying.
    setup.publish("pvbus/relays/pump/mode/set", "forced_on");
    seen.expect("pvbus/relays/pump/mode", "forced_on", WAIT);
    assert_eq!(seen.last("pvbus/relays/status").as_deref(), Some("online"));
    assert_eq!(saved_level(&setup.board(), 27), Some(Level::High));
}

/// `until` times, and the times in reasons, are those of the house (`[site] timezone`),
/// not of the machine (UTC here): an override "until HH:MM" in Asia/Kolkata (UTC+5:30, no
/// daylight saving) ends at that time in Kolkata.
#[test]
fn until_times_are_read_in_the_site_time_zone() {
    let setup = RelaysSetup::new(
        "600",
        "[[relays.relay]]\nid = \"pump\"\npin = 27\n\n[site]\ntimezone = \"Asia/Kolkata\"\n",
    );
    let seen = pvbus_testkit::Recorder::start(setup.broker.addr(), "pvbus/relays/#");
    let _relays = setup.start();
    const KOLKATA: u64 = 5 * 3600 + 1800;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Two hours from now, on the minute, in Kolkata.
    let target_local = (now + KOLKATA + 7200) / 60 * 60;
    let hh_mm = format!(
        "{:02}:{:02}",
        target_local % 86400 / 3600,
        target_local % 3600 / 60
    );
    setup.publish(
        "pvbus/relays/pump/mode/set",
        &format!(r#"{{"mode":"forced_on","until":"{hh_mm}"}}"#),
    );
    let running = seen
        .wait_for("pvbus/relays/pump/override", WAIT, |p| !p.is_empty())
        .expect("the override is published");
    let running = json(&running);
    assert_eq!(
        running["until"].as_u64(),
        Some(target_local - KOLKATA),
        "{running}"
    );
    assert!(
        running["until_local"].as_str().unwrap().contains(&hh_mm),
        "{running}"
    );
    let reason = json(&seen.last("pvbus/relays/pump/reason").unwrap());
    assert!(
        reason["text"].as_str().unwrap().contains(&hh_mm),
        "{reason}"
    );
}
