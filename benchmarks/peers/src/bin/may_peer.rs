//! may_minihttp with one worker: the fastest Rust server on TechEmpower plaintext.
#[path = "../common.rs"]
mod common;

use std::io::{self, Read};
use std::time::Duration;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Bench;

impl HttpService for Bench {
    fn call(&mut self, request: Request, response: &mut Response) -> io::Result<()> {
        let path = request.path().to_string();
        if path == "/" {
            response.header("Content-Type: text/plain; charset=utf-8").body(common::HELLO);
        } else if let Some(kib) = common::number_after(&path, "/alloc/") {
            response
                .header("Content-Type: text/plain; charset=utf-8")
                .body_vec(common::alloc(kib as usize).into_bytes());
        } else if path == "/json" {
            response.header("Content-Type: application/json").body_vec(common::json().into_bytes());
        } else if path == "/echo" {
            let mut body = Vec::new();
            request.body().read_to_end(&mut body)?;
            response.header("Content-Type: application/octet-stream").body_vec(body);
        } else if let Some(ms) = common::number_after(&path, "/sleep/") {
            may::coroutine::sleep(Duration::from_millis(ms));
            response
                .header("Content-Type: text/plain; charset=utf-8")
                .body_vec(format!("slept {ms} ms\n").into_bytes());
        } else {
            response.status_code(404, "Not Found");
        }
        Ok(())
    }
}

fn main() {
    let port: u16 =
        std::env::args().nth(1).and_then(|p| p.parse().ok()).expect("usage: may_peer PORT");
    may::config().set_workers(1).set_stack_size(0x10000);
    let server = HttpServer(Bench).start(("127.0.0.1", port)).expect("bind");
    println!("listening on http://127.0.0.1:{port}");
    let _ = server.join();
}
