//! Messenger-wide counters: lock-free to update, printable as a snapshot.
//!
//! Gauges (connections by state, threads) go up and down; everything else only
//! counts up. `Relaxed` ordering throughout: each counter is exact, but a snapshot is
//! not an atomic cut across counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The state a connection is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Banner, auth or session handshake in progress (for an outgoing session also
    /// while it waits out a reconnect backoff).
    Handshaking,
    /// Ready: messages flow.
    Open,
    /// Lossless session with no TCP connection, waiting for traffic or the peer.
    Standby,
}

/// Why a connection was refused before or during its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// `ms_max_connections` (or the derived cap) reached.
    MaxConnections,
    /// `ms_max_handshaking` reached.
    MaxHandshaking,
    /// `ms_max_connections_per_ip` reached.
    PerIpLimit,
    /// The handshake took longer than `ms_connection_ready_timeout`.
    HandshakeTimeout,
    /// Authentication or authorisation failed.
    Auth,
    /// The peer broke the protocol during the handshake.
    Protocol,
    /// The messenger is shutting down.
    Shutdown,
    /// The handshake table was full and this handshake, older than
    /// `ms_handshake_evict_after`, gave its slot to a new connection.
    HandshakeEvicted,
}

impl RefuseReason {
    /// Every reason, in display order.
    pub const ALL: [RefuseReason; 8] = [
        RefuseReason::MaxConnections,
        RefuseReason::MaxHandshaking,
        RefuseReason::PerIpLimit,
        RefuseReason::HandshakeTimeout,
        RefuseReason::Auth,
        RefuseReason::Protocol,
        RefuseReason::Shutdown,
        RefuseReason::HandshakeEvicted,
    ];

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::MaxConnections => "max_connections",
            RefuseReason::MaxHandshaking => "max_handshaking",
            RefuseReason::PerIpLimit => "per_ip_limit",
            RefuseReason::HandshakeTimeout => "handshake_timeout",
            RefuseReason::Auth => "auth",
            RefuseReason::Protocol => "protocol",
            RefuseReason::Shutdown => "shutdown",
            RefuseReason::HandshakeEvicted => "handshake_evicted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const N_REASONS: usize = RefuseReason::ALL.len();

/// The live counters. Share it as `Arc<Stats>`.
#[derive(Debug, Default)]
pub struct Stats {
    handshaking: AtomicU64,
    open: AtomicU64,
    standby: AtomicU64,
    threads: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    msgs_in: AtomicU64,
    msgs_out: AtomicU64,
    throttle_waits: AtomicU64,
    faults_injected: AtomicU64,
    refused: [AtomicU64; N_REASONS],
}

impl Stats {
    /// All counters at zero.
    pub fn new() -> Self {
        Stats::default()
    }

    fn gauge(&self, s: ConnState) -> &AtomicU64 {
        match s {
            ConnState::Handshaking => &self.handshaking,
            ConnState::Open => &self.open,
            ConnState::Standby => &self.standby,
        }
    }

    /// A connection entered state `s`.
    pub fn conn_enter(&self, s: ConnState) {
        self.gauge(s).fetch_add(1, Ordering::Relaxed);
    }

    /// A connection left state `s` (closed, or before entering another).
    pub fn conn_leave(&self, s: ConnState) {
        dec(self.gauge(s));
    }

    /// A connection moved from `from` to `to`.
    pub fn conn_transition(&self, from: ConnState, to: ConnState) {
        if from != to {
            self.conn_leave(from);
            self.conn_enter(to);
        }
    }

    /// A messenger thread started.
    pub fn thread_started(&self) {
        self.threads.fetch_add(1, Ordering::Relaxed);
    }

    /// A messenger thread exited.
    pub fn thread_exited(&self) {
        dec(&self.threads);
    }

    /// Bytes read from sockets.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes written to sockets.
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// A message was received (before dispatch).
    pub fn msg_in(&self) {
        self.msgs_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was written to a socket.
    pub fn msg_out(&self) {
        self.msgs_out.fetch_add(1, Ordering::Relaxed);
    }

    /// An acquire had to wait on a throttle.
    pub fn throttle_wait(&self) {
        self.throttle_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// A fault was injected.
    pub fn fault_injected(&self) {
        self.faults_injected.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was refused.
    pub fn refused(&self, why: RefuseReason) {
        self.refused[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            handshaking: ld(&self.handshaking),
            open: ld(&self.open),
            standby: ld(&self.standby),
            threads: ld(&self.threads),
            bytes_in: ld(&self.bytes_in),
            bytes_out: ld(&self.bytes_out),
            msgs_in: ld(&self.msgs_in),
            msgs_out: ld(&self.msgs_out),
            throttle_waits: ld(&self.throttle_waits),
            faults_injected: ld(&self.faults_injected),
            refused: RefuseReason::ALL.map(|r| (r, ld(&self.refused[r.index()]))),
        }
    }
}

/// Decrement without wrapping below zero (an unmatched decrement is a local bug).
fn dec(a: &AtomicU64) {
    if a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
        .is_err()
    {
        log::error!("stats: gauge decremented below zero");
    }
}

/// A copy of the counters. `{}` prints one line; `{:#}` prints a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections handshaking.
    pub handshaking: u64,
    /// Connections open.
    pub open: u64,
    /// Sessions in standby.
    pub standby: u64,
    /// Messenger threads alive.
    pub threads: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// Throttle waits.
    pub throttle_waits: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// Refusals by reason.
    pub refused: [(RefuseReason, u64); N_REASONS],
}

impl StatsSnapshot {
    /// Refusals over all reasons.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }

    fn rows(&self) -> Vec<(&'static str, u64)> {
        let mut rows = vec![
            ("conns_handshaking", self.handshaking),
            ("conns_open", self.open),
            ("conns_standby", self.standby),
            ("threads", self.threads),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("msgs_in", self.msgs_in),
            ("msgs_out", self.msgs_out),
            ("throttle_waits", self.throttle_waits),
            ("faults_injected", self.faults_injected),
        ];
        rows.extend(self.refused.iter().map(|(r, n)| (refused_label(*r), *n)));
        rows
    }
}

fn refused_label(r: RefuseReason) -> &'static str {
    match r {
        RefuseReason::MaxConnections => "refused_max_connections",
        RefuseReason::MaxHandshaking => "refused_max_handshaking",
        RefuseReason::PerIpLimit => "refused_per_ip_limit",
        RefuseReason::HandshakeTimeout => "refused_handshake_timeout",
        RefuseReason::Auth => "refused_auth",
        RefuseReason::Protocol => "refused_protocol",
        RefuseReason::Shutdown => "refused_shutdown",
        RefuseReason::HandshakeEvicted => "refused_handshake_evicted",
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            let rows = self.rows();
            for (i, (k, v)) in rows.iter().enumerate() {
                write!(f, "{k:<26} {v:>16}")?;
                if i + 1 < rows.len() {
                    writeln!(f)?;
                }
            }
            return Ok(());
        }
        write!(
            f,
            "conns {} open / {} handshaking / {} standby, {} threads, in {} msgs {} B, out {} msgs {} B, \
             {} throttle waits, {} faults, {} refused",
            self.open,
            self.handshaking,
            self.standby,
            self.threads,
            self.msgs_in,
            self.bytes_in,
            self.msgs_out,
            self.bytes_out,
            self.throttle_waits,
            self.faults_injected,
            self.refused_total()
        )?;
        let nonzero: Vec<String> = self
            .refused
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}={n}", r.name()))
            .collect();
        if !nonzero.is_empty() {
            write!(f, " ({})", nonzero.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counters_and_gauges() {
        let s = Stats::new();
        s.conn_enter(ConnState::Handshaking);
        s.conn_enter(ConnState::Handshaking);
        s.conn_transition(ConnState::Handshaking, ConnState::Open);
        s.conn_transition(ConnState::Open, ConnState::Open);
        s.thread_started();
        s.add_bytes_in(100);
        s.add_bytes_out(50);
        s.msg_in();
        s.msg_out();
        s.msg_out();
        s.throttle_wait();
        s.fault_injected();
        s.refused(RefuseReason::PerIpLimit);
        s.refused(RefuseReason::PerIpLimit);
        s.conn_leave(ConnState::Standby); // below zero: stays at zero
        let snap = s.snapshot();
        assert_eq!(
            (snap.handshaking, snap.open, snap.standby, snap.threads),
            (1, 1, 0, 1)
        );
        assert_eq!(
            (snap.bytes_in, snap.bytes_out, snap.msgs_in, snap.msgs_out),
            (100, 50, 1, 2)
        );
        assert_eq!(snap.refused_total(), 2);
        assert_eq!(
            snap.to_string(),
            "conns 1 open / 1 handshaking / 0 standby, 1 threads, in 1 msgs 100 B, out 2 msgs 50 B, \
             1 throttle waits, 1 faults, 2 refused (per_ip_limit=2)"
        );
        let table = format!("{snap:#}");
        assert_eq!(table.lines().count(), 10 + RefuseReason::ALL.len());
        assert!(table.contains("refused_per_ip_limit"));
        assert!(table
            .lines()
            .any(|l| l.starts_with("bytes_in") && l.ends_with(" 100")));
    }

    #[test]
    fn concurrent_updates_are_exact() {
        let s = Arc::new(Stats::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        s.msg_in();
                        s.conn_enter(ConnState::Open);
                        s.conn_leave(ConnState::Open);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let snap = s.snapshot();
        assert_eq!((snap.msgs_in, snap.open), (40_000, 0));
    }
}
