//! Auto-detection of Victron VE.Direct USB cables. udev names them under
//! `/dev/serial/by-id/` after the cable's own serial number
//! (`usb-VictronEnergy_BV_VE_Direct_cable_VE1ABCDE-if00-port0`), a path that survives
//! reboots and port renumbering, unlike `/dev/ttyUSB0`.

use std::path::{Path, PathBuf};

/// VE.Direct cables in `dir`, sorted; an absent folder (no USB serial device plugged in)
/// is an empty list.
pub fn vedirect_cables(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| is_vedirect_cable(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn is_vedirect_cable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("ve_direct") || lower.contains("vedirect") || lower.contains("victronenergy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_victron_cables_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "usb-VictronEnergy_BV_VE_Direct_cable_VE1ABCDE-if00-port0",
            "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
            "usb-VictronEnergy_BV_VE_Direct_cable_VE0AAAAA-if00-port0",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = vedirect_cables(dir.path());
        assert_eq!(found.len(), 2);
        assert!(found[0].ends_with("usb-VictronEnergy_BV_VE_Direct_cable_VE0AAAAA-if00-port0"));
        assert!(vedirect_cables(&dir.path().join("absent")).is_empty());
    }
}
