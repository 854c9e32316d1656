//! Admission control (project issue 7): how many connections the messenger takes on,
//! and the clean refusal beyond that.
//!
//! Every session holds a [`Slot`] for its whole life (from admission until its writer
//! thread exits). The slot counts it in the live total, in its peer IP's count (incoming
//! only) and, until its handshake ends, in the handshaking count (incoming only). The
//! acceptor asks [`Admission::admit_incoming`] *before* it spawns anything: a refused
//! socket is closed at once and costs no thread. [`Admission::admit_outgoing`] lets
//! `Messenger::connect` fail with a clear error instead of starting a thread.
//!
//! Bounds, checked in this order:
//!
//! | bound | counts | configured by |
//! |---|---|---|
//! | connections | every session (incoming and outgoing) | `ms_max_connections`, default derived from [`ResourceLimits`] |
//! | handshaking | incoming sessions whose handshake is not done | `ms_max_handshaking` |
//! | per IP | incoming sessions from one peer IP | `ms_max_connections_per_ip` (0 = off) |
//!
//! A stalled handshake is cut by the handshake deadline (`ms_connection_ready_timeout`),
//! which frees its slot. And when every handshake slot is taken, a new connection takes
//! the slot of the oldest handshake that has run longer than `ms_handshake_evict_after`
//! (whose socket is shut): peers that open connections and never finish them
//! (slowloris) cannot keep a legitimate client out, even if they reopen each one the
//! moment it is cut. Only a flood faster than `ms_max_handshaking` connections per
//! `ms_handshake_evict_after` still fills the table with handshakes too young to evict.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::limits::ResourceLimits;
use super::stats::{RefuseReason, Stats};
use super::Config;

/// How often (at most) a refusal is logged; the others are counted and summarised.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The limits a messenger admits connections under, and where the cap came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most simultaneous sessions (incoming and outgoing).
    pub max_connections: usize,
    /// True if `max_connections` was configured (`ms_max_connections`); false if it is
    /// [`ResourceLimits::derived_cap`].
    pub configured: bool,
    /// Most incoming connections in handshake at once (`ms_max_handshaking`).
    pub max_handshaking: usize,
    /// Most incoming connections from one IP (`ms_max_connections_per_ip`); 0 = unlimited.
    pub max_per_ip: usize,
    /// Handshake deadline (`ms_connection_ready_timeout`).
    pub handshake_timeout: Duration,
    /// With every handshake slot taken, a handshake older than this gives its slot to a
    /// new connection (`ms_handshake_evict_after`); `None` = never.
    pub handshake_evict_after: Option<Duration>,
    /// Stack size of each connection thread (`ms_rwthread_stack_bytes`).
    pub thread_stack_bytes: usize,
    /// Listen backlog (`ms_tcp_listen_backlog`).
    pub listen_backlog: u32,
    /// The process's limits and the cap they imply.
    pub resources: ResourceLimits,
}

impl ConnectionLimits {
    /// Read the process's limits and combine them with `config`.
    pub fn from_config(config: &Config) -> Self {
        let resources = ResourceLimits::read(config.thread_stack_bytes);
        ConnectionLimits::with_resources(config, resources)
    }

    /// Combine given resource limits with `config`.
    pub fn with_resources(config: &Config, resources: ResourceLimits) -> Self {
        ConnectionLimits {
            max_connections: config.max_connections.unwrap_or(resources.derived_cap),
            configured: config.max_connections.is_some(),
            max_handshaking: config.max_handshaking,
            max_per_ip: config.max_connections_per_ip,
            handshake_timeout: config.handshake_timeout,
            handshake_evict_after: (!config.handshake_evict_after.is_zero())
                .then_some(config.handshake_evict_after),
            thread_stack_bytes: config.thread_stack_bytes,
            listen_backlog: config.listen_backlog,
            resources,
        }
    }

    /// Where the connection cap comes from, e.g. `derived from vm.max_map_count`.
    pub fn cap_source(&self) -> String {
        if self.configured {
            format!(
                "configured ms_max_connections; the process limits allow {}",
                self.resources.derived_cap
            )
        } else {
            format!("derived from {}", self.resources.binding)
        }
    }
}

impl fmt::Display for ConnectionLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_ip = if self.max_per_ip == 0 {
            "unlimited".to_string()
        } else {
            self.max_per_ip.to_string()
        };
        let evict = self
            .handshake_evict_after
            .map_or("never evicted".to_string(), |d| {
                format!("the oldest evicted after {:.1}s", d.as_secs_f64())
            });
        writeln!(
            f,
            "max connections {} ({}), max handshaking {} ({}), per IP {}, handshake timeout \
             {:.1}s, thread stack {} KiB, listen backlog {}",
            self.max_connections,
            self.cap_source(),
            self.max_handshaking,
            evict,
            per_ip,
            self.handshake_timeout.as_secs_f64(),
            self.thread_stack_bytes / 1024,
            self.listen_backlog
        )?;
        write!(f, "{}", self.resources)
    }
}

/// Why a connection was not admitted: which bound, its value, and the count that hit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The bound that was reached.
    pub reason: RefuseReason,
    /// The option that sets it.
    pub option: &'static str,
    /// Its value.
    pub limit: usize,
    /// Where the value comes from (for the connection cap).
    pub source: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            RefuseReason::MaxConnections => "connections",
            RefuseReason::MaxHandshaking => "connections in handshake",
            RefuseReason::PerIpLimit => "connections from this IP",
            _ => "connections",
        };
        write!(
            f,
            "local limit reached: {} {what} ({} = {}",
            self.limit, self.option, self.limit
        )?;
        if !self.source.is_empty() {
            write!(f, ", {}", self.source)?;
        }
        f.write_str(")")
    }
}

#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

/// The live counts and the limits they are checked against. Shared as `Arc<Admission>`.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    live: AtomicUsize,
    handshaking: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The incoming handshakes in admission order, for eviction.
    in_handshake: Mutex<VecDeque<InHandshake>>,
    next_handshake: AtomicU64,
    evictions: AtomicU64,
    log: Mutex<RefusalLog>,
}

/// One incoming connection in its handshake, as the eviction queue sees it.
#[derive(Debug)]
struct InHandshake {
    id: u64,
    since: Instant,
    /// A second handle on the socket, to shut it when evicted.
    socket: Option<TcpStream>,
    /// Shared with the slot: true while the handshake is counted. Whoever clears it
    /// (the slot when the handshake ends, or an eviction) gives the count back.
    counted: Arc<AtomicBool>,
}

/// A session's place in the counts; released when dropped.
#[derive(Debug)]
pub struct Slot {
    adm: Arc<Admission>,
    ip: Option<IpAddr>,
    /// The handshake's entry in the eviction queue and its "counted" flag.
    handshake: Option<(u64, Arc<AtomicBool>)>,
}

impl Slot {
    /// The handshake ended (the session opened, or left handshaking some other way).
    pub fn handshake_done(&mut self) {
        if let Some((id, counted)) = self.handshake.take() {
            if counted.swap(false, Ordering::AcqRel) {
                self.adm.handshaking.fetch_sub(1, Ordering::AcqRel);
            }
            self.adm.in_handshake.lock().retain(|h| h.id != id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshake_done();
        self.adm.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut m = self.adm.per_ip.lock();
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// No connection yet.
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            live: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            in_handshake: Mutex::new(VecDeque::new()),
            next_handshake: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            log: Mutex::new(RefusalLog::default()),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Sessions holding a slot.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Incoming sessions still in handshake.
    pub fn handshaking(&self) -> usize {
        self.handshaking.load(Ordering::Acquire)
    }

    /// Incoming sessions from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().get(&ip).copied().unwrap_or(0)
    }

    fn cap_refusal(&self) -> Refusal {
        Refusal {
            reason: RefuseReason::MaxConnections,
            option: "ms_max_connections",
            limit: self.limits.max_connections,
            source: self.limits.cap_source(),
        }
    }

    /// Take a slot in `counter` if it is below `limit`.
    fn take(counter: &AtomicUsize, limit: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Admit an incoming connection from `peer`, or say which bound refuses it. `socket`
    /// (a second handle on the connection) lets a later arrival evict this handshake if
    /// it stalls (`ms_handshake_evict_after`).
    pub fn admit_incoming(
        self: &Arc<Self>,
        peer: SocketAddr,
        socket: Option<TcpStream>,
        now: Instant,
    ) -> Result<Slot, Refusal> {
        if !Self::take(&self.live, self.limits.max_connections) {
            return Err(self.cap_refusal());
        }
        // From here on, a refusal drops `t`, which gives the slots back.
        let mut t = Slot {
            adm: self.clone(),
            ip: None,
            handshake: None,
        };
        // A full table makes room by evicting a stalled handshake, if one is old enough.
        let max_hs = self.limits.max_handshaking;
        let admitted = Self::take(&self.handshaking, max_hs)
            || (self.evict_oldest(now) && Self::take(&self.handshaking, max_hs));
        if !admitted {
            return Err(Refusal {
                reason: RefuseReason::MaxHandshaking,
                option: "ms_max_handshaking",
                limit: self.limits.max_handshaking,
                source: String::new(),
            });
        }
        let counted = Arc::new(AtomicBool::new(true));
        let id = self.next_handshake.fetch_add(1, Ordering::Relaxed);
        self.in_handshake.lock().push_back(InHandshake {
            id,
            since: now,
            socket,
            counted: counted.clone(),
        });
        t.handshake = Some((id, counted));
        let ip = peer.ip();
        let mut m = self.per_ip.lock();
        let n = m.entry(ip).or_insert(0);
        if self.limits.max_per_ip > 0 && *n >= self.limits.max_per_ip {
            if *n == 0 {
                m.remove(&ip);
            }
            drop(m);
            return Err(Refusal {
                reason: RefuseReason::PerIpLimit,
                option: "ms_max_connections_per_ip",
                limit: self.limits.max_per_ip,
                source: String::new(),
            });
        }
        *n += 1;
        t.ip = Some(ip);
        Ok(t)
    }

    /// Admit an outgoing session (only the connection cap applies).
    pub fn admit_outgoing(self: &Arc<Self>) -> Result<Slot, Refusal> {
        if !Self::take(&self.live, self.limits.max_connections) {
            return Err(self.cap_refusal());
        }
        Ok(Slot {
            adm: self.clone(),
            ip: None,
            handshake: None,
        })
    }

    /// Handshakes cut to make room for a new connection so far.
    pub fn evicted(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Make room in the full handshake table: shut the oldest handshake if it has run
    /// longer than `ms_handshake_evict_after` and give its count back. Its threads see
    /// the socket close and end the session as for any lost connection.
    fn evict_oldest(&self, now: Instant) -> bool {
        let Some(after) = self.limits.handshake_evict_after else {
            return false;
        };
        let mut q = self.in_handshake.lock();
        while let Some(oldest) = q.front() {
            if !oldest.counted.load(Ordering::Acquire) {
                // Ended meanwhile; its slot removes it too, whoever is first.
                q.pop_front();
                continue;
            }
            if now.saturating_duration_since(oldest.since) < after {
                return false;
            }
            let Some(victim) = q.pop_front() else {
                return false;
            };
            if !victim.counted.swap(false, Ordering::AcqRel) {
                continue;
            }
            drop(q);
            self.handshaking.fetch_sub(1, Ordering::AcqRel);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = &victim.socket {
                let _ = s.shutdown(Shutdown::Both);
            }
            log::debug!(
                "handshake table full: evicted a handshake of {:?} to admit a new connection",
                now.saturating_duration_since(victim.since)
            );
            return true;
        }
        false
    }

    /// Count a refusal and log it, at most once per [`REFUSAL_LOG_INTERVAL`] (the
    /// refusals in between are summarised in the next line).
    pub fn note_refusal(&self, stats: &Stats, peer: Option<SocketAddr>, r: &Refusal) {
        stats.refused(r.reason);
        let now = Instant::now();
        let mut log = self.log.lock();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL)
        {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(now);
        drop(log);
        let who = peer.map_or_else(
            || "outgoing connection".to_string(),
            |p| format!("connection from {p}"),
        );
        let more = if suppressed > 0 {
            format!("; {suppressed} more refused since the last such message")
        } else {
            String::new()
        };
        log::warn!(
            "refusing {who}: {r}; {} live, {} handshaking{more}",
            self.live(),
            self.handshaking(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adm(max: usize, hs: usize, per_ip: usize) -> Arc<Admission> {
        let cfg = Config {
            max_connections: Some(max),
            max_handshaking: hs,
            max_connections_per_ip: per_ip,
            ..Config::default()
        };
        let res = ResourceLimits::from_texts(None, Some("65530"), None, None, 256 << 10);
        Admission::new(ConnectionLimits::with_resources(&cfg, res))
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    #[test]
    fn connection_cap_counts_both_directions_and_frees_on_drop() {
        let a = adm(3, 10, 0);
        let t1 = a.admit_incoming(peer(1, 1), None, Instant::now()).unwrap();
        let t2 = a.admit_outgoing().unwrap();
        let _t3 = a.admit_incoming(peer(1, 2), None, Instant::now()).unwrap();
        let r = a
            .admit_incoming(peer(1, 3), None, Instant::now())
            .unwrap_err();
        assert_eq!(r.reason, RefuseReason::MaxConnections);
        assert_eq!(
            r.to_string(),
            "local limit reached: 3 connections (ms_max_connections = 3, \
             configured ms_max_connections; the process limits allow 6450)"
        );
        assert_eq!(
            a.admit_outgoing().unwrap_err().reason,
            RefuseReason::MaxConnections
        );
        // A refusal takes no slot.
        assert_eq!((a.live(), a.handshaking()), (3, 2));
        drop(t1);
        drop(t2);
        assert_eq!((a.live(), a.handshaking()), (1, 1));
        assert!(a.admit_outgoing().is_ok());
    }

    #[test]
    fn handshake_cap_and_release() {
        let a = adm(100, 2, 0);
        let mut t1 = a.admit_incoming(peer(1, 1), None, Instant::now()).unwrap();
        let _t2 = a.admit_incoming(peer(1, 2), None, Instant::now()).unwrap();
        let r = a
            .admit_incoming(peer(1, 3), None, Instant::now())
            .unwrap_err();
        assert_eq!(r.reason, RefuseReason::MaxHandshaking);
        assert!(r.to_string().contains("ms_max_handshaking = 2"), "{r}");
        assert_eq!(a.live(), 2, "the refused one gave its connection slot back");
        t1.handshake_done();
        t1.handshake_done(); // idempotent
        assert_eq!((a.live(), a.handshaking()), (2, 1));
        let _t3 = a.admit_incoming(peer(1, 3), None, Instant::now()).unwrap();
        drop(t1);
        assert_eq!((a.live(), a.handshaking()), (2, 2));
    }

    #[test]
    fn per_ip_limit() {
        let a = adm(100, 100, 2);
        let t1 = a.admit_incoming(peer(1, 1), None, Instant::now()).unwrap();
        let _t2 = a.admit_incoming(peer(1, 2), None, Instant::now()).unwrap();
        let r = a
            .admit_incoming(peer(1, 3), None, Instant::now())
            .unwrap_err();
        assert_eq!(r.reason, RefuseReason::PerIpLimit);
        assert!(r.to_string().contains("from this IP"), "{r}");
        // Another IP is not affected.
        let _t4 = a.admit_incoming(peer(2, 1), None, Instant::now()).unwrap();
        assert_eq!((a.from_ip(peer(1, 0).ip()), a.live()), (2, 3));
        drop(t1);
        assert_eq!(a.from_ip(peer(1, 0).ip()), 1);
        assert!(a.admit_incoming(peer(1, 4), None, Instant::now()).is_ok());
        // Unlimited when 0; entries are removed when their count drops to zero.
        let b = adm(100, 100, 0);
        let ts: Vec<_> = (0..50)
            .map(|p| b.admit_incoming(peer(9, p), None, Instant::now()).unwrap())
            .collect();
        drop(ts);
        assert!(b.per_ip.lock().is_empty());
    }

    /// A loopback connection: our end (for the admission) and the peer's.
    fn socket_pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        (ours, peer)
    }

    #[test]
    fn a_full_handshake_table_evicts_only_handshakes_older_than_the_bound() {
        use std::io::Read;
        let a = adm(100, 2, 0); // ms_handshake_evict_after: the default 2 s
        let t0 = Instant::now();
        let (s1, mut p1) = socket_pair();
        let (s2, _p2) = socket_pair();
        let t1 = a.admit_incoming(peer(1, 1), Some(s1), t0).unwrap();
        let _t2 = a.admit_incoming(peer(1, 2), Some(s2), t0).unwrap();
        // Both are younger than 2 s: refused.
        let early = t0 + Duration::from_millis(1999);
        let r = a.admit_incoming(peer(1, 3), None, early).unwrap_err();
        assert_eq!(r.reason, RefuseReason::MaxHandshaking);
        assert_eq!(a.evicted(), 0);
        // At 2 s the oldest gives its slot away and its socket is shut.
        let later = t0 + Duration::from_secs(2);
        let t3 = a.admit_incoming(peer(1, 3), None, later).unwrap();
        assert_eq!((a.evicted(), a.handshaking(), a.live()), (1, 2, 3));
        p1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            p1.read(&mut [0u8; 1]).unwrap(),
            0,
            "the evicted peer sees EOF"
        );
        // The evicted slot's own end does not give the count back twice.
        drop(t1);
        assert_eq!((a.handshaking(), a.live()), (2, 2));
        // The second is next in line; the newest (admitted at `later`) is not yet.
        let _t4 = a.admit_incoming(peer(1, 4), None, later).unwrap();
        let r = a.admit_incoming(peer(1, 5), None, later).unwrap_err();
        assert_eq!(r.reason, RefuseReason::MaxHandshaking);
        assert_eq!(a.evicted(), 2);
        // A handshake that ended is never evicted.
        let mut t3 = t3;
        t3.handshake_done();
        assert_eq!(a.handshaking(), 1);
        assert!(a
            .in_handshake
            .lock()
            .iter()
            .all(|h| h.counted.load(Ordering::Acquire)));
    }

    #[test]
    fn eviction_can_be_turned_off() {
        let cfg = Config {
            max_handshaking: 1,
            handshake_evict_after: Duration::ZERO,
            ..Config::default()
        };
        let res = ResourceLimits::from_texts(None, Some("65530"), None, None, 256 << 10);
        let a = Admission::new(ConnectionLimits::with_resources(&cfg, res));
        let t0 = Instant::now();
        let _t1 = a.admit_incoming(peer(1, 1), None, t0).unwrap();
        let much_later = t0 + Duration::from_secs(3600);
        let r = a.admit_incoming(peer(1, 2), None, much_later).unwrap_err();
        assert_eq!(r.reason, RefuseReason::MaxHandshaking);
        assert_eq!(a.evicted(), 0);
        assert!(a.limits().to_string().contains("never evicted"));
    }

    #[test]
    fn refusals_are_counted_and_rate_limited() {
        let a = adm(0, 1, 0);
        let stats = Stats::new();
        for _ in 0..10 {
            let r = a.admit_outgoing().unwrap_err();
            a.note_refusal(&stats, None, &r);
        }
        assert_eq!(stats.snapshot().refused_total(), 10);
        assert_eq!(a.log.lock().suppressed, 9);
    }

    #[test]
    fn derived_cap_is_used_when_not_configured() {
        let res = ResourceLimits::from_texts(None, Some("65530"), None, None, 256 << 10);
        let l = ConnectionLimits::with_resources(&Config::default(), res);
        assert_eq!((l.max_connections, l.configured), (6450, false));
        assert_eq!(l.cap_source(), "derived from vm.max_map_count");
        let text = l.to_string();
        assert!(
            text.starts_with("max connections 6450 (derived from vm.max_map_count)"),
            "{text}"
        );
    }
}
