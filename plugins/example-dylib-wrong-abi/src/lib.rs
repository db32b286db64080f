//! An example plugin built against a newer version of the ABI, to show (and test)
//! that the host refuses it with a clear message instead of calling into a vtable it
//! would misread.

use pvbus_plugin_abi::{Actions, DylibPlugin, Start};

pub struct FromTheFuture;

impl DylibPlugin for FromTheFuture {
    fn start(_start: &Start, _out: &mut Actions) -> Result<Self, String> {
        Ok(FromTheFuture)
    }
}

pvbus_plugin_abi::__export_plugin_with_abi!(FromTheFuture, pvbus_plugin_abi::ABI_VERSION + 1);
