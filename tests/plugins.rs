//! Handlers from other languages through the C ABI: each plugin build under tests/plugins/ is
//! compiled with its real compiler, loaded with `cella serve --handler`, and held to the same
//! assertions: the shared app's endpoints, malloc past the arena → 500 and the next request
//! fine, an outbound call through the host, ten thousand requests with zero system allocations
//! after startup, the `[plugin]` config section reaching `init`; and load errors (missing file,
//! missing entry symbol, another ABI version) refused with one clear line. The C build also
//! holds the C allocator to its edge cases: blocks malloc'ed in `init` realloc'ed and freed in
//! handlers, and sizes that overflow.
//!
//! Languages: C (gcc), C++ (g++, through the same `cella.h`: its declarations have C linkage),
//! Zig (the `ziglang` PyPI package) and Nim (Debian's `nim`); tests/run.sh installs the compilers
//! when they are missing. The C++ build also throws and catches exceptions inside handlers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::thread;

use cella_tests::{binary, get, Client, ServerProcess, SMALL};

fn plugins_dir() -> PathBuf {
    let dir = binary("cella").parent().expect("target dir").join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    dir
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Compiles the C app with `defines`, once per name.
fn build_c(name: &str, defines: &[&str]) -> PathBuf {
    let output = plugins_dir().join(format!("lib{name}.so"));
    let root = repo_root();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I"])
        .arg(root.join("runtime/include"))
        .args(defines)
        .arg(root.join("tests/plugins/c/app.c"))
        .arg("-o")
        .arg(&output)
        .status()
        .expect("cc runs");
    assert!(status.success(), "the C plugin compiles");
    output
}

fn c_plugin() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_c("app_c", &[]))
}

fn cpp_plugin() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = plugins_dir().join("libapp_cpp.so");
        let root = repo_root();
        let mut command = Command::new("g++");
        command
            .args(["-std=c++17", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Wpedantic"])
            .args(["-Werror", "-I"])
            .arg(root.join("runtime/include"))
            .arg(root.join("tests/plugins/cpp/app.cpp"))
            .arg("-o")
            .arg(&output);
        run_compiler(command, "the C++ plugin");
        output
    })
}

fn run_compiler(mut command: Command, what: &str) {
    let output =
        command.output().unwrap_or_else(|e| panic!("{what}: cannot run the compiler: {e}"));
    assert!(
        output.status.success(),
        "{what} does not compile:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn zig_plugin() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = plugins_dir().join("libapp_zig.so");
        let cache = plugins_dir().join("zig-cache");
        let root = repo_root();
        let mut command = Command::new("python3");
        command
            .args(["-m", "ziglang", "build-lib", "-dynamic", "-O", "ReleaseFast", "-lc", "-I"])
            .arg(root.join("runtime/include"))
            .arg(root.join("tests/plugins/zig/app.zig"))
            .arg(format!("-femit-bin={}", output.display()))
            .env("ZIG_GLOBAL_CACHE_DIR", &cache)
            .env("ZIG_LOCAL_CACHE_DIR", &cache);
        run_compiler(command, "the Zig plugin");
        output
    })
}

fn nim_plugin() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = plugins_dir().join("libapp_nim.so");
        let root = repo_root();
        let mut command = Command::new("nim");
        command
            .args(["c", "--app:lib", "--mm:arc", "--threads:on", "-d:useMalloc", "-d:release"])
            .args(["-d:noSignalHandler", "--hints:off"])
            .arg(format!("--nimcache:{}", plugins_dir().join("nimcache").display()))
            .arg(format!("--passC:-I{}", root.join("runtime/include").display()))
            .arg(format!("-o:{}", output.display()))
            .arg(root.join("tests/plugins/nim/app.nim"));
        run_compiler(command, "the Nim plugin");
        output
    })
}

/// Every plugin build the shared assertions run against.
fn plugins() -> Vec<(&'static str, &'static PathBuf)> {
    vec![("c", c_plugin()), ("cpp", cpp_plugin()), ("zig", zig_plugin()), ("nim", nim_plugin())]
}

fn serve_plugin(plugin: &PathBuf, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve", "--handler", plugin.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("cella", &args, &[])
}

#[test]
fn each_plugin_serves_the_shared_app() {
    for (language, plugin) in plugins() {
        let server = serve_plugin(plugin, &[]);
        let hello = get(server.addr(), "/");
        assert_eq!((hello.status, hello.text().as_str()), (200, "Hello, World!"), "{language}");
        assert_eq!(hello.header("content-type"), Some("text/plain; charset=utf-8"));
        let mut client = Client::connect(server.addr());
        client.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!(client.response().body, b"hello", "{language}");
        assert_eq!(client.get("/alloc/10").text(), "10240", "{language}");
        assert_eq!(client.get("/nothing").status, 404, "{language}");
    }
}

#[test]
fn a_plugin_that_mallocs_past_its_arena_gets_500_and_the_next_request_succeeds() {
    for (language, plugin) in plugins() {
        let server = serve_plugin(plugin, &[]);
        let mut client = Client::connect(server.addr());
        for _ in 0..50 {
            assert_eq!(client.get("/alloc/100000").status, 500, "{language}");
            assert_eq!(client.get("/alloc/16").text(), "16384", "{language}");
        }
        assert_eq!(client.get("/").status, 200, "{language}");
    }
}

#[test]
fn a_plugin_calls_upstream_through_the_host() {
    for (language, plugin) in plugins() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = upstream.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = upstream.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 202 Accepted\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong",
            );
        });
        let server = serve_plugin(plugin, &["--workers", "1"]);
        let relayed = get(server.addr(), &format!("/upstream?to={address}"));
        assert_eq!((relayed.status, relayed.body.as_slice()), (202, &b"pong"[..]), "{language}");
    }
}

#[test]
fn ten_thousand_plugin_requests_make_no_system_allocation_after_startup() {
    for (language, plugin) in plugins() {
        let mut server = serve_plugin(plugin, &[]);
        let mut client = Client::connect(server.addr());
        for i in 0..10_000 {
            let (path, status) = match i % 4 {
                0 => ("/alloc/100000", 500),
                1 => ("/alloc/4", 200),
                2 => ("/nothing", 404),
                _ => ("/", 200),
            };
            assert_eq!(client.get(path).status, status, "{language} {path}");
        }
        drop(client);
        assert_eq!(server.terminate_and_count_system_allocations(), 0, "{language}");
    }
}

#[test]
fn libc_state_a_c_plugin_first_uses_in_a_handler_gives_the_same_answer_every_time() {
    // localtime/strftime("%Z") (tzset), getaddrinfo (NSS) and printf (stdout's buffer), each
    // first used inside a handler. Before libc's own allocations went to the state heap, that
    // state lived in the first request's arena: %Z came back empty from the second request on,
    // the lookup failed or hung, and prints wrote into later requests' memory.
    let mut server = serve_plugin(c_plugin(), &["--workers", "2"]);
    let mut client = Client::connect(server.addr());
    let first_time = client.get("/libc/time").text();
    assert!(first_time.starts_with("2023-11-14 ") && first_time.ends_with(" UTC"), "{first_time}");
    assert_eq!(client.get("/libc/printf?fill=0").text(), "intact");
    for round in 0..200 {
        let mut client = Client::connect(server.addr());
        assert_eq!(client.get("/libc/time").text(), first_time, "round {round}");
        assert_eq!(client.get("/libc/resolve").text(), "127.0.0.1", "round {round}");
        // Over where the first print's buffer would have been in the arena.
        assert_eq!(client.get("/libc/printf?fill=16384").text(), "intact", "round {round}");
    }
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn a_cpp_plugin_throws_and_catches_exceptions_in_handlers_without_system_allocations() {
    let mut server = serve_plugin(cpp_plugin(), &[]);
    let mut client = Client::connect(server.addr());
    for _ in 0..200 {
        let caught = client.get("/exception");
        assert_eq!(caught.status, 500);
        assert_eq!(caught.text(), "caught: thrown in a handler, /exception\n");
        assert_eq!(client.get("/alloc/8").text(), "8192");
    }
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn the_plugin_section_of_the_config_file_reaches_init() {
    for (language, plugin) in plugins() {
        let path = std::env::temp_dir()
            .join(format!("cella-plugin-{}-{language}.toml", std::process::id()));
        std::fs::write(&path, "slots = 4\n[plugin]\ngreeting = \"hello from the config\"\n")
            .unwrap();
        let server = serve_plugin(plugin, &["--config", path.to_str().unwrap()]);
        assert_eq!(get(server.addr(), "/greeting").text(), "hello from the config", "{language}");
    }
}

#[test]
fn blocks_a_c_plugin_malloced_in_init_are_reallocated_and_freed_by_handlers_without_system_calls() {
    let mut server = serve_plugin(c_plugin(), &[]);
    let mut client = Client::connect(server.addr());
    // 600 blocks from the system allocator, each moved into a request's arena by `realloc` or
    // given back by `free` in its own request: their contents must come along, and neither may
    // call the system allocator while the handler runs.
    for index in 0..600 {
        let (path, expected) = if index % 2 == 0 {
            (format!("/foreign/realloc/{index}"), "moved\n")
        } else {
            (format!("/foreign/free/{index}"), "freed\n")
        };
        let response = client.get(&path);
        assert_eq!((response.status, response.text().as_str()), (200, expected), "{path}");
    }
    assert_eq!(client.get("/foreign/free/0").status, 410, "each block is taken once");
    assert_eq!(client.get("/alloc/16").text(), "16384", "the server still serves");
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    let stderr = server.stderr();
    assert!(
        stderr.contains(
            "handlers freed 600 blocks of the system allocator, released once no handler ran \
             (0 never released"
        ),
        "{stderr}"
    );
}

#[test]
fn allocation_sizes_that_overflow_give_a_c_plugin_null_with_enomem_in_init_and_in_handlers() {
    let plugin = build_c("app_c_overflow", &["-DAPP_OVERFLOW_IN_INIT"]);
    let server = serve_plugin(&plugin, &[]);
    let mut client = Client::connect(server.addr());
    for _ in 0..3 {
        let in_handler = client.get("/overflow");
        assert_eq!((in_handler.status, in_handler.text().as_str()), (200, "all NULL"));
    }
    assert_eq!(client.get("/overflow/init").text(), "all NULL");
    assert_eq!(client.get("/").status, 200);
}

fn load_error(plugin: &str) -> String {
    let output = Command::new(binary("cella"))
        .args(["serve", "--listen", "127.0.0.1:0", "--handler", plugin])
        .env_remove("CELLA_QUARANTINE")
        .output()
        .expect("cella runs");
    assert!(!output.status.success(), "{plugin} must be refused");
    assert!(output.stdout.is_empty(), "no ready line");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    stderr
}

#[test]
fn a_plugin_built_for_another_abi_version_is_refused() {
    let plugin = build_c("app_c_abi99", &["-DAPP_ABI_VERSION=99"]);
    let message = load_error(plugin.to_str().unwrap());
    assert!(message.contains(plugin.to_str().unwrap()), "{message}");
    assert!(message.contains("implements version 1"), "{message}");
    assert!(message.contains("built for version 99"), "{message}");
}

#[test]
fn missing_plugins_and_missing_entry_symbols_are_refused() {
    let message = load_error("/nonexistent/libnothing.so");
    assert!(message.contains("/nonexistent/libnothing.so: no such file"), "{message}");
    let no_entry = build_c("app_c_no_entry", &["-DAPP_NO_ENTRY"]);
    let message = load_error(no_entry.to_str().unwrap());
    assert!(message.contains("does not export `cella_plugin_entry`"), "{message}");
}
