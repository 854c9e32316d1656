//! The [`Messenger`]: a cheap-to-clone handle on one entity's listener, session
//! table and connection threads.
//!
//! ```no_run
//! use std::sync::Arc;
//! use simplemsgr::runtime::{ChannelDispatcher, Messenger};
//! use simplemsgr::wire::message::Message;
//! use simplemsgr::wire::types::EntityType;
//!
//! let (dispatcher, events) = ChannelDispatcher::new();
//! let server = Messenger::builder("osd.0".parse().unwrap())
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .start(Arc::new(dispatcher))
//!     .unwrap();
//! let addr = server.listen_addr().unwrap();
//!
//! let (cd, _client_events) = ChannelDispatcher::new();
//! let client = Messenger::builder("client.1".parse().unwrap()).start(Arc::new(cd)).unwrap();
//! let conn = client.connect(addr, EntityType::OSD).unwrap();
//! conn.send(Message::new(0x100, &b"hello"[..])).unwrap();
//! ```

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;

use crate::auth::AuthConfig;
use crate::crypto::SystemRng;
use crate::proto::{AnyConnection as ProtoConn, Mode, Policy, ProtoConfig};
use crate::wire::msgr2::Limits;
use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};

use super::admission::{Admission, ConnectionLimits, Slot};
use super::conn::{self, ConnShared, ConnectionRef};
use super::detect::{self, Detected};
use super::stats::{ConnState as StatsConnState, RefuseReason};
use super::transport::{self, Transport};
use super::{Config, Dispatcher, Error, FaultInjector, Stats, StatsSnapshot, Throttle};

/// How sessions are keyed: a bound peer by its IP and port (so that our outgoing
/// session to it and its incoming one meet: connection races), an unbound client by
/// its instance nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKey {
    /// A peer with a listening address.
    Addr(SocketAddr),
    /// A client without one: a blank address, or the IP it learned with port 0, as
    /// Ceph's clients advertise themselves (every such client on one host shares the
    /// IP, and only the nonce tells them apart).
    Anon(u32),
}

/// The session-table key of an address.
pub fn session_key(a: &EntityAddr) -> SessionKey {
    match a.addr {
        Some(sa) if !a.is_blank() && sa.port() != 0 => SessionKey::Addr(sa),
        _ => SessionKey::Anon(a.nonce),
    }
}

/// Shared state of one messenger.
pub struct Inner {
    pub(crate) config: Config,
    pub(crate) proto: Arc<ProtoConfig>,
    pub(crate) dispatcher: Arc<dyn Dispatcher>,
    pub(crate) sessions: Mutex<HashMap<SessionKey, Arc<ConnShared>>>,
    pub(crate) all: Mutex<HashMap<u64, Arc<ConnShared>>>,
    pub(crate) stats: Stats,
    pub(crate) faults: Arc<FaultInjector>,
    pub(crate) dispatch_throttle: Throttle,
    pub(crate) method_cache: Mutex<HashMap<SocketAddr, u32>>,
    pub(crate) admission: Arc<Admission>,
    loopback: Mutex<Option<ConnectionRef>>,
    next_id: AtomicU64,
    next_link: AtomicU64,
    shutdown: AtomicBool,
    listen: Mutex<Option<SocketAddr>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn next_link_id(&self) -> u64 {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn my_addr(&self) -> EntityAddr {
        self.proto
            .addrs
            .0
            .first()
            .copied()
            .unwrap_or(EntityAddr::blank(AddrType::MSGR2, 0))
    }

    /// Drop a session from the table (it reset, was refused or marked down).
    pub(crate) fn forget(&self, shared: &Arc<ConnShared>) {
        let mut table = self.sessions.lock();
        table.retain(|_, s| !Arc::ptr_eq(s, shared));
        drop(table);
        self.all.lock().remove(&shared.id);
    }

    /// Start a named thread with the configured stack size.
    pub(crate) fn spawn<F>(self: &Arc<Self>, name: String, f: F) -> std::io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let inner = Arc::downgrade(self);
        let stats_inner = self.clone();
        stats_inner.stats.thread_started();
        let h = std::thread::Builder::new()
            .name(name)
            .stack_size(self.config.thread_stack_bytes)
            .spawn(move || {
                f();
                if let Some(i) = inner.upgrade() {
                    i.stats.thread_exited();
                }
            });
        match h {
            Ok(h) => {
                let mut threads = self.threads.lock();
                threads.retain(|t| !t.is_finished());
                threads.push(h);
                Ok(())
            }
            Err(e) => {
                self.stats.thread_exited();
                Err(e)
            }
        }
    }

    fn new_session(
        self: &Arc<Self>,
        proto: ProtoConn,
        peer: EntityAddr,
        target: Option<SocketAddr>,
        slot: Slot,
    ) -> Arc<ConnShared> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = ConnShared::new(id, proto, peer, target);
        *shared.slot.lock() = Some(slot);
        conn::sync_gauge(self, &shared);
        self.all.lock().insert(id, shared.clone());
        let inner = self.clone();
        let s2 = shared.clone();
        if let Err(e) = self.spawn(format!("ms-write-{id}"), move || {
            conn::writer_loop(inner, s2)
        }) {
            warn!("cannot start a writer thread: {e}");
            conn::abandon(self, &shared);
        }
        shared
    }
}

/// Builds a [`Messenger`].
pub struct MessengerBuilder {
    config: Config,
    policies: crate::proto::PolicyTable,
    auth: AuthConfig,
    mode: Mode,
    min_mode: Mode,
    features_supported: u64,
    features_required: u64,
    protocol_features: u64,
    max_frames_per_key: u64,
    key_log: Option<Arc<dyn crate::crypto::KeyLog>>,
    chunk_size: Option<usize>,
}

impl MessengerBuilder {
    /// Replace the whole runtime configuration.
    pub fn config(mut self, config: Config) -> Self {
        let name = self.config.name;
        self.config = config;
        self.config.name = name;
        self
    }

    /// Listen on `addr` (port 0 picks a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.bind_addrs = vec![addr];
        self
    }

    /// The policy for peers without a specific one.
    pub fn default_policy(mut self, p: Policy) -> Self {
        self.policies.default = p;
        self
    }

    /// The policy for peers of type `ty`.
    pub fn policy(mut self, ty: EntityType, p: Policy) -> Self {
        self.policies.set(ty, p);
        self
    }

    /// Auth methods and keys.
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// The mode we ask for as a client and the weakest we accept.
    pub fn mode(mut self, mode: Mode, min_mode: Mode) -> Self {
        self.mode = mode;
        self.min_mode = min_mode;
        self
    }

    /// Ceph feature bits we support and require.
    pub fn features(mut self, supported: u64, required: u64) -> Self {
        self.features_supported = supported;
        self.features_required = required;
        self
    }

    /// Banner protocol features we support.
    pub fn protocol_features(mut self, supported: u64) -> Self {
        self.protocol_features = supported;
        self
    }

    /// Write session keys to this sink (docs/PROTOCOL.md §11). Without it, the file named
    /// by `SIMPLEMSGR_KEYLOG` is used if that variable is set.
    pub fn key_log(mut self, sink: Arc<dyn crate::crypto::KeyLog>) -> Self {
        self.key_log = Some(sink);
        self
    }

    /// Structured data (docs/PROTOCOL.md §7): chunk size for large data sections when the
    /// extension is negotiated (enable it with `protocol_features(PROTO_FEATURE_STRUCTURED)`).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// Protected frames per key before re-keying (tests lower it).
    pub fn max_frames_per_key(mut self, n: u64) -> Self {
        self.max_frames_per_key = n;
        self
    }

    /// Mutable access to the runtime configuration.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Bind (if asked), start the acceptor, and return the running messenger.
    pub fn start(self, dispatcher: Arc<dyn Dispatcher>) -> Result<Messenger, Error> {
        self.config.validate()?;
        let nonce = {
            let mut b = [0u8; 4];
            crate::crypto::Random::fill(&mut SystemRng::new(), &mut b);
            u32::from_le_bytes(b).max(1)
        };
        let listener = match self.config.bind_addrs.first() {
            Some(a) => Some(transport::bind_listener(*a, &self.config)?),
            None => None,
        };
        let listen = match &listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let my_addr = match listen {
            Some(a) => EntityAddr::new(AddrType::MSGR2, a, nonce),
            None => EntityAddr::blank(AddrType::MSGR2, nonce),
        };
        let c = &self.config;
        let mut proto = ProtoConfig::new(c.name, AddrVec(vec![my_addr]));
        proto.auth = self.auth;
        proto.mode = self.mode;
        proto.min_mode = self.min_mode;
        proto.policies = self.policies;
        proto.features_supported = self.features_supported;
        proto.features_required = self.features_required;
        proto.protocol_features = self.protocol_features;
        proto.max_frames_per_key = self.max_frames_per_key;
        proto.key_log = self.key_log.or_else(super::keylog::FileKeyLog::from_env);
        if let Some(n) = self.chunk_size {
            proto.chunk_size = n;
        }
        proto.keepalive_interval =
            (!c.keepalive_interval.is_zero()).then_some(c.keepalive_interval);
        proto.idle_timeout = Some(c.idle_timeout);
        proto.standby_timeout = c.standby_timeout;
        proto.handshake_timeout = c.handshake_timeout;
        proto.backoff_initial = c.initial_backoff;
        proto.backoff_max = c.max_backoff;
        proto.backoff_jitter = c.backoff_jitter;
        proto.crc = c.crc;
        proto.limits = Limits {
            max_front: c.max_front_len,
            max_middle: c.max_middle_len,
            max_data: c.max_data_len,
            max_frame: Limits::default().max_frame.max(
                1 + 73
                    + c.max_front_len
                        .saturating_add(c.max_middle_len)
                        .saturating_add(c.max_data_len),
            ),
        };
        let limits = ConnectionLimits::from_config(&self.config);
        let inner = Arc::new(Inner {
            admission: Admission::new(limits),
            faults: FaultInjector::new(&self.config.fault),
            dispatch_throttle: Throttle::new(
                "dispatch",
                self.config.dispatch_throttle_messages,
                self.config.dispatch_throttle_bytes,
            ),
            config: self.config,
            proto: Arc::new(proto),
            dispatcher,
            sessions: Mutex::new(HashMap::new()),
            all: Mutex::new(HashMap::new()),
            stats: Stats::new(),
            method_cache: Mutex::new(HashMap::new()),
            loopback: Mutex::new(None),
            next_id: AtomicU64::new(1),
            next_link: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            listen: Mutex::new(listen),
            threads: Mutex::new(Vec::new()),
        });
        if let Some(l) = listener {
            let i2 = inner.clone();
            inner.spawn("ms-accepter".into(), move || accept_loop(i2, l))?;
            info!("{} listening on {}", inner.proto.name, my_addr);
        }
        info!("{}", inner.admission.limits());
        Ok(Messenger { inner })
    }
}

/// One entity's messenger. Clone it freely; every clone is the same messenger.
#[derive(Clone)]
pub struct Messenger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Messenger({}, {:?})",
            self.inner.proto.name,
            self.listen_addr()
        )
    }
}

impl Messenger {
    /// Start building a messenger for entity `name`.
    pub fn builder(name: EntityName) -> MessengerBuilder {
        let config = Config {
            name,
            ..Config::default()
        };
        MessengerBuilder {
            config,
            policies: crate::proto::PolicyTable::default(),
            auth: AuthConfig::none(),
            mode: Mode::Plain,
            min_mode: Mode::Plain,
            features_supported: u64::MAX,
            features_required: 0,
            protocol_features: 0,
            max_frames_per_key: crate::crypto::DEFAULT_MAX_FRAMES,
            key_log: None,
            chunk_size: None,
        }
    }

    /// Our entity name.
    pub fn name(&self) -> EntityName {
        self.inner.proto.name
    }

    /// The address we listen on, if we bound one.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        *self.inner.listen.lock()
    }

    /// Our advertised address (with our instance nonce).
    pub fn my_addr(&self) -> EntityAddr {
        self.inner.my_addr()
    }

    /// The session with the peer at `addr`, creating it (and connecting) if there is
    /// none. Messages sent before the handshake completes are queued.
    pub fn connect(&self, addr: SocketAddr, peer_type: EntityType) -> Result<ConnectionRef, Error> {
        self.connect_addr(EntityAddr::new(AddrType::MSGR2, addr, 0), peer_type)
    }

    /// Like [`Messenger::connect`], with the protocol chosen by the address: a `v1:`
    /// address ([`AddrType::LEGACY`]) gets a legacy v1 session, any other msgr2. A
    /// blank address is refused.
    pub fn connect_addr(
        &self,
        peer: EntityAddr,
        peer_type: EntityType,
    ) -> Result<ConnectionRef, Error> {
        if self.inner.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let Some(addr) = peer.addr.filter(|_| !peer.is_blank()) else {
            return Err(Error::Refused {
                reason: format!("cannot connect to the blank address {peer}"),
            });
        };
        let peer = EntityAddr::new(
            if peer.kind == AddrType::LEGACY {
                AddrType::LEGACY
            } else {
                AddrType::MSGR2
            },
            addr,
            0,
        );
        let key = session_key(&peer);
        let mut table = self.inner.sessions.lock();
        if let Some(s) = table.get(&key) {
            if s.state.lock().proto.state() != crate::proto::msgr2::State::Closed {
                return Ok(conn::conn_ref(&self.inner, s));
            }
        }
        let slot = self.inner.admission.admit_outgoing().map_err(|r| {
            self.inner
                .admission
                .note_refusal(&self.inner.stats, None, &r);
            Error::Refused {
                reason: format!("cannot connect to {addr}: {r}"),
            }
        })?;
        let proto = ProtoConn::outgoing(
            self.inner.proto.clone(),
            Box::new(SystemRng::new()),
            peer,
            peer_type,
            Instant::now(),
        );
        let shared = self.inner.new_session(proto, peer, Some(addr), slot);
        table.insert(key, shared.clone());
        drop(table);
        // The first event is ReconnectDue: let the writer connect.
        let events = conn::drain(&mut shared.state.lock().proto, &shared, false);
        conn::handle_events(&self.inner, &shared, events);
        Ok(conn::conn_ref(&self.inner, &shared))
    }

    /// The connection to ourselves (Ceph's loopback connection): messages sent on it
    /// bypass the network and are dispatched in order, with `src` set to our name, by
    /// a local delivery thread started on first use.
    pub fn loopback(&self) -> Result<ConnectionRef, Error> {
        if self.inner.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let mut slot = self.inner.loopback.lock();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let me = self.inner.my_addr();
        let proto = ProtoConn::outgoing(
            self.inner.proto.clone(),
            Box::new(SystemRng::new()),
            me,
            self.inner.proto.name.ty,
            Instant::now(),
        );
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = ConnShared::new(id, proto, me, None);
        let (tx, rx) = crossbeam_channel::unbounded::<crate::wire::message::Message>();
        *shared.local.lock() = Some(tx);
        let conn = conn::conn_ref(&self.inner, &shared);
        let inner = self.inner.clone();
        let c2 = conn.clone();
        self.inner.spawn(format!("ms-local-{id}"), move || {
            let name = inner.proto.name;
            for (seq, mut m) in (1u64..).zip(rx.iter()) {
                m.seq = seq;
                m.src = name;
                inner.stats.msg_in();
                inner.dispatcher.dispatch(&c2, m);
            }
        })?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Close every session (no reset events), the listener, and stop all threads.
    pub fn shutdown(&self) {
        if self.inner.shutdown.swap(true, Ordering::AcqRel) {
            return;
        }
        let all: Vec<Arc<ConnShared>> = self.inner.all.lock().values().cloned().collect();
        for s in all {
            conn::conn_ref(&self.inner, &s).mark_down();
        }
        // Ends the local delivery thread.
        if let Some(c) = self.inner.loopback.lock().take() {
            c.mark_down();
        }
        // Wake the acceptor out of accept().
        if let Some(a) = self.listen_addr() {
            let _ = std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200));
        }
    }

    /// Wait (bounded by `timeout`) until every messenger thread has exited after
    /// [`Messenger::shutdown`]. Returns false if some are still running.
    pub fn wait(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let handles: Vec<JoinHandle<()>> = {
                let mut t = self.inner.threads.lock();
                let (done, running): (Vec<_>, Vec<_>) = t.drain(..).partition(|h| h.is_finished());
                *t = running;
                done
            };
            for h in handles {
                let _ = h.join();
            }
            if self.inner.threads.lock().is_empty() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A snapshot of the counters (connections by state, threads, bytes and
    /// messages, throttle waits, faults, refusals by reason).
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.inner.stats.snapshot();
        s.throttle_waits += self.inner.dispatch_throttle.stats().waits;
        s.faults_injected += self.inner.faults.socket_failures() + self.inner.faults.delays();
        for (why, n) in s.refused.iter_mut() {
            if *why == RefuseReason::HandshakeEvicted {
                *n += self.inner.admission.evicted();
            }
        }
        s
    }

    /// The connection limits in force: the cap (configured or derived), the
    /// handshake and per-IP caps, and the process limits the cap was derived from.
    pub fn limits(&self) -> &ConnectionLimits {
        self.inner.admission.limits()
    }

    /// Sessions counted against the connection cap right now (incoming and
    /// outgoing, from admission until their writer thread exits).
    pub fn live_connections(&self) -> usize {
        self.inner.admission.live()
    }

    /// Handles on every session in the table.
    pub fn sessions(&self) -> Vec<ConnectionRef> {
        let table = self.inner.sessions.lock();
        table
            .values()
            .map(|s| conn::conn_ref(&self.inner, s))
            .collect()
    }

    /// Sessions in the table.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// The fault injector (counts of injected faults, the seed).
    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.inner.faults
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                if inner.is_shutdown() {
                    return;
                }
                warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if inner.is_shutdown() {
            return;
        }
        let Some((slot, stream)) = admit(&inner, stream, peer) else {
            continue;
        };
        if let Err(e) = transport::configure_stream(&stream, &inner.config) {
            warn!("cannot configure socket from {peer}: {e}");
            continue;
        }
        // Protocol detection waits for the client's banner: not on this thread.
        let i2 = inner.clone();
        // The slot moves into the thread (and is released if it cannot start).
        if let Err(e) = inner.spawn("ms-read-accept".into(), move || {
            serve_incoming(i2, stream, peer, slot)
        }) {
            warn!("cannot start a thread for the connection from {peer}: {e}");
        }
    }
}

/// Detect the protocol of an accepted connection (bounded by the handshake timeout),
/// then make it an incoming session of that protocol with its reader thread.
///
/// The whole handshake, banner included, is bounded by one `ms_connection_ready_timeout`
/// from the accept: the session's link counts as started when the socket was accepted.
fn serve_incoming(
    inner: Arc<Inner>,
    mut stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
) {
    let accepted = Instant::now();
    let stop = || inner.is_shutdown();
    let timeout = inner.config.handshake_timeout;
    // Counted as handshaking while the banner is awaited (the session counts itself after).
    inner.stats.conn_enter(StatsConnState::Handshaking);
    let detection = detect::detect(&mut stream, timeout, &stop);
    inner.stats.conn_leave(StatsConnState::Handshaking);
    let (detected, banner) = match detection {
        Ok(x) => x,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                inner.stats.refused(RefuseReason::HandshakeTimeout);
            }
            info!("connection from {peer} dropped: {e}");
            return;
        }
    };
    if inner.is_shutdown() {
        return;
    }
    let transport = match Transport::new(stream) {
        Ok(t) => t,
        Err(e) => {
            warn!("cannot set up socket from {peer}: {e}");
            return;
        }
    };
    let link = inner.next_link_id();
    let now = Instant::now();
    let rng = Box::new(SystemRng::new());
    let (proto, kind) = match detected {
        Detected::V1 => (
            ProtoConn::incoming_v1(inner.proto.clone(), rng, link, peer, accepted),
            AddrType::LEGACY,
        ),
        Detected::V2 => (
            ProtoConn::incoming(inner.proto.clone(), rng, link, accepted),
            AddrType::MSGR2,
        ),
    };
    let shared = inner.new_session(proto, EntityAddr::new(kind, peer, 0), None, slot);
    // The banner is the machine's first input; it consumes it whole (a bad one fails the link).
    let events = {
        let mut st = shared.state.lock();
        let mut input = bytes::BytesMut::from(&banner[..]);
        st.proto.handle_input(link, &mut input, now);
        if !input.is_empty() && st.proto.link_id() == Some(link) {
            st.proto.link_failed(
                link,
                crate::proto::Error::Transport("banner not consumed".into()),
                now,
            );
        }
        conn::drain(&mut st.proto, &shared, false)
    };
    conn::attach_link(&inner, &shared, link, transport);
    conn::handle_events(&inner, &shared, events);
    shared.wake();
}

/// Admission control for an accepted socket, before any thread is spawned: over a
/// limit, the socket is closed at once, the refusal counted and (rate-limited) logged.
fn admit(inner: &Arc<Inner>, stream: TcpStream, peer: SocketAddr) -> Option<(Slot, TcpStream)> {
    // A second handle on the socket lets a later arrival cut this handshake if it stalls.
    let handle = stream.try_clone().ok();
    match inner.admission.admit_incoming(peer, handle, Instant::now()) {
        Ok(t) => Some((t, stream)),
        Err(r) => {
            drop(stream);
            inner.admission.note_refusal(&inner.stats, Some(peer), &r);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str, nonce: u32) -> EntityAddr {
        EntityAddr::new(AddrType::LEGACY, s.parse().unwrap(), nonce)
    }

    #[test]
    fn unbound_clients_are_told_apart_by_nonce() {
        // Two ceph CLIs on one host: learned IP, port 0, their own nonces.
        let a = session_key(&addr("127.0.0.1:0", 17));
        let b = session_key(&addr("127.0.0.1:0", 18));
        assert_eq!(a, SessionKey::Anon(17));
        assert_ne!(a, b);
        // Blank addresses likewise.
        assert_eq!(session_key(&addr("0.0.0.0:0", 5)), SessionKey::Anon(5));
        // A listening peer is keyed by where it listens, whatever its nonce, so our
        // outgoing session to it (nonce unknown) and its incoming one meet.
        let l = "127.0.0.1:6800".parse().unwrap();
        assert_eq!(session_key(&addr("127.0.0.1:6800", 9)), SessionKey::Addr(l));
        assert_eq!(session_key(&addr("127.0.0.1:6800", 0)), SessionKey::Addr(l));
    }
}
