//! `simplemsgr ping ADDR`: round trips of one message against `simplemsgr serve`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use simplemsgr::runtime::Config;

use super::{parse_addr, CliError};
use crate::bench::latency::fmt_dur;
use crate::bench::{parse_size, raw};

/// Arguments of `simplemsgr ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The server's address.
    #[arg(value_name = "ADDR", value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Number of round trips.
    #[arg(short, long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Pause between round trips, in milliseconds.
    #[arg(short, long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub interval_ms: u64,
    /// Payload size (k/m suffixes allowed).
    #[arg(short, long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
}

/// Run the command.
pub fn run(args: PingArgs, cfg: &Config, quiet: bool) -> Result<(), CliError> {
    if !quiet {
        println!(
            "PING {} ({} bytes, raw TCP echo; the messenger is not built yet)",
            args.addr, args.size
        );
    }
    let hist = raw::ping(
        args.addr,
        cfg,
        args.count,
        args.size,
        Duration::from_millis(args.interval_ms),
        |seq, rtt| {
            if !quiet {
                println!(
                    "{} bytes from {}: seq={seq} time={}",
                    args.size,
                    args.addr,
                    fmt_dur(rtt)
                );
            }
        },
    )
    .map_err(CliError::failed)?;
    let s = hist.summary();
    println!("--- {} ping statistics ---", args.addr);
    println!(
        "{} round trips, min/mean/p50/max = {}/{}/{}/{}",
        s.count,
        fmt_dur(hist.quantile(0.0)),
        fmt_dur(s.mean),
        fmt_dur(s.p50),
        fmt_dur(s.max)
    );
    Ok(())
}
