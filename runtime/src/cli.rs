//! The `cella` command line: `cella serve` and `cella check-config`.
//!
//! Configuration precedence: flag > `CELLA_*` environment variable > config file > default.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::ffi::Plugin;
use crate::handler::Handler;
use crate::{sys, Config, Server};
use cella_shared::config::{ConfigValue, EscapeCheck};

/// Flags that set a config key, with the key they set.
const KEY_FLAGS: &[(&str, &str, &str)] = &[
    ("listen", "listen", "ADDR"),
    ("workers", "workers", "N"),
    ("slots", "slots", "N"),
    ("slot-arena", "slot_arena_size", "SIZE"),
    ("slot-stack", "slot_stack_size", "SIZE"),
    ("max-connections", "connections_max", "N"),
];

fn config_args(command: Command) -> Command {
    // Later flags win over earlier ones, as in most servers' command lines.
    let mut command = command
        .args_override_self(true)
        .arg(Arg::new("config").long("config").value_name("FILE").help("TOML config file"));
    for (flag, key, value_name) in KEY_FLAGS {
        command = command
            .arg(Arg::new(*flag).long(*flag).value_name(*value_name).help(format!("sets `{key}`")));
    }
    command.arg(
        Arg::new("set")
            .long("set")
            .value_name("KEY=VALUE")
            .action(ArgAction::Append)
            .help("sets any config key (see check-config for the list)"),
    )
}

/// The command line. `--handler` is offered only when this binary exports cella's C allocator
/// (`plugins`); otherwise it is hidden, and refused with a message when given.
fn command(plugins: bool) -> Command {
    Command::new("cella")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A web runtime whose memory is fixed at startup")
        .subcommand_required(true)
        .subcommand(
            config_args(Command::new("serve").about(
                "Serve (the built-in demo app, unless --handler or a program embeds its own)",
            ))
            .arg(
                Arg::new("handler")
                    .long("handler")
                    .value_name("PATH.so")
                    .hide(!plugins)
                    .help("serve the handler of a C-ABI plugin (docs/c-abi.md)"),
            ),
        )
        .subcommand(config_args(
            Command::new("check-config")
                .about("Validate and print the effective config and memory plan"),
        ))
}

/// Builds the effective configuration from every source; also returns the config file's
/// `[plugin]` section.
fn load_config(matches: &ArgMatches) -> Result<(Config, String), String> {
    let mut config = Config::default();
    let mut plugin_section = String::new();
    if let Some(path) = matches.get_one::<String>("config") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {path}: {e}"))?;
        config.apply_toml(&text).map_err(|e| format!("{path}: {e}"))?;
        plugin_section = cella_shared::config::plugin_section(&text);
    }
    let ignored = config.apply_env(std::env::vars()).map_err(|e| e.to_string())?;
    for name in ignored {
        eprintln!("cella: warning: ignoring environment variable {name}: not a config key");
    }
    for (flag, key, _) in KEY_FLAGS {
        if let Some(value) = matches.get_one::<String>(flag) {
            config.set(key, value, "a flag").map_err(|e| e.to_string())?;
        }
    }
    for assignment in matches.get_many::<String>("set").into_iter().flatten() {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("--set {assignment}: expected KEY=VALUE"))?;
        config.set(key.trim(), value, "a flag").map_err(|e| e.to_string())?;
    }
    Ok((config, plugin_section))
}

/// A handler chosen at run time (the built-in app or a plugin).
struct Chosen(Box<dyn Handler>);

impl Handler for Chosen {
    fn handle<'a>(&'a self, request: &crate::Request<'a>) -> crate::Response<'a> {
        self.0.handle(request)
    }

    fn prepare_thread(&self) {
        self.0.prepare_thread();
    }
}

/// Shares a plugin between the server and the code that calls its `deinit` at exit.
struct SharedPlugin(std::sync::Arc<Plugin>);

impl Handler for SharedPlugin {
    fn handle<'a>(&'a self, request: &crate::Request<'a>) -> crate::Response<'a> {
        self.0.handle(request)
    }

    fn prepare_thread(&self) {
        self.0.prepare_thread();
    }
}

/// Runs the command line with the demo app.
pub fn main() -> ExitCode {
    main_with(std::env::args_os(), crate::demo::app)
}

/// Runs the command line, serving the handler `make_handler` builds. `serve --handler PATH.so`
/// is offered only when the binary exports cella's C allocator (`cella::main!` does), so that a
/// plugin's `malloc` lands in the request's arena.
pub fn main_with<H: Handler>(
    args: impl IntoIterator<Item = OsString>,
    make_handler: impl FnOnce() -> H,
) -> ExitCode {
    let plugins = crate::setup::c_allocator_is_exported();
    let matches = match command(plugins).try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    let (name, sub) = matches.subcommand().expect("a subcommand is required");
    let (config, plugin_section) = match load_config(sub) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("cella: {message}");
            return ExitCode::from(2);
        }
    };
    if name == "check-config" {
        return check_config(&config);
    }
    if config.validate(cella_arena::page_size() as u64).is_ok() {
        // So that the program's startup (`make_handler`, a plugin's load) can log too.
        crate::log::install(
            crate::log::level_of(&config.log_level),
            config.log_line_size_max.0 as usize,
        );
    }
    let Some(path) = sub.get_one::<String>("handler") else {
        return serve(config, Chosen(Box::new(make_handler())));
    };
    if !plugins {
        eprintln!(
            "cella: --handler is not available: this binary does not export cella's C allocator, \
             so a plugin's malloc would go to the system heap; set the binary up with \
             `cella::main!(app)`"
        );
        return ExitCode::from(2);
    }
    let plugin = match Plugin::load(path, &plugin_section) {
        Ok(plugin) => std::sync::Arc::new(plugin),
        Err(error) => {
            eprintln!("cella: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = serve(config, Chosen(Box::new(SharedPlugin(plugin.clone()))));
    plugin.deinit();
    code
}

fn check_config(config: &Config) -> ExitCode {
    let plan = match config.validate(cella_arena::page_size() as u64) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("cella: {error}");
            return ExitCode::from(2);
        }
    };
    for (key, value) in config.entries() {
        println!("{key} = {value}");
    }
    println!("# memory plan: {plan}");
    println!(
        "# file descriptors needed: {} (connections_max + workers x full_table_held_max + slots x \
         slot_sockets_max + workers + {} spare; cella raises the soft limit to the hard one and refuses to start below this)",
        crate::fds_needed(config, &plan),
        crate::server::FDS_SPARE
    );
    crate::deploy::print(config, &plan);
    ExitCode::SUCCESS
}

fn serve(config: Config, handler: impl Handler) -> ExitCode {
    if let Err(error) = sys::block_control_signals() {
        eprintln!("cella: cannot block the control signals: {error}");
        return ExitCode::FAILURE;
    }
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    let escape_check = config.escape_check;
    let (mut notify, notify_error) = crate::systemd::Notifier::from_env();
    if let Some(message) = notify_error {
        eprintln!("cella: warning: {message}");
    }
    let inherited = match crate::systemd::take_listen_fds() {
        Ok(inherited) => inherited,
        Err(message) => {
            eprintln!("cella: {message}");
            return ExitCode::FAILURE;
        }
    };
    if !inherited.is_empty() {
        eprintln!(
            "cella: serving on {} listening socket(s) passed by systemd (LISTEN_FDS); `listen` \
             is not bound",
            inherited.len()
        );
    }
    let server = match Server::new(config, handler).with_listeners(inherited).start() {
        Ok(server) => server,
        Err(error) => {
            eprintln!("cella: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("cella: memory plan: {}", server.plan());
    if escape_check != EscapeCheck::Off {
        let what = if escape_check == EscapeCheck::Full { "statics and heap" } else { "statics" };
        eprintln!(
            "cella: escape_check = {}: {} bytes of {what} scanned when a slot is released",
            escape_check.to_text(),
            server.escape_check_bytes(),
        );
    }
    if let Some(addr) = server.admin_addr() {
        eprintln!("cella: admin listener on http://{addr} (/metrics /livez /readyz /config)");
    }
    if let Some(addr) = server.agent_addr() {
        eprintln!("cella: agent-check listener on {addr}");
    }
    // Before the ready line, which tools take as the start of "no allocation from now on":
    // telling systemd formats (allocates) on this thread, which is sealed right after the line.
    if let Err(error) = notify.ready(&format!("listening on http://{}", server.local_addr())) {
        eprintln!("cella: warning: cannot notify systemd (NOTIFY_SOCKET): {error}");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on http://{}", server.local_addr());
    let _ = stdout.flush();
    drop(stdout);
    cella_arena::seal_current_thread();
    while !stop_signal(&server, notify.watchdog(Duration::from_secs(1))) {}
    notify.stopping();
    eprintln!("cella: draining; a second signal exits at once");
    if !server.drain_delay().is_zero() {
        server.stop_ready();
        eprintln!(
            "cella: not ready; serving with `Connection: close` for the drain delay ({} ms)",
            server.drain_delay().as_millis()
        );
        let until = Instant::now() + server.drain_delay();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            if stop_signal(&server, notify.watchdog(left)) {
                eprintln!("cella: second signal: exiting without draining");
                std::process::exit(1);
            }
        }
    }
    server.begin_shutdown();
    let deadline = Instant::now() + drain_timeout;
    while !server.is_drained() {
        if stop_signal(&server, notify.watchdog(Duration::from_millis(10))) {
            eprintln!("cella: second signal: exiting without draining");
            std::process::exit(1);
        }
        if Instant::now() >= deadline {
            eprintln!("cella: drain deadline passed with requests in flight; exiting");
            std::process::exit(1);
        }
    }
    cella_arena::unseal_current_thread();
    let calls = cella_arena::sealed_system_calls();
    report_deferred_frees();
    let stats = server.stats();
    drop(server); // Writes out the access log's last lines.
    eprintln!("cella: the fullest arena held {} bytes", stats.arena_high_water_bytes);
    if stats.access_log_lines + stats.access_log_dropped > 0 {
        eprintln!(
            "cella: access log: {} lines, {} dropped (a worker's access_log_buffer_size was full)",
            stats.access_log_lines, stats.access_log_dropped
        );
    }
    if stats.escapes > 0 {
        eprintln!(
            "cella: escape check: {} words found pointing into released arenas, {} slots retired",
            stats.escapes, stats.slots_retired
        );
    }
    eprintln!("cella: drained; system allocator calls after startup: {calls}");
    ExitCode::SUCCESS
}

/// Waits up to `timeout` for a control signal: `true` for SIGTERM/SIGINT; SIGHUP reopens the
/// access log (log rotation) and is otherwise ignored, whatever the server is doing.
fn stop_signal(server: &crate::RunningServer, timeout: Duration) -> bool {
    match sys::wait_control_signal(timeout) {
        Some(sys::ControlSignal::Stop) => true,
        Some(sys::ControlSignal::Reopen) => {
            server.reopen_access_log();
            false
        }
        None => false,
    }
}

/// Frees the system-allocator blocks that plugin handlers freed while they ran (their `free` was
/// deferred: no system allocator call while a handler runs; see `cella_arena::cmalloc`), and
/// says how many there were, when there were any.
fn report_deferred_frees() {
    cella_arena::cmalloc::release_deferred_frees();
    let counts = cella_arena::cmalloc::deferred_free_counts();
    if counts.deferred + counts.leaked > 0 {
        eprintln!(
            "cella: handlers freed {} blocks of the system allocator, released once no handler \
             ran ({} never released: the table of {} deferred frees was full)",
            counts.deferred + counts.leaked,
            counts.leaked,
            cella_arena::cmalloc::DEFERRED_FREES_MAX
        );
    }
}
