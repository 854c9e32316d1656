//! `simplemsgr serve --bind ADDR`: a messenger echo server, until killed.
//!
//! It answers the benchmark protocol (acknowledges bench data that asks for it) and
//! echoes every other message, so `simplemsgr ping ADDR` and `simplemsgr bench ADDR`
//! work against it.
//!
//! At start it prints the listening address, then the connection limits in force and
//! the process limits the connection cap was derived from. While it runs it prints a
//! stats line every `--stats-interval` seconds (connections by state, threads, bytes
//! and messages, throttle waits, faults, refusals), and a last one when it stops.
//! Every option of the messenger can be set with `-o KEY=VALUE`, e.g.
//! `-o ms_max_connections=100 -o ms_max_handshaking=64`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{Config, Messenger};

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
    /// Print a stats line every SECS seconds (and always one at exit).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stats_interval: Option<f64>,
    /// Who may connect (`--auth secret` accepts the entities of `--keyring`).
    #[command(flatten)]
    pub auth: super::AuthArgs,
    /// The weakest frame protection a client may use.
    #[arg(long, value_enum, default_value_t = super::ModeArg::Plain)]
    pub mode: super::ModeArg,
}

/// Run the command.
pub fn run(args: ServeArgs, cfg: &Config) -> Result<(), CliError> {
    let name = "osd.0"
        .parse()
        .map_err(|e| CliError::failed(format!("{e}")))?;
    let server = Messenger::builder(name)
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
    say(format_args!(
        "simplemsgr serve: listening on {addr} (msgr2, {})",
        server.my_addr()
    ));
    say(format_args!("{}", server.limits()));
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
    say(format_args!(
        "[{:>9.1}s] {} live / cap {}; {}",
        started.elapsed().as_secs_f64(),
        server.live_connections(),
        server.limits().max_connections,
        server.stats()
    ));
}

/// Print a line on stdout. A server must not die because whoever read its stdout went
/// away (`println!` panics on a closed pipe): write errors are ignored.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
