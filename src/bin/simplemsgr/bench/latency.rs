//! A log-linear latency histogram: 32 buckets per power of two (about 3% resolution),
//! fixed size, mergeable across threads, exact count/min/max/mean.

use std::fmt;
use std::time::Duration;

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for any u64 nanosecond value.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// Latency samples in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Histogram({})", self.summary())
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = e - SUB_BITS;
    let sub = ((v >> shift) as usize) - SUB; // in 0..SUB
    SUB + shift as usize * SUB + sub
}

/// The largest value that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = ((i - SUB) / SUB) as u32;
    let sub = ((i - SUB) % SUB) as u64;
    let lo = (SUB as u64 + sub) << shift;
    lo.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram::default()
    }

    /// Record one sample.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[index(ns)] += 1;
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Add another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at quantile `q` (0..=1), within one bucket (~3%); never above the max.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(upper(i).min(self.max).max(self.min));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// p50, p99, p999, max and mean.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: Duration::from_nanos(if self.count == 0 { 0 } else { self.max }),
            mean: if self.count == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos((self.sum / u128::from(self.count)) as u64)
            },
        }
    }
}

/// The percentiles a report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50={} p99={} p999={} max={}",
            self.count,
            fmt_dur(self.p50),
            fmt_dur(self.p99),
            fmt_dur(self.p999),
            fmt_dur(self.max)
        )
    }
}

/// A duration in the most readable unit: `850ns`, `12.3µs`, `4.56ms`, `1.23s`.
pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            65,
            1000,
            123_456,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i >= prev && i < BUCKETS, "{v}");
            assert!(upper(i) >= v, "{v} above its bucket's upper bound");
            if v >= 32 {
                assert!(
                    (upper(i) - v) as f64 <= v as f64 / 32.0,
                    "{v} bucket too wide"
                );
            }
            prev = i;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_ramp() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let near = |d: Duration, want_us: f64| {
            let got = d.as_nanos() as f64 / 1e3;
            assert!(
                (got - want_us).abs() <= want_us * 0.04,
                "got {got}µs want {want_us}µs"
            );
        };
        near(s.p50, 500.0);
        near(s.p99, 990.0);
        near(s.p999, 999.0);
        assert_eq!(s.max, Duration::from_micros(1000));
        near(s.mean, 500.5);
        let mut other = Histogram::new();
        other.record(Duration::from_secs(2));
        h.merge(&other);
        assert_eq!(h.summary().max, Duration::from_secs(2));
        assert_eq!(Histogram::new().summary(), LatencySummary::default());
        assert_eq!(fmt_dur(Duration::from_micros(12_300)), "12.30ms");
    }
}
