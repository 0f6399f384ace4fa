//! The demo app that `cella serve` runs when no handler is given. Each endpoint shows one part
//! of the memory contract.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::handler::{handler_fn, Request, Response, StatusCode};
use crate::net::{self, TcpStream};
use crate::router::Router;

/// Longest upstream response `/upstream` relays.
pub const UPSTREAM_RESPONSE_BYTES_MAX: usize = 256 << 10;
/// How long `/upstream` waits on each step of the upstream call.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /`, `GET /alloc/{kib}`, `POST /echo`, `GET /panic`, `GET /overflow`,
/// `GET /sleep/{ms}`, `GET /spin/{ms}`, `GET /upstream?to=127.0.0.1:PORT&path=/p`.
pub fn app() -> Router {
    Router::new()
        .get("/", handler_fn(|_| Response::text("Hello, World!")))
        .get("/alloc/{kib}", handler_fn(alloc))
        .post("/echo", handler_fn(|request| Response::bytes(request.body())))
        .get("/panic", handler_fn(|_| panic!("the demo app's /panic endpoint")))
        .get("/overflow", handler_fn(|_| Response::text(format!("{}", recurse(0)))))
        .get("/sleep/{ms}", handler_fn(sleep))
        .get("/spin/{ms}", handler_fn(spin))
        .get("/upstream", handler_fn(upstream))
}

fn number_param(request: &Request<'_>, name: &str) -> Option<u64> {
    request.param(name)?.parse().ok()
}

fn bad_request(message: &'static str) -> Response<'static> {
    Response::text(message).with_status(StatusCode::BAD_REQUEST)
}

/// Allocates and touches `kib` KiB with an ordinary `Vec`; past the arena this is a 500.
fn alloc<'a>(request: &Request<'a>) -> Response<'a> {
    let Some(bytes) = number_param(request, "kib").and_then(|kib| kib.checked_mul(1024)) else {
        return bad_request("expected /alloc/{kib} with a number of KiB\n");
    };
    let Ok(bytes) = usize::try_from(bytes) else { return bad_request("too large\n") };
    let buffer = vec![1u8; bytes];
    Response::text(format!("{}", std::hint::black_box(&buffer).len()))
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth as u8; 512];
    std::hint::black_box(&frame);
    recurse(depth + 1).wrapping_add(u64::from(frame[0]))
}

fn sleep<'a>(request: &Request<'a>) -> Response<'a> {
    let Some(ms) = number_param(request, "ms") else {
        return bad_request("expected /sleep/{ms}\n");
    };
    net::sleep(Duration::from_millis(ms));
    Response::text(format!("slept {ms} ms\n"))
}

fn spin<'a>(request: &Request<'a>) -> Response<'a> {
    let Some(ms) = number_param(request, "ms") else { return bad_request("expected /spin/{ms}\n") };
    let until = Instant::now() + Duration::from_millis(ms);
    let mut turns = 0u64;
    while Instant::now() < until {
        turns = std::hint::black_box(turns + 1);
    }
    Response::text(format!("spun {ms} ms\n"))
}

/// Calls an upstream HTTP server on loopback and relays its status and body.
fn upstream<'a>(request: &Request<'a>) -> Response<'a> {
    let Some(to) = request.query_param("to").and_then(|to| to.parse::<SocketAddr>().ok()) else {
        return bad_request("expected ?to=127.0.0.1:PORT\n");
    };
    if !to.ip().is_loopback() {
        return Response::text("the demo relays to loopback only\n")
            .with_status(StatusCode::FORBIDDEN);
    }
    let path = request.query_param("path").unwrap_or("/");
    match call_upstream(to, path) {
        Ok((status, body)) => Response::bytes(body).with_status(status),
        Err(error) => Response::text(format!("upstream failed: {error}\n"))
            .with_status(StatusCode::BAD_GATEWAY),
    }
}

fn call_upstream(to: SocketAddr, path: &str) -> std::io::Result<(StatusCode, Vec<u8>)> {
    let mut stream = TcpStream::connect(to, UPSTREAM_TIMEOUT)?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut received = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        if received.len() + n > UPSTREAM_RESPONSE_BYTES_MAX {
            return Err(std::io::Error::other("upstream response too large"));
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&received) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Err(std::io::Error::other("malformed upstream response")),
    };
    let status =
        response.code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, received[head_len..].to_vec()))
}
