//! `simplemsgr serve --bind ADDR`: a messenger echo server, until killed.
//!
//! It answers the benchmark protocol (acknowledges bench data that asks for it) and
//! echoes every other message, so `simplemsgr ping ADDR` and `simplemsgr bench ADDR`
//! work against it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{Config, Messenger, ResourceLimits};

use super::{parse_addr, parse_secs, CliError};
use crate::bench::msgr::BenchServer;

/// Arguments of `simplemsgr serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port, which is printed).
    #[arg(short, long, value_name = "ADDR", value_parser = parse_addr, default_value = "127.0.0.1:6800")]
    pub bind: SocketAddr,
    /// Exit after this many seconds instead of running until killed.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration_secs: Option<f64>,
    /// Who may connect (`--auth secret` accepts the entities of `--keyring`).
    #[command(flatten)]
    pub auth: super::AuthArgs,
    /// The weakest frame protection a client may use.
    #[arg(long, value_enum, default_value_t = super::ModeArg::Plain)]
    pub mode: super::ModeArg,
}

/// Run the command.
pub fn run(args: ServeArgs, cfg: &Config) -> Result<(), CliError> {
    let limits = ResourceLimits::read(cfg.thread_stack_bytes);
    let server = Messenger::builder(
        "osd.0"
            .parse()
            .map_err(|e| CliError::failed(format!("{e}")))?,
    )
    .config(cfg.clone())
    .bind(args.bind)
    .default_policy(Policy::stateful_server())
    .auth(args.auth.server(args.mode)?)
    .mode(args.mode.mode(), args.mode.mode())
    .start(Arc::new(BenchServer))
    .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = server
        .listen_addr()
        .ok_or_else(|| CliError::failed("the messenger has no listening address"))?;
    println!(
        "simplemsgr serve: listening on {addr} (msgr2, {})",
        server.my_addr()
    );
    eprintln!("{limits}");
    match args.duration_secs {
        Some(s) => std::thread::sleep(Duration::from_secs_f64(s)),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    server.shutdown();
    server.wait(Duration::from_secs(5));
    Ok(())
}
