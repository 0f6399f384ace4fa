//! The `cella` command line: configuration precedence (flag > environment > file > default),
//! unknown keys refused in the file and flags but only warned about in the environment (where
//! Kubernetes puts `CELLA_PORT`), `--version`, `check-config` output, and refusing to start with
//! a clear message and a non-zero exit.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cella_tests::{binary, ServerProcess};

fn cella(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary("cella"));
    command.args(args).env_remove("CELLA_QUARANTINE");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("cella runs")
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("cella-cli-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn effective(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{key} = ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key} not printed: {stdout}"))
        .to_string()
}

#[test]
fn check_config_applies_flag_over_env_over_file_over_default() {
    let file = config_file("precedence", "slots = 8\nworkers = 2\nslot_arena_size = \"512KiB\"\n");
    let path = file.to_str().unwrap();
    let output = cella(
        &["check-config", "--config", path, "--slots", "16"],
        &[("CELLA_SLOTS", "12"), ("CELLA_WORKERS", "4")],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(effective(&output, "slots"), "16", "flag beats env and file");
    assert_eq!(effective(&output, "workers"), "4", "env beats file");
    assert_eq!(effective(&output, "slot_arena_size"), "512KiB", "file beats default");
    assert_eq!(effective(&output, "slot_stack_size"), "256KiB", "default");
    assert!(String::from_utf8_lossy(&output.stdout).contains("# memory plan: 16 slots"));
}

#[test]
fn unknown_keys_are_refused_in_file_and_flags_and_only_warned_about_in_env() {
    let file = config_file("unknown", "slotz = 8\n");
    let from_file = cella(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(from_file.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&from_file.stderr).contains("unknown config key `slotz`"));
    let from_env = cella(&["check-config"], &[("CELLA_SLOTZ", "8")]);
    let stderr = String::from_utf8_lossy(&from_env.stderr);
    assert!(from_env.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "cella: warning: ignoring environment variable CELLA_SLOTZ: not a config key"
    );
    assert_eq!(effective(&from_env, "slots"), "64", "the misspelt variable set nothing");
    let bad_value = cella(&["check-config"], &[("CELLA_SLOTS", "eight")]);
    assert_eq!(bad_value.status.code(), Some(2), "a bad value for a real key is still an error");
    let from_flag = cella(&["check-config", "--set", "slotz=8"], &[]);
    assert_eq!(from_flag.status.code(), Some(2));
    let bad_size = cella(&["check-config", "--slot-arena", "1MB"], &[]);
    assert!(String::from_utf8_lossy(&bad_size.stderr).contains("unknown size unit"));
}

#[test]
fn serve_starts_and_serves_with_the_variables_kubernetes_injects_for_a_service_named_cella() {
    let mut args = vec!["serve"];
    args.extend_from_slice(cella_tests::SMALL);
    let env = [
        ("CELLA_PORT", "tcp://10.96.0.12:8080"),
        ("CELLA_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
        ("CELLA_SERVICE_HOST", "10.96.0.12"),
        ("CELLA_SERVICE_PORT", "8080"),
    ];
    let mut server = ServerProcess::start_binary("cella", &args, &env);
    assert_eq!(cella_tests::get(server.addr(), "/").status, 200);
    for (name, _) in env {
        let warning =
            format!("cella: warning: ignoring environment variable {name}: not a config key");
        assert!(server.wait_stderr(&warning), "{}", server.stderr());
    }
    assert!(server.terminate().success(), "{}", server.stderr());
}

#[test]
fn version_prints_the_crate_version_and_exits_zero() {
    let output = cella(&["--version"], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim_end(), format!("cella {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn serve_refuses_an_impossible_memory_plan_with_a_clear_message() {
    let output = cella(
        &["serve", "--listen", "127.0.0.1:0", "--slots", "65536", "--slot-arena", "1GiB"],
        &[],
    );
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no ready line");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("memory plan needs"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn serve_refuses_an_address_it_cannot_bind() {
    // 192.0.2.1 (TEST-NET-1) is no address of this machine: bind fails with EADDRNOTAVAIL.
    let output = cella(&["serve", "--listen", "192.0.2.1:0"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot bind the listen address"), "{stderr}");
}

#[test]
fn the_ready_line_is_the_first_line_on_stdout_and_names_the_bound_port() {
    let server = ServerProcess::start(&["--listen", "127.0.0.1:0"]);
    assert_ne!(server.addr().port(), 0);
    assert!(server.wait_stderr("memory plan:"), "the plan is logged at startup");
}

#[test]
fn serve_refuses_to_start_when_the_region_cannot_be_mapped() {
    // 256 slots of 1 MiB need more address space than `ulimit -v` leaves.
    let script = format!(
        "ulimit -v 300000 && exec {} serve --listen 127.0.0.1:0 --slots 256 --slot-arena 1MiB",
        binary("cella").display()
    );
    let output =
        Command::new("sh").args(["-c", &script]).env_remove("CELLA_QUARANTINE").output().unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no ready line");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot map the") && stderr.contains("-byte region"), "{stderr}");
}

/// Runs `cella` for at most ten seconds (a server that starts when it should have refused is
/// killed, so the test fails instead of hanging).
fn cella_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(binary("cella"))
        .args(args)
        .env_remove("CELLA_QUARANTINE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cella runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

/// Asserts `output` is a refusal: a non-zero exit (not a signal), nothing on stdout, one line on
/// stderr that contains each of `needles`.
fn assert_refused(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(code) if code != 0), "{stderr}");
    assert!(output.stdout.is_empty(), "no plan, no ready line: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` in {stderr}");
    }
}

#[test]
fn a_size_whose_page_rounding_would_wrap_is_refused_in_every_source_naming_its_key() {
    let huge = "18446744073709551615B"; // u64::MAX: rounding up to whole pages would give 0
    let expected = ["config key `slot_stack_size`", huge, "64GiB"];
    let set = format!("slot_stack_size={huge}");
    assert_refused(&cella(&["check-config", "--set", &set], &[]), &expected);
    assert_refused(&cella(&["check-config", "--slot-stack", huge], &[]), &expected);
    assert_refused(&cella(&["check-config"], &[("CELLA_SLOT_STACK_SIZE", huge)]), &expected);
    let file = config_file("huge-stack", &format!("slot_stack_size = \"{huge}\"\n"));
    assert_refused(&cella(&["check-config", "--config", file.to_str().unwrap()], &[]), &expected);
    assert_refused(&cella_bounded(&["serve", "--listen", "127.0.0.1:0", "--set", &set]), &expected);
}

#[test]
fn every_size_of_the_memory_plan_that_would_overflow_is_refused_naming_its_key() {
    for key in [
        "slot_arena_size",
        "connection_read_buffer_size",
        "connection_write_buffer_size",
        "panic_reserve_size",
    ] {
        let set = format!("{key}=18446744073709551615B");
        let output = cella(&["check-config", "--set", &set], &[]);
        assert_refused(&output, &[&format!("config key `{key}`")]);
    }
}

#[test]
fn slots_times_an_arena_whose_product_would_wrap_is_refused_not_planned_small() {
    // 65536 × (2^48 bytes + 260KiB) wraps in 64 bits to about 16GiB, which used to pass as a
    // valid plan and then panic while carving the region.
    let args = ["--slots", "65536", "--slot-arena", "262144GiB"];
    let check = cella(&[&["check-config"][..], &args].concat(), &[]);
    assert_refused(&check, &["config key `slot_arena_size`", "262144GiB"]);
    let serve = cella_bounded(&[&["serve", "--listen", "127.0.0.1:0"][..], &args].concat());
    assert_refused(&serve, &["config key `slot_arena_size`"]);
}

#[test]
fn a_plan_of_exactly_the_64gib_limit_is_accepted_and_one_byte_more_is_refused() {
    // One worker (64KiB signal stack + 64KiB panic reserve), one I/O buffer pair (8KiB + 8KiB),
    // one slot (4KiB guard + 256KiB stack + arena) and the 16MiB state heap: with this arena,
    // exactly 64GiB (4KiB pages).
    let arena = (64u64 << 30) - (404 << 10) - (16 << 20);
    let base = [
        "check-config",
        "--workers",
        "1",
        "--slots",
        "1",
        "--max-connections",
        "1",
        "--set",
        "io_buffers=1",
    ];
    let arena_text = format!("{arena}B");
    let output = cella(&[&base[..], &["--slot-arena", &arena_text]].concat(), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("= 64GiB (68719476736 bytes)"), "{stdout}");
    let one_more = format!("{}B", arena + 1);
    let output = cella(&[&base[..], &["--slot-arena", &one_more]].concat(), &[]);
    assert_refused(&output, &["the memory plan needs", "more than the 64GiB"]);
}
