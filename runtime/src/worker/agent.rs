//! The HAProxy agent-check listener (`agent_listen`), served by worker 0 with the admin
//! listener (`admin.rs`): each connection gets one line of HAProxy's agent protocol at accept
//! and is closed. Nothing allocated: the line is formatted into a fixed array.

use std::io::{self, Read, Write};

use super::admin::{is_out_of_fds, AGENT_LINE_BYTES_MAX};
use super::Worker;

impl Worker {
    /// Accepts every pending agent connection and answers each with its one line.
    pub(super) fn answer_agents(&mut self) {
        loop {
            let Some(listener) = self.admin.as_ref().and_then(|port| port.agent.as_ref()) else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_out_of_fds(&e) => return,
                Err(_) => continue,
            };
            // What HAProxy sent (`agent-send`) is read first, so that closing with it unread
            // does not turn the close into a reset that could lose the line.
            let mut scratch = [0u8; 256];
            for _ in 0..4 {
                if !matches!(stream.read(&mut scratch), Ok(n) if n > 0) {
                    break;
                }
            }
            let mut line = [0u8; AGENT_LINE_BYTES_MAX];
            let len = self.agent_line(&mut line);
            // A fresh socket's send buffer takes a few dozen bytes at once.
            let _ = stream.write(&line[..len]);
            // Dropped here: closed.
        }
    }

    /// HAProxy's agent protocol: `drain` from the first shutdown signal on; before that
    /// `up ready`, the free slots as a percentage of all slots (at least 1%: HAProxy answers
    /// 503 itself when every agent says 0%), and the slots as the server's `maxconn`.
    fn agent_line(&self, line: &mut [u8; AGENT_LINE_BYTES_MAX]) -> usize {
        if !self.is_ready() {
            line[..6].copy_from_slice(b"drain\n");
            return 6;
        }
        let slots = self.slots.table().len();
        let free = self.slots.table().pool().free_count().min(slots);
        let percent = (free * 100 / slots.max(1)).max(1);
        let mut cursor = io::Cursor::new(&mut line[..]);
        // Integers format without allocating; 64 bytes hold the longest line.
        let _ = writeln!(cursor, "up ready {percent}% maxconn:{slots}");
        cursor.position() as usize
    }
}
