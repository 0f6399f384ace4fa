//! cella's side of the benchmarks (benchmarks/run.sh): the demo app plus `GET /json`, whose
//! work is shared with every peer server (benchmarks/peers/src/common.rs).

#[path = "../../benchmarks/peers/src/common.rs"]
#[allow(dead_code)]
mod common;

use cella::{handler_fn, Response};

fn app() -> cella::Router {
    cella::demo::app().get("/json", handler_fn(|_| Response::json(common::json())))
}

// The documented one-line setup (RoutingAlloc, the exported C allocator, the descriptor hooks).
cella::main!(app);
