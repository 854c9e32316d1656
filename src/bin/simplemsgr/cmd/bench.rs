//! `simplemsgr bench [ADDR]`: the benchmark matrix, raw TCP against the messenger.
//!
//! Without ADDR: an in-process server on 127.0.0.1:0 and the default matrix (64 B,
//! 4 KiB, 64 KiB, 1 MiB × 1 and 8 connections, plus ping-pong latency per size), all
//! bounded by `--budget-secs` (60 s). With ADDR: the same against `simplemsgr serve`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use simplemsgr::runtime::{Config, ResourceLimits};

use super::{parse_addr, parse_secs, CliError};
use crate::bench::hol::{HolMode, HolOptions};
use crate::bench::msgr::{BenchKey, MessengerTarget};
use crate::bench::raw::RawTcp;
use crate::bench::{
    fmt_size, parse_size, parse_size_or_zero, report, BenchTarget, Mode, Progress, RunResult,
    Workload,
};
use simplemsgr::proto::Mode as ProtectionMode;

/// Which measurements to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunsArg {
    /// Throughput and ping-pong latency.
    All,
    /// Streaming throughput only.
    Throughput,
    /// Ping-pong latency only.
    Latency,
}

/// Arguments of `simplemsgr bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmark against `simplemsgr serve` at this address instead of in-process.
    #[arg(value_name = "ADDR", value_parser = parse_addr)]
    pub addr: Option<SocketAddr>,
    /// Message sizes, comma separated (k/m suffixes): default 64,4k,64k,1m.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub size: Vec<usize>,
    /// Messages per throughput run (default: about 2 GiB worth, 2,000..2,000,000),
    /// or round trips per latency run (default 20,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Connection counts, comma separated: default 1,8 (latency: 1).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub conns: Vec<u32>,
    /// Most unacknowledged messages per connection in throughput runs.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub depth: u32,
    /// Cap on each run, in seconds (default: the budget shared out over the runs).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration_secs: Option<f64>,
    /// Cap on the whole matrix, in seconds.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub budget_secs: f64,
    /// Which measurements to make.
    #[arg(long, value_enum, default_value_t = RunsArg::All)]
    pub runs: RunsArg,
    /// Frame protection for the messenger runs (signed and secure use the SECRET
    /// auth method with a fixed benchmark key); several may be given, comma separated.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub mode: Vec<ProtectionArg>,
    /// Skip the raw TCP baseline (then no ratio is shown).
    #[arg(long)]
    pub no_raw: bool,
    /// Head-of-line test instead of the matrix: small-message latency while a 256 MiB
    /// message is in flight, with and without structured data (see bench/hol.rs).
    #[arg(long)]
    pub hol: bool,
    /// With --hol: the rows, comma separated: off (no structured data), before (chunks
    /// without ms_chunk_yield, ms_chunked_sockbuf and ms_chunked_notsent_lowat), on, raw (the raw TCP floor).
    #[arg(long, value_delimiter = ',', value_parser = HolMode::parse, requires = "hol")]
    pub hol_rows: Vec<HolMode>,
    /// With --hol: chunk size (k/m suffixes).
    #[arg(long, value_name = "SIZE", default_value = "64k", value_parser = parse_size)]
    pub hol_chunk: usize,
    /// With --hol: SO_SNDBUF and SO_RCVBUF of every socket (0 = the OS default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero, requires = "hol")]
    pub hol_sockbuf: Option<usize>,
    /// With --hol: ms_chunked_sockbuf of the `on` row (0 = never bound the buffers).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero, requires = "hol")]
    pub hol_chunked_sockbuf: Option<usize>,
    /// With --hol: ms_chunked_notsent_lowat of the `on` row (0 = leave TCP_NOTSENT_LOWAT alone).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero, requires = "hol")]
    pub hol_notsent_lowat: Option<usize>,
    /// With --hol: print each in-flight ping's legs on stderr.
    #[arg(long, requires = "hol")]
    pub hol_legs: bool,
    /// The key for signed and secure runs (`--auth secret --keyring FILE --name
    /// TYPE.ID`); without it, in-process runs use a fixed benchmark key.
    #[command(flatten)]
    pub auth: super::AuthArgs,
}

/// Frame protection of a messenger run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtectionArg {
    /// No protection.
    Plain,
    /// HMAC-SHA256 on every frame.
    Signed,
    /// AES-128-GCM on every frame.
    Secure,
}

impl ProtectionArg {
    fn mode(self) -> ProtectionMode {
        match self {
            ProtectionArg::Plain => ProtectionMode::Plain,
            ProtectionArg::Signed => ProtectionMode::Signed,
            ProtectionArg::Secure => ProtectionMode::Secure,
        }
    }
}

const DEFAULT_SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];
const DEFAULT_CONNS: [u32; 2] = [1, 8];
const DEFAULT_ROUND_TRIPS: u64 = 20_000;
/// Throughput runs move about this many bytes by default.
const DEFAULT_RUN_BYTES: u64 = 2 << 30;
/// Shortest per-run cap the budget is shared out into.
const MIN_RUN: Duration = Duration::from_millis(200);

/// The messenger as a benchmark target: an in-process server messenger, or a client
/// of `simplemsgr serve` at `remote`.
fn messenger_target(
    remote: Option<SocketAddr>,
    cfg: &Config,
    mode: ProtectionMode,
    key: BenchKey,
) -> Result<Box<dyn BenchTarget>, CliError> {
    Ok(match remote {
        Some(a) => Box::new(MessengerTarget::remote(a, cfg, mode, key).map_err(CliError::failed)?),
        None => Box::new(MessengerTarget::local(cfg, mode, key).map_err(CliError::failed)?),
    })
}

/// The key from `--auth secret --keyring … --name …`, or the fixed benchmark key.
fn bench_key(args: &BenchArgs) -> Result<BenchKey, CliError> {
    if args.auth.auth == super::AuthArg::None {
        return Ok(BenchKey::default());
    }
    match args.auth.client(super::ModeArg::Secure)?.key {
        Some(key) => Ok(BenchKey {
            name: args.auth.name.clone(),
            key,
        }),
        None => Err(CliError::failed("the keyring gave no key")),
    }
}

/// The runs of the matrix, in order.
fn plan(args: &BenchArgs) -> Vec<(Mode, Workload)> {
    let sizes: Vec<usize> = if args.size.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        args.size.clone()
    };
    let tp_conns: Vec<u32> = if args.conns.is_empty() {
        DEFAULT_CONNS.to_vec()
    } else {
        args.conns.clone()
    };
    let lat_conns: Vec<u32> = if args.conns.is_empty() {
        vec![1]
    } else {
        args.conns.clone()
    };
    let cap = Duration::ZERO; // filled in once the number of runs is known
    let mut runs = Vec::new();
    if args.runs != RunsArg::Latency {
        for &size in &sizes {
            for &c in &tp_conns {
                let count = args
                    .count
                    .unwrap_or_else(|| (DEFAULT_RUN_BYTES / size as u64).clamp(2_000, 2_000_000));
                let w = Workload {
                    size,
                    count,
                    conns: c as usize,
                    depth: args.depth as usize,
                    duration_cap: cap,
                };
                runs.push((Mode::Throughput, w));
            }
        }
    }
    if args.runs != RunsArg::Throughput {
        for &size in &sizes {
            for &c in &lat_conns {
                let count = args.count.unwrap_or(DEFAULT_ROUND_TRIPS);
                runs.push((
                    Mode::Latency,
                    Workload {
                        size,
                        count,
                        conns: c as usize,
                        depth: 1,
                        duration_cap: cap,
                    },
                ));
            }
        }
    }
    runs
}

/// Run the command.
pub fn run(args: BenchArgs, cfg: &Config, quiet: bool) -> Result<(), CliError> {
    if args.hol {
        let max = simplemsgr::wire::msgr2::MAX_CHUNK_LEN as usize;
        if !(1024..=max).contains(&args.hol_chunk) {
            return Err(CliError::usage(format!(
                "--hol-chunk must be between 1k and {} (got {})",
                fmt_size(max),
                args.hol_chunk
            )));
        }
        let opts = HolOptions {
            rows: if args.hol_rows.is_empty() {
                HolMode::ALL.to_vec()
            } else {
                args.hol_rows
            },
            chunk: args.hol_chunk,
            sockbuf: args.hol_sockbuf.filter(|n| *n > 0),
            chunked_sockbuf: args.hol_chunked_sockbuf,
            chunked_notsent_lowat: args.hol_notsent_lowat,
            legs: args.hol_legs,
        };
        return crate::bench::hol::run(256 << 20, 500, &opts).map_err(CliError::failed);
    }
    let limits = ResourceLimits::read(cfg.thread_stack_bytes);
    let max_conns = args.conns.iter().copied().max().unwrap_or(8) as usize;
    // In-process, both ends live here: 3 fds and 3 threads per raw connection, and 2
    // whole connections per messenger connection.
    let per_conn = if args.addr.is_some() { 1 } else { 2 };
    if max_conns * per_conn > limits.derived_cap {
        return Err(CliError::usage(format!(
            "--conns {max_conns} needs {} connection slots but this process can afford {} (bound by {})",
            max_conns * per_conn,
            limits.derived_cap,
            limits.binding
        )));
    }
    let mut targets: Vec<Box<dyn BenchTarget>> = Vec::new();
    // The raw TCP baseline runs in-process only: a remote `simplemsgr serve` speaks
    // the messenger protocol.
    if !args.no_raw && args.addr.is_none() {
        targets.push(Box::new(RawTcp::local(cfg).map_err(|e| {
            CliError::failed(format!("cannot start the raw TCP server: {e}"))
        })?));
    }
    let modes = if args.mode.is_empty() {
        vec![ProtectionArg::Plain]
    } else {
        args.mode.clone()
    };
    let key = bench_key(&args)?;
    for m in modes {
        targets.push(messenger_target(args.addr, cfg, m.mode(), key.clone())?);
    }
    let mut runs = plan(&args);
    let per_run = match args.duration_secs {
        Some(s) => Duration::from_secs_f64(s),
        None => {
            Duration::from_secs_f64(args.budget_secs / (runs.len() * targets.len()).max(1) as f64)
                .max(MIN_RUN)
        }
    };
    for (_, w) in &mut runs {
        w.duration_cap = per_run;
    }
    if !quiet {
        eprintln!(
            "bench: {} runs x {} target(s), each capped at {:.1}s, {}",
            runs.len(),
            targets.len(),
            per_run.as_secs_f64(),
            match args.addr {
                Some(a) => format!("against {a}"),
                None => "in-process over 127.0.0.1".to_string(),
            }
        );
    }
    let progress = Progress::new(!quiet);
    let started = Instant::now();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let results = std::thread::scope(|scope| {
        let ticker = scope.spawn(|| {
            // Tick every 500 ms until the sender is dropped.
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(Duration::from_millis(500))
            {
                progress.tick();
            }
        });
        let r = run_all(&runs, &targets, &progress);
        drop(stop_tx);
        let _ = ticker.join();
        r
    })?;
    println!("{}", report::render(&results));
    if !quiet {
        eprintln!("bench: done in {:.1}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn run_all(
    runs: &[(Mode, Workload)],
    targets: &[Box<dyn BenchTarget>],
    progress: &Progress,
) -> Result<Vec<RunResult>, CliError> {
    let mut results = Vec::new();
    for (mode, w) in runs {
        for t in targets {
            let label = format!("{} {} {} x{}", t.name(), mode, fmt_size(w.size), w.conns);
            log::info!("running {label}");
            // Only throughput runs report progress (BenchTarget::run_latency takes none).
            progress.begin(
                &label,
                if *mode == Mode::Throughput {
                    w.count
                } else {
                    0
                },
            );
            let r = match mode {
                Mode::Throughput => t.run_throughput(w, progress),
                Mode::Latency => t.run_latency(w),
            };
            progress.end();
            results.push(r.map_err(|e| CliError::failed(format!("{label}: {e}")))?);
        }
    }
    Ok(results)
}
