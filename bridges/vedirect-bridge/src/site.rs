//! Site totals, as PvMonit users had them: total PV power over every solar charger,
//! battery power from the battery monitor(s), and consumption.
//!
//! `consumption = pv_power - battery_power`: positive when loads draw. (PvMonit computed
//! battery power minus PV, which is negative when loads draw; pvbus changes the sign so
//! that a bigger number means more consumption.) A total is `null` when a device it needs
//! is offline: a stale device must not make the site look better or worse than it is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one device adds to the site.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Contribution {
    /// Panel power of a solar charger (W).
    pub pv_power: Option<f64>,
    /// Battery power of a battery monitor (W, positive when charging).
    pub battery_power: Option<f64>,
}

impl Contribution {
    pub fn is_empty(&self) -> bool {
        self.pv_power.is_none() && self.battery_power.is_none()
    }
}

/// The payload of `<base>/site/state`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SiteTotals {
    pub ts: u64,
    #[serde(serialize_with = "watts")]
    pub pv_power: Option<f64>,
    #[serde(serialize_with = "watts")]
    pub battery_power: Option<f64>,
    #[serde(serialize_with = "watts")]
    pub consumption: Option<f64>,
}

/// Whole watts as integers (`245`, not `245.0`), like the device readings.
fn watts<S: serde::Serializer>(w: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *w {
        Some(w) if w.fract() == 0.0 && w.abs() < 1e15 => s.serialize_i64(w as i64),
        Some(w) => s.serialize_f64(w),
        None => s.serialize_none(),
    }
}

/// Republish unchanged totals this often, so that their `ts` shows they are current.
const REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    contribution: Contribution,
    online: bool,
}

/// Aggregates the contributions of every device seen.
#[derive(Debug, Default)]
pub struct Site {
    devices: BTreeMap<String, Entry>,
    last: Option<(Instant, SiteTotals)>,
}

impl Site {
    pub fn update(&mut self, device: &str, contribution: Contribution) {
        self.devices.insert(
            device.to_string(),
            Entry {
                contribution,
                online: true,
            },
        );
    }

    /// The device went stale: the totals that need it become unknown until it is back.
    pub fn set_offline(&mut self, device: &str) {
        if let Some(e) = self.devices.get_mut(device) {
            e.online = false;
        }
    }

    /// Current totals (with `ts`), or `None` when no device contributes anything.
    pub fn totals(&self, ts: u64) -> Option<SiteTotals> {
        if self.devices.values().all(|e| e.contribution.is_empty()) {
            return None;
        }
        let online = |e: &Entry, v: Option<f64>| v.map(|v| e.online.then_some(v));
        let pv = sum(self
            .devices
            .values()
            .filter_map(|e| online(e, e.contribution.pv_power)));
        let battery = sum(self
            .devices
            .values()
            .filter_map(|e| online(e, e.contribution.battery_power)));
        let consumption = match (pv, battery) {
            (Some(pv), Some(battery)) => Some(round(pv - battery)),
            _ => None,
        };
        Some(SiteTotals {
            ts,
            pv_power: pv,
            battery_power: battery,
            consumption,
        })
    }

    /// The totals to publish now, if they changed or were last published a while ago.
    pub fn to_publish(&mut self, now: Instant, ts: u64) -> Option<SiteTotals> {
        let totals = self.totals(ts)?;
        let due = match &self.last {
            None => true,
            Some((at, last)) => {
                now.duration_since(*at) >= REFRESH
                    || (last.pv_power, last.battery_power)
                        != (totals.pv_power, totals.battery_power)
            }
        };
        if due {
            self.last = Some((now, totals));
            Some(totals)
        } else {
            None
        }
    }
}

/// The sum over the contributors (`None` items are offline ones), or `None` when there
/// is no contributor or one of them is offline: unknown, not zero.
fn sum(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for v in values {
        total += v?;
        any = true;
    }
    any.then(|| round(total))
}

/// Watts to 0.01 W, so that sums of decimals print as people expect.
fn round(w: f64) -> f64 {
    (w * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mppt(p: f64) -> Contribution {
        Contribution {
            pv_power: Some(p),
            battery_power: None,
        }
    }
    fn bmv(p: f64) -> Contribution {
        Contribution {
            pv_power: None,
            battery_power: Some(p),
        }
    }

    #[test]
    fn consumption_is_pv_minus_battery() {
        let mut s = Site::default();
        assert_eq!(s.totals(1), None);
        s.update("roof", mppt(300.0));
        s.update("shed", mppt(45.5));
        s.update("bmv", bmv(200.0));
        let t = s.totals(7).unwrap();
        assert_eq!(t.pv_power, Some(345.5));
        assert_eq!(t.battery_power, Some(200.0));
        assert_eq!(t.consumption, Some(145.5));
        // Night: the battery feeds the loads.
        s.update("roof", mppt(0.0));
        s.update("shed", mppt(0.0));
        s.update("bmv", bmv(-80.0));
        assert_eq!(s.totals(8).unwrap().consumption, Some(80.0));
    }

    #[test]
    fn an_offline_device_makes_its_total_unknown() {
        let mut s = Site::default();
        s.update("roof", mppt(300.0));
        s.update("shed", mppt(100.0));
        s.update("bmv", bmv(150.0));
        s.set_offline("shed");
        let t = s.totals(1).unwrap();
        assert_eq!(
            (t.pv_power, t.battery_power, t.consumption),
            (None, Some(150.0), None)
        );
        s.update("shed", mppt(10.0));
        assert_eq!(s.totals(2).unwrap().consumption, Some(160.0));
    }

    #[test]
    fn totals_serialise_whole_watts_as_integers() {
        let mut s = Site::default();
        s.update("roof", mppt(300.0));
        s.update("bmv", bmv(-12.5));
        let json = serde_json::to_string(&s.totals(5).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"ts":5,"pv_power":300,"battery_power":-12.5,"consumption":312.5}"#
        );
        s.set_offline("roof");
        let json = serde_json::to_string(&s.totals(6).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"ts":6,"pv_power":null,"battery_power":-12.5,"consumption":null}"#
        );
    }

    #[test]
    fn publishes_changes_and_refreshes_unchanged_totals() {
        let mut s = Site::default();
        let t0 = Instant::now();
        s.update("roof", mppt(300.0));
        assert!(s.to_publish(t0, 1).is_some());
        assert!(s.to_publish(t0 + Duration::from_secs(1), 2).is_none());
        s.update("roof", mppt(301.0));
        assert!(s.to_publish(t0 + Duration::from_secs(2), 3).is_some());
        assert!(s.to_publish(t0 + Duration::from_secs(13), 14).is_some());
    }

    /// Every charger state the decoder can publish is in the contract's list, which Home
    /// Assistant uses as an enum sensor's options and the rules check names against: a
    /// name missing there puts the HA entity in error when a device reports it.
    #[test]
    fn every_decoded_charge_state_is_in_the_contract() {
        for code in 0..=255 {
            if let Some(name) = vedirect::decode::charge_state_name(code) {
                assert!(
                    pvbus_bus::contract::CHARGE_STATES.contains(&name),
                    "CS {code} decodes to {name:?}, missing from contract::CHARGE_STATES"
                );
            }
        }
    }
}
