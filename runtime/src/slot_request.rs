//! Moving a parsed request into its slot: the head is copied into the slot's arena and the
//! header table rebased onto the copy, so the handler's [`Request`] borrows only slot memory
//! and the connection's read buffer is free for the body and pipelined requests.
//!
//! The [`Request<'static>`] handed to a handler is a lie the runtime keeps true: everything it
//! points to lives in the slot's arena (or is static), and the runtime drops the handler's
//! response before it wipes the slot.

use std::alloc::Layout;
use std::net::SocketAddr;

use cella_arena::{AllocError, Arena};
use http::Method;

use crate::handler::{Params, Request};
use crate::http::parse::Head;

#[derive(Clone, Copy, Debug)]
struct RawStr {
    ptr: *const u8,
    len: usize,
}

impl RawStr {
    /// # Safety
    /// The bytes must be valid UTF-8 and live as long as the returned `str` is used.
    unsafe fn get(self) -> &'static str {
        // SAFETY: caller's contract.
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

/// A request whose every byte is in its slot's arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRequest {
    method: RawStr,
    path: RawStr,
    query: Option<RawStr>,
    headers: *const httparse::Header<'static>,
    headers_len: usize,
    body: RawStr,
    minor_version: u8,
    remote: SocketAddr,
    arena: *const Arena,
}

impl RawRequest {
    /// Copies `head_bytes` (the head `head` was parsed from, with its fields in `headers`) into
    /// `arena`.
    pub(crate) fn copy_in(
        arena: &Arena,
        head_bytes: &[u8],
        head: &Head<'_>,
        headers: &[httparse::Header<'_>],
        path: &str,
        query: Option<&str>,
        remote: SocketAddr,
    ) -> Result<RawRequest, AllocError> {
        let copy = arena.try_alloc_slice_copy(head_bytes)?;
        let base = head_bytes.as_ptr() as usize;
        let copy_base = copy.as_ptr();
        let rebase = |text: &str| -> RawStr {
            let offset = text.as_ptr() as usize - base;
            debug_assert!(offset + text.len() <= head_bytes.len(), "fields lie inside the head");
            // SAFETY: `offset + len` is within the head, and the copy has the head's length.
            RawStr { ptr: unsafe { copy_base.add(offset) }, len: text.len() }
        };
        let table = arena
            .try_alloc_layout(
                Layout::array::<httparse::Header<'static>>(headers.len())
                    .map_err(|_| AllocError)?,
            )?
            .cast::<httparse::Header<'static>>();
        for (index, header) in headers.iter().enumerate() {
            let name = rebase(header.name);
            // SAFETY: header values are bytes of the head (httparse borrows them from it).
            let value = rebase(unsafe { std::str::from_utf8_unchecked(header.value) });
            // SAFETY: `table` has room for `headers.len()` entries; the rebased bytes live in
            // the arena copy, which outlives the request.
            unsafe {
                table.as_ptr().add(index).write(httparse::Header {
                    name: name.get(),
                    value: std::slice::from_raw_parts(value.ptr, value.len),
                });
            }
        }
        Ok(RawRequest {
            method: rebase(head.method),
            path: rebase(path),
            query: query.map(rebase),
            headers: table.as_ptr(),
            headers_len: headers.len(),
            body: RawStr { ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(), len: 0 },
            minor_version: head.minor_version,
            remote,
            arena,
        })
    }

    /// Makes the fully read `body` the request's body, giving back to `arena` what a chunked
    /// body's allocation did not use.
    pub(crate) fn set_body(&mut self, body: BodyBuf, arena: &Arena) {
        arena.try_resize_in_place(body.ptr, body.filled);
        self.body = RawStr { ptr: body.ptr, len: body.filled };
    }

    /// The request as the handler sees it.
    ///
    /// # Safety
    /// Must be called while the slot still holds this request (its arena not wiped) and the
    /// result used only until the slot's task ends.
    pub(crate) unsafe fn to_request(&self) -> Request<'static> {
        // SAFETY: every pointer is into the slot's arena (caller's contract); the method and
        // path were validated as UTF-8 tokens by httparse before being copied.
        unsafe {
            let method = self.method.get();
            Request {
                method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
                path: self.path.get(),
                query: self.query.map(|q| q.get()),
                minor_version: self.minor_version,
                headers: std::slice::from_raw_parts(self.headers, self.headers_len),
                body: std::slice::from_raw_parts(self.body.ptr, self.body.len),
                remote: self.remote,
                arena: &*self.arena,
                params: Params::default(),
            }
        }
    }
}

/// A request body being read into a span of the arena allocated for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyBuf {
    ptr: *mut u8,
    len: usize,
    pub(crate) filled: usize,
}

impl BodyBuf {
    pub(crate) fn alloc(arena: &Arena, len: usize) -> Result<BodyBuf, AllocError> {
        let ptr = arena.try_alloc_layout(Layout::array::<u8>(len).map_err(|_| AllocError)?)?;
        Ok(BodyBuf { ptr: ptr.as_ptr(), len, filled: 0 })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.filled == self.len
    }

    /// The part not yet read.
    pub(crate) fn unfilled(&mut self) -> &mut [u8] {
        // SAFETY: [ptr, ptr+len) is an arena allocation owned by this body alone until the
        // handler starts, and no other reference to it exists while the body is being read.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.filled), self.len - self.filled) }
    }
}
