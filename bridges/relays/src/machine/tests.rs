use super::*;

const STALE: u64 = 600_000;
const T0: Moment = Moment {
    wall_ms: 1_764_079_200_000,
    mono_ms: 0,
};

fn at(seconds: u64) -> Moment {
    Moment {
        wall_ms: T0.wall_ms + seconds * 1000,
        mono_ms: T0.mono_ms + seconds * 1000,
    }
}

fn setup(ids: &[(&str, OnStale)]) -> Vec<RelaySetup> {
    ids.iter()
        .map(|(id, on_stale)| RelaySetup {
            id: id.to_string(),
            on_stale: *on_stale,
        })
        .collect()
}

fn fresh(ids: &[&str]) -> Machine {
    let ids: Vec<(&str, OnStale)> = ids.iter().map(|id| (*id, OnStale::Off)).collect();
    Machine::boot(&setup(&ids), &BTreeMap::new(), STALE, T0).0
}

fn changed(result: Result<Result<Change, Unchanged>, CommandError>) -> Change {
    result.expect("valid command").expect("a change")
}

#[test]
fn boot_restores_forced_modes_and_overrides_and_starts_auto_relays_off() {
    let saved = BTreeMap::from([
        (
            "heater".to_string(),
            SavedRelay {
                mode: SavedMode::ForcedOn,
                running_override: None,
            },
        ),
        (
            "pump".to_string(),
            SavedRelay {
                mode: SavedMode::ForcedOn,
                running_override: Some(Override {
                    mode: RelayMode::ForcedOn,
                    until_ms: at(3600).wall_ms,
                    previous: RelayMode::ForcedOff,
                }),
            },
        ),
        (
            "charger".to_string(),
            SavedRelay {
                mode: SavedMode::ForcedOn,
                running_override: Some(Override {
                    mode: RelayMode::ForcedOn,
                    until_ms: T0.wall_ms - 1,
                    previous: RelayMode::AutoOn,
                }),
            },
        ),
    ]);
    let ids = setup(&[
        ("heater", OnStale::Off),
        ("pump", OnStale::Off),
        ("charger", OnStale::Off),
        ("box", OnStale::Off),
    ]);
    let (machine, changes) = Machine::boot(&ids, &saved, STALE, T0);
    assert_eq!(machine.mode("heater"), Some(RelayMode::ForcedOn));
    assert_eq!(machine.mode("pump"), Some(RelayMode::ForcedOn));
    assert!(machine.running_override("pump").is_some());
    assert_eq!(machine.mode("charger"), Some(RelayMode::AutoOff));
    assert_eq!(machine.running_override("charger"), None);
    assert_eq!(machine.mode("box"), Some(RelayMode::AutoOff));
    let charger = changes.iter().find(|c| c.id == "charger").unwrap();
    assert_eq!(charger.reason.by, ReasonSource::OverrideExpired);
    assert!(charger.save, "the ended override must leave the disk");
    let heater = changes.iter().find(|c| c.id == "heater").unwrap();
    assert_eq!(heater.reason.by, ReasonSource::Boot);
    assert!(!heater.save);
}

#[test]
fn the_rules_reason_becomes_the_relays_reason() {
    let mut m = fresh(&["heater"]);
    let why = pvbus_bus::contract::AutoSet {
        on: true,
        reason: Some("on: mppt.charge_state \"float\" for 30 s".into()),
    };
    let c = changed(m.apply("heater", Command::Auto(why), at(1)));
    assert_eq!(
        c.reason.text,
        "rules asked ON: on: mppt.charge_state \"float\" for 30 s"
    );
    let c = changed(m.apply("heater", Command::rules(false), at(2)));
    assert_eq!(c.reason.text, "rules asked OFF");
}

#[test]
fn rules_move_auto_relays_only() {
    let mut m = fresh(&["heater"]);
    let c = changed(m.apply("heater", Command::rules(true), at(1)));
    assert_eq!((c.from, c.to), (RelayMode::AutoOff, RelayMode::AutoOn));
    assert_eq!(c.reason.by, ReasonSource::Rules);
    assert!(!c.save, "rules' auto_on/auto_off never wear the SD card");

    changed(m.apply("heater", Command::Mode(ModeRequest::ForcedOff), at(2)));
    assert_eq!(
        m.apply("heater", Command::rules(true), at(3)).unwrap(),
        Err(Unchanged::ForcedIgnoresRules)
    );
    assert_eq!(m.mode("heater"), Some(RelayMode::ForcedOff));

    let c = changed(m.apply("heater", Command::Mode(ModeRequest::Auto), at(4)));
    assert_eq!(
        c.to,
        RelayMode::AutoOff,
        "auto hands back starting from off"
    );
    assert!(c.save);
    assert_eq!(
        m.apply("heater", Command::rules(false), at(5)).unwrap(),
        Err(Unchanged::AlreadyInMode)
    );
}

#[test]
fn unknown_relays_are_refused() {
    let mut m = fresh(&["heater"]);
    assert_eq!(
        m.apply("toaster", Command::rules(true), at(1)),
        Err(CommandError::UnknownRelay("toaster".into()))
    );
}

#[test]
fn an_override_returns_to_the_mode_before_it_by_itself() {
    let mut m = fresh(&["pump"]);
    changed(m.apply("pump", Command::Mode(ModeRequest::ForcedOff), at(0)));
    let c = changed(m.apply(
        "pump",
        Command::Override {
            mode: RelayMode::ForcedOn,
            until_ms: at(7200).wall_ms,
        },
        at(10),
    ));
    assert!(c.save && c.override_changed);
    // A second override replaces the first but remembers the original mode.
    changed(m.apply(
        "pump",
        Command::Override {
            mode: RelayMode::ForcedOn,
            until_ms: at(3600).wall_ms,
        },
        at(20),
    ));
    assert_eq!(m.next_deadline().0, Some(at(3600).wall_ms));
    assert!(m.tick(at(3599)).is_empty());
    let ended = m.tick(at(3600));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].to, RelayMode::ForcedOff);
    assert_eq!(ended[0].reason.by, ReasonSource::OverrideExpired);
    assert!(ended[0].save);
    assert_eq!(m.running_override("pump"), None);
    assert_eq!(m.next_deadline(), (None, None));
}

#[test]
fn an_explicit_mode_cancels_a_running_override() {
    let mut m = fresh(&["pump"]);
    changed(m.apply(
        "pump",
        Command::Override {
            mode: RelayMode::ForcedOn,
            until_ms: at(60).wall_ms,
        },
        at(0),
    ));
    let c = changed(m.apply("pump", Command::Mode(ModeRequest::ForcedOn), at(1)));
    assert!(c.override_changed && c.save);
    assert!(m.tick(at(61)).is_empty());
    assert_eq!(m.mode("pump"), Some(RelayMode::ForcedOn));
}

#[test]
fn an_override_of_an_auto_relay_returns_to_what_live_rules_want() {
    let mut m = fresh(&["heater", "pump"]);
    for id in ["heater", "pump"] {
        changed(m.apply(id, Command::rules(true), at(0)));
        changed(m.apply(
            id,
            Command::Override {
                mode: RelayMode::ForcedOff,
                until_ms: at(300).wall_ms,
            },
            at(1),
        ));
    }
    // The rules still speak about the heater while it is forced: noted, not obeyed.
    assert_eq!(
        m.apply("heater", Command::rules(true), at(200)).unwrap(),
        Err(Unchanged::ForcedIgnoresRules)
    );
    let ended = m.tick(at(300));
    let to: BTreeMap<&str, RelayMode> = ended.iter().map(|c| (c.id.as_str(), c.to)).collect();
    assert_eq!(to["heater"], RelayMode::AutoOn);
    // The pump heard nothing from the rules for 300 s (< 600): still fresh.
    assert_eq!(to["pump"], RelayMode::AutoOn);

    let mut m = fresh(&["pump"]);
    changed(m.apply("pump", Command::rules(true), at(0)));
    changed(m.apply(
        "pump",
        Command::Override {
            mode: RelayMode::ForcedOff,
            until_ms: at(900).wall_ms,
        },
        at(1),
    ));
    let ended = m.tick(at(900));
    assert_eq!(ended[0].to, RelayMode::AutoOff, "stale rules: back off");
}

#[test]
fn stale_rules_switch_auto_on_relays_off_and_heartbeats_postpone_it() {
    let ids = setup(&[("heater", OnStale::Off), ("internet", OnStale::Keep)]);
    let (mut m, _) = Machine::boot(&ids, &BTreeMap::new(), STALE, T0);
    changed(m.apply("heater", Command::rules(true), at(10)));
    changed(m.apply("internet", Command::rules(true), at(10)));
    assert_eq!(m.next_deadline().1, Some(at(610).mono_ms));

    m.heartbeat(at(500));
    assert_eq!(m.next_deadline().1, Some(at(1100).mono_ms));
    assert!(m.tick(at(1099)).is_empty());
    let safety = m.tick(at(1100));
    assert_eq!(safety.len(), 1);
    assert_eq!(safety[0].id, "heater");
    assert_eq!(safety[0].to, RelayMode::AutoOff);
    assert_eq!(safety[0].reason.by, ReasonSource::Safety);
    assert!(
        safety[0].reason.text.contains("600 s"),
        "{}",
        safety[0].reason.text
    );
    assert_eq!(
        m.mode("internet"),
        Some(RelayMode::AutoOn),
        "on_stale = keep"
    );
    assert_eq!(m.next_deadline(), (None, None), "nothing left to guard");
}

#[test]
fn the_safety_counts_on_the_monotonic_clock_not_the_wall_clock() {
    let mut m = fresh(&["heater"]);
    changed(m.apply("heater", Command::rules(true), at(0)));
    // NTP sets the wall clock back a day: the safety still fires on time.
    let jumped = Moment {
        wall_ms: T0.wall_ms - 86_400_000,
        mono_ms: 600_000,
    };
    assert_eq!(m.tick(jumped).len(), 1);
}

#[test]
fn the_saved_view_holds_forced_modes_and_overrides_only() {
    let mut m = fresh(&["heater", "pump"]);
    changed(m.apply("heater", Command::rules(true), at(0)));
    changed(m.apply("pump", Command::Mode(ModeRequest::ForcedOn), at(0)));
    let saved = m.saved();
    assert_eq!(saved["heater"].mode, SavedMode::Auto);
    assert_eq!(saved["pump"].mode, SavedMode::ForcedOn);
}
