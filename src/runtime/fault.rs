//! Fault injection with Ceph's option names, seeded so that a failing run can be replayed.
//!
//! One [`FaultInjector`] per messenger holds the [`FaultConfig`] and the seed. Each
//! connection derives its own random stream from `(seed, connection id)`, so what
//! happens on connection 7 does not depend on how threads interleave with connection 8.
//!
//! - `ms_inject_socket_failures = N`: [`FaultyReader`] shuts the socket down (both
//!   directions) on about one in `N` reads and returns an error, exactly as a peer reset
//!   would look to the reader thread.
//! - `ms_inject_delay_max` / `ms_inject_delay_probability`: [`ConnFaults::inject_delay`]
//!   sleeps a random time up to the maximum, with the given probability, at a named point.
//! - `ms_inject_internal_delays`: [`ConnFaults::internal_delay`] sleeps that fixed time at
//!   race-prone points (after a connect reply, in fault paths).
//!
//! A seed of 0 picks a random seed and logs it at `info!`; set `ms_inject_seed` to that
//! value to replay the run.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::config::FaultConfig;
use super::transport::{ReadAppend, Shutdown};

/// A small deterministic random generator (SplitMix64).
///
/// Not cryptographic: it drives fault injection and backoff jitter only.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// A generator seeded from the operating system's per-process randomness.
    pub fn from_entropy() -> Self {
        SeededRng::new(random_seed())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // 53 random bits: the full precision of an f64 mantissa.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform value in `0..n`; `n == 0` yields 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Widening multiply: bias is at most n / 2^64, irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The SplitMix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A non-zero seed from the standard library's randomly keyed hasher.
fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    match h.finish() {
        0 => 1,
        s => s,
    }
}

/// The seed of stream `stream` of connection `conn_id`.
fn derive_seed(seed: u64, conn_id: u64, stream: u64) -> u64 {
    mix64(mix64(seed ^ mix64(conn_id.wrapping_add(1))) ^ stream)
}

/// Stream ids, so reads and delays on one connection do not disturb each other.
const STREAM_READS: u64 = 1;
const STREAM_DELAYS: u64 = 2;

/// Messenger-wide fault injection: configuration, seed and counters.
#[derive(Debug)]
pub struct FaultInjector {
    cfg: FaultConfig,
    seed: u64,
    socket_failures: AtomicU64,
    delays: AtomicU64,
}

impl FaultInjector {
    /// An injector for `cfg`. A seed of 0 is replaced by a random one, which is logged.
    pub fn new(cfg: &FaultConfig) -> Arc<Self> {
        let seed = if cfg.seed == 0 {
            random_seed()
        } else {
            cfg.seed
        };
        let inj = FaultInjector {
            cfg: cfg.clone(),
            seed,
            socket_failures: AtomicU64::new(0),
            delays: AtomicU64::new(0),
        };
        if inj.is_active() {
            log::info!(
                "fault injection on: ms_inject_socket_failures={} ms_inject_delay_max={}s \
                 ms_inject_delay_probability={} ms_inject_internal_delays={}s; \
                 replay with ms_inject_seed={}",
                cfg.socket_failures,
                cfg.delay_max.as_secs_f64(),
                cfg.delay_probability,
                cfg.internal_delays.as_secs_f64(),
                seed
            );
        }
        Arc::new(inj)
    }

    /// The seed in use (never 0).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    /// True if any kind of fault can be injected.
    pub fn is_active(&self) -> bool {
        self.cfg.is_active()
    }

    /// Socket failures injected so far, over all connections.
    pub fn socket_failures(&self) -> u64 {
        self.socket_failures.load(Ordering::Relaxed)
    }

    /// Delays injected so far, over all connections.
    pub fn delays(&self) -> u64 {
        self.delays.load(Ordering::Relaxed)
    }

    /// The fault state of one connection; deterministic in `(seed, conn_id)`.
    pub fn for_connection(self: &Arc<Self>, conn_id: u64) -> ConnFaults {
        ConnFaults {
            inj: Arc::clone(self),
            conn_id,
            rng: Mutex::new(SeededRng::new(derive_seed(
                self.seed,
                conn_id,
                STREAM_DELAYS,
            ))),
        }
    }

    /// Wrap the read half of connection `conn_id` so that reads fail as configured.
    pub fn wrap_reader<R: Read + Shutdown>(
        self: &Arc<Self>,
        inner: R,
        conn_id: u64,
    ) -> FaultyReader<R> {
        FaultyReader {
            inner,
            inj: Arc::clone(self),
            conn_id,
            rng: SeededRng::new(derive_seed(self.seed, conn_id, STREAM_READS)),
            reads: 0,
        }
    }
}

/// The delay-injection state of one connection.
#[derive(Debug)]
pub struct ConnFaults {
    inj: Arc<FaultInjector>,
    conn_id: u64,
    rng: Mutex<SeededRng>,
}

impl ConnFaults {
    /// With probability `ms_inject_delay_probability`, sleep a random time up to
    /// `ms_inject_delay_max` at the named point. Returns the time slept.
    pub fn inject_delay(&self, point: &'static str) -> Duration {
        let cfg = &self.inj.cfg;
        if cfg.delay_probability <= 0.0 || cfg.delay_max.is_zero() {
            return Duration::ZERO;
        }
        let d = {
            let mut rng = self.rng.lock();
            if rng.next_f64() >= cfg.delay_probability {
                return Duration::ZERO;
            }
            cfg.delay_max.mul_f64(rng.next_f64())
        };
        self.sleep(point, d);
        d
    }

    /// Sleep `ms_inject_internal_delays` at a race-prone point (0 = no-op).
    pub fn internal_delay(&self, point: &'static str) -> Duration {
        let d = self.inj.cfg.internal_delays;
        if !d.is_zero() {
            self.sleep(point, d);
        }
        d
    }

    fn sleep(&self, point: &'static str, d: Duration) {
        self.inj.delays.fetch_add(1, Ordering::Relaxed);
        log::debug!("conn {}: injecting {:?} delay at {point}", self.conn_id, d);
        std::thread::sleep(d);
    }
}

/// A read half that fails on about one in `ms_inject_socket_failures` reads.
///
/// On a failure it shuts the socket down in both directions (waking the writer too)
/// and returns `ConnectionAborted`.
#[derive(Debug)]
pub struct FaultyReader<R> {
    inner: R,
    inj: Arc<FaultInjector>,
    conn_id: u64,
    rng: SeededRng,
    reads: u64,
}

impl<R> FaultyReader<R> {
    /// How many reads this wrapper has seen (including the failing one).
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Shutdown> FaultyReader<R> {
    /// Count one read and fail it (shutting the socket) about one time in N.
    fn maybe_fail(&mut self) -> io::Result<()> {
        self.reads += 1;
        let n = self.inj.cfg.socket_failures;
        if n > 0 && self.rng.below(n) == 0 {
            self.inj.socket_failures.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "conn {}: injecting socket failure on read {} (ms_inject_socket_failures={n})",
                self.conn_id,
                self.reads
            );
            // The injected error is what the caller sees; a failing shutdown changes nothing.
            let _ = self.inner.shutdown();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("injected socket failure (ms_inject_socket_failures={n})"),
            ));
        }
        Ok(())
    }
}

impl<R: Read + Shutdown> Read for FaultyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.maybe_fail()?;
        self.inner.read(buf)
    }
}

impl<R: ReadAppend + Shutdown> ReadAppend for FaultyReader<R> {
    fn read_append(&mut self, v: &mut Vec<u8>, n: usize) -> io::Result<usize> {
        self.maybe_fail()?;
        self.inner.read_append(v, n)
    }
}

impl<R: Shutdown> Shutdown for FaultyReader<R> {
    fn shutdown(&self) -> io::Result<()> {
        self.inner.shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x.to_bits(), b.next_f64().to_bits());
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(7) < 7);
            b.below(7);
        }
        assert_eq!(a.below(0), 0);
        assert_ne!(SeededRng::new(1).next_u64(), SeededRng::new(2).next_u64());
    }

    #[test]
    fn per_connection_streams_differ_but_repeat() {
        assert_eq!(
            derive_seed(5, 1, STREAM_READS),
            derive_seed(5, 1, STREAM_READS)
        );
        assert_ne!(
            derive_seed(5, 1, STREAM_READS),
            derive_seed(5, 2, STREAM_READS)
        );
        assert_ne!(
            derive_seed(5, 1, STREAM_READS),
            derive_seed(5, 1, STREAM_DELAYS)
        );
    }

    #[test]
    fn zero_seed_is_replaced() {
        let inj = FaultInjector::new(&FaultConfig::default());
        assert_ne!(inj.seed(), 0);
        assert!(!inj.is_active());
    }

    struct Fake {
        shut: std::cell::Cell<u32>,
    }
    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
    }
    impl Shutdown for Fake {
        fn shutdown(&self) -> io::Result<()> {
            self.shut.set(self.shut.get() + 1);
            Ok(())
        }
    }

    fn first_failure(seed: u64, n: u64) -> (u64, u32) {
        let cfg = FaultConfig {
            socket_failures: n,
            seed,
            ..FaultConfig::default()
        };
        let inj = FaultInjector::new(&cfg);
        let mut r = inj.wrap_reader(
            Fake {
                shut: std::cell::Cell::new(0),
            },
            9,
        );
        let mut buf = [0u8; 4];
        for _ in 0..10_000 {
            if let Err(e) = r.read(&mut buf) {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
                assert_eq!(inj.socket_failures(), 1);
                return (r.reads(), r.get_ref().shut.get());
            }
        }
        panic!("no fault injected in 10000 reads at N={n}");
    }

    #[test]
    fn socket_failures_trip_and_replay() {
        let (reads, shut) = first_failure(1234, 3);
        assert_eq!(shut, 1, "the socket is shut down on an injected failure");
        assert_eq!(first_failure(1234, 3).0, reads, "same seed, same read");
        // Over many seeds the mean read count of the first failure is about N.
        let total: u64 = (1..=300).map(|s| first_failure(s, 3).0).sum();
        let mean = total as f64 / 300.0;
        assert!(
            (2.0..4.5).contains(&mean),
            "mean first failure at read {mean}"
        );
    }

    #[test]
    fn delays_follow_probability() {
        let cfg = FaultConfig {
            delay_max: Duration::from_micros(50),
            delay_probability: 1.0,
            internal_delays: Duration::from_micros(10),
            seed: 3,
            ..FaultConfig::default()
        };
        let inj = FaultInjector::new(&cfg);
        let c = inj.for_connection(1);
        let d = c.inject_delay("test");
        assert!(d <= Duration::from_micros(50));
        assert_eq!(c.internal_delay("test"), Duration::from_micros(10));
        assert_eq!(inj.delays(), 2);
        let off = FaultInjector::new(&FaultConfig {
            seed: 3,
            ..FaultConfig::default()
        });
        assert_eq!(off.for_connection(1).inject_delay("x"), Duration::ZERO);
        assert_eq!(off.delays(), 0);
    }
}
