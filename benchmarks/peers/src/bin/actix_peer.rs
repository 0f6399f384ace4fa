//! actix-web 4 with one worker.
#[path = "../common.rs"]
mod common;

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

async fn hello() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(common::HELLO)
}

async fn alloc(kib: web::Path<usize>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(common::alloc(kib.into_inner()))
}

async fn json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(common::json())
}

async fn echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().content_type("application/octet-stream").body(body)
}

async fn sleep(ms: web::Path<u64>) -> HttpResponse {
    let ms = ms.into_inner();
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(format!("slept {ms} ms\n"))
}

fn main() -> std::io::Result<()> {
    let port: u16 =
        std::env::args().nth(1).and_then(|p| p.parse().ok()).expect("usage: actix_peer PORT");
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/", web::get().to(hello))
                .route("/alloc/{kib}", web::get().to(alloc))
                .route("/json", web::get().to(json))
                .route("/echo", web::post().to(echo))
                .route("/sleep/{ms}", web::get().to(sleep))
        })
        .workers(1)
        .backlog(1024)
        .max_connections(100_000)
        .bind(("127.0.0.1", port))?;
        println!("listening on http://127.0.0.1:{port}");
        server.run().await
    })
}
