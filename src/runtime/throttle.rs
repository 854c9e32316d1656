//! A blocking budget of messages and bytes (policy throttles, the dispatch throttle).
//!
//! A reader thread takes from the budget *before* it reads a message body, so a full
//! budget stops reading and TCP pushes back on the sender. The rules:
//!
//! - `0` means unlimited, for count and bytes independently.
//! - A request larger than the whole budget still passes once nothing else is held, so
//!   one oversized message can never deadlock a connection.
//! - Waiters are served in arrival order: a large request is not starved by a stream of
//!   small ones, and [`Throttle::try_acquire`] never jumps the queue.
//! - Hitting the limit is logged at most once per [`Throttle::with_log_interval`]
//!   (default 10 s), with the count of waits since, never once per message.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Default interval between "limit reached" log lines.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A named budget of `max_count` messages and `max_bytes` bytes (0 = unlimited).
#[derive(Debug)]
pub struct Throttle {
    name: String,
    max_count: u64,
    max_bytes: u64,
    log_interval: Duration,
    state: Mutex<State>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct State {
    count: u64,
    bytes: u64,
    /// Tickets of blocked acquirers, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
    waits: u64,
    total_wait: Duration,
    last_log: Option<Instant>,
    waits_at_last_log: u64,
    reports: u64,
}

/// A point-in-time view of a [`Throttle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleStats {
    /// The throttle's name.
    pub name: String,
    /// Messages currently held.
    pub count: u64,
    /// Bytes currently held.
    pub bytes: u64,
    /// Message limit (0 = unlimited).
    pub max_count: u64,
    /// Byte limit (0 = unlimited).
    pub max_bytes: u64,
    /// Acquirers blocked right now.
    pub waiting: usize,
    /// Acquisitions that had to wait, ever.
    pub waits: u64,
    /// Total time spent waiting, over all acquisitions.
    pub total_wait: Duration,
    /// "Limit reached" lines logged (at most one per log interval).
    pub limit_reports: u64,
}

impl fmt::Display for ThrottleStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lim = |v: u64| {
            if v == 0 {
                "∞".to_string()
            } else {
                v.to_string()
            }
        };
        write!(
            f,
            "{}: {}/{} msgs, {}/{} bytes, {} waiting, {} waits ({:.3}s)",
            self.name,
            self.count,
            lim(self.max_count),
            self.bytes,
            lim(self.max_bytes),
            self.waiting,
            self.waits,
            self.total_wait.as_secs_f64()
        )
    }
}

impl Throttle {
    /// A throttle named `name` (used in logs) with the given limits (0 = unlimited).
    pub fn new(name: impl Into<String>, max_count: u64, max_bytes: u64) -> Self {
        Throttle {
            name: name.into(),
            max_count,
            max_bytes,
            log_interval: DEFAULT_LOG_INTERVAL,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        }
    }

    /// Log "limit reached" at most once per `interval`.
    pub fn with_log_interval(mut self, interval: Duration) -> Self {
        self.log_interval = interval;
        self
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Take `count` messages and `bytes` bytes, blocking until they fit.
    pub fn acquire(&self, count: u64, bytes: u64) {
        let acquired = self.acquire_until(count, bytes, None);
        debug_assert!(acquired, "an acquire without deadline cannot time out");
    }

    /// Take `count` and `bytes` if that is possible without waiting.
    pub fn try_acquire(&self, count: u64, bytes: u64) -> bool {
        let mut st = self.state.lock();
        if st.queue.is_empty() && self.fits(&st, count, bytes) {
            st.count += count;
            st.bytes += bytes;
            true
        } else {
            false
        }
    }

    /// Like [`Throttle::acquire`] but give up after `timeout`; returns whether it acquired.
    pub fn acquire_timeout(&self, count: u64, bytes: u64, timeout: Duration) -> bool {
        self.acquire_until(count, bytes, Instant::now().checked_add(timeout))
    }

    /// Return what an earlier acquire took.
    pub fn release(&self, count: u64, bytes: u64) {
        let mut st = self.state.lock();
        if count > st.count || bytes > st.bytes {
            log::error!(
                "throttle {}: releasing {count} msgs/{bytes} bytes but only {}/{} held",
                self.name,
                st.count,
                st.bytes
            );
        }
        st.count = st.count.saturating_sub(count);
        st.bytes = st.bytes.saturating_sub(bytes);
        let wake = !st.queue.is_empty();
        drop(st);
        if wake {
            self.cond.notify_all();
        }
    }

    /// [`Throttle::acquire`], returning a guard that releases on drop (e.g. held by a
    /// received message until it has been dispatched).
    pub fn acquire_guard(self: &Arc<Self>, count: u64, bytes: u64) -> ThrottleGuard {
        self.acquire(count, bytes);
        ThrottleGuard {
            throttle: Arc::clone(self),
            count,
            bytes,
        }
    }

    /// Current holdings and wait statistics.
    pub fn stats(&self) -> ThrottleStats {
        let st = self.state.lock();
        ThrottleStats {
            name: self.name.clone(),
            count: st.count,
            bytes: st.bytes,
            max_count: self.max_count,
            max_bytes: self.max_bytes,
            waiting: st.queue.len(),
            waits: st.waits,
            total_wait: st.total_wait,
            limit_reports: st.reports,
        }
    }

    /// Would `count`/`bytes` fit now? An oversized request fits once nothing is held.
    fn fits(&self, st: &State, count: u64, bytes: u64) -> bool {
        let count_ok = self.max_count == 0
            || st.count == 0
            || st.count.saturating_add(count) <= self.max_count;
        let bytes_ok = self.max_bytes == 0
            || st.bytes == 0
            || st.bytes.saturating_add(bytes) <= self.max_bytes;
        count_ok && bytes_ok
    }

    fn acquire_until(&self, count: u64, bytes: u64, deadline: Option<Instant>) -> bool {
        let mut st = self.state.lock();
        if st.queue.is_empty() && self.fits(&st, count, bytes) {
            st.count += count;
            st.bytes += bytes;
            return true;
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(ticket);
        st.waits += 1;
        let start = Instant::now();
        self.maybe_log(&mut st, start, count, bytes);
        let acquired = loop {
            if st.queue.front() == Some(&ticket) && self.fits(&st, count, bytes) {
                break true;
            }
            match deadline {
                None => self.cond.wait(&mut st),
                Some(d) => {
                    if self.cond.wait_until(&mut st, d).timed_out()
                        && !(st.queue.front() == Some(&ticket) && self.fits(&st, count, bytes))
                    {
                        break false;
                    }
                }
            }
        };
        if let Some(pos) = st.queue.iter().position(|t| *t == ticket) {
            st.queue.remove(pos);
        }
        st.total_wait += start.elapsed();
        if acquired {
            st.count += count;
            st.bytes += bytes;
        }
        let wake = !st.queue.is_empty();
        drop(st);
        if wake {
            // The next in line may fit now (we left the head of the queue).
            self.cond.notify_all();
        }
        acquired
    }

    fn maybe_log(&self, st: &mut State, now: Instant, count: u64, bytes: u64) {
        let due = match st.last_log {
            None => true,
            Some(t) => now.duration_since(t) >= self.log_interval,
        };
        if due {
            log::info!(
                "throttle {}: limit reached ({}/{} msgs, {}/{} bytes held; want {count}/{bytes}); \
                 {} waits since last report",
                self.name,
                st.count,
                self.max_count,
                st.bytes,
                self.max_bytes,
                st.waits - st.waits_at_last_log
            );
            st.last_log = Some(now);
            st.waits_at_last_log = st.waits;
            st.reports += 1;
        }
    }
}

/// Budget taken from a [`Throttle`], given back when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard releases the budget at once"]
pub struct ThrottleGuard {
    throttle: Arc<Throttle>,
    count: u64,
    bytes: u64,
}

impl ThrottleGuard {
    /// The bytes this guard holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for ThrottleGuard {
    fn drop(&mut self) {
        self.throttle.release(self.count, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_releases_on_drop() {
        let t = Arc::new(Throttle::new("g", 2, 0));
        let a = t.acquire_guard(1, 10);
        let b = t.acquire_guard(1, 20);
        assert_eq!((t.stats().count, t.stats().bytes, a.bytes()), (2, 30, 10));
        assert!(!t.try_acquire(1, 0));
        drop(a);
        assert_eq!(t.stats().bytes, 20);
        drop(b);
        assert_eq!((t.stats().count, t.stats().bytes), (0, 0));
    }

    #[test]
    fn limits_and_unlimited() {
        let t = Throttle::new("t", 2, 100);
        assert!(t.try_acquire(1, 60));
        assert!(!t.try_acquire(1, 60), "bytes over the limit");
        assert!(t.try_acquire(1, 40));
        assert!(!t.try_acquire(1, 0), "count over the limit");
        t.release(2, 100);
        let u = Throttle::new("u", 0, 0);
        for _ in 0..1000 {
            assert!(u.try_acquire(1, u64::MAX / 2000));
        }
        assert_eq!(u.stats().count, 1000);
    }

    #[test]
    fn oversized_request_passes_when_empty() {
        let t = Throttle::new("big", 0, 100);
        assert!(
            t.try_acquire(1, 1000),
            "nothing held: an oversized message passes"
        );
        assert!(!t.try_acquire(1, 1));
        t.release(1, 1000);
        t.acquire(1, 10);
        assert!(
            !t.acquire_timeout(1, 1000, Duration::from_millis(20)),
            "something is held"
        );
        t.release(1, 10);
        assert!(t.acquire_timeout(1, 1000, Duration::from_millis(20)));
        assert_eq!(t.stats().bytes, 1000);
    }

    #[test]
    fn timeout_counts_wait_and_leaves_queue() {
        let t = Throttle::new("to", 1, 0);
        t.acquire(1, 0);
        let start = Instant::now();
        assert!(!t.acquire_timeout(1, 0, Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let s = t.stats();
        assert_eq!((s.waits, s.waiting, s.count), (1, 0, 1));
        assert!(s.total_wait >= Duration::from_millis(30));
        t.release(1, 0);
        assert!(
            t.try_acquire(1, 0),
            "the timed-out waiter left no ticket behind"
        );
    }

    #[test]
    fn release_wakes_a_blocked_acquirer() {
        let t = Arc::new(Throttle::new("wake", 1, 0));
        t.acquire(1, 0);
        let t2 = Arc::clone(&t);
        let h = std::thread::spawn(move || t2.acquire_timeout(1, 0, Duration::from_secs(10)));
        // Bounded wait until the thread is queued.
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.stats().waiting == 0 {
            assert!(Instant::now() < deadline, "acquirer never blocked");
            std::thread::yield_now();
        }
        t.release(1, 0);
        assert!(h.join().unwrap());
        assert_eq!(t.stats().count, 1);
    }

    #[test]
    fn concurrent_holders_never_exceed_limits() {
        let t = Arc::new(Throttle::new("conc", 3, 1000));
        let peak = Arc::new(Mutex::new((0u64, 0u64)));
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let t = Arc::clone(&t);
                let peak = Arc::clone(&peak);
                std::thread::spawn(move || {
                    for j in 0..300u64 {
                        let bytes = 100 + (i * 37 + j * 11) % 300;
                        assert!(
                            t.acquire_timeout(1, bytes, Duration::from_secs(20)),
                            "starved"
                        );
                        let s = t.stats();
                        assert!(s.count <= 3 && s.bytes <= 1000, "over budget: {s}");
                        let mut p = peak.lock();
                        p.0 = p.0.max(s.count);
                        p.1 = p.1.max(s.bytes);
                        drop(p);
                        t.release(1, bytes);
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        let s = t.stats();
        assert_eq!((s.count, s.bytes, s.waiting), (0, 0, 0));
        assert!(peak.lock().0 >= 1);
    }

    #[test]
    fn limit_is_logged_once_per_interval() {
        let quiet = Throttle::new("q", 1, 0).with_log_interval(Duration::from_secs(3600));
        let chatty = Throttle::new("c", 1, 0).with_log_interval(Duration::ZERO);
        for t in [&quiet, &chatty] {
            t.acquire(1, 0);
            for _ in 0..5 {
                assert!(!t.acquire_timeout(1, 0, Duration::from_millis(1)));
            }
        }
        assert_eq!((quiet.stats().waits, quiet.stats().limit_reports), (5, 1));
        assert_eq!((chatty.stats().waits, chatty.stats().limit_reports), (5, 5));
    }

    #[test]
    fn waiters_are_served_in_order() {
        // A big request queued first is not overtaken by small ones.
        let t = Arc::new(Throttle::new("fifo", 0, 100));
        t.acquire(1, 90);
        let t2 = Arc::clone(&t);
        let big = std::thread::spawn(move || t2.acquire_timeout(1, 100, Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.stats().waiting == 0 {
            assert!(Instant::now() < deadline, "big acquirer never blocked");
            std::thread::yield_now();
        }
        assert!(!t.try_acquire(1, 5), "try_acquire must not jump the queue");
        t.release(1, 90);
        assert!(big.join().unwrap());
        assert_eq!(t.stats().bytes, 100);
    }
}
