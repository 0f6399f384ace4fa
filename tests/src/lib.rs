//! Helpers for the black-box tests: start a cella binary on a free loopback port, talk raw
//! HTTP/1.1 to it, and stop it by its PID.

pub mod admin;
pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod fds;

/// How long any single step of a test may wait before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of a binary built from this workspace: `cella`, or an example such as `testapp`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    for candidate in [profile_dir.join(name), profile_dir.join("examples").join(name)] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{name} is not built in {}: run `cargo build -p cella --bins --examples` first",
        profile_dir.display()
    );
}

/// Arguments every test server gets: a free port, one worker, small slots.
pub const SMALL: &[&str] = &[
    "--listen",
    "127.0.0.1:0",
    "--workers",
    "1",
    "--slots",
    "4",
    "--slot-arena",
    "256KiB",
    "--max-connections",
    "64",
    "--set",
    "request_body_size_max=64KiB",
];

/// A server process, stopped (SIGKILL) on drop if still running. Dropped, it fails the test
/// when the server wrote a `cella: escape:` line (`escape_check`, which CI sets to `full` for
/// the whole suite) and the test did not say it expects one ([`ServerProcess::expect_escapes`]):
/// every other app must keep nothing of a request past it.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    escapes_expected: bool,
}

impl ServerProcess {
    /// Starts `cella serve` with `SMALL` followed by `extra` (later flags win).
    pub fn start(extra: &[&str]) -> ServerProcess {
        let mut args = vec!["serve"];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(extra);
        Self::start_binary("cella", &args, &[])
    }

    /// Starts `name` with `args` and extra environment variables; waits for the ready line.
    pub fn start_binary(name: &str, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new(binary(name));
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    pub fn spawn(command: Command) -> ServerProcess {
        let (server, stdout) = Self::spawn_keeping_stdout(command);
        thread::spawn(move || {
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut { stdout }, &mut std::io::sink());
        });
        server
    }

    /// As [`ServerProcess::spawn`], but the rest of the server's standard output, after the
    /// ready line, is left to the caller, who may leave it unread (a stalled pipe).
    pub fn spawn_keeping_stdout(
        mut command: Command,
    ) -> (ServerProcess, BufReader<std::process::ChildStdout>) {
        let mut child = command.spawn().expect("server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send((line, reader));
        });
        let (line, reader) = match receiver.recv_timeout(STEP_TIMEOUT) {
            Ok((line, reader)) => (line, Some(reader)),
            Err(_) => (String::new(), None),
        };
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(100));
            panic!("no ready line (got {line:?}); stderr: {}", stderr.lock().unwrap());
        };
        let addr = addr.parse().expect("ready line has an address");
        let server = ServerProcess {
            child,
            addr,
            stderr,
            stderr_reader: Some(stderr_reader),
            escapes_expected: false,
        };
        (server, reader.expect("a ready line came with its reader"))
    }

    /// This server's app leaves memory behind on purpose: `cella: escape:` lines are expected.
    pub fn expect_escapes(mut self) -> ServerProcess {
        self.escapes_expected = true;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until the server has written `text` to stderr.
    pub fn wait_stderr(&self, text: &str) -> bool {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !self.stderr().contains(text) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Descriptors the server process has open.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("/proc/PID/fd").count()
    }

    /// Sends `signal` to the server (by its PID).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Waits for the process to exit, up to `STEP_TIMEOUT`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipe is closed now: the reader has every line once it ends.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit; stderr: {}", self.stderr());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// SIGTERM, waits for a clean exit, and returns the server's own count of system allocator
    /// calls made after startup (from the line it prints once drained).
    pub fn terminate_and_count_system_allocations(&mut self) -> u64 {
        let status = self.terminate();
        assert!(status.success(), "{status:?}: {}", self.stderr());
        let stderr = self.stderr();
        let count = stderr.lines().find_map(|line| {
            line.strip_prefix("cella: drained; system allocator calls after startup: ")
        });
        count
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no drain line: {stderr}"))
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
            // A failing test shows how its server ended and what it said.
            eprintln!("server exit: {:?}; its stderr:\n{}", self.child.try_wait(), self.stderr());
            return;
        }
        if self.escapes_expected {
            return;
        }
        // The pipe is closed now: the reader has every line once it ends.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr();
        let escape = stderr.lines().find(|line| line.starts_with("cella: escape:"));
        assert!(escape.is_none(), "the server reported an escape nobody expected: {stderr}");
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.1 client over one connection.
pub struct Client {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buffer: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        self.response()
    }

    /// One request with `method` and a Content-Length `body`; its response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
        self.response()
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads one response (framed by Content-Length; `HEAD` responses via `response_head`).
    pub fn response(&mut self) -> Response {
        self.read_response(false)
    }

    pub fn response_to_head(&mut self) -> Response {
        self.read_response(true)
    }

    fn read_response(&mut self, head_only: bool) -> Response {
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(
                self.fill(),
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).expect("UTF-8 head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status =
            status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("content-length"))
            .unwrap_or(0);
        let length = if head_only || status == 100 { 0 } else { length };
        while self.buffer.len() < head_end + length {
            assert!(self.fill(), "connection closed inside a body");
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        Response { status, headers, body }
    }

    /// Closes the connection with a reset (SO_LINGER 0), as a client that goes away abruptly.
    pub fn reset(self) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt(2) on an open socket with a valid, correctly sized option value.
        let result = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(result, 0);
    }

    /// Whether the server closed the connection (reads EOF, or a reset) within the timeout.
    pub fn is_closed_by_server(&mut self) -> bool {
        self.buffer.clear();
        let deadline = Instant::now() + STEP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.fill() {
                return true;
            }
        }
        false
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).get(path)
}

/// `GET path` on a fresh connection, again while the answer is the busy 503: for a request
/// meant to hold a slot while the test probes for a full server (a probe holds a slot for a
/// moment, and the request may arrive just then).
pub fn get_when_a_slot_is_free(addr: SocketAddr, path: &str) -> Response {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let response = get(addr, path);
        if response.status != 503 || Instant::now() >= deadline {
            return response;
        }
    }
}

/// `raw` sent on a fresh connection; the first response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> (Response, Client) {
    let mut client = Client::connect(addr);
    client.send(raw);
    let response = client.response();
    (response, client)
}
