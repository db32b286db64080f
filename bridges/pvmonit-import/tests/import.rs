//! Importing a realistic PvMonit config.yaml (tests/fixtures/config.yaml: a user's file
//! that, as PvMonit asks, holds only what differs from config-default.yaml).

use pvbus_pvmonit_import::import;

const FIXTURE: &str = include_str!("fixtures/config.yaml");

fn table(toml: &str) -> toml::Table {
    toml.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("the output is not TOML: {e}\n{toml}"))
}

#[test]
fn relays_keep_their_names_and_get_bcm_pins() {
    let imported = import(FIXTURE, "/opt/PvMonit/config.yaml").unwrap();
    let config = table(&imported.toml);
    let relays = config["relays"]["relay"].as_array().unwrap();
    let got: Vec<(&str, Option<&str>, i64, bool)> = relays
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r.get("name").and_then(|n| n.as_str()),
                r["pin"].as_integer().unwrap(),
                r["active_low"].as_bool().unwrap(),
            )
        })
        .collect();
    // wiringPi 0, 1, 2, 3, 21, 22 are BCM 17, 18, 27, 22, 5, 6.
    assert_eq!(
        got,
        [
            ("box_internet", Some("Box Internet"), 17, true),
            ("pompe_de_relevage", Some("Pompe de relevage"), 18, true),
            ("chauffe_eau", Some("Chauffe-eau"), 27, true),
            ("chargeur_outils", Some("Chargeur outils"), 22, true),
            (
                "disque_de_sauvegarde",
                Some("Disque de sauvegarde"),
                5,
                true
            ),
            ("relay_6", None, 6, true),
        ]
    );
    assert_eq!(imported.relays, 6);
    assert_eq!(config["relays"]["stale_after"].as_integer(), Some(900));
    assert!(
        imported
            .toml
            .contains("# PvMonit relay 3, wiringPi 2 (Chauffe-eau)\n")
    );
}

#[test]
fn devices_lcd_and_tm1638_are_carried_over() {
    let imported = import(FIXTURE, "config.yaml").unwrap();
    let config = table(&imported.toml);
    let devices = config["vedirect"]["devices"].as_table().unwrap();
    let got: Vec<(&str, &str)> = devices
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("HQ1840BMV99", "bmv_712"),
            ("HQ1915ABC12", "mptt_toit"),
            ("HQ2007XYZ34", "mptt_garage"),
            ("HQ2118PHX01", "onduleur_phoenix"),
        ]
    );
    assert_eq!(imported.devices, 4);
    let lcd = config["lcd"].as_table().unwrap();
    assert_eq!(lcd["night"].as_str(), Some("22:00-07:00"));
    assert_eq!(lcd["wake_for"].as_str(), Some("90s"));
    assert_eq!(lcd["soc"].as_str(), Some("bmv_712.state_of_charge"));
    let tm1638 = config["tm1638"].as_table().unwrap();
    assert_eq!(tm1638["apply_after"].as_str(), Some("3s"));
    assert_eq!(
        (
            tm1638["stb"].as_array().unwrap()[0].as_integer(),
            tm1638["clk"].as_integer(),
            tm1638["dio"].as_integer()
        ),
        (Some(26), Some(13), Some(19))
    );
}

#[test]
fn what_is_left_out_is_listed_and_no_secret_is_copied() {
    let imported = import(FIXTURE, "config.yaml").unwrap();
    let keys: Vec<&str> = imported.left_out.iter().map(|l| l.key.as_str()).collect();
    for key in [
        "printMessage",
        "urlDataXml",
        "data",
        "vedirect.usb",
        "consoPlafond",
        "emoncms",
        "www",
        "lcd.dataPrint",
        "domo.daemon",
        "domo.relay.scriptExecInterval",
        "domo.tm1638.refresh",
        "weather",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    for carried in [
        "deviceCorrespondance",
        "domo.relayName",
        "lcd.onAt",
        "domo.relayNb",
    ] {
        assert!(!keys.iter().any(|k| k.starts_with(carried)), "{carried}");
    }
    let tail = imported.toml.split("# Not carried over").nth(1).unwrap();
    assert_eq!(
        tail.lines().filter(|l| l.starts_with("# - ")).count(),
        keys.len()
    );
    for secret in [
        "0123456789abcdef",
        "5f4dcc3b5aa765d61d8327deb882cf99",
        "2988507",
    ] {
        assert!(!imported.toml.contains(secret), "{secret} was copied");
    }
}

#[test]
fn pins_that_cannot_drive_a_relay_are_commented_out_with_the_reason() {
    // wiringPi 8 is the LCD's I2C (the LCD is in use), 30 the HAT EEPROM, 17 the old P5
    // header, 0 twice is one pin for two relays.
    let yaml = "lcd:\n  daemon: true\ndomo:\n  relayNb: 5\n  relayName: {1: A, 2: B, 3: C, 4: D, 5: E}\n  \
                relayWiringPi: {1: 8, 2: 30, 3: 17, 4: 0, 5: 0}\n";
    let imported = import(yaml, "config.yaml").unwrap();
    let config = table(&imported.toml);
    let relays = config["relays"]["relay"].as_array().unwrap();
    assert_eq!(relays.len(), 1, "{}", imported.toml);
    assert_eq!(relays[0]["id"].as_str(), Some("d"));
    assert_eq!(imported.relays, 1);
    let reasons: Vec<(&str, &str)> = imported
        .left_out
        .iter()
        .filter(|l| l.key.starts_with("domo.relayWiringPi"))
        .map(|l| (l.key.as_str(), l.why.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].1.contains("I2C"), "{reasons:?}");
    assert!(reasons[1].1.contains("HAT EEPROM"), "{reasons:?}");
    assert!(reasons[2].1.contains("P5"), "{reasons:?}");
    assert!(reasons[3].1.contains("already drives"), "{reasons:?}");
    assert!(imported.toml.contains("# id = \"a\"\n"));
    assert!(imported.toml.contains("a relay left out shifts"));
}

#[test]
fn unused_lcd_and_tm1638_stay_commented_out() {
    let imported = import("lcd:\n  daemon: false\n", "config.yaml").unwrap();
    let config = table(&imported.toml);
    assert!(config.get("lcd").is_none());
    assert!(config.get("tm1638").is_none());
    assert!(imported.toml.contains("# [lcd]\n# night = \"21:00-08:00\""));
    assert!(!imported.toml.contains("a relay left out shifts"));
    // PvMonit's default relays: 8 of them, wiringPi 4, 5, 10, 21, 22, 27, 28, 29.
    let pins: Vec<i64> = config["relays"]["relay"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pin"].as_integer().unwrap())
        .collect();
    assert_eq!(pins, [23, 24, 8, 5, 6, 16, 20, 21]);
}

#[test]
fn a_broken_file_names_the_place() {
    let error = import("domo:\n  relayWiringPi:\n    2: GPIO17\n", "config.yaml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "domo.relayWiringPi.2: expected a wiringPi pin, 0..31, found \"GPIO17\""
    );
}
