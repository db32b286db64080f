//! The C ABI between `pvbus plugins` (the host) and a dynamic-library plugin.
//!
//! Layout:
//! - this file: what a plugin author sees — the [`DylibPlugin`] trait, the [`Start`]
//!   parameters, the [`Actions`] a call returns, and the [`export_plugin!`] macro;
//! - [`ffi`]: the only unsafe code: the `#[repr(C)]` [`PluginVTable`], the buffers that
//!   cross the boundary, and the guarded `extern "C"` functions the macro exports.
//!
//! The contract, for both sides:
//! - the library exports `pvbus_plugin_entry`, which returns a pointer to a static
//!   [`PluginVTable`] whose first field is `abi_version`; the host reads that field first
//!   and refuses any version but [`ABI_VERSION`];
//! - every payload is JSON (UTF-8) or raw bytes, passed as pointer + length; a buffer
//!   returned by the plugin is freed by the plugin's own `free_buffer` (its allocator);
//! - calls on one instance are never concurrent (they may come from any thread), and
//!   they should return quickly: the host serves every plugin from one task;
//! - topics are relative to the installation's base prefix (`relays/pump/state`, not
//!   `pvbus/relays/pump/state`): a plugin cannot write outside its installation;
//! - the host never unloads a library (Rust libraries with thread-local destructors
//!   crash when unloaded).

// FFI needs raw pointers and exported symbols; unsafe is allowed here and nowhere else.
#[allow(unsafe_code)]
pub mod ffi;

use serde::{Deserialize, Serialize};

pub use ffi::{ABI_VERSION, ENTRY_SYMBOL, PluginVTable, Status};

/// What the host tells a plugin when it starts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// The plugin's id (`[[plugins.dylib]] id`): its devices are published under it.
    pub id: String,
    /// The installation's base prefix (`pvbus`), for messages; topics are relative to it.
    pub base: String,
    /// The plugin's own table of the configuration (`[plugins.dylib.config]`), as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// One publication asked for by a plugin. `topic` is relative to the base prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub topic: String,
    pub payload: String,
    #[serde(default)]
    pub retain: bool,
}

/// What a call asks the host to do. Serialised as JSON across the boundary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actions {
    /// Topic filters to subscribe to (relative to the base prefix); messages on them
    /// arrive through `on_message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Publication>,
    /// Device readings: the host adds `ts` and publishes them, retained, on
    /// `<base>/<plugin id>/<device>/state` (Home Assistant and the rules find them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<DeviceState>,
}

/// The readings of one device of the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    pub device: String,
    /// A JSON object of readings, named and in units as docs/topics.md says.
    pub readings: serde_json::Map<String, serde_json::Value>,
}

impl Actions {
    pub fn subscribe(&mut self, filter: impl Into<String>) {
        self.subscribe.push(filter.into());
    }

    pub fn publish(&mut self, topic: impl Into<String>, payload: impl Into<String>) {
        self.publish.push(Publication {
            topic: topic.into(),
            payload: payload.into(),
            retain: false,
        });
    }

    pub fn publish_retained(&mut self, topic: impl Into<String>, payload: impl Into<String>) {
        self.publish.push(Publication {
            topic: topic.into(),
            payload: payload.into(),
            retain: true,
        });
    }

    /// Publishes a device's readings. `readings` should be a JSON object; anything else is
    /// published as `{"value": ...}`.
    pub fn state(&mut self, device: impl Into<String>, readings: serde_json::Value) {
        let readings = match readings {
            serde_json::Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        self.states.push(DeviceState {
            device: device.into(),
            readings,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.publish.is_empty() && self.states.is_empty()
    }
}

/// A plugin written in Rust. The export macro wraps every method in `catch_unwind`;
/// an `Err` is logged by the host (the plugin keeps running), a panic marks the plugin
/// failed (the host stops calling it and keeps the others running).
pub trait DylibPlugin: Sized + 'static {
    /// Creates the plugin; `out` may already subscribe and publish.
    fn start(start: &Start, out: &mut Actions) -> Result<Self, String>;

    /// A message on one of the subscribed topics (`topic` relative to the base prefix).
    fn on_message(
        &mut self,
        _topic: &str,
        _payload: &[u8],
        _out: &mut Actions,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Called every `tick_secs` (configuration), with the unix time in seconds.
    fn on_tick(&mut self, _now: u64, _out: &mut Actions) -> Result<(), String> {
        Ok(())
    }
}

/// Exports `$plugin` (a type implementing [`DylibPlugin`]) as the library's plugin:
/// emits the `pvbus_plugin_entry` symbol returning a static [`PluginVTable`]. Use it once,
/// in a crate built with `crate-type = ["cdylib"]`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::__export_plugin_with_abi!($plugin, $crate::ABI_VERSION);
    };
}

/// [`export_plugin!`] with a chosen ABI version: only for testing the host's refusal of a
/// library built against another version of this crate.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_with_abi {
    ($plugin:ty, $abi:expr) => {
        static __PVBUS_PLUGIN_VTABLE: $crate::PluginVTable = $crate::ffi::vtable::<$plugin>($abi);

        /// The entry point the host looks up: a pointer to this library's vtable.
        // An exported, unmangled symbol is how a host finds a dynamic library's entry
        // point; the function only returns the address of a static.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn pvbus_plugin_entry() -> *const $crate::PluginVTable {
            &__PVBUS_PLUGIN_VTABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_as_json() {
        let mut a = Actions::default();
        a.subscribe("relays/+/state");
        a.publish_retained("probe/x", "1");
        a.state("cellar", serde_json::json!({"temperature": 12.5}));
        a.state("raw", serde_json::json!(3));
        let json = serde_json::to_string(&a).unwrap();
        let back: Actions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.states[1].readings["value"], serde_json::json!(3));
        assert_eq!(serde_json::to_string(&Actions::default()).unwrap(), "{}");
    }
}
