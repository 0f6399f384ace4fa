//! A small JSON API that shows the handler API of a real service, set up with one line
//! (`cella::main!`): handlers that return `Result` and use `?`, JSON in and out, percent-decoded
//! parameters, a nested router with its own fallback, a fallback for the rest, and per-thread
//! setup with `Router::prepare`.
//!
//! ```sh
//! cargo run --release -p cella --example api -- serve
//! curl localhost:8080/users/1                                  # {"id":1,"name":"ada"}
//! curl localhost:8080/users/x                                  # 400: not a number
//! curl -d '{"item":"tea","quantity":3}' localhost:8080/api/v1/orders   # 201 and a receipt
//! curl 'localhost:8080/api/v1/files/r%C3%A9sum%C3%A9.txt?tag=a+b'      # decoded and as sent
//! curl localhost:8080/api/v1/nothing                           # 404 in JSON (the API's fallback)
//! curl localhost:8080/nothing                                  # 404 in text (the app's fallback)
//! curl localhost:8080/worker                                   # set up by the prepare hook
//! ```
//!
//! `cella::main!` makes `RoutingAlloc` the global allocator and exports cella's C allocator, so
//! this binary also serves C plugins: `... --example api -- serve --handler ./libapp.so`.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use cella::{handler_fn, Error, Request, Response, Router, StatusCode};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct User {
    id: u64,
    name: &'static str,
}

const USERS: [User; 2] = [User { id: 1, name: "ada" }, User { id: 2, name: "grace" }];

/// `GET /users/{id}`: 400 when `id` is not a number, 404 when there is no such user.
fn user<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
    let id: u64 = request
        .param("id")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::bad_request("expected /users/{id} with a number\n"))?;
    let user = USERS.iter().find(|user| user.id == id).ok_or(StatusCode::NOT_FOUND)?;
    Ok(Response::json_value(user))
}

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    item: Cow<'a, str>,
    quantity: u32,
}

#[derive(Serialize)]
struct Receipt<'a> {
    item: &'a str,
    quantity: u32,
    total_cents: u64,
}

/// `POST /api/v1/orders`: a JSON order in (400 when the body is not one), a JSON receipt out.
fn order<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
    let order: Order<'a> = request.json()?;
    if order.quantity == 0 {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "quantity must be at least 1\n").into());
    }
    let total_cents = u64::from(order.quantity) * 250;
    let receipt = Receipt { item: &order.item, quantity: order.quantity, total_cents };
    Ok(Response::json_value(&receipt).with_status(StatusCode::CREATED))
}

#[derive(Serialize)]
struct File<'a> {
    name: &'a str,
    name_as_sent: &'a str,
    tag: Option<&'a str>,
    tag_as_sent: Option<&'a str>,
}

/// `GET /api/v1/files/{name}?tag=`: the parameter and the query value, decoded and as sent.
fn file<'a>(request: &Request<'a>) -> Response<'a> {
    Response::json_value(&File {
        name: request.param("name").unwrap_or(""),
        name_as_sent: request.param_raw("name").unwrap_or(""),
        tag: request.query_param("tag"),
        tag_as_sent: request.query_param_raw("tag"),
    })
}

/// The API's answer for paths under `/api/v1` that nothing matches.
fn api_not_found<'a>(request: &Request<'a>) -> Response<'a> {
    #[derive(Serialize)]
    struct NotFound<'a> {
        error: &'static str,
        path: &'a str,
    }
    let body = NotFound { error: "no such endpoint", path: request.path() };
    Response::json_value(&body).with_status(StatusCode::NOT_FOUND)
}

/// Numbers the worker threads as the prepare hook runs on each.
static WORKERS_PREPARED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on each worker by the prepare hook, before it serves (0: never prepared).
    static WORKER_NUMBER: Cell<u64> = const { Cell::new(0) };
}

fn app() -> Router {
    let api = Router::new()
        .post("/orders", order)
        .get("/files/{name}", handler_fn(file))
        .fallback(handler_fn(api_not_found));
    Router::new()
        .get("/users/{id}", user)
        .get("/worker", handler_fn(|_| Response::text(format!("worker {}\n", WORKER_NUMBER.get()))))
        .nest("/api/v1", api)
        .fallback(handler_fn(|request| {
            Response::text(format!("nothing at {}\n", request.path()))
                .with_status(StatusCode::NOT_FOUND)
        }))
        .prepare(|| {
            WORKER_NUMBER.set(WORKERS_PREPARED.fetch_add(1, Ordering::Relaxed) + 1);
        })
}

cella::main!(app);
