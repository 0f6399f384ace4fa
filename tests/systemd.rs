//! systemd integration of `cella serve`, against the binary as systemd would run it:
//! `Type=notify` (a datagram socket the test binds stands in for `NOTIFY_SOCKET`: `READY=1` once
//! the listener is bound, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1` when the drain
//! begins, nothing allocated for any of it after startup) and socket activation (listening
//! sockets the test creates are passed as descriptors 3, 4, ... with `LISTEN_FDS`, and
//! `LISTEN_PID` set to the server's own PID by a `sh -c 'export LISTEN_PID=$$; exec ...'`
//! wrapper: every worker serves the passed socket, a connection made while no instance runs is
//! served by the next one, and what is not a listening TCP socket is refused).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cella_tests::fds::pass_descriptors;
use cella_tests::{binary, get, ServerProcess, SMALL, STEP_TIMEOUT};

/// A unique name for this test process's sockets.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The notification socket systemd would listen on, bound at a fresh path.
fn notify_socket() -> (UnixDatagram, String) {
    let path = std::env::temp_dir().join(unique("cella-notify"));
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    (socket, path.to_str().expect("UTF-8 temp path").to_string())
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    let length = socket.recv(&mut buffer).expect("a notification within the step timeout");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

/// `cella serve` with the small test arguments and `extra`.
fn serve_command(extra: &[&str]) -> Command {
    let mut command = Command::new(binary("cella"));
    command.arg("serve").args(SMALL).args(extra);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// `cella serve` through `sh`, so that `LISTEN_PID` is the PID the server will have (`exec`
/// keeps it), with `sockets` as descriptors 3, 4, ... and `LISTEN_FDS` their count.
fn activated_command(sockets: &[RawFd], extra: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"").arg(binary("cella"));
    command.arg("serve").args(SMALL).args(extra);
    command.env("LISTEN_FDS", sockets.len().to_string());
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    pass_descriptors(&mut command, sockets);
    command
}

/// Runs a command that is expected to exit on its own; its status and stderr.
fn run_to_exit(mut command: Command) -> (ExitStatus, String) {
    let mut child = command.spawn().expect("spawn");
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn ready_comes_once_the_listener_serves_then_watchdog_pings_then_stopping_at_the_drain() {
    let (socket, path) = notify_socket();
    let mut command = serve_command(&[]);
    command.env("NOTIFY_SOCKET", &path).env("WATCHDOG_USEC", "100000");
    let mut server = ServerProcess::spawn(command);
    let ready = receive(&socket);
    assert_eq!(ready, format!("READY=1\nSTATUS=listening on http://{}\n", server.addr()));
    assert_eq!(get(server.addr(), "/readyz").status, 200, "ready means serving");
    // WATCHDOG_USEC=100ms: a ping every 50 ms.
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(receive(&socket), "WATCHDOG=1\n");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "4 pings took {elapsed:?}");
    server.signal(libc::SIGTERM);
    let stopping = loop {
        let message = receive(&socket);
        if message != "WATCHDOG=1\n" {
            break message;
        }
    };
    assert_eq!(stopping, "STOPPING=1\nSTATUS=draining\n");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    let stderr = server.stderr();
    assert!(stderr.contains("system allocator calls after startup: 0"), "{stderr}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_abstract_notify_socket_works_and_no_watchdog_pings_go_for_another_pid() {
    let name = unique("cella-notify");
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).expect("bind the abstract notify socket");
    socket.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut command = serve_command(&[]);
    // WATCHDOG_PID=1: the watchdog is some other process's (systemd sets it to the main PID).
    command.env("NOTIFY_SOCKET", format!("@{name}"));
    command.env("WATCHDOG_USEC", "10000").env("WATCHDOG_PID", "1");
    let mut server = ServerProcess::spawn(command);
    assert!(receive(&socket).starts_with("READY=1\n"));
    // An observation window of 20 would-be ping intervals.
    std::thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGTERM);
    assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=draining\n", "no WATCHDOG=1 before it");
    assert!(server.wait_exit().success(), "{}", server.stderr());
}

#[test]
fn a_socket_passed_as_fd_3_is_shared_by_the_workers_and_listen_is_not_bound() {
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = passed.local_addr().unwrap();
    let command = activated_command(&[passed.as_raw_fd()], &["--workers", "2"]);
    let server = ServerProcess::spawn(command);
    assert_eq!(server.addr(), address, "the ready line names the passed socket");
    assert!(server.stderr().contains("1 listening socket(s) passed by systemd"));
    for _ in 0..20 {
        assert_eq!(get(address, "/").text(), "Hello, World!");
    }
    // One descriptor of the passed socket per worker (the original and a duplicate).
    let socket = std::fs::read_link(format!("/proc/self/fd/{}", passed.as_raw_fd())).unwrap();
    let in_server = std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap();
    let copies = in_server
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| *target == socket)
        .count();
    assert_eq!(copies, 2, "{socket:?}");
}

#[test]
fn a_connection_made_between_two_instances_waits_in_the_passed_socket_and_is_served() {
    // What systemd's socket unit gives a restart: the socket outlives each instance.
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = passed.local_addr().unwrap();
    let mut old = ServerProcess::spawn(activated_command(&[passed.as_raw_fd()], &[]));
    assert_eq!(get(address, "/").status, 200);
    assert!(old.terminate().success(), "{}", old.stderr());
    let mut waiting = TcpStream::connect(address).expect("the kernel queues it");
    waiting.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    let new = ServerProcess::spawn(activated_command(&[passed.as_raw_fd()], &[]));
    assert_eq!(new.addr(), address);
    waiting.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut answer = [0u8; 256];
    let length = waiting.read(&mut answer).expect("the new instance answers");
    assert!(answer[..length].starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn listen_fds_meant_for_another_pid_are_left_alone_and_listen_is_bound() {
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = serve_command(&[]);
    command.env("LISTEN_FDS", "1").env("LISTEN_PID", "1");
    pass_descriptors(&mut command, &[passed.as_raw_fd()]);
    let server = ServerProcess::spawn(command);
    assert_ne!(server.addr(), passed.local_addr().unwrap());
    assert_eq!(get(server.addr(), "/").status, 200);
    assert!(!server.stderr().contains("passed by systemd"));
}

#[test]
fn a_passed_descriptor_that_is_not_a_listening_tcp_socket_is_refused() {
    let (datagram, _) = UnixDatagram::pair().unwrap();
    let (status, stderr) = run_to_exit(activated_command(&[datagram.as_raw_fd()], &[]));
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("LISTEN_FDS: descriptor 3: not a listening TCP socket"), "{stderr}");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (status, stderr) = run_to_exit(activated_command(&[connected.as_raw_fd()], &[]));
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("not a listening TCP socket"), "{stderr}");
}

#[test]
fn more_passed_sockets_than_workers_is_refused_and_as_many_is_served() {
    let sockets =
        [TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap()];
    let fds = [sockets[0].as_raw_fd(), sockets[1].as_raw_fd()];
    let (status, stderr) = run_to_exit(activated_command(&fds, &["--workers", "1"]));
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("2 sockets for 1 workers"), "{stderr}");
    let server = ServerProcess::spawn(activated_command(&fds, &["--workers", "2"]));
    for socket in &sockets {
        let address: SocketAddr = socket.local_addr().unwrap();
        assert_eq!(get(address, "/").text(), "Hello, World!");
    }
    drop(server);
}
