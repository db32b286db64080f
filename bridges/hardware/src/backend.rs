//! The `Gpio` trait and the choice of backend.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::line::{BidirectionalLine, Edge, EdgeLine, InitialLevel, InputLine, OutputLine, Pull};
use crate::{HardwareError, SimBoard};

/// A GPIO controller: opens lines by BCM number (the numbers printed on Pi
/// pinout charts; on other boards, the line offset on the chosen gpiochip).
pub trait Gpio: Send + Sync {
    /// The backend's name, for logs (`rppal`, `gpiochip`, `sim`).
    fn name(&self) -> &'static str;
    /// Opens an output that drives `initial` from its first instant.
    fn output(&self, bcm: u8, initial: InitialLevel) -> Result<OutputLine, HardwareError>;
    fn input(&self, bcm: u8, pull: Pull) -> Result<InputLine, HardwareError>;
    /// Opens a bidirectional line, released (input) at first.
    fn bidirectional(&self, bcm: u8, pull: Pull) -> Result<BidirectionalLine, HardwareError>;
    /// Opens an input whose `edge`s can be waited for (a device's interrupt output).
    fn edge_input(&self, bcm: u8, pull: Pull, edge: Edge) -> Result<EdgeLine, HardwareError> {
        let _ = (pull, edge);
        Err(HardwareError::Line {
            bcm,
            message: format!("the {} backend cannot wait for edges", self.name()),
        })
    }
}

/// Which backend to use, as written in a config file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// rppal on a Raspberry Pi, the GPIO character device on other boards.
    #[default]
    Auto,
    Rppal,
    Gpiochip,
    /// The simulated board; only when asked for by name.
    Sim,
}

impl FromStr for BackendKind {
    type Err = HardwareError;
    fn from_str(s: &str) -> Result<Self, HardwareError> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "rppal" => Ok(BackendKind::Rppal),
            "gpiochip" => Ok(BackendKind::Gpiochip),
            "sim" => Ok(BackendKind::Sim),
            other => Err(HardwareError::UnknownBackend(other.to_owned())),
        }
    }
}

/// GPIO settings, embedded in a process's config section (e.g. `[relays.gpio]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioConfig {
    pub backend: BackendKind,
    /// For `gpiochip`: the chip device; by default the first /dev/gpiochip*.
    pub chip: Option<PathBuf>,
    /// For `sim`: where the simulated board keeps its state file and log.
    pub sim_dir: Option<PathBuf>,
}

/// Where detection looks; tests point it at a fake root.
#[derive(Clone, Debug)]
pub struct SystemPaths {
    pub device_tree_model: PathBuf,
    pub dev_dir: PathBuf,
}

impl Default for SystemPaths {
    fn default() -> Self {
        SystemPaths {
            device_tree_model: PathBuf::from("/proc/device-tree/model"),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

/// A real backend that `auto` found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    RaspberryPi { model: String },
    Gpiochip { chip: PathBuf },
}

/// Looks at the machine: a Raspberry Pi (by its device-tree model) or any
/// GPIO character device.
pub fn detect(paths: &SystemPaths) -> Result<Detected, HardwareError> {
    if let Ok(raw) = std::fs::read(&paths.device_tree_model) {
        let model = String::from_utf8_lossy(&raw)
            .trim_end_matches('\0')
            .trim()
            .to_owned();
        if model.contains("Raspberry Pi") {
            return Ok(Detected::RaspberryPi { model });
        }
    }
    if let Some(chip) = first_gpiochip(&paths.dev_dir) {
        return Ok(Detected::Gpiochip { chip });
    }
    Err(HardwareError::NoGpioFound {
        model_path: paths.device_tree_model.clone(),
        dev_dir: paths.dev_dir.clone(),
    })
}

fn first_gpiochip(dev_dir: &Path) -> Option<PathBuf> {
    let mut chips: Vec<PathBuf> = std::fs::read_dir(dev_dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("gpiochip"))
        .map(|entry| entry.path())
        .collect();
    chips.sort();
    chips.into_iter().next()
}

/// Opens the configured backend on this machine.
pub fn open_gpio(config: &GpioConfig) -> Result<Box<dyn Gpio>, HardwareError> {
    open_gpio_on(config, &SystemPaths::default())
}

/// `open_gpio` with the places detection looks at given explicitly.
pub fn open_gpio_on(
    config: &GpioConfig,
    paths: &SystemPaths,
) -> Result<Box<dyn Gpio>, HardwareError> {
    match config.backend {
        BackendKind::Sim => {
            let dir = config
                .sim_dir
                .as_ref()
                .ok_or(HardwareError::SimDirMissing)?;
            Ok(Box::new(SimBoard::open(dir)?))
        }
        BackendKind::Rppal => open_rppal(),
        BackendKind::Gpiochip => {
            let chip = match &config.chip {
                Some(chip) => chip.clone(),
                None => {
                    first_gpiochip(&paths.dev_dir).ok_or_else(|| HardwareError::NoGpioFound {
                        model_path: paths.device_tree_model.clone(),
                        dev_dir: paths.dev_dir.clone(),
                    })?
                }
            };
            open_gpiochip(&chip)
        }
        BackendKind::Auto => match detect(paths)? {
            Detected::RaspberryPi { model } => {
                tracing::info!(%model, "Raspberry Pi found: GPIO through rppal");
                open_rppal()
            }
            Detected::Gpiochip { chip } => {
                let chip = config.chip.clone().unwrap_or(chip);
                tracing::info!(chip = %chip.display(), "GPIO through the character device");
                open_gpiochip(&chip)
            }
        },
    }
}

#[cfg(feature = "rppal")]
fn open_rppal() -> Result<Box<dyn Gpio>, HardwareError> {
    Ok(Box::new(crate::rppal_backend::RppalGpio::new()?))
}

#[cfg(not(feature = "rppal"))]
fn open_rppal() -> Result<Box<dyn Gpio>, HardwareError> {
    Err(HardwareError::BackendNotBuilt("rppal"))
}

#[cfg(feature = "gpiocdev")]
fn open_gpiochip(chip: &Path) -> Result<Box<dyn Gpio>, HardwareError> {
    Ok(Box::new(crate::cdev_backend::CdevGpio::new(chip)?))
}

#[cfg(not(feature = "gpiocdev"))]
fn open_gpiochip(_chip: &Path) -> Result<Box<dyn Gpio>, HardwareError> {
    Err(HardwareError::BackendNotBuilt("gpiocdev"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(model: Option<&[u8]>, chips: &[&str]) -> (tempfile::TempDir, SystemPaths) {
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        for chip in chips {
            std::fs::write(dev.join(chip), b"").unwrap();
        }
        let model_path = root.path().join("model");
        if let Some(model) = model {
            std::fs::write(&model_path, model).unwrap();
        }
        let paths = SystemPaths {
            device_tree_model: model_path,
            dev_dir: dev,
        };
        (root, paths)
    }

    #[test]
    fn a_pi_is_recognised_by_its_device_tree_model() {
        let (_root, paths) = fake_root(Some(b"Raspberry Pi 4 Model B Rev 1.4\0"), &["gpiochip0"]);
        assert_eq!(
            detect(&paths).unwrap(),
            Detected::RaspberryPi {
                model: "Raspberry Pi 4 Model B Rev 1.4".into()
            }
        );
    }

    #[test]
    fn another_board_uses_its_first_gpiochip() {
        let (_root, paths) = fake_root(Some(b"Radxa ROCK Pi S\0"), &["gpiochip2", "gpiochip1"]);
        assert_eq!(
            detect(&paths).unwrap(),
            Detected::Gpiochip {
                chip: paths.dev_dir.join("gpiochip1")
            }
        );
    }

    #[test]
    fn no_gpio_at_all_is_a_clear_error_naming_where_it_looked() {
        let (_root, paths) = fake_root(None, &["ttyUSB0"]);
        let config = GpioConfig::default();
        let error = open_gpio_on(&config, &paths).err().expect("must fail");
        let message = error.to_string();
        assert!(matches!(error, HardwareError::NoGpioFound { .. }));
        assert!(
            message.contains(&paths.dev_dir.display().to_string()),
            "{message}"
        );
        assert!(message.contains("sim"), "{message}");
    }

    #[test]
    fn sim_is_never_chosen_by_auto_and_needs_a_directory() {
        let (_root, paths) = fake_root(None, &[]);
        let config = GpioConfig {
            backend: BackendKind::Sim,
            ..GpioConfig::default()
        };
        assert!(matches!(
            open_gpio_on(&config, &paths).err(),
            Some(HardwareError::SimDirMissing)
        ));
    }

    #[test]
    fn backend_names_parse_and_unknown_names_are_refused() {
        assert_eq!(
            "gpiochip".parse::<BackendKind>().unwrap(),
            BackendKind::Gpiochip
        );
        let error = "wiringpi".parse::<BackendKind>().unwrap_err();
        assert!(error.to_string().contains("\"wiringpi\""));
    }

    #[test]
    fn a_gpiochip_that_is_not_a_gpio_device_fails_with_its_path() {
        let (_root, paths) = fake_root(None, &["gpiochip0"]);
        let result = open_gpio_on(&GpioConfig::default(), &paths);
        // An empty regular file is no GPIO chip: the error must name it.
        let message = result.err().expect("must fail").to_string();
        assert!(message.contains("gpiochip0"), "{message}");
    }
}
