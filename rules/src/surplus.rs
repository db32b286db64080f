//! The off-grid surplus estimate: how many more watts the panels could give now.
//!
//! Off grid there is no export to measure. When the battery is full the charger throttles
//! the panels (absorption, float), so PV power shows only what is used. The estimate:
//! - a charger in **bulk** already gives all it can: no headroom from it (and the battery
//!   still wants that power);
//! - a charger in **absorption** or **float** could give up to its potential: the array's
//!   peak power × `derate` × sin(sun elevation) (a clear-sky figure computed offline from
//!   the site's latitude/longitude); headroom = potential − PV power now;
//! - when **every** charger is in float, what still goes into the battery beyond
//!   `float_reserve` is surplus too (a load would take it before the battery does);
//! - when the battery is **discharging**, the panels are already at their best: surplus 0;
//! - other states (off, fault, night): 0.
//!
//! Limits: clouds are not known, so under an overcast sky the potential is overstated; a
//! rule should also watch the battery (e.g. off when `bmv.battery_power < -100`), which
//! corrects the estimate's error within one reading. Panel tilt and orientation are folded
//! into `derate`. Without coordinates the headroom part is 0 (only the float battery power
//! counts).

use serde::Serialize;

use crate::config::{Potential, SurplusConfig};
use crate::sun;
use crate::value::{Readings, Value};

/// One estimate, as published on `pvbus/site/surplus`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurplusEstimate {
    pub ts: i64,
    /// W, rounded.
    pub surplus: f64,
    /// W the chargers give now.
    pub pv_power: f64,
    /// W the arrays could give now under a clear sky (0 without coordinates).
    pub potential: f64,
    pub battery_power: f64,
    /// How it was reached, in words.
    pub method: String,
}

/// Estimates the surplus from fresh readings; `Err` says which value is missing or stale.
pub fn estimate(
    cfg: &SurplusConfig,
    readings: &Readings,
    max_age: &dyn Fn(&str) -> Option<i64>,
    coordinates: Option<(f64, f64)>,
    now: i64,
) -> Result<SurplusEstimate, String> {
    let fresh = |device: &str, field: &str| -> Result<Value, String> {
        let r = readings
            .get(device, field)
            .ok_or_else(|| format!("{device}.{field} missing"))?;
        if let Some(age) = max_age(device)
            && now - r.ts > age
        {
            return Err(format!("{device}.{field} stale"));
        }
        Ok(r.value.clone())
    };
    let number = |device: &str, field: &str| -> Result<f64, String> {
        match fresh(device, field)? {
            Value::Number(n) => Ok(n),
            other => Err(format!(
                "{device}.{field} is {}, expected a number",
                other.type_name()
            )),
        }
    };
    // Without battery_power, voltage × current gives it; the first error is the one told.
    let battery_power = number(&cfg.battery, "battery_power").or_else(|first| {
        Ok::<f64, String>(
            number(&cfg.battery, "battery_voltage").map_err(|_| first.clone())?
                * number(&cfg.battery, "battery_current").map_err(|_| first)?,
        )
    })?;
    let factor = coordinates.map_or(0.0, |(lat, lon)| {
        sun::elevation(now, lat, lon).to_radians().sin().max(0.0)
    });
    let (mut pv_power, mut potential, mut headroom) = (0.0, 0.0, 0.0);
    let mut all_float = !cfg.chargers.is_empty();
    let mut states = Vec::new();
    for (charger, peak) in &cfg.chargers {
        let state = match fresh(charger, "charge_state")? {
            Value::Text(s) => s,
            other => {
                return Err(format!(
                    "{charger}.charge_state is {}, expected a text",
                    other.type_name()
                ));
            }
        };
        let pv = number(charger, "pv_power")?;
        let could = match cfg.potential {
            Potential::ClearSky => peak * cfg.derate * factor,
            Potential::MaxPowerToday => number(charger, "max_power_today")?,
        };
        pv_power += pv;
        potential += could;
        if matches!(
            state.as_str(),
            "absorption" | "float" | "storage" | "repeated_absorption"
        ) {
            headroom += (could - pv).max(0.0);
        }
        all_float &= matches!(state.as_str(), "float" | "storage");
        states.push(format!("{charger} {state}"));
    }
    let (surplus, how) = if battery_power < 0.0 {
        (0.0, "battery discharging: panels at their best".to_string())
    } else if all_float {
        let extra = (battery_power - cfg.float_reserve).max(0.0);
        (
            headroom + extra,
            format!(
                "float: headroom {:.0} W + battery {:.0} W beyond reserve",
                headroom, extra
            ),
        )
    } else {
        (headroom, format!("headroom {:.0} W", headroom))
    };
    Ok(SurplusEstimate {
        ts: now,
        surplus: surplus.round(),
        pv_power,
        potential: potential.round(),
        battery_power,
        method: format!("{} ({})", how, states.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg() -> SurplusConfig {
        SurplusConfig {
            battery: "bmv".into(),
            chargers: BTreeMap::from([("mppt".to_string(), 1000.0)]),
            derate: 0.8,
            float_reserve: 30.0,
            potential: Potential::ClearSky,
        }
    }

    // 2024-06-21 11:51 UTC: solar noon in Paris, sun about 64.6° high.
    const NOON: i64 = 1_718_928_000 + 11 * 3600 + 51 * 60;
    const PARIS: Option<(f64, f64)> = Some((48.8566, 2.3522));

    fn readings(state: &str, pv: f64, battery: f64) -> Readings {
        let mut r = Readings::default();
        r.update(
            "mppt",
            &serde_json::json!({"ts": NOON, "charge_state": state, "pv_power": pv}),
            NOON,
        )
        .unwrap();
        r.update(
            "bmv",
            &serde_json::json!({"ts": NOON, "battery_power": battery}),
            NOON,
        )
        .unwrap();
        r
    }

    #[test]
    fn float_counts_headroom_and_battery_beyond_reserve() {
        let fresh = |_: &str| Some(60);
        let e = estimate(&cfg(), &readings("float", 200.0, 80.0), &fresh, PARIS, NOON).unwrap();
        let potential = 1000.0 * 0.8 * 64.6f64.to_radians().sin();
        assert!((e.potential - potential).abs() < 10.0, "{e:?}");
        assert!(
            (e.surplus - (potential - 200.0 + 50.0)).abs() < 10.0,
            "{e:?}"
        );
    }

    #[test]
    fn bulk_discharge_and_missing() {
        let fresh = |_: &str| Some(60);
        assert_eq!(
            estimate(&cfg(), &readings("bulk", 600.0, 400.0), &fresh, PARIS, NOON)
                .unwrap()
                .surplus,
            0.0
        );
        assert_eq!(
            estimate(
                &cfg(),
                &readings("float", 200.0, -50.0),
                &fresh,
                PARIS,
                NOON
            )
            .unwrap()
            .surplus,
            0.0
        );
        let absorption = estimate(
            &cfg(),
            &readings("absorption", 200.0, 300.0),
            &fresh,
            PARIS,
            NOON,
        )
        .unwrap();
        assert!(
            (absorption.surplus - (absorption.potential - 200.0)).abs() < 1.0,
            "battery power not counted in absorption"
        );
        let err = estimate(
            &cfg(),
            &readings("float", 200.0, 80.0),
            &fresh,
            PARIS,
            NOON + 61,
        )
        .unwrap_err();
        assert!(err.contains("stale"), "{err}");
        // From the charger's best today instead of the sun: no coordinates needed.
        let mut r = readings("float", 200.0, 80.0);
        r.update(
            "mppt",
            &serde_json::json!({"ts": NOON, "max_power_today": 650}),
            NOON,
        )
        .unwrap();
        let by_max = SurplusConfig {
            potential: Potential::MaxPowerToday,
            ..cfg()
        };
        assert_eq!(
            estimate(&by_max, &r, &fresh, None, NOON).unwrap().surplus,
            650.0 - 200.0 + 50.0
        );
        let err =
            estimate(&by_max, &readings("float", 200.0, 80.0), &fresh, None, NOON).unwrap_err();
        assert!(err.contains("max_power_today missing"), "{err}");
        // At night the potential is 0.
        assert_eq!(
            estimate(
                &cfg(),
                &readings("float", 0.0, 0.0),
                &fresh,
                PARIS,
                1_718_928_000
            )
            .unwrap()
            .surplus,
            0.0
        );
    }
}
