//! `blue-green`: zero-downtime blue/green deploys from a TOML file.
//!
//! This binary only reads the config, builds the components of `blue-green-core` and
//! `blue-green-docker`, and prints what the engine does. Exit codes are those of DESIGN.md.

mod cli;
mod commands;
mod components;
mod failure;
mod output;

// The config reader lives in the library, so that the fuzz targets reach it.
use blue_green_cli::config;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logs(&cli);
    let runtime = match runtime(commands::proxy::serving_threads(&cli.command)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let config = config::load(&cli.config);
    let code = runtime.block_on(commands::run(&cli, config));
    // A blocked pause hook or a hung call must not keep the process alive after the result.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The async runtime. `proxy run` (`serving` is `Some`) serves traffic: one thread per CPU,
/// unless `--threads` says otherwise (one thread is tokio's current-thread runtime).
///
/// Every other command runs on the current thread. A deploy waits on sockets, processes and
/// timers, one step at a time, never on the CPU; on the current thread the answer to a request
/// wakes the waiting task itself, where on a multi-threaded runtime a worker thread receives it
/// and then has to wake the main thread: about 0.1 ms more for each request to a proxy's
/// control socket, measured here, three of them in a switch.
fn runtime(serving: Option<Option<usize>>) -> std::io::Result<tokio::runtime::Runtime> {
    match serving {
        None | Some(Some(1)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(Some(n)) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        Some(None) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

/// Logs go to stderr: notes of our crates (such as "pulling image") and warnings by default,
/// debug logs with `-v`, errors only with `-q`. `RUST_LOG` overrides.
fn init_logs(cli: &cli::Cli) {
    let default = if cli.verbose {
        "warn,blue_green_core=debug,blue_green_docker=debug,blue_green_proxy=debug,blue_green=debug"
    } else if cli.quiet {
        "error"
    } else {
        "warn,blue_green_core=info,blue_green_docker=info,blue_green_proxy=info,blue_green=info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(cli.verbose);
    if cli.verbose {
        logs.init();
    } else {
        logs.without_time().init();
    }
}
