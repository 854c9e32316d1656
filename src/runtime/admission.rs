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
//! which frees its slot; so a flood of stalled peers can delay a legitimate client by
//! at most about one deadline, never lock it out for good.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
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
        writeln!(
            f,
            "max connections {} ({}), max handshaking {}, per IP {}, handshake timeout {:.1}s, \
             thread stack {} KiB, listen backlog {}",
            self.max_connections,
            self.cap_source(),
            self.max_handshaking,
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
    log: Mutex<RefusalLog>,
}

/// A session's place in the counts; released when dropped.
#[derive(Debug)]
pub struct Slot {
    adm: Arc<Admission>,
    ip: Option<IpAddr>,
    handshaking: bool,
}

impl Slot {
    /// The handshake ended (the session opened, or left handshaking some other way).
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.adm.handshaking.fetch_sub(1, Ordering::AcqRel);
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

    /// Admit an incoming connection from `peer`, or say which bound refuses it.
    pub fn admit_incoming(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, Refusal> {
        if !Self::take(&self.live, self.limits.max_connections) {
            return Err(self.cap_refusal());
        }
        // From here on, a refusal drops `t`, which gives the slots back.
        let mut t = Slot {
            adm: self.clone(),
            ip: None,
            handshaking: false,
        };
        if !Self::take(&self.handshaking, self.limits.max_handshaking) {
            return Err(Refusal {
                reason: RefuseReason::MaxHandshaking,
                option: "ms_max_handshaking",
                limit: self.limits.max_handshaking,
                source: String::new(),
            });
        }
        t.handshaking = true;
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
            handshaking: false,
        })
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
        let t1 = a.admit_incoming(peer(1, 1)).unwrap();
        let t2 = a.admit_outgoing().unwrap();
        let _t3 = a.admit_incoming(peer(1, 2)).unwrap();
        let r = a.admit_incoming(peer(1, 3)).unwrap_err();
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
        let mut t1 = a.admit_incoming(peer(1, 1)).unwrap();
        let _t2 = a.admit_incoming(peer(1, 2)).unwrap();
        let r = a.admit_incoming(peer(1, 3)).unwrap_err();
        assert_eq!(r.reason, RefuseReason::MaxHandshaking);
        assert!(r.to_string().contains("ms_max_handshaking = 2"), "{r}");
        assert_eq!(a.live(), 2, "the refused one gave its connection slot back");
        t1.handshake_done();
        t1.handshake_done(); // idempotent
        assert_eq!((a.live(), a.handshaking()), (2, 1));
        let _t3 = a.admit_incoming(peer(1, 3)).unwrap();
        drop(t1);
        assert_eq!((a.live(), a.handshaking()), (2, 2));
    }

    #[test]
    fn per_ip_limit() {
        let a = adm(100, 100, 2);
        let t1 = a.admit_incoming(peer(1, 1)).unwrap();
        let _t2 = a.admit_incoming(peer(1, 2)).unwrap();
        let r = a.admit_incoming(peer(1, 3)).unwrap_err();
        assert_eq!(r.reason, RefuseReason::PerIpLimit);
        assert!(r.to_string().contains("from this IP"), "{r}");
        // Another IP is not affected.
        let _t4 = a.admit_incoming(peer(2, 1)).unwrap();
        assert_eq!((a.from_ip(peer(1, 0).ip()), a.live()), (2, 3));
        drop(t1);
        assert_eq!(a.from_ip(peer(1, 0).ip()), 1);
        assert!(a.admit_incoming(peer(1, 4)).is_ok());
        // Unlimited when 0; entries are removed when their count drops to zero.
        let b = adm(100, 100, 0);
        let ts: Vec<_> = (0..50)
            .map(|p| b.admit_incoming(peer(9, p)).unwrap())
            .collect();
        drop(ts);
        assert!(b.per_ip.lock().is_empty());
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
