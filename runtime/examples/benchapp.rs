//! cella's side of the benchmarks (benchmarks/run.sh): the demo app plus `GET /json`, whose
//! work is shared with every peer server (benchmarks/peers/src/common.rs).

#[path = "../../benchmarks/peers/src/common.rs"]
#[allow(dead_code)]
mod common;

use cella::{handler_fn, Response};

#[global_allocator]
static ALLOCATOR: cella::RoutingAlloc = cella::RoutingAlloc;

fn main() -> std::process::ExitCode {
    let app = || cella::demo::app().get("/json", handler_fn(|_| Response::json(common::json())));
    cella::cli::main_with(std::env::args_os(), app)
}
