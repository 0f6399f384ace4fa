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

use crate::handler::Request;
use crate::http::parse::{Head, PathPart};

#[derive(Clone, Copy, Debug)]
struct RawStr {
    ptr: *const u8,
    len: usize,
}

impl RawStr {
    fn of(bytes: &[u8]) -> RawStr {
        RawStr { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// # Safety
    /// The bytes must live as long as the returned slice is used.
    unsafe fn bytes(self) -> &'static [u8] {
        // SAFETY: caller's contract; `ptr`/`len` came from one live slice.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// # Safety
    /// As [`RawStr::bytes`], and the bytes must be valid UTF-8.
    unsafe fn get(self) -> &'static str {
        // SAFETY: caller's contract.
        unsafe { std::str::from_utf8_unchecked(self.bytes()) }
    }
}

/// Why a parsed head could not be moved into its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyError {
    /// The arena cannot hold the head and its table.
    Alloc,
    /// A field the parser returned is not a part of the head (a parser bug): refused rather
    /// than followed.
    OutsideHead,
}

impl From<AllocError> for CopyError {
    fn from(_: AllocError) -> CopyError {
        CopyError::Alloc
    }
}

/// A request whose every byte is in its slot's arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRequest {
    /// The whole head, as received (for the access log).
    head: RawStr,
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

/// The copy of a head in the arena, and the way from a part of the original to the same part
/// of the copy: by offset, bounds-checked against the copy, so no result can point outside it.
struct HeadCopy<'a> {
    original: &'a [u8],
    copy: &'a [u8],
}

impl HeadCopy<'_> {
    fn locate(&self, part: &[u8]) -> Result<RawStr, CopyError> {
        let start = (part.as_ptr() as usize)
            .checked_sub(self.original.as_ptr() as usize)
            .ok_or(CopyError::OutsideHead)?;
        let end = start.checked_add(part.len()).ok_or(CopyError::OutsideHead)?;
        self.copy.get(start..end).map(RawStr::of).ok_or(CopyError::OutsideHead)
    }
}

impl RawRequest {
    /// Copies `head_bytes` (the head `head` was parsed from, with its fields in `headers`) into
    /// `arena`.
    /// Inlined: returned from a call, the request (~150 bytes) was copied twice more.
    #[inline(always)]
    pub(crate) fn copy_in(
        arena: &Arena,
        head_bytes: &[u8],
        head: &Head<'_>,
        headers: &[httparse::Header<'_>],
        remote: SocketAddr,
    ) -> Result<RawRequest, CopyError> {
        let copy = HeadCopy { original: head_bytes, copy: arena.try_alloc_slice_copy(head_bytes)? };
        let target = copy.locate(head.target.as_bytes())?;
        // The path and query are indexes into the target (never pointers), resolved against
        // the copy with bounds checks.
        // SAFETY: `target` points into `copy.copy`, which lives in the arena for this call.
        let target_copy = unsafe { target.bytes() };
        let in_target = |(start, end): (usize, usize)| {
            target_copy.get(start..end).map(RawStr::of).ok_or(CopyError::OutsideHead)
        };
        let path = match head.parts.path {
            PathPart::Range(start, end) => in_target((start, end))?,
            PathPart::Root => RawStr::of(b"/"),
            PathPart::Asterisk => RawStr::of(b"*"),
        };
        let query = head.parts.query.map(in_target).transpose()?;
        let table = arena
            .try_alloc_layout(
                Layout::array::<httparse::Header<'static>>(headers.len())
                    .map_err(|_| AllocError)?,
            )?
            .cast::<httparse::Header<'static>>();
        for (index, header) in headers.iter().enumerate() {
            let name = copy.locate(header.name.as_bytes())?;
            let value = copy.locate(header.value)?;
            // SAFETY: `table` has room for `headers.len()` entries; `name` and `value` are in
            // the arena copy, which outlives the request; the name's bytes are the same as
            // the original's, a `str` that httparse validated as a token.
            unsafe {
                table
                    .as_ptr()
                    .add(index)
                    .write(httparse::Header { name: name.get(), value: value.bytes() });
            }
        }
        Ok(RawRequest {
            head: RawStr::of(copy.copy),
            method: copy.locate(head.method.as_bytes())?,
            path,
            query,
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

    /// The request's head as it was received.
    ///
    /// # Safety
    /// Must be called while the slot still holds this request (its arena not wiped), and the
    /// bytes used only until then.
    pub(crate) unsafe fn head(&self) -> &'static [u8] {
        // SAFETY: the head's copy is in the slot's arena (caller's contract).
        unsafe { self.head.bytes() }
    }

    /// The request as the handler sees it.
    ///
    /// # Safety
    /// Must be called while the slot still holds this request (its arena not wiped) and the
    /// result used only until the slot's task ends.
    pub(crate) unsafe fn to_request(&self) -> Request<'static> {
        // SAFETY: every pointer is into the slot's arena or static (caller's contract); the
        // method, path and query are copies of `str`s httparse validated (or static text).
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
                params: None,
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
