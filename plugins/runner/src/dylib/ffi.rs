//! The host's side of the C ABI: load a library, check its ABI version before trusting
//! anything else, and call it. The only unsafe code of this crate is here.
//!
//! Libraries are never unloaded, not even a refused one: a Rust library with
//! thread-local destructors crashes its host when unloaded, and a refused library has
//! already run its initialisers and entry point.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use pvbus_plugin_abi::ffi::OwnedBuffer;
use pvbus_plugin_abi::{ABI_VERSION, Actions, ENTRY_SYMBOL, PluginVTable, Status};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot load the library: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{path}: not a pvbus plugin: it has no `{ENTRY_SYMBOL}` symbol")]
    NoEntry { path: PathBuf },
    #[error("{path}: its `{ENTRY_SYMBOL}` returned no vtable (null)")]
    NullVTable { path: PathBuf },
    #[error(
        "{path}: refused: the library speaks plugin ABI version {found}, this pvbus speaks version {expected}; rebuild it against pvbus-plugin-abi with ABI version {expected}"
    )]
    WrongAbi {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}

/// A loaded library's vtable (the library stays loaded for the life of the process).
#[derive(Clone, Copy)]
pub struct Library {
    vtable: &'static PluginVTable,
}

/// What one call gave.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Ok(Actions),
    /// The plugin returned an error; it can be called again.
    Error(String),
    /// The plugin panicked (caught inside the library); never call it again.
    Panicked(String),
}

type Entry = extern "C" fn() -> *const PluginVTable;

impl Library {
    pub fn load(path: &Path) -> Result<Library, LoadError> {
        // SAFETY: loading a library runs its initialisers. The path comes from the
        // configuration, written by the person who installed the plugin: loading it is
        // exactly what they asked for.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // SAFETY: the symbol's type is the ABI's entry point type; a library that exports
        // the name with another type breaks the ABI contract, which the version check
        // below cannot protect against (no C ABI can).
        let entry: Entry = match unsafe { lib.get::<Entry>(ENTRY_SYMBOL.as_bytes()) } {
            Ok(symbol) => *symbol,
            Err(_) => {
                std::mem::forget(lib);
                return Err(LoadError::NoEntry {
                    path: path.to_path_buf(),
                });
            }
        };
        // Never unloaded (see the module's comment): the vtable and code stay valid for
        // the rest of the process, which makes the `'static` below sound.
        std::mem::forget(lib);
        let ptr = entry();
        if ptr.is_null() {
            return Err(LoadError::NullVTable {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: `abi_version` is the first field of the vtable in every version of the
        // ABI, so reading a u32 at the start is valid whatever the version; nothing else
        // is read before the version is known to match.
        let found = unsafe { ptr.cast::<u32>().read() };
        if found != ABI_VERSION {
            return Err(LoadError::WrongAbi {
                path: path.to_path_buf(),
                found,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: same version, so the same layout; the library is never unloaded.
        let vtable: &'static PluginVTable = unsafe { &*ptr };
        Ok(Library { vtable })
    }

    /// Starts one instance with `input` (the JSON of `Start`).
    pub fn start(&self, input: &[u8]) -> (Option<Instance>, Outcome) {
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut out = OwnedBuffer::empty();
        // SAFETY: the pointers are valid for the call: `input` is borrowed, `instance`
        // and `out` are ours. The ABI version was checked at load.
        let code =
            unsafe { (self.vtable.start)(input.as_ptr(), input.len(), &mut instance, &mut out) };
        let outcome = self.outcome(code, out);
        let instance =
            (matches!(outcome, Outcome::Ok(_)) && !instance.is_null()).then_some(Instance {
                library: *self,
                ptr: instance,
            });
        (instance, outcome)
    }

    /// Copies the call's output and gives the buffer back to the library's allocator.
    fn outcome(&self, code: i32, out: OwnedBuffer) -> Outcome {
        let bytes = if out.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the library filled `out` with a buffer of `len` initialised bytes.
            unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec()
        };
        // SAFETY: the buffer came from this library and is freed once.
        unsafe { (self.vtable.free_buffer)(out) };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match Status::from_code(code) {
            Some(Status::Ok) => match serde_json::from_slice::<Actions>(&bytes) {
                Ok(actions) => Outcome::Ok(actions),
                Err(e) => Outcome::Error(format!("returned actions that are not valid: {e}")),
            },
            Some(Status::Error) => Outcome::Error(text()),
            Some(Status::Panicked) => Outcome::Panicked(text()),
            None => Outcome::Error(format!("returned an unknown status code {code}")),
        }
    }
}

/// One running plugin instance.
pub struct Instance {
    library: Library,
    ptr: *mut c_void,
}

// SAFETY: the ABI's contract says an instance may be called from any thread as long as
// calls are not concurrent; `&mut self` on every call guarantees that.
unsafe impl Send for Instance {}

impl Instance {
    pub fn on_message(&mut self, topic: &str, payload: &[u8]) -> Outcome {
        let mut out = OwnedBuffer::empty();
        // SAFETY: `ptr` is the instance `start` returned; the slices are borrowed for the
        // call; `&mut self` makes calls exclusive.
        let code = unsafe {
            (self.library.vtable.on_message)(
                self.ptr,
                topic.as_ptr(),
                topic.len(),
                payload.as_ptr(),
                payload.len(),
                &mut out,
            )
        };
        self.library.outcome(code, out)
    }

    pub fn on_tick(&mut self, now: u64) -> Outcome {
        let mut out = OwnedBuffer::empty();
        // SAFETY: as in `on_message`.
        let code = unsafe { (self.library.vtable.on_tick)(self.ptr, now, &mut out) };
        self.library.outcome(code, out)
    }
}
