//! [`Plugin`]: a plugin's connection to the bus, speaking the topic contract.

use pvbus_bus::contract::{OFFLINE, ONLINE, now_ts};
use pvbus_bus::{Bus, Event, Inbox, Topics};
use serde_json::{Map, Value};

use crate::env::{EnvError, PluginEnv};

/// A command for one of the plugin's devices: `<base>/<id>/<device>/<setting>/set`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub topic: String,
    pub device: String,
    pub setting: String,
    pub payload: String,
}

/// The plugin's connection. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    bus: Bus,
    id: String,
}

impl Plugin {
    /// Reads the environment contract and connects in the background (last will
    /// `<base>/<id>/status` = `offline`; `online` once connected).
    pub fn connect() -> Result<(Plugin, Inbox), EnvError> {
        Ok(Plugin::connect_with(&PluginEnv::from_env()?))
    }

    pub fn connect_with(env: &PluginEnv) -> (Plugin, Inbox) {
        let (bus, inbox) = Bus::connect(&env.bus_config(), &env.id);
        (
            Plugin {
                bus,
                id: env.id.clone(),
            },
            inbox,
        )
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The underlying bus client, for anything this type does not cover.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn topics(&self) -> &Topics {
        self.bus.topics()
    }

    /// Publishes a device's readings, retained, on `<base>/<id>/<device>/state`, with
    /// `ts` added, and marks the device `online`. Name readings as docs/topics.md does
    /// (`temperature` in °C, `battery_voltage` in V, ...): Home Assistant then shows them
    /// with the right unit and the rules can use them as `<device>.<reading>`.
    pub fn publish_state(&self, device: &str, readings: Value) {
        let mut object = match readings {
            Value::Object(map) => map,
            other => {
                let mut map = Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        object.insert("ts".into(), Value::from(now_ts()));
        let topics = self.bus.topics();
        self.bus.publish_retained(
            topics.device_state(&self.id, device),
            Value::Object(object).to_string(),
        );
        self.set_available(device, true);
    }

    /// `<base>/<id>/<device>/availability` = `online`/`offline`, retained.
    pub fn set_available(&self, device: &str, available: bool) {
        let topic = self.bus.topics().device_availability(&self.id, device);
        self.bus
            .publish_retained(topic, if available { ONLINE } else { OFFLINE });
    }

    /// Removes a device from the bus (and so from Home Assistant).
    pub fn remove_device(&self, device: &str) {
        let topics = self.bus.topics();
        self.bus
            .clear_retained(topics.device_state(&self.id, device));
        self.bus
            .clear_retained(topics.device_availability(&self.id, device));
    }

    /// Subscribes to the commands of every device of this plugin:
    /// `<base>/<id>/+/+/set`.
    pub fn subscribe_commands(&self) {
        self.bus
            .subscribe(self.bus.topics().device_setting_set_filter(&self.id));
    }

    /// The command carried by `event`, if it is one for this plugin. A command with the
    /// retain flag is refused (answered on `<base>/<id>/error`), as every pvbus process
    /// does: a retained command would be replayed at every restart.
    pub fn command(&self, event: &Event) -> Option<Command> {
        let Event::Message(m) = event else {
            return None;
        };
        let (device, setting) = self
            .bus
            .topics()
            .parse_device_setting_set(&self.id, &m.topic)?;
        if m.retain {
            self.bus.report_error(
                &m.topic,
                "retained commands are ignored: publish it without the retain flag",
            );
            return None;
        }
        let Ok(payload) = m.text() else {
            self.bus
                .report_error(&m.topic, "the payload is not UTF-8 text");
            return None;
        };
        Some(Command {
            topic: m.topic.clone(),
            device: device.to_string(),
            setting: setting.to_string(),
            payload: payload.trim().to_string(),
        })
    }

    /// Answers a bad command on `<base>/<id>/error`.
    pub fn report_error(&self, command_topic: &str, error: impl std::fmt::Display) {
        self.bus.report_error(command_topic, error);
    }

    /// Publishes `offline` and disconnects.
    pub async fn shutdown(&self) {
        self.bus.shutdown().await;
    }
}

/// The inbox's next event, or `None` when the bus closed or `shutdown` fired.
pub async fn next_event(inbox: &mut Inbox, shutdown: &mut pvbus_bus::Shutdown) -> Option<Event> {
    tokio::select! {
        e = inbox.recv() => e,
        _ = shutdown.wait() => None,
    }
}
