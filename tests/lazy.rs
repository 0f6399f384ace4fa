//! What std and libc set up lazily never lands in an arena (issue 10), observed from outside
//! the process. Each test reproduces a failure of the old design through an ordinary program:
//! `startapp` (a `main` of its own calling `Server::start`, stdout untouched before) and
//! `userapp` (set up with `cella::main!`, so that libc's own `malloc` calls come through cella's
//! exported C allocator). Before the fix: the first `println!` inside a handler put stdout's
//! buffer in that request's arena, and later prints wrote into whatever the slot held next (a
//! later request's response body); a `thread_local!` with a destructor touched in a handler had
//! glibc's TLS-destructor node `calloc`ed in the arena, and the process crashed at exit
//! (SIGSEGV); a DNS lookup left NSS state in the arena and the next ones hung the worker.

use cella_tests::{Client, ServerProcess, SMALL};

fn userapp(workers: &str) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", workers, "--slots", "4"]);
    ServerProcess::start_binary("userapp", &args, &[])
}

#[test]
fn println_first_used_in_a_handler_under_server_start_never_writes_into_a_later_response() {
    let env = [
        ("CELLA_WORKERS", "1"),
        ("CELLA_SLOTS", "1"),
        ("CELLA_SLOT_ARENA_SIZE", "64KiB"),
        ("CELLA_REQUEST_BODY_SIZE_MAX", "16KiB"),
    ];
    let mut server = ServerProcess::start_binary("startapp", &[], &env);
    let mut client = Client::connect(server.addr());
    // The first print of the process, from a request that allocated little before it.
    assert_eq!(client.get("/println/1?body=0").status, 200);
    let expected = "x".repeat(4000);
    for round in 0..50 {
        // The body is made before the prints, on the one slot the first request used: over
        // where that request's arena held stdout's buffer.
        let response = client.get(&format!("/println/{}?body=4000", 1 + round % 3));
        assert_eq!(response.status, 200, "round {round}");
        assert!(response.text() == expected, "round {round}: print bytes in the body");
    }
    drop(client);
    server.terminate();
}

#[test]
fn a_thread_local_with_a_destructor_touched_in_handlers_does_not_crash_the_process_at_exit() {
    let mut server = userapp("2");
    for _ in 0..20 {
        let mut client = Client::connect(server.addr());
        assert_eq!(client.get("/thread-local").status, 200);
        assert_eq!(client.get("/log/1?tag=tls").status, 200);
    }
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn dns_lookups_work_across_many_requests_on_every_worker_with_no_system_allocation() {
    let mut server = userapp("2");
    for round in 0..40 {
        let mut client = Client::connect(server.addr());
        let answer = client.get("/resolve/localhost");
        assert_eq!(answer.status, 200, "round {round}");
        assert!(answer.text().contains("127.0.0.1"), "round {round}: {}", answer.text());
        let name = client.get("/thread-name");
        assert!(name.text().starts_with("cella-worker-"), "round {round}");
    }
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn the_environment_and_the_thread_handle_read_in_handlers_are_right_every_time() {
    let mut server = userapp("2");
    let mut client = Client::connect(server.addr());
    for round in 0..40 {
        assert_eq!(client.get("/env/HOME").text(), std::env::var("HOME").unwrap(), "{round}");
        assert_eq!(client.get("/env/CELLA_NOT_SET_ANYWHERE").text(), "(unset)");
        assert!(client.get("/thread-name").text().starts_with("cella-worker-"));
    }
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

/// Builds the LD_PRELOAD malloc counter of tests/check/ (once per test binary).
fn malloc_counter() -> &'static std::path::Path {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out =
            std::env::temp_dir().join(format!("cella-lazy-counter-{}.so", std::process::id()));
        let status = std::process::Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(root.join("tests/check/malloc_counter.c"))
            .status()
            .expect("cc runs");
        assert!(status.success(), "the malloc counter builds");
        out
    })
}

#[test]
fn dns_lookups_after_the_seal_reach_no_system_allocator_by_cellas_count_and_by_ld_preload() {
    // The counter sees every call that reaches glibc's malloc through cella's exported
    // allocator (the next allocator in symbol order), between SIGUSR1 and SIGUSR2.
    let counter = malloc_counter().to_str().expect("a UTF-8 path").to_owned();
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", "2", "--slots", "4"]);
    let mut server = ServerProcess::start_binary("userapp", &args, &[("LD_PRELOAD", &counter)]);
    server.signal(libc::SIGUSR1);
    for round in 0..30 {
        let mut client = Client::connect(server.addr());
        assert_eq!(client.get("/resolve/localhost").status, 200, "round {round}");
        assert_eq!(client.get("/thread-local").status, 200, "round {round}");
        assert_eq!(client.get("/log/1?tag=counted").status, 200, "round {round}");
    }
    server.signal(libc::SIGUSR2);
    assert!(server.wait_stderr("malloc-counter:"), "{}", server.stderr());
    assert!(server.stderr().contains("malloc-counter: 0 calls in window"), "{}", server.stderr());
    assert_eq!(server.terminate_and_count_system_allocations(), 0, "cella's count agrees");
}

#[test]
fn a_server_whose_binary_does_not_export_the_c_allocator_says_libc_allocations_are_unseen() {
    let env = [
        ("CELLA_WORKERS", "1"),
        ("CELLA_SLOTS", "1"),
        ("CELLA_SLOT_ARENA_SIZE", "64KiB"),
        ("CELLA_REQUEST_BODY_SIZE_MAX", "16KiB"),
    ];
    let server = ServerProcess::start_binary("startapp", &[], &env);
    assert!(
        server.wait_stderr("cella: warning: this binary does not export cella's C allocator"),
        "{}",
        server.stderr()
    );
    let server = userapp("1");
    assert!(!server.stderr().contains("does not export"), "{}", server.stderr());
}
