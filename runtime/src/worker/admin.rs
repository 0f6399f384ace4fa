//! The admin listener (`admin_listen`: `/metrics`, `/livez`, `/readyz`, `/config`) and the
//! HAProxy agent-check listener (`agent_listen`). Both are served by worker 0 in its own event
//! loop, outside the slots and the connection table: never routed to a handler, no slot, and
//! nothing allocated after the seal. Each admin connection has a fixed request buffer and a
//! fixed response buffer, allocated at startup; a response is rendered into it whole
//! (`metrics::render`, or the configuration text rendered at startup), written, and the
//! connection closed. An agent connection gets its one line at accept, and is closed.
//!
//! Why worker 0 and not every worker: one bind, one set of buffers, and the answers do not
//! depend on which worker the kernel picks; every figure is the instance's anyway (counters
//! are summed, gauges read from the shared pools). The cost: a handler that keeps worker 0's
//! thread busy (a CPU loop) delays the admin answers as much as worker 0's own connections.
//! Must not touch the main listener's connections or slots beyond reading the pools' counts.
//! What an admin request is answered with, and how its request is parsed: `admin_answer.rs`.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::admin_answer::{
    parse_admin_request, put_answer_head, AdminRequest, Answer, TextAnswer,
    ADMIN_REQUEST_BYTES_MAX, METRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE,
};
use super::Worker;
use crate::http::encode::{self, FixedSink, HeadFrame, Persistence, Sink};
use crate::metrics::{self, Gauges, Totals};
use crate::tick::Tick;

/// Admin connections served at once; one more is answered 503 at accept and closed.
pub(super) const ADMIN_CONNECTIONS_MAX: usize = 4;
/// Room for a response head, in front of the body in the response buffer.
const ADMIN_HEAD_BYTES_MAX: usize = 256;
/// The longest agent line: `up ready 100% maxconn:` and a 20-digit count.
pub(super) const AGENT_LINE_BYTES_MAX: usize = 64;

const ADMIN_LISTENER: Token = Token(usize::MAX - 3);
const AGENT_LISTENER: Token = Token(usize::MAX - 4);
/// Admin connection `i` has token `ADMIN_CONNECTION_FIRST + i`; all lie above the main
/// listener's connection tokens and the slots' socket tokens, and below the listener tokens.
const ADMIN_CONNECTION_FIRST: usize = usize::MAX - 4 - ADMIN_CONNECTIONS_MAX;

/// Whether `token` is one of the admin or agent listener's.
pub(super) fn is_admin_token(token: Token) -> bool {
    token.0 >= ADMIN_CONNECTION_FIRST && token.0 <= ADMIN_LISTENER.0
}

/// What `Server::start` hands worker 0: the bound listeners and the `/config` text.
pub(crate) struct AdminSetup {
    pub admin: Option<std::net::TcpListener>,
    pub agent: Option<std::net::TcpListener>,
    /// The effective configuration and memory plan, rendered once at startup.
    pub config_text: Box<[u8]>,
    pub slot_arena_bytes: u64,
}

/// One admin connection: reading its request into `request`, or writing `response`.
struct AdminConn {
    stream: Option<TcpStream>,
    request: Box<[u8]>,
    request_len: usize,
    response: Box<[u8]>,
    /// The response's bytes not yet written: `response[response_start..response_end]`.
    response_start: usize,
    response_end: usize,
    deadline: Tick,
}

/// Worker 0's admin and agent listeners and its admin connections.
pub(super) struct AdminPort {
    admin: Option<TcpListener>,
    pub(super) agent: Option<TcpListener>,
    config_text: Box<[u8]>,
    slot_arena_bytes: u64,
    conns: Box<[AdminConn]>,
}

impl AdminPort {
    pub(super) fn new(setup: AdminSetup, registry: &Registry) -> io::Result<AdminPort> {
        let register = |listener: Option<std::net::TcpListener>, token| {
            listener
                .map(|listener| {
                    listener.set_nonblocking(true)?;
                    let mut listener = TcpListener::from_std(listener);
                    registry.register(&mut listener, token, Interest::READABLE)?;
                    Ok::<_, io::Error>(listener)
                })
                .transpose()
        };
        let admin = register(setup.admin, ADMIN_LISTENER)?;
        let agent = register(setup.agent, AGENT_LISTENER)?;
        // Room for the largest body either path renders.
        let body_bytes_max = metrics::METRICS_BYTES_MAX.max(setup.config_text.len());
        let conns = (0..if admin.is_some() { ADMIN_CONNECTIONS_MAX } else { 0 })
            .map(|_| AdminConn {
                stream: None,
                request: vec![0; ADMIN_REQUEST_BYTES_MAX].into_boxed_slice(),
                request_len: 0,
                response: vec![0; ADMIN_HEAD_BYTES_MAX + body_bytes_max].into_boxed_slice(),
                response_start: 0,
                response_end: 0,
                deadline: Tick::now(),
            })
            .collect();
        Ok(AdminPort {
            admin,
            agent,
            config_text: setup.config_text,
            slot_arena_bytes: setup.slot_arena_bytes,
            conns,
        })
    }
}

impl Worker {
    /// A readiness event for an admin or agent token (see [`is_admin_token`]).
    pub(super) fn admin_event(&mut self, token: Token) {
        match token {
            ADMIN_LISTENER => self.accept_admin(),
            AGENT_LISTENER => self.answer_agents(),
            Token(token) => self.drive_admin(token - ADMIN_CONNECTION_FIRST),
        }
    }

    fn accept_admin(&mut self) {
        loop {
            let Some(listener) = self.admin.as_ref().and_then(|port| port.admin.as_ref()) else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or out of descriptors: the backlog waits for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_out_of_fds(&e) => return,
                Err(_) => continue, // One connection's trouble (ECONNABORTED).
            };
            let free = self
                .admin
                .as_ref()
                .and_then(|port| port.conns.iter().position(|conn| conn.stream.is_none()));
            let Some(index) = free else {
                let busy = TextAnswer { status: 503, text: b"admin connections busy\n" };
                let mut head = [0u8; ADMIN_HEAD_BYTES_MAX];
                let mut sink = FixedSink { buf: &mut head, len: 0 };
                if put_answer_head(&mut sink, busy, &self.date).is_ok() {
                    let _ = stream.write(&sink.buf[..sink.len]);
                    let _ = stream.write(busy.text);
                }
                continue;
            };
            let token = Token(ADMIN_CONNECTION_FIRST + index);
            if self.poll.registry().register(&mut stream, token, Interest::READABLE).is_err() {
                continue;
            }
            let Some(port) = self.admin.as_mut() else { return };
            let conn = &mut port.conns[index];
            conn.stream = Some(stream);
            conn.request_len = 0;
            conn.response_start = 0;
            conn.response_end = 0;
            // The main listener's deadlines: for the request, then for taking the answer.
            conn.deadline = self.now + self.settings.header_read_timeout;
            self.drive_admin(index);
        }
    }

    /// Reads admin connection `index`'s request, answers it, writes the answer, and closes.
    fn drive_admin(&mut self, index: usize) {
        let Some(port) = self.admin.as_mut() else { return };
        let Some(conn) = port.conns.get_mut(index) else { return };
        let Some(stream) = conn.stream.as_mut() else { return };
        if conn.response_end == 0 {
            loop {
                let Some(room) = conn.request.get_mut(conn.request_len..) else { break };
                if room.is_empty() {
                    break;
                }
                match stream.read(room) {
                    Ok(0) => return self.close_admin(index),
                    Ok(n) => conn.request_len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return self.close_admin(index),
                }
            }
            if !self.answer_admin(index) {
                return; // The request is not complete yet.
            }
        }
        let Some(port) = self.admin.as_mut() else { return };
        let conn = &mut port.conns[index];
        let Some(stream) = conn.stream.as_mut() else { return };
        while conn.response_start < conn.response_end {
            match stream.write(&conn.response[conn.response_start..conn.response_end]) {
                Ok(0) => break,
                Ok(n) => conn.response_start += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait for room: from now on the connection waits to write, not to read.
                    let token = Token(ADMIN_CONNECTION_FIRST + index);
                    let registry = self.poll.registry();
                    if registry.reregister(stream, token, Interest::WRITABLE).is_ok() {
                        return;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        self.close_admin(index);
    }

    /// Renders the answer to admin connection `index`'s request into its response buffer;
    /// `false` while the request is incomplete.
    fn answer_admin(&mut self, index: usize) -> bool {
        // Everything read from the workers first, so that the buffer can be borrowed after.
        let (totals, gauges) = (Totals::of(&self.shared.stats), self.gauges());
        let ready = self.is_ready();
        let Some(port) = self.admin.as_mut() else { return false };
        let conn = &mut port.conns[index];
        let parsed = parse_admin_request(&conn.request[..conn.request_len]);
        let body = &mut conn.response[ADMIN_HEAD_BYTES_MAX..];
        let mut sink = FixedSink { buf: body, len: 0 };
        let (answer, head_method) = match parsed {
            Ok(None) => return false,
            Err(status) => {
                (Answer::Text(TextAnswer { status, text: b"bad admin request\n" }), false)
            }
            Ok(Some(AdminRequest { head_method: None, .. })) => {
                (Answer::Text(TextAnswer { status: 405, text: b"GET or HEAD only\n" }), false)
            }
            Ok(Some(AdminRequest { head_method: Some(head_method), path })) => {
                let answer = match path {
                    "/metrics" => match metrics::render(&mut sink, &totals, &gauges) {
                        Ok(()) => Answer::Rendered { content_type: METRICS_CONTENT_TYPE },
                        Err(_) => Answer::Text(TextAnswer { status: 500, text: b"too large\n" }),
                    },
                    "/config" => match sink.put(&port.config_text) {
                        Ok(()) => Answer::Rendered { content_type: TEXT_CONTENT_TYPE },
                        Err(_) => Answer::Text(TextAnswer { status: 500, text: b"too large\n" }),
                    },
                    "/livez" => Answer::Text(TextAnswer { status: 200, text: b"live\n" }),
                    "/readyz" if ready => {
                        Answer::Text(TextAnswer { status: 200, text: b"ready\n" })
                    }
                    "/readyz" => Answer::Text(TextAnswer { status: 503, text: b"draining\n" }),
                    _ => Answer::Text(TextAnswer { status: 404, text: b"not found\n" }),
                };
                (answer, head_method)
            }
        };
        let (status, content_type, body_len) = match answer {
            Answer::Rendered { content_type } => (200, content_type, sink.len),
            Answer::Text(text) => {
                sink.len = 0;
                let _ = sink.put(text.text);
                (text.status, TEXT_CONTENT_TYPE, sink.len)
            }
        };
        let mut head = [0u8; ADMIN_HEAD_BYTES_MAX];
        let mut head_sink = FixedSink { buf: &mut head, len: 0 };
        let frame = HeadFrame {
            status,
            content_length: body_len,
            persistence: Persistence::Close,
            date: &self.date,
        };
        let encoded = encode::put_frame(&mut head_sink, frame)
            .and_then(|()| head_sink.put(content_type))
            .and_then(|()| head_sink.put(b"cache-control: no-store\r\n\r\n"));
        if encoded.is_err() {
            conn.response_end = 0;
            return true; // Not reached: the head is short and fixed; close without an answer.
        }
        // The head goes right in front of the body, so the response is one run of bytes.
        let head_len = head_sink.len;
        let start = ADMIN_HEAD_BYTES_MAX - head_len;
        conn.response[start..ADMIN_HEAD_BYTES_MAX].copy_from_slice(&head[..head_len]);
        let sends_body = encode::BodyRule::of(status, head_method).body;
        conn.response_start = start;
        conn.response_end = ADMIN_HEAD_BYTES_MAX + if sends_body { body_len } else { 0 };
        conn.deadline = self.now + self.settings.response_write_timeout;
        true
    }

    fn close_admin(&mut self, index: usize) {
        let Some(port) = self.admin.as_mut() else { return };
        let conn = &mut port.conns[index];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.request_len = 0;
        conn.response_start = 0;
        conn.response_end = 0;
    }

    /// Closes admin connections past their deadline (called by the sweep).
    pub(super) fn sweep_admin(&mut self) {
        let now = self.now;
        let expired = |conn: &AdminConn| conn.stream.is_some() && conn.deadline <= now;
        for index in 0..self.admin.as_ref().map_or(0, |port| port.conns.len()) {
            if self.admin.as_ref().is_some_and(|port| expired(&port.conns[index])) {
                self.close_admin(index);
            }
        }
    }

    /// The instance's gauges, read now.
    fn gauges(&self) -> Gauges {
        let count = |n: usize| n as u64;
        let (slots, conns, bufs) = (self.slots.table(), self.conns.table(), self.bufs.table());
        Gauges {
            slots: count(slots.len()),
            slots_free: count(slots.pool().free_count()),
            slot_arena_bytes: self.admin.as_ref().map_or(0, |port| port.slot_arena_bytes),
            connections_max: count(conns.len()),
            connections_free: count(conns.pool().free_count()),
            io_buffers: count(bufs.len()),
            io_buffers_free: count(bufs.pool().free_count()),
            ready: self.is_ready(),
            system_allocations_after_start: cella_arena::sealed_system_calls(),
            resident_memory_bytes: crate::sys::resident_memory_bytes().ok(),
            open_fds: crate::sys::open_fd_count().ok().map(count),
        }
    }
}

pub(super) fn is_out_of_fds(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_lie_between_every_other_token_and_the_listeners() {
        assert!(is_admin_token(ADMIN_LISTENER) && is_admin_token(AGENT_LISTENER));
        assert!(is_admin_token(Token(ADMIN_CONNECTION_FIRST + ADMIN_CONNECTIONS_MAX - 1)));
        assert!(!is_admin_token(super::super::LISTENER) && !is_admin_token(super::super::WAKER));
        assert!(!is_admin_token(Token(super::super::SOCKET_TOKEN_BASE + (1 << 40))));
    }
}
