//! Product ids (`PID` field, HEX product-id command) to model names (PROTOCOL.md section 7).
//! Unknown PIDs occur in the field (the Phoenix capture reports 0xA2F1): callers keep the
//! number and show no model.

/// Product family, which decides how a device's text blocks are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    BatteryMonitor,
    SolarCharger,
    Inverter,
    Charger,
    DcDc,
}

/// `(pid, family, model)`, sorted by pid.
pub const PRODUCTS: &[(u16, Family, &str)] = &[
    (0x0200, Family::BatteryMonitor, "BMV-600S"),
    (0x0201, Family::BatteryMonitor, "BMV-602S"),
    (0x0202, Family::BatteryMonitor, "BMV-600HS"),
    (0x0203, Family::BatteryMonitor, "BMV-700"),
    (0x0204, Family::BatteryMonitor, "BMV-702"),
    (0x0205, Family::BatteryMonitor, "BMV-700H"),
    (0x0300, Family::SolarCharger, "BlueSolar MPPT 70/15"),
    (0xA040, Family::SolarCharger, "BlueSolar MPPT 75/50"),
    (0xA041, Family::SolarCharger, "BlueSolar MPPT 150/35"),
    (0xA042, Family::SolarCharger, "BlueSolar MPPT 75/15"),
    (0xA043, Family::SolarCharger, "BlueSolar MPPT 100/15"),
    (0xA044, Family::SolarCharger, "BlueSolar MPPT 100/30"),
    (0xA045, Family::SolarCharger, "BlueSolar MPPT 100/50"),
    (0xA046, Family::SolarCharger, "BlueSolar MPPT 150/70"),
    (0xA047, Family::SolarCharger, "BlueSolar MPPT 150/100"),
    (0xA048, Family::SolarCharger, "BlueSolar MPPT 75/50 rev2"),
    (0xA049, Family::SolarCharger, "BlueSolar MPPT 100/50 rev2"),
    (0xA04A, Family::SolarCharger, "BlueSolar MPPT 100/30 rev2"),
    (0xA04B, Family::SolarCharger, "BlueSolar MPPT 150/35 rev2"),
    (0xA04C, Family::SolarCharger, "BlueSolar MPPT 75/10"),
    (0xA04D, Family::SolarCharger, "BlueSolar MPPT 150/45"),
    (0xA04E, Family::SolarCharger, "BlueSolar MPPT 150/60"),
    (0xA04F, Family::SolarCharger, "BlueSolar MPPT 150/85"),
    (0xA050, Family::SolarCharger, "SmartSolar MPPT 250/100"),
    (0xA051, Family::SolarCharger, "SmartSolar MPPT 150/100"),
    (0xA052, Family::SolarCharger, "SmartSolar MPPT 150/85"),
    (0xA053, Family::SolarCharger, "SmartSolar MPPT 75/15"),
    (0xA054, Family::SolarCharger, "SmartSolar MPPT 75/10"),
    (0xA055, Family::SolarCharger, "SmartSolar MPPT 100/15"),
    (0xA056, Family::SolarCharger, "SmartSolar MPPT 100/30"),
    (0xA057, Family::SolarCharger, "SmartSolar MPPT 100/50"),
    (0xA058, Family::SolarCharger, "SmartSolar MPPT 150/35"),
    (0xA059, Family::SolarCharger, "SmartSolar MPPT 150/100 rev2"),
    (0xA05A, Family::SolarCharger, "SmartSolar MPPT 150/85 rev2"),
    (0xA05B, Family::SolarCharger, "SmartSolar MPPT 250/70"),
    (0xA05C, Family::SolarCharger, "SmartSolar MPPT 250/85"),
    (0xA05D, Family::SolarCharger, "SmartSolar MPPT 250/60"),
    (0xA05E, Family::SolarCharger, "SmartSolar MPPT 250/45"),
    (0xA05F, Family::SolarCharger, "SmartSolar MPPT 100/20"),
    (0xA060, Family::SolarCharger, "SmartSolar MPPT 100/20 48V"),
    (0xA061, Family::SolarCharger, "SmartSolar MPPT 150/45"),
    (0xA062, Family::SolarCharger, "SmartSolar MPPT 150/60"),
    (0xA063, Family::SolarCharger, "SmartSolar MPPT 150/70"),
    (0xA064, Family::SolarCharger, "SmartSolar MPPT 250/85 rev2"),
    (0xA065, Family::SolarCharger, "SmartSolar MPPT 250/100 rev2"),
    (0xA066, Family::SolarCharger, "BlueSolar MPPT 100/20"),
    (0xA067, Family::SolarCharger, "BlueSolar MPPT 100/20 48V"),
    (0xA068, Family::SolarCharger, "SmartSolar MPPT 250/60 rev2"),
    (0xA069, Family::SolarCharger, "SmartSolar MPPT 250/70 rev2"),
    (0xA06A, Family::SolarCharger, "SmartSolar MPPT 150/45 rev2"),
    (0xA06B, Family::SolarCharger, "SmartSolar MPPT 150/60 rev2"),
    (0xA06C, Family::SolarCharger, "SmartSolar MPPT 150/70 rev2"),
    (0xA06D, Family::SolarCharger, "SmartSolar MPPT 150/85 rev3"),
    (0xA06E, Family::SolarCharger, "SmartSolar MPPT 150/100 rev3"),
    (0xA06F, Family::SolarCharger, "BlueSolar MPPT 150/45 rev2"),
    (0xA070, Family::SolarCharger, "BlueSolar MPPT 150/60 rev2"),
    (0xA071, Family::SolarCharger, "BlueSolar MPPT 150/70 rev2"),
    (0xA072, Family::SolarCharger, "BlueSolar MPPT 150/45 rev3"),
    (0xA073, Family::SolarCharger, "SmartSolar MPPT 150/45 rev3"),
    (0xA074, Family::SolarCharger, "SmartSolar MPPT 75/10 rev2"),
    (0xA075, Family::SolarCharger, "SmartSolar MPPT 75/15 rev2"),
    (0xA076, Family::SolarCharger, "BlueSolar MPPT 100/30 rev3"),
    (0xA077, Family::SolarCharger, "BlueSolar MPPT 100/50 rev3"),
    (0xA078, Family::SolarCharger, "BlueSolar MPPT 150/35 rev3"),
    (0xA079, Family::SolarCharger, "BlueSolar MPPT 75/10 rev2"),
    (0xA07A, Family::SolarCharger, "BlueSolar MPPT 75/15 rev2"),
    (0xA07B, Family::SolarCharger, "BlueSolar MPPT 100/15 rev2"),
    (0xA07C, Family::SolarCharger, "BlueSolar MPPT 75/10 rev3"),
    (0xA07D, Family::SolarCharger, "BlueSolar MPPT 75/15 rev3"),
    (0xA07E, Family::SolarCharger, "SmartSolar MPPT 100/30 12V"),
    (
        0xA07F,
        Family::SolarCharger,
        "All-In-1 SmartSolar MPPT 75/15 12V",
    ),
    (0xA080, Family::SolarCharger, "SmartSolar MPPT 250/60 rev3"),
    (0xA081, Family::SolarCharger, "SmartSolar MPPT 250/70 rev3"),
    (
        0xA102,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/70",
    ),
    (
        0xA103,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/45",
    ),
    (
        0xA104,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/60",
    ),
    (
        0xA105,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/85",
    ),
    (
        0xA106,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/100",
    ),
    (
        0xA107,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/45",
    ),
    (
        0xA108,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/60",
    ),
    (
        0xA109,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/70",
    ),
    (
        0xA10A,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/85",
    ),
    (
        0xA10B,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/100",
    ),
    (
        0xA10C,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/70 rev2",
    ),
    (
        0xA10D,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/85 rev2",
    ),
    (
        0xA10E,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 150/100 rev2",
    ),
    (
        0xA10F,
        Family::SolarCharger,
        "BlueSolar MPPT VE.Can 150/100",
    ),
    (0xA110, Family::SolarCharger, "SmartSolar MPPT RS 450/100"),
    (0xA111, Family::SolarCharger, "SmartSolar MPPT RS 450/200"),
    (0xA112, Family::SolarCharger, "BlueSolar MPPT VE.Can 250/70"),
    (
        0xA113,
        Family::SolarCharger,
        "BlueSolar MPPT VE.Can 250/100",
    ),
    (
        0xA114,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/70 rev2",
    ),
    (
        0xA115,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/100 rev2",
    ),
    (
        0xA116,
        Family::SolarCharger,
        "SmartSolar MPPT VE.Can 250/85 rev2",
    ),
    (
        0xA117,
        Family::SolarCharger,
        "BlueSolar MPPT VE.Can 150/100 rev2",
    ),
    (
        0xA201,
        Family::Inverter,
        "Phoenix Inverter 12V 250 VA 230V (old)",
    ),
    (
        0xA202,
        Family::Inverter,
        "Phoenix Inverter 24V 250 VA 230V (old)",
    ),
    (
        0xA204,
        Family::Inverter,
        "Phoenix Inverter 48V 250 VA 230V (old)",
    ),
    (
        0xA211,
        Family::Inverter,
        "Phoenix Inverter 12V 375 VA 230V (old)",
    ),
    (
        0xA212,
        Family::Inverter,
        "Phoenix Inverter 24V 375 VA 230V (old)",
    ),
    (
        0xA214,
        Family::Inverter,
        "Phoenix Inverter 48V 375 VA 230V (old)",
    ),
    (
        0xA221,
        Family::Inverter,
        "Phoenix Inverter 12V 500 VA 230V (old)",
    ),
    (
        0xA222,
        Family::Inverter,
        "Phoenix Inverter 24V 500 VA 230V (old)",
    ),
    (
        0xA224,
        Family::Inverter,
        "Phoenix Inverter 48V 500 VA 230V (old)",
    ),
    (0xA231, Family::Inverter, "Phoenix Inverter 12V 250 VA 230V"),
    (0xA232, Family::Inverter, "Phoenix Inverter 24V 250 VA 230V"),
    (0xA234, Family::Inverter, "Phoenix Inverter 48V 250 VA 230V"),
    (0xA239, Family::Inverter, "Phoenix Inverter 12V 250 VA 120V"),
    (0xA23A, Family::Inverter, "Phoenix Inverter 24V 250 VA 120V"),
    (0xA23C, Family::Inverter, "Phoenix Inverter 48V 250 VA 120V"),
    (0xA241, Family::Inverter, "Phoenix Inverter 12V 375 VA 230V"),
    (0xA242, Family::Inverter, "Phoenix Inverter 24V 375 VA 230V"),
    (0xA244, Family::Inverter, "Phoenix Inverter 48V 375 VA 230V"),
    (0xA249, Family::Inverter, "Phoenix Inverter 12V 375 VA 120V"),
    (0xA24A, Family::Inverter, "Phoenix Inverter 24V 375 VA 120V"),
    (0xA24C, Family::Inverter, "Phoenix Inverter 48V 375 VA 120V"),
    (0xA251, Family::Inverter, "Phoenix Inverter 12V 500 VA 230V"),
    (0xA252, Family::Inverter, "Phoenix Inverter 24V 500 VA 230V"),
    (0xA254, Family::Inverter, "Phoenix Inverter 48V 500 VA 230V"),
    (0xA259, Family::Inverter, "Phoenix Inverter 12V 500 VA 120V"),
    (0xA25A, Family::Inverter, "Phoenix Inverter 24V 500 VA 120V"),
    (0xA25C, Family::Inverter, "Phoenix Inverter 48V 500 VA 120V"),
    (0xA261, Family::Inverter, "Phoenix Inverter 12V 800 VA 230V"),
    (0xA262, Family::Inverter, "Phoenix Inverter 24V 800 VA 230V"),
    (0xA264, Family::Inverter, "Phoenix Inverter 48V 800 VA 230V"),
    (0xA269, Family::Inverter, "Phoenix Inverter 12V 800 VA 120V"),
    (0xA26A, Family::Inverter, "Phoenix Inverter 24V 800 VA 120V"),
    (0xA26C, Family::Inverter, "Phoenix Inverter 48V 800 VA 120V"),
    (
        0xA271,
        Family::Inverter,
        "Phoenix Inverter 12V 1200 VA 230V",
    ),
    (
        0xA272,
        Family::Inverter,
        "Phoenix Inverter 24V 1200 VA 230V",
    ),
    (
        0xA274,
        Family::Inverter,
        "Phoenix Inverter 48V 1200 VA 230V",
    ),
    (
        0xA279,
        Family::Inverter,
        "Phoenix Inverter 12V 1200 VA 120V",
    ),
    (
        0xA27A,
        Family::Inverter,
        "Phoenix Inverter 24V 1200 VA 120V",
    ),
    (
        0xA27C,
        Family::Inverter,
        "Phoenix Inverter 48V 1200 VA 120V",
    ),
    (
        0xA281,
        Family::Inverter,
        "Phoenix Inverter 12V 1600 VA 230V",
    ),
    (
        0xA282,
        Family::Inverter,
        "Phoenix Inverter 24V 1600 VA 230V",
    ),
    (
        0xA284,
        Family::Inverter,
        "Phoenix Inverter 48V 1600 VA 230V",
    ),
    (
        0xA291,
        Family::Inverter,
        "Phoenix Inverter 12V 2000 VA 230V",
    ),
    (
        0xA292,
        Family::Inverter,
        "Phoenix Inverter 24V 2000 VA 230V",
    ),
    (
        0xA294,
        Family::Inverter,
        "Phoenix Inverter 48V 2000 VA 230V",
    ),
    (
        0xA2A1,
        Family::Inverter,
        "Phoenix Inverter 12V 3000 VA 230V",
    ),
    (
        0xA2A2,
        Family::Inverter,
        "Phoenix Inverter 24V 3000 VA 230V",
    ),
    (
        0xA2A4,
        Family::Inverter,
        "Phoenix Inverter 48V 3000 VA 230V",
    ),
    (
        0xA340,
        Family::Charger,
        "Phoenix Smart IP43 Charger 12/50 (1+1)",
    ),
    (
        0xA341,
        Family::Charger,
        "Phoenix Smart IP43 Charger 12/50 (3)",
    ),
    (
        0xA342,
        Family::Charger,
        "Phoenix Smart IP43 Charger 24/25 (1+1)",
    ),
    (
        0xA343,
        Family::Charger,
        "Phoenix Smart IP43 Charger 24/25 (3)",
    ),
    (
        0xA344,
        Family::Charger,
        "Phoenix Smart IP43 Charger 12/30 (1+1)",
    ),
    (
        0xA345,
        Family::Charger,
        "Phoenix Smart IP43 Charger 12/30 (3)",
    ),
    (
        0xA346,
        Family::Charger,
        "Phoenix Smart IP43 Charger 24/16 (1+1)",
    ),
    (
        0xA347,
        Family::Charger,
        "Phoenix Smart IP43 Charger 24/16 (3)",
    ),
    (0xA381, Family::BatteryMonitor, "BMV-712 Smart"),
    (0xA382, Family::BatteryMonitor, "BMV-710H Smart"),
    (0xA383, Family::BatteryMonitor, "BMV-712 Smart Rev2"),
    (0xA389, Family::BatteryMonitor, "SmartShunt 500A/50mV"),
    (0xA38A, Family::BatteryMonitor, "SmartShunt 1000A/50mV"),
    (0xA38B, Family::BatteryMonitor, "SmartShunt 2000A/50mV"),
    (0xA3F0, Family::DcDc, "Orion XS 12V/12V-50A"),
    (0xA3F1, Family::DcDc, "Orion XS 1400"),
    (0xA402, Family::Inverter, "RS Inverter Smart 48/6000"),
    (0xC038, Family::BatteryMonitor, "SmartShunt 300A/50mV"),
];

pub fn lookup(pid: u16) -> Option<(Family, &'static str)> {
    PRODUCTS
        .binary_search_by_key(&pid, |&(p, _, _)| p)
        .ok()
        .map(|i| (PRODUCTS[i].1, PRODUCTS[i].2))
}

pub fn model_name(pid: u16) -> Option<&'static str> {
    lookup(pid).map(|(_, name)| name)
}

/// Parse a text `PID` value (`0xA053`, `0x203`).
pub fn parse_pid(value: &str) -> Option<u16> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_known_models_resolve() {
        assert!(PRODUCTS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(model_name(0xA053), Some("SmartSolar MPPT 75/15"));
        assert_eq!(lookup(0x203), Some((Family::BatteryMonitor, "BMV-700")));
        assert_eq!(
            model_name(0xA271),
            Some("Phoenix Inverter 12V 1200 VA 230V")
        );
        assert_eq!(model_name(0xA2F1), None);
        assert_eq!(parse_pid("0x203"), Some(0x203));
        assert_eq!(parse_pid("A053"), None);
    }
}
