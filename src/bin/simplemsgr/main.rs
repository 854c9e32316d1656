//! The `simplemsgr` command-line tool.
//!
//! ```text
//! simplemsgr serve --bind 127.0.0.1:6800      run a server
//! simplemsgr ping 127.0.0.1:6800              round trips against a server
//! simplemsgr bench [ADDR]                     the benchmark matrix (in-process without ADDR)
//! simplemsgr dump FILE                        show a capture file
//! simplemsgr ceph …                           talk to real Ceph daemons (legacy v1)
//! ```
//!
//! Exit status: 0 success, 1 runtime failure (e.g. unreachable peer), 2 usage error.
#![allow(clippy::disallowed_methods)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bench;
mod cmd;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use simplemsgr::runtime::Config;

use cmd::CliError;

/// A thread-per-connection implementation of the Ceph messenger protocols.
#[derive(Debug, Parser)]
#[command(name = "simplemsgr", version, propagate_version = true)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Set a messenger option by its Ceph name, e.g. `-o ms_tcp_nodelay=false` (repeatable).
    #[arg(short = 'o', long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accept connections and answer them until killed.
    Serve(cmd::serve::ServeArgs),
    /// Measure round trips to a server.
    Ping(cmd::ping::PingArgs),
    /// Throughput and latency benchmark, with raw TCP as the yardstick.
    Bench(cmd::bench::BenchArgs),
    /// Show the contents of a capture file.
    Dump(cmd::dump::DumpArgs),
    /// Talk to real Ceph daemons (legacy v1 protocol).
    Ceph(cmd::ceph::CephArgs),
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_micros()
        .init();
}

fn config(cli: &Cli) -> Result<Config, CliError> {
    let mut cfg = Config::default();
    for kv in &cli.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            CliError::usage(format!(
                "--set '{kv}': expected KEY=VALUE, e.g. ms_tcp_nodelay=false"
            ))
        })?;
        cfg.set(k.trim(), v)
            .map_err(|e| CliError::usage(format!("--set: {e}")))?;
    }
    cfg.validate()
        .map_err(|e| CliError::usage(format!("invalid configuration: {e}")))?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let quiet = cli.quiet;
    let result = match config(&cli) {
        Err(e) => Err(e),
        Ok(cfg) => match cli.cmd {
            Command::Serve(a) => cmd::serve::run(a, &cfg),
            Command::Ping(a) => cmd::ping::run(a, &cfg, quiet),
            Command::Bench(a) => cmd::bench::run(a, &cfg, quiet),
            Command::Dump(a) => cmd::dump::run(a),
            Command::Ceph(a) => return cmd::ceph::run(&a),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simplemsgr: error: {}", e.msg);
            ExitCode::from(e.code)
        }
    }
}
