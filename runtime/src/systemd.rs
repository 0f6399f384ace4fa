//! systemd integration, read from the environment systemd sets and inert without it:
//!
//! - the notification socket (`Type=notify`, sd_notify(3)): `READY=1` once every listener is
//!   bound and the region prefaulted, `STOPPING=1` when the drain begins, and `WATCHDOG=1` every
//!   half of `WATCHDOG_USEC` (when `WatchdogSec=` is set) from the main thread's signal wait;
//! - socket activation (sd_listen_fds(3)): when `LISTEN_PID` is this process, the `LISTEN_FDS`
//!   descriptors from 3 on are the listening sockets to serve on, instead of binding `listen`.
//!
//! Sending a notification allocates nothing: the socket and its address are made once, before
//! the main thread is sealed, and the messages are fixed bytes (only `READY=1`'s status line is
//! formatted, before the seal).

#![forbid(unsafe_code)]

use std::io;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// At most this many passed sockets are taken: a bound on a number read from the environment.
/// Each worker serves one, so more than `workers` is refused anyway.
pub const LISTEN_FDS_MAX: usize = 64;

/// Set once the passed descriptors have an owner: they may be taken only once per process.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// The notification socket, or nothing when `NOTIFY_SOCKET` is not set.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog_interval: Option<Duration>,
    watchdog_next: Instant,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. A socket that cannot be used
    /// is reported (the caller prints a warning) and leaves the notifier inert.
    pub fn from_env() -> (Notifier, Option<String>) {
        let watchdog_interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        let mut notifier =
            Notifier { target: None, watchdog_interval: None, watchdog_next: Instant::now() };
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return (notifier, None);
        };
        let path = path.to_string_lossy();
        let target = notify_address(&path)
            .and_then(|address| Ok((UnixDatagram::unbound()?, address)))
            .map_err(|error| format!("NOTIFY_SOCKET={path} cannot be used: {error}"));
        match target {
            Ok(target) => {
                notifier.target = Some(target);
                notifier.watchdog_interval = watchdog_interval;
                (notifier, None)
            }
            Err(message) => (notifier, Some(message)),
        }
    }

    /// `READY=1` with a status line; starts the watchdog clock.
    pub fn ready(&mut self, status: &str) -> io::Result<()> {
        self.watchdog_next = Instant::now();
        self.send(format!("READY=1\nSTATUS={status}\n").as_bytes())
    }

    /// `STOPPING=1`: the drain has begun.
    pub fn stopping(&self) {
        let _ = self.send(b"STOPPING=1\nSTATUS=draining\n");
    }

    /// Sends `WATCHDOG=1` when it is due, and returns how long the caller may wait before
    /// calling again: `wait_max`, or less when the next keep-alive is due sooner.
    pub fn watchdog(&mut self, wait_max: Duration) -> Duration {
        let Some(interval) = self.watchdog_interval else {
            return wait_max;
        };
        let now = Instant::now();
        if now >= self.watchdog_next {
            let _ = self.send(b"WATCHDOG=1\n");
            self.watchdog_next = now + interval;
        }
        wait_max.min(self.watchdog_next.saturating_duration_since(now))
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        let Some((socket, address)) = &self.target else {
            return Ok(());
        };
        socket.send_to_addr(message, address).map(|_| ())
    }
}

/// The address in `NOTIFY_SOCKET`: a path, or an abstract name when it starts with `@`.
fn notify_address(value: &str) -> io::Result<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None if value.starts_with('/') => SocketAddr::from_pathname(value),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "expected an absolute path or an abstract name starting with '@'",
        )),
    }
}

/// Half of `WATCHDOG_USEC` when it is a positive number and `WATCHDOG_PID`, if set, is ours
/// (sd_watchdog_enabled(3) recommends pinging at half the timeout).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// How many sockets were passed to this process: `LISTEN_FDS` when `LISTEN_PID` is ours,
/// 0 when either is unset or the PID is another process's (the variables were meant for it).
fn listen_fds_count(pid: Option<&str>, fds: Option<&str>, our_pid: u32) -> Result<usize, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else { return Ok(0) };
    if pid.trim().parse::<u32>().ok() != Some(our_pid) {
        return Ok(0);
    }
    let count: usize =
        fds.trim().parse().map_err(|_| format!("LISTEN_FDS={fds}: expected a number"))?;
    if count > LISTEN_FDS_MAX {
        return Err(format!("LISTEN_FDS={count}: at most {LISTEN_FDS_MAX} sockets are taken"));
    }
    Ok(count)
}

/// The listening sockets systemd passed to this process (socket activation), or none. Taken
/// once per process: a later call returns none. Each must be a listening TCP socket.
pub fn take_listen_fds() -> Result<Vec<TcpListener>, String> {
    let count = listen_fds_count(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    )?;
    // Relaxed: the flag orders nothing else; the swap alone makes the take happen once.
    if count == 0 || LISTEN_FDS_TAKEN.swap(true, Ordering::Relaxed) {
        return Ok(Vec::new());
    }
    let mut listeners = Vec::with_capacity(count);
    for fd in (LISTEN_FDS_START..).take(count) {
        let listener = crate::sys::take_inherited_listener(fd)
            .map_err(|error| format!("LISTEN_FDS: descriptor {fd}: {error}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_the_timeout_and_only_in_its_process() {
        assert_eq!(watchdog_interval(Some("3000000"), None, 7), Some(Duration::from_millis(1500)));
        assert_eq!(
            watchdog_interval(Some("3000000"), Some("7"), 7),
            Some(Duration::from_secs_f64(1.5))
        );
        assert_eq!(watchdog_interval(Some("3000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn passed_sockets_count_only_when_listen_pid_is_ours() {
        assert_eq!(listen_fds_count(Some("7"), Some("2"), 7), Ok(2));
        assert_eq!(listen_fds_count(Some("8"), Some("2"), 7), Ok(0));
        assert_eq!(listen_fds_count(None, Some("2"), 7), Ok(0));
        assert_eq!(listen_fds_count(Some("7"), None, 7), Ok(0));
        assert!(listen_fds_count(Some("7"), Some("two"), 7).is_err());
        assert!(listen_fds_count(Some("7"), Some("65"), 7).is_err());
        assert_eq!(listen_fds_count(Some("7"), Some("64"), 7), Ok(LISTEN_FDS_MAX));
    }

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        let path = notify_address("/run/systemd/notify").unwrap();
        assert_eq!(path.as_pathname(), Some(std::path::Path::new("/run/systemd/notify")));
        let name = notify_address("@cella-test").unwrap();
        assert_eq!(name.as_abstract_name(), Some(&b"cella-test"[..]));
        assert!(notify_address("relative/path").is_err());
    }
}
