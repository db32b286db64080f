//! The boundary itself: the `#[repr(C)]` vtable, the buffers that cross it, and the
//! `extern "C"` functions that [`crate::export_plugin!`] exports for a Rust plugin. Every
//! exported function runs the plugin inside `catch_unwind`, so a panic is turned into
//! [`Status::Panicked`] instead of unwinding across `extern "C"` (which aborts the whole
//! host process since Rust 1.81).

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{Actions, DylibPlugin, Start};

/// The version of this ABI. Bump it on any change to [`PluginVTable`], to the meaning of
/// a status code or to the JSON of [`Start`]/[`Actions`] that an older host or plugin
/// would misread. The host refuses a library whose version differs.
pub const ABI_VERSION: u32 = 1;

/// The symbol the host looks up: `extern "C" fn() -> *const PluginVTable`.
pub const ENTRY_SYMBOL: &str = "pvbus_plugin_entry";

/// What a call returned. Travels as an `i32`; the host treats any other number as an
/// error of the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// The output buffer holds the JSON of [`Actions`].
    Ok = 0,
    /// The output buffer holds an error message (UTF-8); the plugin is still usable.
    Error = 1,
    /// The plugin panicked; the buffer holds the panic message. The instance may be
    /// inconsistent: the host never calls it again.
    Panicked = 2,
}

impl Status {
    pub fn from_code(code: i32) -> Option<Status> {
        match code {
            0 => Some(Status::Ok),
            1 => Some(Status::Error),
            2 => Some(Status::Panicked),
            _ => None,
        }
    }
}

/// Bytes allocated by the plugin and handed to the host, which copies them and gives
/// them back to the plugin's `free_buffer` (the plugin's allocator must free them).
#[repr(C)]
#[derive(Debug)]
pub struct OwnedBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl OwnedBuffer {
    pub const fn empty() -> OwnedBuffer {
        OwnedBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    fn from_vec(v: Vec<u8>) -> OwnedBuffer {
        let mut v = ManuallyDrop::new(v);
        OwnedBuffer {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }
}

/// The table of a plugin. `abi_version` must stay the first field in every version: the
/// host reads it before trusting anything else.
#[repr(C)]
pub struct PluginVTable {
    pub abi_version: u32,
    /// `start(input JSON of Start, &mut instance, &mut out) -> status`.
    pub start: unsafe extern "C" fn(
        input: *const u8,
        input_len: usize,
        instance: *mut *mut c_void,
        out: *mut OwnedBuffer,
    ) -> i32,
    /// `on_message(instance, topic, payload, &mut out) -> status`.
    pub on_message: unsafe extern "C" fn(
        instance: *mut c_void,
        topic: *const u8,
        topic_len: usize,
        payload: *const u8,
        payload_len: usize,
        out: *mut OwnedBuffer,
    ) -> i32,
    /// `on_tick(instance, unix seconds, &mut out) -> status`.
    pub on_tick:
        unsafe extern "C" fn(instance: *mut c_void, now: u64, out: *mut OwnedBuffer) -> i32,
    /// Frees a buffer this library returned.
    pub free_buffer: unsafe extern "C" fn(buffer: OwnedBuffer),
}

/// The vtable of a Rust plugin type (used by [`crate::export_plugin!`]).
pub const fn vtable<P: DylibPlugin>(abi_version: u32) -> PluginVTable {
    PluginVTable {
        abi_version,
        start: start::<P>,
        on_message: on_message::<P>,
        on_tick: on_tick::<P>,
        free_buffer,
    }
}

/// Runs `f` so that nothing unwinds out of it, and writes its outcome into `out`.
fn guarded(out: *mut OwnedBuffer, f: impl FnOnce() -> Result<Actions, String>) -> i32 {
    let (status, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(actions)) => (
            Status::Ok,
            serde_json::to_vec(&actions).unwrap_or_else(|_| b"{}".to_vec()),
        ),
        Ok(Err(message)) => (Status::Error, message.into_bytes()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            // Dropping a panic payload can itself panic; forget it instead.
            std::mem::forget(panic);
            (Status::Panicked, message.into_bytes())
        }
    };
    if !out.is_null() {
        // SAFETY: the host passes a pointer to an OwnedBuffer it owns for the call.
        unsafe { out.write(OwnedBuffer::from_vec(bytes)) };
    }
    status as i32
}

/// # Safety
/// `ptr` must point to `len` readable bytes (or be anything when `len` is 0).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

unsafe extern "C" fn start<P: DylibPlugin>(
    input: *const u8,
    input_len: usize,
    instance: *mut *mut c_void,
    out: *mut OwnedBuffer,
) -> i32 {
    guarded(out, || {
        if instance.is_null() {
            return Err("start: no place for the instance (null pointer)".into());
        }
        // SAFETY: the host passes the bytes of its input for the duration of the call.
        let input = unsafe { bytes(input, input_len) };
        let start: Start =
            serde_json::from_slice(input).map_err(|e| format!("start parameters: {e}"))?;
        let mut actions = Actions::default();
        let plugin = P::start(&start, &mut actions)?;
        // SAFETY: checked non-null above; the host owns that slot.
        unsafe { instance.write(Box::into_raw(Box::new(plugin)).cast()) };
        Ok(actions)
    })
}

/// # Safety
/// `instance` must come from `start::<P>` of this library, and not be used concurrently.
unsafe fn plugin<'a, P>(instance: *mut c_void) -> Result<&'a mut P, String> {
    if instance.is_null() {
        return Err("called without an instance (null pointer)".into());
    }
    // SAFETY: the caller's contract: a live Box<P> made by `start`.
    Ok(unsafe { &mut *instance.cast::<P>() })
}

unsafe extern "C" fn on_message<P: DylibPlugin>(
    instance: *mut c_void,
    topic: *const u8,
    topic_len: usize,
    payload: *const u8,
    payload_len: usize,
    out: *mut OwnedBuffer,
) -> i32 {
    guarded(out, || {
        // SAFETY: the host passes the instance `start` gave it, and its own buffers.
        let plugin = unsafe { plugin::<P>(instance) }?;
        let (topic, payload) = unsafe { (bytes(topic, topic_len), bytes(payload, payload_len)) };
        let topic = std::str::from_utf8(topic).map_err(|_| "topic is not UTF-8".to_string())?;
        let mut actions = Actions::default();
        plugin.on_message(topic, payload, &mut actions)?;
        Ok(actions)
    })
}

unsafe extern "C" fn on_tick<P: DylibPlugin>(
    instance: *mut c_void,
    now: u64,
    out: *mut OwnedBuffer,
) -> i32 {
    guarded(out, || {
        // SAFETY: the host passes the instance `start` gave it.
        let plugin = unsafe { plugin::<P>(instance) }?;
        let mut actions = Actions::default();
        plugin.on_tick(now, &mut actions)?;
        Ok(actions)
    })
}

unsafe extern "C" fn free_buffer(buffer: OwnedBuffer) {
    if !buffer.ptr.is_null() {
        // SAFETY: the buffer was made by `OwnedBuffer::from_vec` in this library and is
        // given back exactly once by the host.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl DylibPlugin for Echo {
        fn start(start: &Start, out: &mut Actions) -> Result<Self, String> {
            if start.config.get("refuse").is_some() {
                return Err("refused by configuration".into());
            }
            out.subscribe("x/+");
            Ok(Echo)
        }
        fn on_message(&mut self, topic: &str, _p: &[u8], out: &mut Actions) -> Result<(), String> {
            if topic == "x/panic" {
                panic!("asked to panic on {topic}");
            }
            out.publish("y", topic);
            Ok(())
        }
    }

    fn take(table: &PluginVTable, buf: OwnedBuffer) -> String {
        let copy = unsafe { bytes(buf.ptr, buf.len) }.to_vec();
        unsafe { (table.free_buffer)(buf) };
        String::from_utf8(copy).unwrap()
    }

    // The same calls the host makes, in-process: errors and panics come back as codes.
    #[test]
    fn calls_are_guarded_and_return_json() {
        let table = vtable::<Echo>(ABI_VERSION);
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut out = OwnedBuffer::empty();
        let input = br#"{"id":"e","base":"pvbus","config":{}}"#;
        let code = unsafe { (table.start)(input.as_ptr(), input.len(), &mut instance, &mut out) };
        assert_eq!(Status::from_code(code), Some(Status::Ok));
        assert_eq!(take(&table, out), r#"{"subscribe":["x/+"]}"#);

        let mut out = OwnedBuffer::empty();
        let code = unsafe {
            (table.on_message)(instance, b"x/a".as_ptr(), 3, std::ptr::null(), 0, &mut out)
        };
        assert_eq!(Status::from_code(code), Some(Status::Ok));
        assert!(take(&table, out).contains(r#""payload":"x/a""#));

        let mut out = OwnedBuffer::empty();
        let code = unsafe {
            (table.on_message)(
                instance,
                b"x/panic".as_ptr(),
                7,
                std::ptr::null(),
                0,
                &mut out,
            )
        };
        assert_eq!(Status::from_code(code), Some(Status::Panicked));
        assert_eq!(take(&table, out), "asked to panic on x/panic");

        let mut out = OwnedBuffer::empty();
        let bad = b"not json";
        let mut other: *mut c_void = std::ptr::null_mut();
        let code = unsafe { (table.start)(bad.as_ptr(), bad.len(), &mut other, &mut out) };
        assert_eq!(Status::from_code(code), Some(Status::Error));
        assert!(take(&table, out).starts_with("start parameters:"));
        assert!(other.is_null());

        let mut out = OwnedBuffer::empty();
        let code = unsafe { (table.on_tick)(std::ptr::null_mut(), 1, &mut out) };
        assert_eq!(Status::from_code(code), Some(Status::Error));
        assert!(take(&table, out).contains("null"));
    }
}
