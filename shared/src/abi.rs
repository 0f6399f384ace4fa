//! Types shared across the C ABI. `runtime/include/cella.h` is generated from this file by
//! cbindgen (a test fails when the committed header drifts).
//!
//! Contract, in short (docs/c-abi.md has the whole of it): strings cross as borrowed
//! `{ptr, len}` views, never NUL-terminated; every pointer the host hands a plugin is valid only
//! during the call that handed it out; no unwind ever crosses the boundary; every host function
//! checks its pointer arguments and returns a [`CellaStatus`].

use std::ffi::c_void;

/// The ABI version this host implements. A plugin built against another one is refused.
pub const CELLA_ABI_VERSION: u32 = 1;

/// A borrowed byte string: `len` bytes at `ptr` (not NUL-terminated). `ptr` may be null only
/// when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CellaStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl CellaStr {
    pub const EMPTY: CellaStr = CellaStr { ptr: std::ptr::null(), len: 0 };

    pub fn from_bytes(bytes: &[u8]) -> CellaStr {
        CellaStr { ptr: bytes.as_ptr(), len: bytes.len() }
    }
}

/// What a host function reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellaStatus {
    Ok = 0,
    /// A required pointer argument was null.
    NullArgument = 1,
    /// No such header, or no such socket.
    NotFound = 2,
    /// An argument was malformed (not UTF-8 where text is needed, a bad address, a bad status).
    InvalidArgument = 3,
    /// The request's arena is spent.
    OutOfMemory = 4,
    /// An I/O error on an outbound socket.
    Io = 5,
    /// An outbound operation ran past its timeout.
    TimedOut = 6,
    /// The peer closed the connection.
    Closed = 7,
    /// The request is being cancelled (its deadline passed, or its client went away): return
    /// from `handle` promptly; every later blocking call returns this too.
    Cancelled = 8,
    /// Called outside a request, or the request's socket table is full.
    NotAllowed = 9,
    /// A bug in the host; the call did nothing.
    Internal = 10,
}

/// A request, as the host hands it to `handle`. Opaque: use the host's functions.
pub struct CellaRequest {
    _opaque: [u8; 0],
}

/// The response being built by `handle`. Opaque: use the host's functions.
pub struct CellaResponse {
    _opaque: [u8; 0],
}

/// The functions the host offers a plugin. Passed to `init` and to every `handle` call; a plugin
/// needs no link-time symbol of the host.
#[repr(C)]
pub struct CellaHost {
    /// `sizeof(CellaHost)` as the host was built.
    pub size: u32,
    pub abi_version: u32,
    /// The request method (`GET`, ...).
    pub request_method: unsafe extern "C" fn(request: *const CellaRequest) -> CellaStr,
    /// The path, not percent-decoded, without the query.
    pub request_path: unsafe extern "C" fn(request: *const CellaRequest) -> CellaStr,
    /// The query string after `?` (empty when none).
    pub request_query: unsafe extern "C" fn(request: *const CellaRequest) -> CellaStr,
    /// The first header called `name` (case-insensitive) into `*value`; `NotFound` when none.
    pub request_header: unsafe extern "C" fn(
        request: *const CellaRequest,
        name: CellaStr,
        value: *mut CellaStr,
    ) -> CellaStatus,
    pub request_header_count: unsafe extern "C" fn(request: *const CellaRequest) -> usize,
    /// The `index`-th header (in the order received); `NotFound` past the last.
    pub request_header_at: unsafe extern "C" fn(
        request: *const CellaRequest,
        index: usize,
        name: *mut CellaStr,
        value: *mut CellaStr,
    ) -> CellaStatus,
    /// The whole request body.
    pub request_body: unsafe extern "C" fn(request: *const CellaRequest) -> CellaStr,
    /// Sets the status (100..=999; default 200).
    pub response_set_status:
        unsafe extern "C" fn(response: *mut CellaResponse, status: u16) -> CellaStatus,
    /// Adds a header (copied). Content-Length is the host's and is dropped.
    pub response_add_header: unsafe extern "C" fn(
        response: *mut CellaResponse,
        name: CellaStr,
        value: CellaStr,
    ) -> CellaStatus,
    /// Appends to the body (copied into the request's arena).
    pub response_write:
        unsafe extern "C" fn(response: *mut CellaResponse, bytes: CellaStr) -> CellaStatus,
    /// `size` bytes aligned to `align` (a power of two) from the request's arena; NULL when the
    /// arena is spent. Freed with the request.
    pub arena_alloc: unsafe extern "C" fn(
        request: *const CellaRequest,
        size: usize,
        align: usize,
    ) -> *mut c_void,
    /// As `arena_alloc`, but a spent arena cancels the request (its client gets a 500): it
    /// never returns NULL.
    pub arena_alloc_or_cancel: unsafe extern "C" fn(
        request: *const CellaRequest,
        size: usize,
        align: usize,
    ) -> *mut c_void,
    /// Connects to `address` (`IP:PORT`) within `timeout_ms`; only this request waits. The
    /// socket is closed with the request if the plugin does not close it.
    pub tcp_connect: unsafe extern "C" fn(
        request: *const CellaRequest,
        address: CellaStr,
        timeout_ms: u32,
        socket: *mut u32,
    ) -> CellaStatus,
    /// Reads at most `capacity` bytes; `*read` is 0 at end of stream.
    pub tcp_read: unsafe extern "C" fn(
        request: *const CellaRequest,
        socket: u32,
        buffer: *mut u8,
        capacity: usize,
        timeout_ms: u32,
        read: *mut usize,
    ) -> CellaStatus,
    /// Writes all of `bytes`.
    pub tcp_write: unsafe extern "C" fn(
        request: *const CellaRequest,
        socket: u32,
        bytes: CellaStr,
        timeout_ms: u32,
    ) -> CellaStatus,
    pub tcp_close: unsafe extern "C" fn(request: *const CellaRequest, socket: u32) -> CellaStatus,
    /// Logs one line (at most 200 bytes of it; control bytes replaced) to the server's stderr.
    pub log: unsafe extern "C" fn(request: *const CellaRequest, message: CellaStr),
}

/// What a plugin's entry symbol, `cella_plugin_entry`, returns. The host checks `size` and
/// `abi_version` before anything else.
#[repr(C)]
pub struct CellaPlugin {
    /// `sizeof(CellaPlugin)` as the plugin was built.
    pub size: u32,
    /// `CELLA_ABI_VERSION` as the plugin was built.
    pub abi_version: u32,
    /// Called once at startup, before the server accepts; gets the text of the config file's
    /// `[plugin]` section (empty when none). Non-zero refuses startup. May be NULL.
    pub init: Option<unsafe extern "C" fn(host: *const CellaHost, config: CellaStr) -> i32>,
    /// Called once at shutdown, after the last request. May be NULL.
    pub deinit: Option<unsafe extern "C" fn()>,
    /// Handles one request; runs on several workers at once.
    pub handle: Option<
        unsafe extern "C" fn(
            host: *const CellaHost,
            request: *const CellaRequest,
            response: *mut CellaResponse,
        ),
    >,
}

/// The name of the one symbol a plugin exports.
pub const CELLA_PLUGIN_ENTRY_SYMBOL: &str = "cella_plugin_entry";

// The one symbol a plugin exports, declared for the C header (cbindgen emits it with C linkage,
// inside the include guard). The host never links against it: it finds it with `dlsym` by
// `CELLA_PLUGIN_ENTRY_SYMBOL`.
extern "C" {
    /// The one symbol a plugin exports: returns its static descriptor.
    pub fn cella_plugin_entry() -> *const CellaPlugin;
}
