//! hyper 1 + tokio (current-thread runtime: one core, like every server in the benchmark).
#[path = "../common.rs"]
mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let text = |body: String| {
        Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
    };
    let response = if path == "/" {
        text(common::HELLO.to_string())
    } else if let Some(kib) = common::number_after(&path, "/alloc/") {
        text(common::alloc(kib as usize))
    } else if path == "/json" {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(common::json())))
    } else if path == "/echo" {
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Response::builder().header("content-type", "application/octet-stream").body(Full::new(body))
    } else if let Some(ms) = common::number_after(&path, "/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        text(format!("slept {ms} ms\n"))
    } else {
        Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::new()))
    };
    Ok(response.expect("valid response"))
}

fn main() {
    let port: u16 =
        std::env::args().nth(1).and_then(|p| p.parse().ok()).expect("usage: hyper_peer PORT");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!("listening on http://127.0.0.1:{port}");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}
