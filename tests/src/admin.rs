//! Helpers for the admin listener (`admin_listen`) and the agent-check listener
//! (`agent_listen`): the flags that turn both on at free ports, the addresses the server
//! printed, a scrape of `/metrics` (parsed and checked by [`crate::prometheus`]), and one agent
//! line.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use crate::prometheus::{self, Scrape};
use crate::{get, ServerProcess, STEP_TIMEOUT};

/// Flags that turn on the admin and agent listeners, each on a free loopback port.
pub const ADMIN_AND_AGENT: &[&str] =
    &["--set", "admin_listen=127.0.0.1:0", "--set", "agent_listen=127.0.0.1:0"];

/// The address after `prefix` in the server's stderr (waits, bounded, for the line).
fn printed_addr(server: &ServerProcess, prefix: &str) -> SocketAddr {
    assert!(server.wait_stderr(prefix), "no `{prefix}` line: {}", server.stderr());
    let stderr = server.stderr();
    let line = stderr.lines().find_map(|line| line.strip_prefix(prefix)).expect("the line");
    let addr = line.split_whitespace().next().expect("an address");
    addr.parse().unwrap_or_else(|_| panic!("`{addr}` is not an address"))
}

/// Where the admin listener is (from `cella: admin listener on http://ADDR ...`).
pub fn admin_addr(server: &ServerProcess) -> SocketAddr {
    printed_addr(server, "cella: admin listener on http://")
}

/// Where the agent-check listener is (from `cella: agent-check listener on ADDR`).
pub fn agent_addr(server: &ServerProcess) -> SocketAddr {
    printed_addr(server, "cella: agent-check listener on ")
}

/// `GET /metrics` on the admin listener, checked as Prometheus text and parsed.
pub fn scrape(admin: SocketAddr) -> Scrape {
    let response = get(admin, "/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "the Prometheus text format's content type"
    );
    prometheus::parse(&response.text())
        .unwrap_or_else(|error| panic!("not Prometheus text: {error}\n{}", response.text()))
}

/// One connection to the agent-check listener: everything it says before it closes.
pub fn agent_line(agent: SocketAddr) -> String {
    let mut stream = TcpStream::connect(agent).expect("connect to the agent");
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut line = String::new();
    stream.read_to_string(&mut line).expect("the agent answers and closes");
    line
}
