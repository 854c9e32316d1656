//! `simplemsgr serve --bind ADDR`: a messenger echo server, until killed.
//!
//! At start it prints the listening address, then the connection limits in force and
//! the process limits the connection cap was derived from. While it runs it prints a
//! stats line every `--stats-interval` seconds (connections by state, threads, bytes
//! and messages, throttle waits, faults, refusals), and a last one when it stops.
//! Every option of the messenger can be set with `-o KEY=VALUE`, e.g.
//! `-o ms_max_connections=100 -o ms_max_handshaking=64`.
//!
//! `--raw` serves the raw TCP benchmark protocol (`bench/raw.rs`) instead: the
//! yardstick of `simplemsgr bench ADDR`, and what `simplemsgr ping` speaks for now.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{Config, FnDispatcher, Messenger};
use simplemsgr::wire::types::EntityName;

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
    /// Print a stats line every SECS seconds (and always one at exit).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stats_interval: Option<f64>,
    /// Our entity name.
    #[arg(long, value_name = "NAME", default_value = "osd.0")]
    pub name: EntityName,
    /// Serve the raw TCP benchmark protocol instead of the messenger.
    #[arg(long)]
    pub raw: bool,
}

/// Run the command.
pub fn run(args: ServeArgs, cfg: &Config) -> Result<(), CliError> {
    if args.raw {
        return run_raw(&args, cfg);
    }
    let echo = FnDispatcher::new(|conn: &simplemsgr::runtime::ConnectionRef, msg| {
        let _ = conn.send(msg);
    });
    let server = Messenger::builder(args.name)
        .config(cfg.clone())
        .bind(args.bind)
        .default_policy(Policy::stateless_server())
        .start(Arc::new(echo))
        .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = server
        .listen_addr()
        .ok_or_else(|| CliError::failed("the messenger has no listening address"))?;
    println!(
        "simplemsgr serve: {} listening on {addr} (msgr2 messenger, echo)",
        args.name
    );
    println!("{}", server.limits());
    let started = Instant::now();
    let end = args
        .duration_secs
        .map(|s| started + Duration::from_secs_f64(s));
    let interval = args.stats_interval.map(Duration::from_secs_f64);
    let mut next_stats = interval.map(|i| started + i);
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if let Some(t) = next_stats.filter(|t| now >= *t) {
            print_stats(&server, started);
            next_stats = interval.map(|i| (t + i).max(now));
        }
        // Sleep until the next thing to do (an hour at most, then look again).
        let wake = [end, next_stats]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        std::thread::sleep(wake.saturating_duration_since(now));
    }
    print_stats(&server, started);
    server.shutdown();
    if !server.wait(Duration::from_secs(5)) {
        log::warn!("some messenger threads did not exit within 5 s");
    }
    Ok(())
}

fn print_stats(server: &Messenger, started: Instant) {
    println!(
        "[{:>9.1}s] {} live / cap {}; {}",
        started.elapsed().as_secs_f64(),
        server.live_connections(),
        server.limits().max_connections,
        server.stats()
    );
}

fn run_raw(args: &ServeArgs, cfg: &Config) -> Result<(), CliError> {
    let server = RawServer::bind(args.bind, cfg)
        .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", args.bind)))?;
    println!(
        "simplemsgr serve: listening on {} (raw TCP benchmark protocol)",
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
