//! The C ABI: loading a plugin (`cella serve --handler PATH.so`) and the host functions it
//! calls. Types are in `cella_shared::abi`; `runtime/include/cella.h` is generated from them.
//!
//! No unwind crosses the boundary in either direction: every host function runs its body under
//! `catch_unwind`. A clean cancellation (deadline, client gone) cannot unwind through C frames,
//! so host functions report it as `CellaStatus::Cancelled` and the unwind starts once `handle`
//! has returned. A hard cancellation (arena spent, stack overflow) abandons the C frames with
//! the rest of the slot's stack, which is sound: C frames have no destructors.

use std::ffi::{c_void, CStr, CString};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use cella_shared::abi::{
    CellaHost, CellaPlugin, CellaRequest, CellaResponse, CellaStatus, CellaStr, CELLA_ABI_VERSION,
    CELLA_PLUGIN_ENTRY_SYMBOL,
};

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
    /// The library's TLS module id (0: it has no thread-local storage).
    tls_module: usize,
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
        let mut tls_module: usize = 0;
        // SAFETY: dlinfo(3) with RTLD_DI_TLS_MODID writes a size_t (0 when the library has no
        // TLS) for a live handle.
        if unsafe {
            libc::dlinfo(library, libc::RTLD_DI_TLS_MODID, (&mut tls_module as *mut usize).cast())
        } != 0
        {
            return Err(fail(dlerror_text()));
        }
        if let Some(init) = descriptor.init {
            // SAFETY: per the ABI; `config` is valid for the call.
            let code = unsafe { init(&HOST, CellaStr::from_bytes(config.as_bytes())) };
            if code != 0 {
                return Err(fail(format!("its init returned {code}")));
            }
        }
        Ok(Plugin { descriptor, handle, tls_module })
    }

    /// Calls the plugin's `deinit`, once, after the last request.
    pub fn deinit(&self) {
        if let Some(deinit) = self.descriptor.deinit {
            // SAFETY: per the ABI.
            unsafe { deinit() };
        }
    }
}

impl Handler for Plugin {
    /// glibc allocates a dlopen'ed library's thread-local storage lazily, with malloc, the
    /// first time a thread touches it. Touch it here, on each worker before it is sealed, so that
    /// allocation is not made inside a request (where it would land in the arena and be wiped).
    fn prepare_thread(&self) {
        if self.tls_module != 0 {
            let index = TlsIndex { module: self.tls_module, offset: 0 };
            // SAFETY: a valid module id from dlinfo for a library that stays loaded.
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
            (self.handle)(&HOST, pointer as *const CellaRequest, pointer as *mut CellaResponse)
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

/// Runs a host function's body, turning a panic into `Internal` and a clean cancellation into
/// `Cancelled`: nothing unwinds into C.
fn guarded(
    call: *const c_void,
    body: impl FnOnce(&mut Call<'_, '_>) -> CellaStatus,
) -> CellaStatus {
    if call.is_null() {
        return CellaStatus::NullArgument;
    }
    // SAFETY: a non-null request/response pointer is the `Call` of the running `handle` (the
    // only thing the host ever passes), valid for the duration of that call.
    let call = unsafe { &mut *(call as *mut Call<'_, '_>) };
    if call.cancelled {
        return CellaStatus::Cancelled;
    }
    match panic::catch_unwind(AssertUnwindSafe(|| body(call))) {
        Ok(status) => status,
        Err(payload) if cancel::is_cancellation(payload.as_ref()) => {
            call.cancelled = true;
            CellaStatus::Cancelled
        }
        Err(_) => CellaStatus::Internal,
    }
}

/// Reads a `CellaStr` argument. `None` for a null pointer with a non-zero length.
fn bytes<'s>(text: CellaStr) -> Option<&'s [u8]> {
    if text.len == 0 {
        return Some(&[]);
    }
    if text.ptr.is_null() {
        return None;
    }
    // SAFETY: the plugin promises `len` readable bytes at `ptr` for the duration of the call.
    Some(unsafe { std::slice::from_raw_parts(text.ptr, text.len) })
}

fn text_arg(text: CellaStr) -> Result<&'static str, CellaStatus> {
    let raw = bytes(text).ok_or(CellaStatus::NullArgument)?;
    std::str::from_utf8(raw).map_err(|_| CellaStatus::InvalidArgument)
}

fn request_of<'c>(request: *const CellaRequest) -> Option<&'c Call<'c, 'c>> {
    // SAFETY: as in `guarded`.
    unsafe { (request as *const Call<'c, 'c>).as_ref() }
}

unsafe extern "C" fn request_method(request: *const CellaRequest) -> CellaStr {
    request_of(request)
        .map_or(CellaStr::EMPTY, |c| CellaStr::from_bytes(c.request.method().as_str().as_bytes()))
}

unsafe extern "C" fn request_path(request: *const CellaRequest) -> CellaStr {
    request_of(request)
        .map_or(CellaStr::EMPTY, |c| CellaStr::from_bytes(c.request.path().as_bytes()))
}

unsafe extern "C" fn request_query(request: *const CellaRequest) -> CellaStr {
    request_of(request).map_or(CellaStr::EMPTY, |c| {
        CellaStr::from_bytes(c.request.query().unwrap_or("").as_bytes())
    })
}

unsafe extern "C" fn request_body(request: *const CellaRequest) -> CellaStr {
    request_of(request).map_or(CellaStr::EMPTY, |c| CellaStr::from_bytes(c.request.body()))
}

unsafe extern "C" fn request_header_count(request: *const CellaRequest) -> usize {
    request_of(request).map_or(0, |c| c.request.headers().count())
}

unsafe extern "C" fn request_header(
    request: *const CellaRequest,
    name: CellaStr,
    value: *mut CellaStr,
) -> CellaStatus {
    guarded(request.cast(), |call| {
        let Ok(name) = text_arg(name) else { return CellaStatus::InvalidArgument };
        if value.is_null() {
            return CellaStatus::NullArgument;
        }
        match call.request.header_bytes(name) {
            Some(found) => {
                // SAFETY: `value` is non-null and writable (ABI contract).
                unsafe { value.write(CellaStr::from_bytes(found)) };
                CellaStatus::Ok
            }
            None => CellaStatus::NotFound,
        }
    })
}

unsafe extern "C" fn request_header_at(
    request: *const CellaRequest,
    index: usize,
    name: *mut CellaStr,
    value: *mut CellaStr,
) -> CellaStatus {
    guarded(request.cast(), |call| {
        if name.is_null() || value.is_null() {
            return CellaStatus::NullArgument;
        }
        match call.request.headers().nth(index) {
            Some((found_name, found_value)) => {
                // SAFETY: both pointers are non-null and writable (ABI contract).
                unsafe {
                    name.write(CellaStr::from_bytes(found_name.as_bytes()));
                    value.write(CellaStr::from_bytes(found_value));
                }
                CellaStatus::Ok
            }
            None => CellaStatus::NotFound,
        }
    })
}

unsafe extern "C" fn response_set_status(response: *mut CellaResponse, status: u16) -> CellaStatus {
    guarded(response.cast(), |call| {
        if !(100..=999).contains(&status) {
            return CellaStatus::InvalidArgument;
        }
        call.status = status;
        CellaStatus::Ok
    })
}

unsafe extern "C" fn response_add_header(
    response: *mut CellaResponse,
    name: CellaStr,
    value: CellaStr,
) -> CellaStatus {
    guarded(response.cast(), |call| {
        let (Ok(name), Ok(value)) = (text_arg(name), text_arg(value)) else {
            return CellaStatus::InvalidArgument;
        };
        call.headers.push((name.to_string(), value.to_string()));
        CellaStatus::Ok
    })
}

unsafe extern "C" fn response_write(response: *mut CellaResponse, data: CellaStr) -> CellaStatus {
    guarded(response.cast(), |call| {
        let Some(data) = bytes(data) else { return CellaStatus::NullArgument };
        call.body.extend_from_slice(data);
        CellaStatus::Ok
    })
}

unsafe extern "C" fn arena_alloc(
    request: *const CellaRequest,
    size: usize,
    align: usize,
) -> *mut c_void {
    let Some(call) = request_of(request) else { return std::ptr::null_mut() };
    let Ok(layout) = std::alloc::Layout::from_size_align(size, align.max(1)) else {
        return std::ptr::null_mut();
    };
    call.request
        .arena()
        .try_alloc_layout(layout)
        .map_or(std::ptr::null_mut(), |p| p.as_ptr().cast())
}

unsafe extern "C" fn arena_alloc_or_cancel(
    request: *const CellaRequest,
    size: usize,
    align: usize,
) -> *mut c_void {
    // SAFETY: forwarded.
    let block = unsafe { arena_alloc(request, size, align) };
    if block.is_null() && request_of(request).is_some() {
        // SAFETY: we are on the handler's stack (a plugin call runs inside `handle`).
        unsafe { cancel::on_arena_exhausted(std::alloc::Layout::new::<u8>()) };
    }
    block
}

fn io_status(error: &std::io::Error) -> CellaStatus {
    match error.kind() {
        std::io::ErrorKind::TimedOut => CellaStatus::TimedOut,
        std::io::ErrorKind::InvalidInput => CellaStatus::InvalidArgument,
        _ => CellaStatus::Io,
    }
}

unsafe extern "C" fn tcp_connect(
    request: *const CellaRequest,
    address: CellaStr,
    timeout_ms: u32,
    socket: *mut u32,
) -> CellaStatus {
    guarded(request.cast(), |call| {
        let Ok(address) = text_arg(address) else { return CellaStatus::InvalidArgument };
        let Ok(address) = address.parse::<SocketAddr>() else {
            return CellaStatus::InvalidArgument;
        };
        if socket.is_null() {
            return CellaStatus::NullArgument;
        }
        let Some(index) = call.sockets.iter().position(Option::is_none) else {
            return CellaStatus::NotAllowed;
        };
        match TcpStream::connect(address, Duration::from_millis(u64::from(timeout_ms))) {
            Ok(stream) => {
                call.sockets[index] = Some(stream);
                // SAFETY: non-null and writable (ABI contract).
                unsafe { socket.write(index as u32) };
                CellaStatus::Ok
            }
            Err(error) => io_status(&error),
        }
    })
}

fn socket_of<'c>(
    call: &'c mut Call<'_, '_>,
    socket: u32,
    timeout_ms: u32,
) -> Result<&'c mut TcpStream, CellaStatus> {
    let stream = call
        .sockets
        .get_mut(socket as usize)
        .and_then(Option::as_mut)
        .ok_or(CellaStatus::NotFound)?;
    stream.set_timeout(Duration::from_millis(u64::from(timeout_ms)));
    Ok(stream)
}

unsafe extern "C" fn tcp_read(
    request: *const CellaRequest,
    socket: u32,
    buffer: *mut u8,
    capacity: usize,
    timeout_ms: u32,
    read: *mut usize,
) -> CellaStatus {
    guarded(request.cast(), |call| {
        if buffer.is_null() || read.is_null() {
            return CellaStatus::NullArgument;
        }
        let stream = match socket_of(call, socket, timeout_ms) {
            Ok(stream) => stream,
            Err(status) => return status,
        };
        // SAFETY: the plugin promises `capacity` writable bytes at `buffer` during the call.
        let buffer = unsafe { std::slice::from_raw_parts_mut(buffer, capacity) };
        match stream.read(buffer) {
            Ok(n) => {
                // SAFETY: non-null and writable (checked above).
                unsafe { read.write(n) };
                CellaStatus::Ok
            }
            Err(error) => io_status(&error),
        }
    })
}

unsafe extern "C" fn tcp_write(
    request: *const CellaRequest,
    socket: u32,
    data: CellaStr,
    timeout_ms: u32,
) -> CellaStatus {
    guarded(request.cast(), |call| {
        let Some(data) = bytes(data) else { return CellaStatus::NullArgument };
        let stream = match socket_of(call, socket, timeout_ms) {
            Ok(stream) => stream,
            Err(status) => return status,
        };
        match stream.write_all(data) {
            Ok(()) => CellaStatus::Ok,
            Err(error) if error.kind() == std::io::ErrorKind::WriteZero => CellaStatus::Closed,
            Err(error) => io_status(&error),
        }
    })
}

unsafe extern "C" fn tcp_close(request: *const CellaRequest, socket: u32) -> CellaStatus {
    guarded(request.cast(), |call| {
        match call.sockets.get_mut(socket as usize).and_then(Option::take) {
            Some(stream) => {
                drop(stream);
                CellaStatus::Ok
            }
            None => CellaStatus::NotFound,
        }
    })
}

unsafe extern "C" fn log(_request: *const CellaRequest, message: CellaStr) {
    let Some(message) = bytes(message) else { return };
    let mut line = [0u8; LOG_BYTES_MAX + 16];
    let prefix = b"cella: plugin: ";
    line[..prefix.len()].copy_from_slice(prefix);
    let mut len = prefix.len();
    for &byte in message.iter().take(LOG_BYTES_MAX.min(line.len() - len - 1)) {
        line[len] = if byte.is_ascii_control() { b'?' } else { byte };
        len += 1;
    }
    line[len] = b'\n';
    crate::sys::write_stderr(&line[..=len]);
}

/// The table every plugin gets.
static HOST: CellaHost = CellaHost {
    size: size_of::<CellaHost>() as u32,
    abi_version: CELLA_ABI_VERSION,
    request_method,
    request_path,
    request_query,
    request_header,
    request_header_count,
    request_header_at,
    request_body,
    response_set_status,
    response_add_header,
    response_write,
    arena_alloc,
    arena_alloc_or_cancel,
    tcp_connect,
    tcp_read,
    tcp_write,
    tcp_close,
    log,
};
