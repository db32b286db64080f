//! What `pvbus run` will start, decided from the configuration before anything starts: the
//! broker (unless external or disabled), the simulators, the processes, the extra
//! programs — each with its command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pvbus_bus::config::{BusConfig, ConfigError, Settings};

use super::config::{BROKER, PROCESSES, SupervisorConfig};

/// What a child is to the supervisor: it decides the start and stop order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Started first, the others only once it accepts connections; stopped last.
    Broker,
    /// Started before the processes, which wait for its serial link to appear.
    Simulator { link: PathBuf },
    /// A pvbus process (`pvbus <name> --config FILE`).
    Process,
    /// A `[[supervisor.program]]`.
    Program,
}

/// One child and how to start it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    pub name: String,
    pub role: Role,
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Everything `pvbus run` starts, in start order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub children: Vec<ChildSpec>,
    pub supervisor: SupervisorConfig,
    pub bus: BusConfig,
    /// Processes whose section is present but that this build of pvbus lacks.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin}: key `supervisor.processes`: this build of pvbus has no `{name}` process")]
    Unavailable { origin: String, name: String },
    #[error(
        "{origin}: this build of pvbus has no embedded broker: set [bus] external_broker, or [broker] enabled = false"
    )]
    NoBroker { origin: String },
}

impl Plan {
    /// `exe` is the pvbus binary, `config` the configuration file (passed on to every
    /// child), `available(path)` tells whether this binary has the subcommand `path`
    /// (e.g. `["sim", "vedirect"]`).
    pub fn build(
        settings: &Settings,
        exe: &Path,
        config: &Path,
        available: &dyn Fn(&[&str]) -> bool,
    ) -> Result<Plan, PlanError> {
        let supervisor: SupervisorConfig = settings.load_section()?;
        let bus = settings.bus()?;
        let origin = settings.origin().to_string();
        let sections = settings.sections();
        let pvbus = |args: &[&str]| -> Vec<OsString> {
            let mut v: Vec<OsString> = args.iter().map(OsString::from).collect();
            v.push("--config".into());
            v.push(config.as_os_str().to_owned());
            v
        };
        let mut children = Vec::new();

        if bus.external_broker.is_none() && broker_enabled(settings)? {
            if !available(&[BROKER]) {
                return Err(PlanError::NoBroker { origin });
            }
            children.push(ChildSpec {
                name: BROKER.into(),
                role: Role::Broker,
                program: exe.as_os_str().to_owned(),
                args: pvbus(&[BROKER]),
            });
        }

        for (sim, name) in supervisor
            .simulators
            .iter()
            .zip(supervisor.simulator_names())
        {
            let mut args: Vec<OsString> = ["sim", "vedirect", "--kind", &sim.kind, "--link"]
                .iter()
                .map(OsString::from)
                .collect();
            args.push(sim.link.as_os_str().to_owned());
            if let Some(serial) = &sim.serial {
                args.extend(["--serial".into(), serial.into()]);
            }
            if let Some(scale) = sim.time_scale {
                args.extend(["--time-scale".into(), scale.to_string().into()]);
            }
            if let Some(start) = &sim.start_time {
                args.extend(["--start-time".into(), start.into()]);
            }
            if !available(&["sim", "vedirect"]) {
                return Err(PlanError::Unavailable {
                    origin,
                    name: "sim vedirect".into(),
                });
            }
            children.push(ChildSpec {
                name,
                role: Role::Simulator {
                    link: sim.link.clone(),
                },
                program: exe.as_os_str().to_owned(),
                args,
            });
        }

        let mut skipped = Vec::new();
        let chosen: Vec<&str> = match &supervisor.processes {
            Some(list) => {
                // Start order stays that of PROCESSES whatever the order of the list.
                let mut chosen = Vec::new();
                for p in PROCESSES {
                    if list.iter().any(|l| l == p) {
                        if !available(&[p]) {
                            return Err(PlanError::Unavailable {
                                origin,
                                name: p.to_string(),
                            });
                        }
                        chosen.push(*p);
                    }
                }
                chosen
            }
            None => PROCESSES
                .iter()
                .copied()
                .filter(|p| sections.iter().any(|s| s == p))
                .filter(|p| {
                    let ok = available(&[p]);
                    if !ok {
                        skipped.push(p.to_string());
                    }
                    ok
                })
                .collect(),
        };
        for p in chosen {
            children.push(ChildSpec {
                name: p.to_string(),
                role: Role::Process,
                program: exe.as_os_str().to_owned(),
                args: pvbus(&[p]),
            });
        }

        for program in &supervisor.programs {
            let (first, rest) = program
                .command
                .split_first()
                .expect("validate() checked the command is not empty");
            children.push(ChildSpec {
                name: program.name.clone(),
                role: Role::Program,
                program: first.into(),
                args: rest.iter().map(OsString::from).collect(),
            });
        }

        Ok(Plan {
            children,
            supervisor,
            bus,
            skipped,
        })
    }
}

/// `[broker] enabled`, validated by the broker crate's own rules when the broker is to run.
fn broker_enabled(settings: &Settings) -> Result<bool, ConfigError> {
    let broker: pvbus_broker::BrokerConfig = settings.section(BROKER)?;
    if broker.enabled {
        settings.check(&broker)?;
    }
    Ok(broker.enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, available: &[&str]) -> Result<Plan, PlanError> {
        let settings = Settings::from_toml(text).unwrap();
        let has = |path: &[&str]| available.contains(&path.join(" ").as_str());
        Plan::build(
            &settings,
            Path::new("/usr/bin/pvbus"),
            Path::new("/etc/pvbus.toml"),
            &has,
        )
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.children.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn broker_first_then_simulators_then_present_sections() {
        let p = plan(
            "[broker]\nlisten = \"127.0.0.1:1999\"\ndata_dir = \"/tmp/x\"\n\
             [rules]\n[relays]\n[lcd]\n\
             [[supervisor.simulator]]\nkind = \"mppt\"\nlink = \"/tmp/mppt\"\ntime_scale = 60\n",
            &["broker", "relays", "rules", "sim vedirect"],
        )
        .unwrap();
        assert_eq!(names(&p), ["broker", "sim_mppt", "relays", "rules"]);
        assert_eq!(p.skipped, ["lcd"]);
        let relays = &p.children[2];
        assert_eq!(relays.program, "/usr/bin/pvbus");
        assert_eq!(relays.args, ["relays", "--config", "/etc/pvbus.toml"]);
        assert_eq!(
            p.children[1].args,
            [
                "sim",
                "vedirect",
                "--kind",
                "mppt",
                "--link",
                "/tmp/mppt",
                "--time-scale",
                "60"
            ]
        );
        assert_eq!(p.bus.endpoint(), ("127.0.0.1".to_string(), 1999));
    }

    #[test]
    fn the_demo_starts_the_broker_the_simulators_then_the_bridges() {
        let every = [
            "broker",
            "sim vedirect",
            "vedirect",
            "relays",
            "rules",
            "homeassistant",
            "tm1638",
            "lcd",
        ];
        let p = plan(include_str!("../../examples/demo.toml"), &every).unwrap();
        assert_eq!(
            names(&p),
            [
                "broker",
                "sim_mppt",
                "sim_bmv",
                "vedirect",
                "relays",
                "rules",
                "homeassistant",
                "tm1638",
                "lcd"
            ]
        );
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn no_broker_when_external_or_disabled() {
        let all = ["broker", "relays"];
        let p = plan(
            "[bus]\nexternal_broker = \"127.0.0.1:1884\"\n[relays]\n",
            &all,
        )
        .unwrap();
        assert_eq!(names(&p), ["relays"]);
        let p = plan("[broker]\nenabled = false\n[relays]\n", &all).unwrap();
        assert_eq!(names(&p), ["relays"]);
        let err = plan("[relays]\n", &["relays"]).unwrap_err().to_string();
        assert!(err.contains("external_broker"), "{err}");
    }

    #[test]
    fn explicit_list_must_be_available() {
        let text = "[bus]\nexternal_broker = \"h:1\"\n[supervisor]\nprocesses = [\"rules\"]\n";
        let p = plan(text, &["rules"]).unwrap();
        assert_eq!(names(&p), ["rules"]);
        let err = plan(text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("supervisor.processes") && err.contains("rules"),
            "{err}"
        );
    }

    #[test]
    fn broker_section_is_validated_by_the_broker_crate() {
        let err = plan(
            "[broker]\nlisten = \"0.0.0.0:1883\"\n[relays]\n",
            &["broker", "relays"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("broker.listen"), "{err}");
    }
}
