//! `simplemsgr ping ADDR`: round trips of one message against `simplemsgr serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ChannelDispatcher, Config, Event, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::EntityType;

use super::{parse_addr, CliError};
use crate::bench::latency::fmt_dur;
use crate::bench::msgr::{probe, MSG_PING};
use crate::bench::{parse_size, Histogram};

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
    /// Who we are (`--auth secret --keyring FILE --name client.admin`).
    #[command(flatten)]
    pub auth: super::AuthArgs,
    /// Frame protection.
    #[arg(long, value_enum, default_value_t = super::ModeArg::Plain)]
    pub mode: super::ModeArg,
}

/// How long one round trip may take before ping gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the command.
pub fn run(args: PingArgs, cfg: &Config, quiet: bool) -> Result<(), CliError> {
    let auth = args.auth.client(args.mode)?;
    probe(args.addr, cfg.handshake_timeout).map_err(CliError::failed)?;
    let (d, events) = ChannelDispatcher::new();
    let client = Messenger::builder(
        format!("client.{}", std::process::id())
            .parse()
            .map_err(|e| CliError::failed(format!("{e}")))?,
    )
    .config(cfg.clone())
    .default_policy(Policy::lossy_client())
    .auth(auth)
    .mode(args.mode.mode(), args.mode.mode())
    .start(Arc::new(d))
    .map_err(|e| CliError::failed(format!("cannot start the messenger: {e}")))?;
    let conn = client
        .connect(args.addr, EntityType::OSD)
        .map_err(|e| CliError::failed(format!("cannot connect to {}: {e}", args.addr)))?;
    if !quiet {
        println!(
            "PING {} ({} bytes, msgr2, {:?} mode)",
            args.addr, args.size, args.mode
        );
    }
    let payload = Bytes::from(vec![0x5au8; args.size]);
    let mut hist = Histogram::new();
    let result = (|| {
        for seq in 0..args.count {
            if seq > 0 && args.interval_ms > 0 {
                std::thread::sleep(Duration::from_millis(args.interval_ms));
            }
            let t = Instant::now();
            conn.send(
                Message::new(MSG_PING, Bytes::new())
                    .with_data(payload.clone())
                    .with_tid(seq),
            )
            .map_err(|e| format!("connection to {} lost: {e}", args.addr))?;
            let deadline = t + REPLY_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match events.recv_timeout(left) {
                    Ok(Event::Message(_, m)) if m.ty == MSG_PING && m.tid == seq => break,
                    Ok(Event::Reset(_)) => return Err(format!("connection to {} lost", args.addr)),
                    Ok(Event::Refused(_, e)) => {
                        return Err(format!("{} refused the connection: {e}", args.addr))
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        return Err(format!(
                            "no reply from {} within {REPLY_TIMEOUT:?}",
                            args.addr
                        ))
                    }
                }
            }
            let rtt = t.elapsed();
            hist.record(rtt);
            if !quiet {
                println!(
                    "{} bytes from {}: seq={seq} time={}",
                    args.size,
                    args.addr,
                    fmt_dur(rtt)
                );
            }
        }
        Ok(())
    })();
    client.shutdown();
    result.map_err(CliError::failed)?;
    let s = hist.summary();
    println!("--- {} ping statistics ---", args.addr);
    println!(
        "{} round trips, min/mean/p50/p99/max = {}/{}/{}/{}/{}",
        s.count,
        fmt_dur(hist.quantile(0.0)),
        fmt_dur(s.mean),
        fmt_dur(s.p50),
        fmt_dur(s.p99),
        fmt_dur(s.max)
    );
    Ok(())
}
