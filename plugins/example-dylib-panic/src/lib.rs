//! An example plugin that panics at its first tick, to show (and test) that the host
//! contains it: the panic is caught inside the library, the host marks the plugin failed
//! and keeps the others running.

use pvbus_plugin_abi::{Actions, DylibPlugin, Start, export_plugin};

pub struct Panicky;

impl DylibPlugin for Panicky {
    fn start(_start: &Start, out: &mut Actions) -> Result<Self, String> {
        out.state("fragile", serde_json::json!({"alive": true}));
        Ok(Panicky)
    }

    fn on_tick(&mut self, now: u64, _out: &mut Actions) -> Result<(), String> {
        panic!("the example plugin panics on purpose at {now}");
    }
}

export_plugin!(Panicky);
