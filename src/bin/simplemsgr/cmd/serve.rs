//! `simplemsgr serve --bind ADDR`: accept connections until killed.
//!
//! Until the messenger is plugged in, this serves the raw TCP benchmark protocol
//! (`bench/raw.rs`), so `simplemsgr bench ADDR` and `simplemsgr ping ADDR` work against it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use simplemsgr::runtime::{Config, ResourceLimits};

use super::{parse_addr, parse_secs, CliError};
use crate::bench::raw::RawServer;

/// Arguments of `simplemsgr serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port, which is printed).
    #[arg(short, long, value_name = "ADDR", value_parser = parse_addr, default_value = "127.0.0.1:6800")]
    pub bind: SocketAddr,
    /// Exit after this many seconds instead of running until killed.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration_secs: Option<f64>,
}

/// Run the command.
pub fn run(args: ServeArgs, cfg: &Config) -> Result<(), CliError> {
    log::info!("{}", ResourceLimits::read(cfg.thread_stack_bytes));
    let server = RawServer::bind(args.bind, cfg)
        .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", args.bind)))?;
    println!(
        "simplemsgr serve: listening on {} (raw TCP benchmark protocol; the messenger is not built yet)",
        server.addr()
    );
    match args.duration_secs {
        Some(s) => {
            std::thread::sleep(Duration::from_secs_f64(s));
            drop(server);
        }
        None => server.wait(),
    }
    Ok(())
}
