//! The `simplemsgr` command-line tool.
//!
//! TEMPORARY (branch v1): dispatches only `ceph`; the lead's main.rs replaces this file.
#![allow(clippy::disallowed_methods)]

mod cmd;

use clap::{Parser, Subcommand};

/// simplemsgr: Ceph messenger protocols in Rust.
#[derive(Parser)]
#[command(name = "simplemsgr", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one monitor command over the legacy v1 protocol (auth none).
    Ceph(cmd::ceph::CephArgs),
}

fn main() -> std::process::ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Ceph(args) => cmd::ceph::run(&args),
    }
}
