//! The host functions a plugin calls, and the table that carries them. Every body runs under
//! `guarded`: nothing unwinds into C, and the opaque pointers are cast back only to the `Call`
//! of the running `handle`.

use std::ffi::c_void;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use cella_shared::abi::{
    CellaHost, CellaRequest, CellaResponse, CellaStatus, CellaStr, CELLA_ABI_VERSION,
};

use super::{Call, LOG_BYTES_MAX};
use crate::cancel;
use crate::net::TcpStream;

/// Runs a host function's body, turning a panic into `Internal` and a clean cancellation into
/// `Cancelled`: nothing unwinds into C.
fn guarded(
    call: *const c_void,
    body: impl FnOnce(&mut Call<'_, '_>) -> CellaStatus,
) -> CellaStatus {
    if call.is_null() {
        return CellaStatus::NullArgument;
    }
    // The runtime's code, not the plugin's: not preempted halfway.
    let _section = cella_arena::RuntimeSection::enter();
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
pub(super) static HOST: CellaHost = CellaHost {
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
