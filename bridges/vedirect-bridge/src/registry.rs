//! Device ids: the topic level of each device, stable across reboots and port
//! renumbering because it follows the device's serial number, not the port.
//!
//! Order of precedence: the `[vedirect.devices]` name of the serial number, then the
//! name of the port in the config, then an id made from the serial number
//! (`mppt_hq2150abcde`), then (old BMV-70x send no `SER#`) an id made from the port
//! path, which is stable for `/dev/serial/by-id/...` links.

use std::collections::BTreeMap;
use std::path::Path;

use vedirect::products::Family;

/// Maps what a port reveals about its device to the device's id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_serial: BTreeMap<String, String>,
}

/// What kind of device, for the prefix of generated ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SolarCharger,
    BatteryMonitor,
    Inverter,
    Charger,
    DcDc,
    Unknown,
}

impl Kind {
    pub fn from_family(family: Family) -> Kind {
        match family {
            Family::SolarCharger => Kind::SolarCharger,
            Family::BatteryMonitor => Kind::BatteryMonitor,
            Family::Inverter => Kind::Inverter,
            Family::Charger => Kind::Charger,
            Family::DcDc => Kind::DcDc,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::SolarCharger => "mppt",
            Kind::BatteryMonitor => "monitor",
            Kind::Inverter => "inverter",
            Kind::Charger => "charger",
            Kind::DcDc => "dcdc",
            Kind::Unknown => "device",
        }
    }
}

impl Registry {
    pub fn new(by_serial: BTreeMap<String, String>) -> Registry {
        Registry { by_serial }
    }

    /// The name `[vedirect.devices]` gives the device with `serial`.
    pub fn configured_name(&self, serial: &str) -> Option<&str> {
        self.by_serial.get(serial).map(String::as_str)
    }

    /// The id of the device with `serial` (if it sends one) on the port at `path`.
    pub fn device_id(
        &self,
        serial: Option<&str>,
        kind: Kind,
        port_name: Option<&str>,
        path: &Path,
    ) -> String {
        if let Some(name) = serial.and_then(|s| self.by_serial.get(s)) {
            return name.clone();
        }
        if let Some(name) = port_name {
            return name.to_string();
        }
        match serial {
            Some(serial) => sanitize(&format!("{}_{serial}", kind.prefix())),
            None => {
                let file = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                sanitize(&format!("{}_{file}", kind.prefix()))
            }
        }
    }
}

/// A valid id (`a-z0-9_`, at most 64 characters) from any text.
fn sanitize(text: &str) -> String {
    let mut id = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            id.push(c);
        } else if !id.ends_with('_') {
            id.push('_');
        }
    }
    let id = id.trim_matches('_');
    id.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::contract::validate_id;

    #[test]
    fn configured_names_win_then_port_names_then_serials() {
        let r = Registry::new(BTreeMap::from([("HQ2150ABCDE".into(), "roof".into())]));
        let p = Path::new("/dev/ttyUSB0");
        assert_eq!(
            r.device_id(Some("HQ2150ABCDE"), Kind::SolarCharger, Some("x"), p),
            "roof"
        );
        assert_eq!(
            r.device_id(Some("HQ9"), Kind::SolarCharger, Some("x"), p),
            "x"
        );
        assert_eq!(
            r.device_id(Some("HQ9"), Kind::SolarCharger, None, p),
            "mppt_hq9"
        );
        let by_id =
            Path::new("/dev/serial/by-id/usb-VictronEnergy_BV_VE_Direct_cable_VE1ABC-if00-port0");
        let id = r.device_id(None, Kind::BatteryMonitor, None, by_id);
        assert_eq!(
            id,
            "monitor_usb_victronenergy_bv_ve_direct_cable_ve1abc_if00_port0"
        );
        assert!(validate_id(&id).is_ok());
        let long = "x".repeat(100);
        assert!(validate_id(&r.device_id(Some(&long), Kind::Unknown, None, p)).is_ok());
    }
}
