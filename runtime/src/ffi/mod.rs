//! The C ABI: loading a plugin (`cella serve --handler PATH.so`) and the host functions it
//! calls. Types are in `cella_shared::abi`; `runtime/include/cella.h` is generated from them.
//!
//! No unwind crosses the boundary in either direction: every host function runs its body under
//! `catch_unwind`. A clean cancellation (deadline, client gone) cannot unwind through C frames,
//! so host functions report it as `CellaStatus::Cancelled` and the unwind starts once `handle`
//! has returned. A hard cancellation (arena spent, stack overflow) abandons the C frames with
//! the rest of the slot's stack, which is sound: C frames have no destructors.

use std::ffi::{c_void, CStr, CString};

use cella_shared::abi::{
    CellaHost, CellaPlugin, CellaRequest, CellaResponse, CellaStr, CELLA_ABI_VERSION,
    CELLA_PLUGIN_ENTRY_SYMBOL,
};

mod host;

use crate::cancel;
use crate::handler::{Handler, Request, Response, StatusCode};
use crate::net::TcpStream;

/// Room for socket handles in one plugin call: the hard ceiling of `slot_sockets_max`, which is
/// what really limits a request (its slot's socket table refuses more).
const PLUGIN_SOCKETS_MAX: usize = cella_shared::limits::SLOT_SOCKETS_MAX;
/// Longest log line a plugin may write (the rest is cut).
const LOG_BYTES_MAX: usize = 200;

/// What `*const CellaRequest` and `*mut CellaResponse` point to during one `handle` call.
struct Call<'r, 'a> {
    request: &'r Request<'a>,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    sockets: [Option<TcpStream>; PLUGIN_SOCKETS_MAX],
    cancelled: bool,
}

/// Why a plugin could not be loaded; the message names the library.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// A loaded plugin. Never unloaded while serving (the library stays mapped until exit).
pub struct Plugin {
    descriptor: &'static CellaPlugin,
    handle: unsafe extern "C" fn(*const CellaHost, *const CellaRequest, *mut CellaResponse),
    /// The TLS module ids of every loaded library with thread-local storage, the plugin's and
    /// its dependencies' (a C++ plugin's libstdc++ keeps its exception state there).
    tls_modules: Vec<usize>,
}

/// glibc's argument to `__tls_get_addr` (the x86_64 psABI's `tls_index`).
#[repr(C)]
struct TlsIndex {
    module: usize,
    offset: usize,
}

extern "C" {
    /// Returns this thread's address of a module's TLS block, allocating it (with malloc) on
    /// the thread's first access.
    fn __tls_get_addr(index: *const TlsIndex) -> *mut c_void;
}

// SAFETY: the descriptor is immutable static data of the loaded library, and the ABI contract
// requires `handle` to be callable from several threads at once (docs/c-abi.md).
unsafe impl Send for Plugin {}
// SAFETY: as above.
unsafe impl Sync for Plugin {}

fn dlerror_text() -> String {
    // SAFETY: dlerror(3) returns null or a NUL-terminated message owned by libdl.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "unknown error".to_string();
    }
    // SAFETY: non-null, NUL-terminated (see above).
    unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
}

impl Plugin {
    /// Loads `path` (RTLD_NOW | RTLD_LOCAL), checks its descriptor, and calls its `init` with
    /// `config` (the text of the config file's `[plugin]` section).
    pub fn load(path: &str, config: &str) -> Result<Plugin, LoadError> {
        let fail = |why: String| LoadError(format!("cannot load plugin {path}: {why}"));
        if !std::path::Path::new(path).exists() {
            return Err(fail("no such file".to_string()));
        }
        let c_path = CString::new(path).map_err(|_| fail("the path contains a NUL byte".into()))?;
        // SAFETY: dlopen(3) with a NUL-terminated path; the library is never closed.
        let library = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if library.is_null() {
            return Err(fail(dlerror_text()));
        }
        let symbol = CString::new(CELLA_PLUGIN_ENTRY_SYMBOL).expect("no NUL in the symbol name");
        // SAFETY: dlsym(3) on a live handle with a NUL-terminated name.
        let entry = unsafe { libc::dlsym(library, symbol.as_ptr()) };
        if entry.is_null() {
            return Err(fail(format!("it does not export `{CELLA_PLUGIN_ENTRY_SYMBOL}`")));
        }
        // SAFETY: the ABI defines the entry symbol as `const CellaPlugin *(void)`.
        let entry: unsafe extern "C" fn() -> *const CellaPlugin =
            unsafe { std::mem::transmute(entry) };
        // SAFETY: calling the plugin's entry, per the ABI; it returns static data or null.
        let descriptor =
            unsafe { entry().as_ref() }.ok_or_else(|| fail("its entry returned NULL".into()))?;
        // The first two fields are read before anything else, whatever the plugin's version.
        if descriptor.abi_version != CELLA_ABI_VERSION {
            return Err(fail(format!(
                "ABI version mismatch: this host implements version {CELLA_ABI_VERSION}, the plugin was built for version {}",
                descriptor.abi_version
            )));
        }
        if (descriptor.size as usize) < size_of::<CellaPlugin>() {
            return Err(fail(format!(
                "descriptor size mismatch: expected at least {} bytes, found {}",
                size_of::<CellaPlugin>(),
                descriptor.size
            )));
        }
        let handle =
            descriptor.handle.ok_or_else(|| fail("its descriptor has no `handle`".into()))?;
        let tls_modules = loaded_tls_modules();
        if let Some(init) = descriptor.init {
            // SAFETY: per the ABI; `config` is valid for the call.
            let code = unsafe { init(&host::HOST, CellaStr::from_bytes(config.as_bytes())) };
            if code != 0 {
                return Err(fail(format!("its init returned {code}")));
            }
        }
        Ok(Plugin { descriptor, handle, tls_modules })
    }

    /// Calls the plugin's `deinit`, once, after the last request.
    pub fn deinit(&self) {
        if let Some(deinit) = self.descriptor.deinit {
            // SAFETY: per the ABI.
            unsafe { deinit() };
        }
    }
}

/// The TLS module ids of every loaded object that has thread-local storage (the executable's
/// and the startup libraries' are in static TLS: touching them allocates nothing).
fn loaded_tls_modules() -> Vec<usize> {
    unsafe extern "C" fn collect(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        modules: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr(3) passes a valid `info` for the call, and `modules` is the
        // `Vec` passed below, borrowed for the whole iteration.
        unsafe {
            let module = (*info).dlpi_tls_modid;
            if module != 0 {
                (*modules.cast::<Vec<usize>>()).push(module);
            }
        }
        0
    }
    let mut modules: Vec<usize> = Vec::new();
    // SAFETY: the callback matches dl_iterate_phdr(3)'s signature and only pushes to `modules`.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&mut modules as *mut Vec<usize>).cast()) };
    modules
}

impl Handler for Plugin {
    /// glibc allocates a dlopen'ed library's thread-local storage lazily, with malloc, the
    /// first time a thread touches it. Touch it here, for the plugin and every library loaded
    /// with it, on each worker before it is sealed, so that allocation is not made inside a
    /// request (where it would land in the arena and be wiped: a C++ plugin's second exception
    /// on a worker would use libstdc++'s wiped exception state).
    fn prepare_thread(&self) {
        for &module in &self.tls_modules {
            let index = TlsIndex { module, offset: 0 };
            // SAFETY: a module id dl_iterate_phdr reported for a library that stays loaded
            // (plugins and their dependencies are never unloaded).
            unsafe { __tls_get_addr(&index) };
        }
    }

    fn handle<'a>(&'a self, request: &Request<'a>) -> Response<'a> {
        let mut call = Call {
            request,
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            sockets: std::array::from_fn(|_| None),
            cancelled: false,
        };
        let pointer = &mut call as *mut Call<'_, 'a>;
        // SAFETY: `call` outlives the call; the plugin gets it only as opaque pointers, and the
        // host functions cast them back to `Call` (the only type ever passed).
        unsafe {
            (self.handle)(
                &host::HOST,
                pointer as *const CellaRequest,
                pointer as *mut CellaResponse,
            )
        };
        if call.cancelled {
            drop(call);
            cancel::unwind_cancelled();
        }
        let status = StatusCode::from_u16(call.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(status).body(std::mem::take(&mut call.body));
        for (name, value) in std::mem::take(&mut call.headers) {
            response = response.header(name, value);
        }
        response
    }
}
