//! The `[supervisor]` section: which processes `pvbus run` starts, how it restarts them, and
//! the simulators and extra programs it runs beside them.

use std::path::PathBuf;
use std::time::Duration;

use pvbus_bus::config::{ConfigError, Section};
use serde::Deserialize;

/// Every pvbus process that `pvbus run` can start, in start order. The name is at once the
/// subcommand (`pvbus <name> --config FILE`), the config section that enables it and the
/// process name on the bus. Adding a process to pvbus is one line here.
pub const PROCESSES: &[&str] = &[
    "vedirect",
    "relays",
    "rules",
    "homeassistant",
    "plugins",
    "tm1638",
    "lcd",
    "cloud",
];

/// The embedded broker: started first, stopped last, not listed in [`PROCESSES`].
pub const BROKER: &str = "broker";

/// `[supervisor]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// The processes to run. Absent: every process of [`PROCESSES`] whose section is
    /// present in the file.
    pub processes: Option<Vec<String>>,
    /// Delay before the first restart of a crashed child; doubles at each crash in a row.
    pub restart_delay_secs: f64,
    /// Upper bound of the restart delay.
    pub restart_delay_max_secs: f64,
    /// A child that ran this long before exiting is restarted after the first delay again.
    pub healthy_after_secs: f64,
    /// How long a child has between SIGTERM and SIGKILL when pvbus stops.
    pub stop_timeout_secs: f64,
    /// How long to wait for the broker to accept connections, or for a simulator's link to
    /// appear, before starting the others anyway (they reconnect by themselves).
    pub ready_timeout_secs: f64,
    /// `[[supervisor.simulator]]`: simulated hardware for the demo, started before the
    /// bridges.
    #[serde(rename = "simulator")]
    pub simulators: Vec<SimulatorConfig>,
    /// `[[supervisor.program]]`: other executables to keep running (scripts, plugins).
    #[serde(rename = "program")]
    pub programs: Vec<ProgramConfig>,
}

/// `[[supervisor.simulator]]`: `pvbus sim vedirect --kind KIND --link LINK`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Device kind, as `pvbus sim vedirect --kind` knows it (`mppt`, `bmv`, ...).
    pub kind: String,
    /// Path of the serial port (a pty symlink) the simulator creates for the bridge.
    pub link: PathBuf,
    /// Name in logs and in `pvbus/supervisor/processes`; default `sim_<kind>`, or
    /// `sim_<kind>_<n>` for the n-th simulator of the same kind.
    pub name: Option<String>,
    /// Serial number (`SER#`) the simulated device sends (`--serial`).
    pub serial: Option<String>,
    /// Virtual seconds per real second (`--time-scale`): 60 runs a day in 24 minutes.
    pub time_scale: Option<f64>,
    /// Time of day `HH:MM` (UTC) at which the simulation starts (`--start-time`).
    pub start_time: Option<String>,
}

/// `[[supervisor.program]]`: any executable, started with the environment variable
/// `PVBUS_CONFIG` set to the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProgramConfig {
    /// Name in logs and in `pvbus/supervisor/processes`.
    pub name: String,
    /// Program and arguments, e.g. `["/usr/local/bin/pv-mail", "--daily"]`.
    pub command: Vec<String>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            processes: None,
            restart_delay_secs: 1.0,
            restart_delay_max_secs: 60.0,
            healthy_after_secs: 60.0,
            stop_timeout_secs: 5.0,
            ready_timeout_secs: 10.0,
            simulators: Vec::new(),
            programs: Vec::new(),
        }
    }
}

impl Section for SupervisorConfig {
    const NAME: &'static str = "supervisor";

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(list) = &self.processes {
            for (i, name) in list.iter().enumerate() {
                if !PROCESSES.contains(&name.as_str()) {
                    let hint = if name == BROKER {
                        " (the broker is started by itself unless [broker] enabled = false or [bus] external_broker is set)"
                    } else {
                        ""
                    };
                    return Err(ConfigError::invalid(
                        format!("supervisor.processes[{i}]"),
                        format!(
                            "unknown process {name:?}; known: {}{hint}",
                            PROCESSES.join(", ")
                        ),
                    ));
                }
                if list[..i].contains(name) {
                    return Err(ConfigError::invalid(
                        format!("supervisor.processes[{i}]"),
                        format!("{name:?} is listed twice"),
                    ));
                }
            }
        }
        for (key, value) in [
            ("restart_delay_secs", self.restart_delay_secs),
            ("restart_delay_max_secs", self.restart_delay_max_secs),
            ("healthy_after_secs", self.healthy_after_secs),
            ("stop_timeout_secs", self.stop_timeout_secs),
            ("ready_timeout_secs", self.ready_timeout_secs),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                return Err(ConfigError::invalid(
                    format!("supervisor.{key}"),
                    format!("{value} is not a number of seconds between 0 and 86400"),
                ));
            }
        }
        if self.restart_delay_max_secs < self.restart_delay_secs {
            return Err(ConfigError::invalid(
                "supervisor.restart_delay_max_secs",
                format!(
                    "{} is below restart_delay_secs ({})",
                    self.restart_delay_max_secs, self.restart_delay_secs
                ),
            ));
        }
        for (i, sim) in self.simulators.iter().enumerate() {
            if sim.kind.is_empty() || sim.kind.starts_with('-') {
                return Err(ConfigError::invalid(
                    format!("supervisor.simulator[{i}].kind"),
                    "must name a device kind such as \"mppt\" or \"bmv\"",
                ));
            }
            if let Some(scale) = sim.time_scale
                && !(scale.is_finite() && scale > 0.0)
            {
                return Err(ConfigError::invalid(
                    format!("supervisor.simulator[{i}].time_scale"),
                    format!("{scale} is not a positive number"),
                ));
            }
            if sim.link.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    format!("supervisor.simulator[{i}].link"),
                    "must be the path of the serial port the simulator creates",
                ));
            }
        }
        for (i, program) in self.programs.iter().enumerate() {
            if program.command.first().is_none_or(|p| p.is_empty()) {
                return Err(ConfigError::invalid(
                    format!("supervisor.program[{i}].command"),
                    "must hold the program and its arguments, e.g. [\"/usr/local/bin/x\"]",
                ));
            }
        }
        // Names are keys of `pvbus/supervisor/processes`: they must be unique over all
        // children.
        let mut names: Vec<String> = PROCESSES.iter().map(|p| p.to_string()).collect();
        names.push(BROKER.to_string());
        for (i, name) in self.simulator_names().into_iter().enumerate() {
            check_child_name(&format!("supervisor.simulator[{i}].name"), &name, &names)?;
            names.push(name);
        }
        for (i, program) in self.programs.iter().enumerate() {
            let key = format!("supervisor.program[{i}].name");
            check_child_name(&key, &program.name, &names)?;
            names.push(program.name.clone());
        }
        Ok(())
    }
}

impl SupervisorConfig {
    /// The name of each simulator, in order.
    pub fn simulator_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (i, sim) in self.simulators.iter().enumerate() {
            let name = match &sim.name {
                Some(n) => n.clone(),
                None => {
                    let same_kind_before = self.simulators[..i]
                        .iter()
                        .filter(|s| s.kind == sim.kind)
                        .count();
                    if same_kind_before == 0 {
                        format!("sim_{}", sim.kind)
                    } else {
                        format!("sim_{}_{}", sim.kind, same_kind_before + 1)
                    }
                }
            };
            names.push(name);
        }
        names
    }

    pub fn restart_delay(&self) -> Duration {
        Duration::from_secs_f64(self.restart_delay_secs)
    }
    pub fn restart_delay_max(&self) -> Duration {
        Duration::from_secs_f64(self.restart_delay_max_secs)
    }
    pub fn healthy_after(&self) -> Duration {
        Duration::from_secs_f64(self.healthy_after_secs)
    }
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.stop_timeout_secs)
    }
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ready_timeout_secs)
    }
}

fn check_child_name(key: &str, name: &str, taken: &[String]) -> Result<(), ConfigError> {
    if pvbus_bus::contract::validate_id(name).is_err() {
        return Err(ConfigError::invalid(
            key,
            format!("{name:?} is not a name: use lower-case letters, digits and _"),
        ));
    }
    if taken.iter().any(|t| t == name) {
        return Err(ConfigError::invalid(
            key,
            format!("{name:?} is already the name of another child"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvbus_bus::config::Settings;

    fn load(text: &str) -> Result<SupervisorConfig, String> {
        let s = Settings::from_toml(text).map_err(|e| e.to_string())?;
        s.load_section().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_when_absent() {
        let c = load("[bus]\n").unwrap();
        assert_eq!(c, SupervisorConfig::default());
        assert_eq!(c.restart_delay(), Duration::from_secs(1));
        assert_eq!(c.restart_delay_max(), Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[supervisor]\nprocesses = [\"relays\", \"pumps\"]\n",
                "supervisor.processes[1]",
            ),
            (
                "[supervisor]\nprocesses = [\"relays\", \"relays\"]\n",
                "supervisor.processes[1]",
            ),
            (
                "[supervisor]\nrestart_delay_secs = 0\n",
                "supervisor.restart_delay_secs",
            ),
            (
                "[supervisor]\nrestart_delay_secs = 10\nrestart_delay_max_secs = 5\n",
                "supervisor.restart_delay_max_secs",
            ),
            ("[supervisor]\nrestart_dely_secs = 1\n", "restart_dely_secs"),
            (
                "[[supervisor.simulator]]\nkind = \"mppt\"\nlink = \"\"\n",
                "supervisor.simulator[0].link",
            ),
            (
                "[[supervisor.program]]\nname = \"x\"\ncommand = []\n",
                "supervisor.program[0].command",
            ),
            (
                "[[supervisor.program]]\nname = \"relays\"\ncommand = [\"true\"]\n",
                "supervisor.program[0].name",
            ),
            (
                "[[supervisor.program]]\nname = \"My Script\"\ncommand = [\"true\"]\n",
                "supervisor.program[0].name",
            ),
        ];
        for (text, key) in cases {
            let err = load(text).unwrap_err();
            assert!(
                err.contains(key),
                "{text:?} gave {err:?}, expected key {key}"
            );
        }
    }

    #[test]
    fn simulators_get_distinct_names() {
        let c = load(
            "[[supervisor.simulator]]\nkind = \"mppt\"\nlink = \"/tmp/a\"\n\
             [[supervisor.simulator]]\nkind = \"bmv\"\nlink = \"/tmp/b\"\n\
             [[supervisor.simulator]]\nkind = \"mppt\"\nlink = \"/tmp/c\"\n",
        )
        .unwrap();
        assert_eq!(c.simulator_names(), ["sim_mppt", "sim_bmv", "sim_mppt_2"]);
        let err = load(
            "[[supervisor.simulator]]\nkind = \"mppt\"\nlink = \"/tmp/a\"\nname = \"x\"\n\
             [[supervisor.program]]\nname = \"x\"\ncommand = [\"true\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("supervisor.program[0].name"), "{err}");
    }
}
