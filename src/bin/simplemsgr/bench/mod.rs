//! The benchmark harness: workloads, targets, latency recording, progress and reports.
//!
//! A [`BenchTarget`] is something that can move messages: the raw TCP baseline
//! ([`raw::RawTcp`], the yardstick) and the messenger (plugged in by the messenger core).
//! Both run the same [`Workload`] shapes, so their ratio is meaningful:
//!
//! - **throughput**: each connection streams its share of `count` messages of `size`
//!   bytes with at most `depth` unacknowledged; the receiver acknowledges cumulatively
//!   (one small ack per batch it read, like the messenger's `ACK(in_seq)`), which is
//!   what bounds the depth. Latency here is enqueue-to-ack, sampled.
//! - **latency** (ping-pong): one message in flight; the receiver echoes it back whole.
//!   Latency is the round trip.

pub mod hol;
pub mod latency;
pub mod msgr;
pub mod raw;
pub mod report;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use latency::{Histogram, LatencySummary};

/// Largest message the benchmark sends (and the raw server accepts).
pub const MAX_BENCH_SIZE: usize = 64 << 20;

/// Which measurement a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Streaming with bounded depth; reports msgs/s and GB/s.
    Throughput,
    /// One message in flight, echoed; reports round-trip latency.
    Latency,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Throughput => "throughput",
            Mode::Latency => "ping-pong",
        })
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Payload bytes per message.
    pub size: usize,
    /// Messages (throughput: over all connections; latency: round trips).
    pub count: u64,
    /// Connections used at once.
    pub conns: usize,
    /// Most unacknowledged messages per connection (throughput mode).
    pub depth: usize,
    /// Stop early after this long; the result says so.
    pub duration_cap: Duration,
}

impl Workload {
    /// Messages for connection `i` of `conns` (the remainder goes to the first ones).
    pub fn share(&self, i: usize) -> u64 {
        let conns = self.conns.max(1) as u64;
        self.count / conns + u64::from((i as u64) < self.count % conns)
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The target's name.
    pub target: String,
    /// The measurement.
    pub mode: Mode,
    /// The workload that ran.
    pub workload: Workload,
    /// Messages delivered (and acknowledged or echoed).
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Wall time from the first send to the last ack, connection setup excluded.
    pub elapsed: Duration,
    /// Latency percentiles.
    pub latency: LatencySummary,
    /// True if the duration cap stopped the run before `count`.
    pub capped: bool,
}

impl RunResult {
    /// The result of `messages` messages of `w` in `elapsed`, with their latencies.
    pub fn new(
        target: &str,
        mode: Mode,
        w: &Workload,
        messages: u64,
        elapsed: Duration,
        hist: &Histogram,
        capped: bool,
    ) -> Self {
        RunResult {
            target: target.to_string(),
            mode,
            workload: w.clone(),
            messages,
            bytes: messages * w.size as u64,
            elapsed,
            latency: hist.summary(),
            capped,
        }
    }

    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload gigabytes (10^9) per second.
    pub fn gb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Something the benchmark can drive. The raw TCP baseline implements it here; the
/// messenger core implements it for the messenger.
pub trait BenchTarget {
    /// A short name for reports, e.g. `raw-tcp` or `msgr2`.
    fn name(&self) -> &str;
    /// Stream `w.count` messages over `w.conns` connections with at most `w.depth`
    /// unacknowledged per connection; call `progress.add` as messages are acknowledged.
    fn run_throughput(&self, w: &Workload, progress: &Progress) -> Result<RunResult, String>;
    /// `w.count` round trips of one `w.size` message on one connection.
    fn run_latency(&self, w: &Workload) -> Result<RunResult, String>;
}

/// Progress of the current run, shown on stderr once a run has taken ~2 s.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    done: AtomicU64,
    total: AtomicU64,
    phase: Mutex<Option<(String, Instant)>>,
    shown: AtomicBool,
}

/// Runs shorter than this show no progress line.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

impl Progress {
    /// A progress tracker; `enabled = false` makes it silent (for `-q`).
    pub fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            phase: Mutex::new(None),
            shown: AtomicBool::new(false),
        }
    }

    /// Start tracking a run of `total` messages (0 = the run reports no progress).
    pub fn begin(&self, label: &str, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        *self.phase.lock() = Some((label.to_string(), Instant::now()));
    }

    /// `n` more messages completed.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages completed in the current run.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The run ended: clear the progress line if one was drawn.
    pub fn end(&self) {
        *self.phase.lock() = None;
        if self.shown.swap(false, Ordering::Relaxed) && std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }

    /// Draw the progress line if the current run is older than ~2 s. Called
    /// periodically by the reporter thread.
    pub fn tick(&self) {
        if !self.enabled {
            return;
        }
        let phase = self.phase.lock();
        let Some((label, start)) = phase.as_ref() else {
            return;
        };
        let elapsed = start.elapsed();
        if elapsed < PROGRESS_AFTER {
            return;
        }
        let done = self.done();
        let total = self.total.load(Ordering::Relaxed);
        let line = if total == 0 {
            // The target reports no progress (latency runs): show that it is alive.
            format!("{label}: running, {:.1}s", elapsed.as_secs_f64())
        } else {
            format!(
                "{label}: {done}/{total} msgs ({:.0}%), {:.0} msgs/s, {:.1}s",
                done as f64 * 100.0 / total as f64,
                done as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64()
            )
        };
        let mut err = std::io::stderr().lock();
        // Progress output is best effort.
        let _ = if err.is_terminal() {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.shown.store(true, Ordering::Relaxed);
    }
}

/// Parse a message size: `64`, `4k`, `64K`, `1m`, `1MiB` (powers of 1024), 1..=64 MiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let v = parse_size_unchecked(s)?;
    if v == 0 {
        return Err("size must be at least 1 byte".to_string());
    }
    if v > MAX_BENCH_SIZE {
        return Err(format!("size '{s}' is above the maximum of 64m"));
    }
    Ok(v)
}

/// A number with an optional k/m suffix, any value.
fn parse_size_unchecked(s: &str) -> Result<usize, String> {
    let lower = s.trim().to_ascii_lowercase();
    let end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(end);
    let mult: usize = match suffix {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => {
            return Err(format!(
                "invalid size '{s}': expected a number with optional k/m suffix, e.g. 64, 4k, 1m"
            ))
        }
    };
    let n: usize = num.parse().map_err(|_| {
        format!("invalid size '{s}': expected a number with optional k/m suffix, e.g. 64, 4k, 1m")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// Like [`parse_size`], but 0 is allowed: for settings where 0 means "leave it to the OS"
/// or "off".
pub fn parse_size_or_zero(s: &str) -> Result<usize, String> {
    let v = parse_size_unchecked(s)?;
    if v > MAX_BENCH_SIZE {
        return Err(format!("size '{s}' is above the maximum of 64m"));
    }
    Ok(v)
}

/// `64 B`, `4 KiB`, `1 MiB`, or plain bytes for odd sizes.
pub fn fmt_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sizes_only_where_zero_means_off() {
        assert!(parse_size("0").is_err());
        assert_eq!(parse_size_or_zero("0"), Ok(0));
        assert_eq!(parse_size_or_zero("0k"), Ok(0));
        assert_eq!(parse_size_or_zero("16k"), Ok(16 << 10));
        assert!(parse_size_or_zero("x").is_err());
        assert!(parse_size_or_zero("0q").is_err());
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("0").unwrap_err(), "size must be at least 1 byte");
        assert!(parse_size("65m").unwrap_err().contains("maximum"));
        assert!(parse_size("4q").unwrap_err().contains("invalid size '4q'"));
        assert!(parse_size("").is_err());
        assert_eq!(fmt_size(64), "64 B");
        assert_eq!(fmt_size(4096), "4 KiB");
        assert_eq!(fmt_size(1 << 20), "1 MiB");
        assert_eq!(fmt_size(1000), "1000 B");
    }

    #[test]
    fn shares_add_up() {
        let w = Workload {
            size: 1,
            count: 10,
            conns: 3,
            depth: 1,
            duration_cap: Duration::from_secs(1),
        };
        assert_eq!(
            (0..3).map(|i| w.share(i)).collect::<Vec<_>>(),
            vec![4, 3, 3]
        );
    }
}
