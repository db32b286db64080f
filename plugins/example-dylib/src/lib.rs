//! An example dynamic-library plugin: today's solar energy, integrated from the site's
//! PV power (`<base>/site/state`), published as the device `pv_energy` of the plugin
//! (`<base>/<id>/pv_energy/state` = `{"ts":..,"energy":0.42,"pv_power":250}`, kWh and W).
//! `<base>/<id>/pv_energy/reset/set` starts again from zero.
//!
//! Layout: one type, [`PvEnergy`], exported by `export_plugin!`; it only integrates, the
//! host does the MQTT.

use pvbus_plugin_abi::{Actions, DylibPlugin, Start, export_plugin};
use serde_json::{Value, json};

/// A gap longer than this between two readings is not integrated: the power in between
/// is unknown (bus down, charger asleep).
const MAX_GAP_SECS: u64 = 600;

pub struct PvEnergy {
    id: String,
    last: Option<(u64, f64)>,
    energy_wh: f64,
}

impl PvEnergy {
    fn publish(&self, out: &mut Actions) {
        let pv_power = self.last.map(|(_, w)| w);
        let kwh = (self.energy_wh / 1000.0 * 1000.0).round() / 1000.0;
        out.state("pv_energy", json!({"energy": kwh, "pv_power": pv_power}));
    }
}

impl DylibPlugin for PvEnergy {
    fn start(start: &Start, out: &mut Actions) -> Result<Self, String> {
        out.subscribe("site/state");
        out.subscribe(format!("{}/pv_energy/reset/set", start.id));
        let plugin = PvEnergy {
            id: start.id.clone(),
            last: None,
            energy_wh: 0.0,
        };
        plugin.publish(out);
        Ok(plugin)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], out: &mut Actions) -> Result<(), String> {
        if topic == format!("{}/pv_energy/reset/set", self.id) {
            self.energy_wh = 0.0;
            self.publish(out);
            return Ok(());
        }
        let site: Value =
            serde_json::from_slice(payload).map_err(|e| format!("{topic}: not JSON: {e}"))?;
        let (Some(ts), Some(watts)) = (
            site.get("ts").and_then(Value::as_u64),
            site.get("pv_power").and_then(Value::as_f64),
        ) else {
            return Err(format!("{topic}: needs integer `ts` and number `pv_power`"));
        };
        if let Some((last_ts, last_w)) = self.last
            && ts > last_ts
            && ts - last_ts <= MAX_GAP_SECS
        {
            // Trapezoids: the power moved linearly between two readings.
            self.energy_wh += (last_w + watts) / 2.0 * (ts - last_ts) as f64 / 3600.0;
        }
        self.last = Some((ts, watts));
        self.publish(out);
        Ok(())
    }
}

export_plugin!(PvEnergy);
