//! One session's threads: a writer thread for the session's whole life (it also
//! connects and reconnects, as SimpleMessenger's writer did), and a reader thread per
//! TCP connection ("link").
//!
//! Lock discipline: a thread locks the session, steps the state machine, takes its
//! outputs (bytes, events), unlocks, and only then writes to a socket or calls the
//! dispatcher. No lock is held across a socket call or a callback. Lock order when
//! two are needed: session table, then a session.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use crate::proto::accept::{decide, Decision};
use crate::proto::msgr2::{SendError, State};
use crate::proto::{AnyConnection as ProtoConn, Error as ProtoError, Event as ProtoEvent, LinkId};
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{EntityAddr, EntityType};

use super::admission::Slot;
use super::messenger::{session_key, Inner};
use super::stats::{ConnState as GaugeState, RefuseReason};
use super::transport::{self, ReadHalf, Shutdown, ShutdownHandle, Transport, WriteHalf};
use super::Error;

/// The writing side of one link plus a way to shut the socket from any thread.
#[derive(Debug)]
pub(crate) struct LinkIo {
    write: Mutex<LinkWriter>,
    shutdown: ShutdownHandle,
}

/// The socket's write half and bytes already taken from the state machine that a
/// non-blocking write could not finish; they go out before anything else.
#[derive(Debug)]
struct LinkWriter {
    half: WriteHalf,
    pending: std::collections::VecDeque<Transmit>,
}

impl LinkWriter {
    /// Write `t` (after anything pending), blocking until the kernel took it all.
    fn write_all(&mut self, t: &mut Transmit) -> io::Result<()> {
        while let Some(mut p) = self.pending.pop_front() {
            write_batch(&mut self.half, &mut p)?;
        }
        write_batch(&mut self.half, t)
    }

    /// Write what the kernel takes now; keep the rest (of `t` too) pending. Returns
    /// true if nothing is left pending.
    fn write_some(&mut self, t: Transmit) -> io::Result<bool> {
        self.pending.push_back(t);
        while let Some(p) = self.pending.front_mut() {
            let r = {
                let mut slices = Vec::with_capacity(64);
                p.io_slices(&mut slices);
                self.half.write_vectored_nonblocking(&slices)
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    p.consume(n);
                    if p.is_empty() {
                        self.pending.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl LinkIo {
    fn close(&self) {
        let _ = self.shutdown.shutdown();
    }
}

/// Wakes the session's writer thread. A wake while the writer runs is remembered (the
/// flag) and costs nothing more; the writer parks without spinning, which matters
/// with many threads on few cores.
#[derive(Default)]
struct Waker {
    pending: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Waker {
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // Taking the lock orders this notify after a waiter's check of the flag.
            let _g = self.lock.lock();
            self.cv.notify_one();
        }
    }

    fn wait(&self, timeout: Duration) {
        // Yield a few times first: under a steady stream the next wake usually comes
        // within microseconds, and catching it here saves two futex calls.
        for _ in 0..WAKE_YIELDS {
            if self.pending.swap(false, Ordering::AcqRel) {
                return;
            }
            std::thread::yield_now();
        }
        let mut g = self.lock.lock();
        if !self.pending.swap(false, Ordering::AcqRel) {
            self.cv.wait_for(&mut g, timeout);
            self.pending.store(false, Ordering::Release);
        }
    }
}

/// How often a writer with nothing to do yields before it parks.
const WAKE_YIELDS: u32 = 8;

/// What one session's lock protects.
pub(crate) struct ConnState {
    pub(crate) proto: ProtoConn,
    links: HashMap<LinkId, Arc<LinkIo>>,
    connect_due: bool,
    last_send: Option<Instant>,
}

/// A send this long after the previous one is written inline by the sending thread.
const INLINE_AFTER_IDLE: Duration = Duration::from_micros(5);

/// One session, shared by its threads and the user's handles.
pub struct ConnShared {
    pub(crate) id: u64,
    pub(crate) state: Mutex<ConnState>,
    wake: Waker,
    closed: AtomicBool,
    pub(crate) peer_hint: Mutex<EntityAddr>,
    /// Where to (re)connect, for sessions we initiate.
    pub(crate) target: Option<SocketAddr>,
    /// This session's place in the admission counts (released when its writer exits).
    pub(crate) slot: Mutex<Option<Slot>>,
    /// The state this session is counted in by the stats gauges.
    gauge: Mutex<Option<GaugeState>>,
    /// Dispatch order: batches of events are numbered under the session lock and
    /// dispatched strictly in that order, with no lock held during the callbacks (two
    /// reader threads can briefly serve one session around a reconnect).
    tickets: AtomicU64,
    turn: Mutex<u64>,
    turn_cv: Condvar,
    /// Set on the loopback connection: messages go to the local delivery thread.
    pub(crate) local: Mutex<Option<crossbeam_channel::Sender<Message>>>,
}

impl ConnShared {
    pub(crate) fn new(
        id: u64,
        proto: ProtoConn,
        peer: EntityAddr,
        target: Option<SocketAddr>,
    ) -> Arc<Self> {
        Arc::new(ConnShared {
            id,
            state: Mutex::new(ConnState {
                proto,
                links: HashMap::new(),
                connect_due: false,
                last_send: None,
            }),
            wake: Waker::default(),
            closed: AtomicBool::new(false),
            peer_hint: Mutex::new(peer),
            target,
            slot: Mutex::new(None),
            gauge: Mutex::new(None),
            tickets: AtomicU64::new(0),
            turn: Mutex::new(0),
            turn_cv: Condvar::new(),
            local: Mutex::new(None),
        })
    }

    /// Wake the writer thread (coalesced: one pending wake is enough).
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Number a batch of events; call with the session lock held.
    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// Run `f` when every earlier-numbered batch has been dispatched.
    fn in_turn(&self, ticket: u64, f: impl FnOnce()) {
        {
            let mut turn = self.turn.lock();
            while *turn != ticket {
                self.turn_cv.wait(&mut turn);
            }
        }
        // Pass the turn on even if a callback panics.
        struct Next<'a>(&'a ConnShared);
        impl Drop for Next<'_> {
            fn drop(&mut self) {
                *self.0.turn.lock() += 1;
                self.0.turn_cv.notify_all();
            }
        }
        let _next = Next(self);
        f();
    }
}

/// A handle on one session with a peer: send messages, query state, mark down.
/// Cheap to clone; all clones refer to the same session.
#[derive(Clone)]
pub struct ConnectionRef {
    /// Process-unique id of the session (also seeds its fault injection).
    pub id: u64,
    /// The peer's address (as we connected to it, or as it advertised itself).
    pub peer: EntityAddr,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) msgr: Weak<Inner>,
}

impl PartialEq for ConnectionRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ConnectionRef {}

impl std::fmt::Debug for ConnectionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}({})", self.id, self.peer)
    }
}

impl ConnectionRef {
    /// A handle that belongs to no messenger (for testing dispatchers): sends queue
    /// into a session that never connects.
    #[doc(hidden)]
    pub fn detached(id: u64, peer: EntityAddr) -> ConnectionRef {
        let cfg = crate::proto::ProtoConfig::new(
            crate::wire::types::EntityName::new(EntityType::CLIENT, id),
            crate::wire::types::AddrVec::default(),
        );
        let proto = ProtoConn::outgoing(
            Arc::new(cfg),
            Box::new(crate::crypto::SeededRng::new(id)),
            peer,
            EntityType::ANY,
            Instant::now(),
        );
        ConnectionRef {
            id,
            peer,
            shared: ConnShared::new(id, proto, peer, None),
            msgr: Weak::new(),
        }
    }

    /// Queue a message. Returns an error if the session is closed (marked down,
    /// refused, or a lossy session that failed).
    ///
    /// When the session's traffic is sparse (the previous send was a while ago) and
    /// nobody else is writing to the link, the calling thread writes the bytes itself
    /// with a non-blocking write, saving the hand-off to the writer thread (latency);
    /// otherwise, and for whatever the kernel does not take at once, the writer thread
    /// sends them in its next batch (throughput). `send` never blocks on the network.
    pub fn send(&self, msg: Message) -> Result<(), Error> {
        if let Some(tx) = self.shared.local.lock().as_ref() {
            return tx.send(msg).map_err(|_| Error::Shutdown);
        }
        let now = Instant::now();
        let mut out = Transmit::new();
        let mut io: Option<(LinkId, Arc<LinkIo>)> = None;
        let mut guard = None;
        let events = {
            let mut st = self.shared.state.lock();
            st.proto
                .send(msg)
                .map_err(|SendError::Closed| Error::Refused {
                    reason: "connection is closed".into(),
                })?;
            // Sparse traffic on an idle pipe is written at once by this thread (latency):
            // nothing we sent is still unacknowledged (request/response: each reply
            // acknowledges the request) and no burst is under way. Streams are left to
            // the writer thread, which batches (throughput).
            let sparse = st.proto.session().unacked() <= 1
                && st.last_send.map_or(true, |t| {
                    now.saturating_duration_since(t) >= INLINE_AFTER_IDLE
                });
            st.last_send = Some(now);
            if sparse {
                if let Some(link) = st.proto.link_id() {
                    io = st.links.get(&link).cloned().map(|io| (link, io));
                }
                if let Some((link, lio)) = &io {
                    guard = lio.write.try_lock();
                    let busy = guard.as_ref().is_some_and(|w| !w.pending.is_empty());
                    if guard.is_none() || busy || !st.proto.poll_transmit(*link, now, &mut out) {
                        guard = None;
                    }
                }
            }
            drain(&mut st.proto, &self.shared, false)
        };
        let inner = self.msgr.upgrade();
        if let (Some((link, lio)), Some(mut w)) = (&io, guard.take()) {
            // Never blocks: what the kernel does not take now stays pending for the
            // writer thread, so this is safe from dispatcher callbacks too.
            let len = out.len() as u64;
            let r = w.write_some(out);
            drop(w);
            match r {
                Ok(_) => {
                    if let Some(inner) = &inner {
                        inner.stats.add_bytes_out(len);
                    }
                }
                // Not `fail` here: this may run inside a dispatch callback, and
                // `fail`'s ordered batch would wait for the turn its caller holds
                // (a self-deadlock). Shut the socket instead: the link's reader sees
                // the error and fails the link on its own thread.
                Err(e) => {
                    debug!("conn#{} link {link}: write: {e}", self.shared.id);
                    lio.close();
                }
            }
        }
        // The writer picks up whatever is left (and runs the timers).
        self.shared.wake();
        if let Some(inner) = &inner {
            // Counted when queued: the writer sees bytes, not messages.
            inner.stats.msg_out();
            if !events.events.is_empty() {
                handle_events(inner, &self.shared, events);
            }
        }
        Ok(())
    }

    /// Close the session: nothing queued is sent, no reset is reported (Ceph's mark_down).
    pub fn mark_down(&self) {
        // The loopback connection: ends the local delivery thread; the (never
        // connected) session below is closed like any other.
        drop(self.shared.local.lock().take());
        let events = {
            let mut st = self.shared.state.lock();
            st.proto.mark_down(Instant::now());
            drain(&mut st.proto, &self.shared, false)
        };
        if let Some(inner) = self.msgr.upgrade() {
            handle_events(&inner, &self.shared, events);
            inner.forget(&self.shared);
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake();
    }

    /// From now on, a fault drops this session instead of reconnecting (Ceph's mark_disposable).
    pub fn mark_disposable(&self) {
        self.shared.state.lock().proto.mark_disposable();
    }

    /// True while the handshake is complete and the link is up.
    pub fn is_connected(&self) -> bool {
        if self.shared.local.lock().is_some() {
            return true;
        }
        self.shared.state.lock().proto.is_connected()
    }

    /// The session's state.
    pub fn state(&self) -> State {
        self.shared.state.lock().proto.state()
    }

    /// Ceph features negotiated with the peer.
    pub fn features(&self) -> u64 {
        self.shared.state.lock().proto.peer().features
    }

    /// The peer's entity type.
    pub fn peer_type(&self) -> EntityType {
        self.shared.state.lock().proto.peer().ty
    }

    /// When the last KEEPALIVE2_ACK arrived.
    pub fn last_keepalive_ack(&self) -> Option<Instant> {
        self.shared.state.lock().proto.last_keepalive_ack()
    }

    /// When the last KEEPALIVE2 arrived.
    pub fn last_keepalive(&self) -> Option<Instant> {
        self.shared.state.lock().proto.last_keepalive()
    }

    /// Messages queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.shared.state.lock().proto.session().queued()
    }

    /// Messages sent and not yet acknowledged by the peer.
    pub fn unacked(&self) -> usize {
        self.shared.state.lock().proto.session().unacked()
    }
}

/// Events taken from a session under its lock, with their place in the dispatch order.
pub(crate) struct Batch {
    events: Vec<ProtoEvent>,
    ticket: Option<u64>,
}

/// Take the pending events. With `ordered`, the batch gets a dispatch ticket (call
/// with the session lock held, from a messenger thread). User calls (send, mark_down,
/// connect) take unordered batches: they run inside callbacks too, and their events
/// (ReconnectDue, LinkClosed) call no dispatcher method.
pub(crate) fn drain(proto: &mut ProtoConn, shared: &ConnShared, ordered: bool) -> Batch {
    let mut events = Vec::new();
    while let Some(e) = proto.poll_event() {
        events.push(e);
    }
    let ticket = (ordered && !events.is_empty()).then(|| shared.ticket());
    Batch { events, ticket }
}

pub(crate) fn conn_ref(inner: &Arc<Inner>, shared: &Arc<ConnShared>) -> ConnectionRef {
    ConnectionRef {
        id: shared.id,
        peer: *shared.peer_hint.lock(),
        shared: shared.clone(),
        msgr: Arc::downgrade(inner),
    }
}

/// Act on state-machine events, with no lock held.
///
/// Messages are dispatched in order on the calling (reader) thread. The dispatch
/// throttle is taken once for the whole batch of messages that one read produced,
/// before the first is dispatched, and released after the last.
pub(crate) fn handle_events(inner: &Arc<Inner>, shared: &Arc<ConnShared>, batch: Batch) {
    match batch.ticket {
        Some(t) => shared.in_turn(t, || dispatch_events(inner, shared, batch.events)),
        None => dispatch_events(inner, shared, batch.events),
    }
}

fn dispatch_events(inner: &Arc<Inner>, shared: &Arc<ConnShared>, events: Vec<ProtoEvent>) {
    if events.is_empty() {
        return;
    }
    let cref = conn_ref(inner, shared);
    let (count, bytes) = events.iter().fold((0u64, 0u64), |(c, b), e| match e {
        ProtoEvent::Message(m) => (c + 1, b + m.payload_len() as u64),
        _ => (c, b),
    });
    if count > 0 {
        inner.dispatch_throttle.acquire(count, bytes);
    }
    let mut closed = false;
    for ev in events {
        match ev {
            ProtoEvent::Message(m) => {
                inner.stats.msg_in();
                inner.dispatcher.dispatch(&cref, m);
            }
            ProtoEvent::Connected { resumed } => {
                info!("conn#{} connected (resumed={resumed})", shared.id);
                if let Some(addr) = shared.target {
                    let method = shared.state.lock().proto.auth_method();
                    inner.method_cache.lock().insert(addr, method);
                }
                inner.dispatcher.handle_connect(&cref);
            }
            ProtoEvent::Accepted { resumed } => {
                info!("conn#{} accepted (resumed={resumed})", shared.id);
                inner.dispatcher.handle_accept(&cref);
            }
            ProtoEvent::ReconnectDue => {
                shared.state.lock().connect_due = true;
                shared.wake();
            }
            ProtoEvent::LinkClosed {
                link,
                error,
                initiator,
            } => {
                debug!(
                    "conn#{} link {link} closed ({initiator:?}): {error}",
                    shared.id
                );
                count_handshake_failure(inner, shared, &error);
                close_link(shared, link);
                closed = true;
            }
            ProtoEvent::Reset => {
                inner.forget(shared);
                inner.dispatcher.handle_reset(&cref);
                closed = true;
            }
            ProtoEvent::RemoteReset => inner.dispatcher.handle_remote_reset(&cref),
            ProtoEvent::Refused(e) => {
                warn!("conn#{} refused: {e}", shared.id);
                inner.forget(shared);
                inner.dispatcher.handle_refused(
                    &cref,
                    &Error::Refused {
                        reason: e.to_string(),
                    },
                );
                closed = true;
            }
            ProtoEvent::AcceptRequest(_) => {
                // Handled by the reader thread of the incoming link (see `reader_loop`).
            }
            ProtoEvent::ChunkedAborted { tid, code, message, received, total } => warn!(
                "conn#{}: peer aborted chunked message tid {tid} ({received}/{total} bytes): code {code}: {message}",
                shared.id
            ),
        }
    }
    if count > 0 {
        inner.dispatch_throttle.release(count, bytes);
    }
    if closed && shared.state.lock().proto.state() == State::Closed {
        shared.closed.store(true, Ordering::Release);
        shared.wake();
    }
    sync_gauge(inner, shared);
}

/// A link closed: if it was still in its handshake, count why it failed.
fn count_handshake_failure(inner: &Inner, shared: &ConnShared, error: &ProtoError) {
    if *shared.gauge.lock() != Some(GaugeState::Handshaking) {
        return;
    }
    let why = match error {
        ProtoError::HandshakeTimeout => RefuseReason::HandshakeTimeout,
        ProtoError::Auth(_) | ProtoError::NoCommonAuthMethod { .. } => RefuseReason::Auth,
        ProtoError::Banner(_)
        | ProtoError::Frame(_)
        | ProtoError::UnexpectedFrame { .. }
        | ProtoError::PeerMisbehaved(_)
        | ProtoError::BadProtocolVersion { .. } => RefuseReason::Protocol,
        _ => return,
    };
    inner.stats.refused(why);
}

/// Count the session in the stats gauge of its current state, and end its admission
/// "handshaking" slot once it has left the handshake. A session that is connecting
/// (including one waiting out a reconnect backoff, or a lost connection race) counts
/// as handshaking; a closed one in no gauge.
pub(crate) fn sync_gauge(inner: &Inner, shared: &ConnShared) {
    let now = match shared.state.lock().proto.state() {
        State::Accepting | State::Connecting | State::Wait => Some(GaugeState::Handshaking),
        State::Open => Some(GaugeState::Open),
        State::Standby => Some(GaugeState::Standby),
        State::Closed => None,
    };
    set_gauge(inner, shared, now);
}

fn set_gauge(inner: &Inner, shared: &ConnShared, now: Option<GaugeState>) {
    let mut g = shared.gauge.lock();
    if *g == now {
        return;
    }
    match (*g, now) {
        (Some(a), Some(b)) => inner.stats.conn_transition(a, b),
        (Some(a), None) => inner.stats.conn_leave(a),
        (None, Some(b)) => inner.stats.conn_enter(b),
        (None, None) => {}
    }
    *g = now;
    drop(g);
    if now != Some(GaugeState::Handshaking) {
        if let Some(t) = shared.slot.lock().as_mut() {
            t.handshake_done();
        }
    }
}

/// The session's writer thread could not start: close it where it stands (no lock
/// other than its own is taken, so this is safe under the session-table lock).
pub(crate) fn abandon(inner: &Inner, shared: &ConnShared) {
    shared.state.lock().proto.mark_down(Instant::now());
    shared.closed.store(true, Ordering::Release);
    inner.all.lock().remove(&shared.id);
    session_ended(inner, shared);
}

/// The session's writer thread is exiting: it no longer counts anywhere.
pub(crate) fn session_ended(inner: &Inner, shared: &ConnShared) {
    set_gauge(inner, shared, None);
    shared.slot.lock().take();
}

/// Write the farewell bytes of a closed link (bounded), then shut its socket.
fn close_link(shared: &Arc<ConnShared>, link: LinkId) {
    let mut farewell = Transmit::new();
    let io = {
        let mut st = shared.state.lock();
        st.proto.poll_transmit(link, Instant::now(), &mut farewell);
        st.links.remove(&link)
    };
    if let Some(io) = io {
        if !farewell.is_empty() {
            // Bounded: if another thread is stuck writing (a peer that stopped reading),
            // give up on the farewell; the shutdown below unblocks that thread.
            if let Some(mut w) = io.write.try_lock_for(Duration::from_millis(200)) {
                let _ = w.half.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = w.write_all(&mut farewell);
            }
        }
        io.close();
    }
}

/// Write a batch, consuming it as the kernel accepts bytes.
fn write_batch(w: &mut WriteHalf, t: &mut Transmit) -> io::Result<()> {
    while !t.is_empty() {
        let r = {
            let mut slices = Vec::with_capacity(64);
            t.io_slices(&mut slices);
            w.write_vectored(&slices)
        };
        let n = match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        t.consume(n);
    }
    Ok(())
}

/// Attach a connected transport to a session as link `link_id` and start its reader.
pub(crate) fn attach_link(
    inner: &Arc<Inner>,
    shared: &Arc<ConnShared>,
    link_id: LinkId,
    transport: Transport,
) {
    let shutdown = match transport.shutdown_handle() {
        Ok(s) => s,
        Err(e) => {
            warn!("conn#{}: cannot clone socket: {e}", shared.id);
            return;
        }
    };
    let (read, write) = transport.split();
    let io = Arc::new(LinkIo {
        write: Mutex::new(LinkWriter {
            half: write,
            pending: std::collections::VecDeque::new(),
        }),
        shutdown,
    });
    shared.state.lock().links.insert(link_id, io);
    spawn_reader(inner, shared.clone(), link_id, read);
}

fn spawn_reader(inner: &Arc<Inner>, shared: Arc<ConnShared>, link: LinkId, read: ReadHalf) {
    let inner2 = inner.clone();
    let name = format!("ms-read-{}", shared.id);
    let r = inner.spawn(name, move || reader_loop(inner2, shared, link, read));
    if let Err(e) = r {
        warn!("cannot start a reader thread: {e}");
    }
}

/// Reads up to this size go through the reader's scratch buffer.
const SCRATCH: usize = 64 * 1024;
/// Largest single read straight into a frame's buffer.
const MAX_DIRECT_READ: usize = 16 << 20;
/// Scratch size of a connection that has seen only small reads (see `reader_loop`).
const IDLE_READ: usize = 4096;

/// Read bytes, feed the state machine, act on its events; until the link dies.
fn reader_loop(inner: Arc<Inner>, mut shared: Arc<ConnShared>, link: LinkId, read: ReadHalf) {
    let mut reader = inner.faults.wrap_reader(read, link);
    let faults = inner.faults.for_connection(link);
    let mut buf = BytesMut::with_capacity(SCRATCH);
    // Small reads land in a buffer zeroed once and are copied (only the bytes read);
    // the rest of a large frame is read straight into `buf`, zeroed once per frame.
    // An idle connection blocks in read() with its scratch buffer, which stays
    // resident: it starts at IDLE_READ and grows to SCRATCH the first time a read
    // fills it (so an idle connection costs 4 KiB here, not 64).
    let mut scratch = vec![0u8; IDLE_READ];
    let mut hint = SCRATCH;
    loop {
        let start = buf.len();
        let direct = hint > SCRATCH;
        let r = if direct {
            buf.resize(start + hint.min(MAX_DIRECT_READ), 0);
            reader.read(&mut buf[start..])
        } else {
            reader.read(&mut scratch)
        };
        let n = match r {
            Ok(0) => {
                buf.truncate(start);
                // Bytes still buffered are an incomplete frame (or banner): say so.
                let why = match buf.len() {
                    0 => "peer closed the connection".to_string(),
                    n => format!("peer closed the connection in the middle of a frame ({n} bytes of it received)"),
                };
                fail(&inner, &shared, link, ProtoError::Transport(why));
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(e) => {
                buf.truncate(start);
                fail(&inner, &shared, link, ProtoError::Transport(e.to_string()));
                return;
            }
        };
        if direct {
            buf.truncate(start + n);
        } else {
            buf.extend_from_slice(&scratch[..n]);
            if n == scratch.len() && scratch.len() < SCRATCH {
                scratch = vec![0u8; SCRATCH];
            }
        }
        inner.stats.add_bytes_in(n as u64);
        // ms_inject_delay_*: hold what was read before it is processed.
        faults.inject_delay("read");
        loop {
            let (events, still_ours, wake) = {
                let mut st = shared.state.lock();
                hint = st.proto.handle_input(link, &mut buf, Instant::now());
                let ours = st.proto.link_id() == Some(link);
                let wake = st
                    .proto
                    .link_id()
                    .is_some_and(|l| st.proto.wants_transmit(l));
                (drain(&mut st.proto, &shared, true), ours, wake)
            };
            if wake {
                shared.wake();
            }
            let mut adopted = None;
            let mut batch = events;
            if let Some(i) = batch
                .events
                .iter()
                .position(|e| matches!(e, ProtoEvent::AcceptRequest(_)))
            {
                if let ProtoEvent::AcceptRequest(req) = batch.events.remove(i) {
                    adopted = Some(req);
                }
            }
            handle_events(&inner, &shared, batch);
            let adopted = adopted.and_then(|req| accept(&inner, &shared, link, req));
            let was_adopted = adopted.is_some();
            if let Some(existing) = adopted {
                // The link now belongs to the existing session; keep reading for it.
                shared = existing;
                if !buf.is_empty() {
                    continue;
                }
            }
            if !still_ours && !was_adopted && shared.state.lock().proto.link_id() != Some(link) {
                return;
            }
            break;
        }
        if shared.is_closed() && shared.state.lock().proto.link_id() != Some(link) {
            return;
        }
    }
}

fn fail(inner: &Arc<Inner>, shared: &Arc<ConnShared>, link: LinkId, err: ProtoError) {
    // ms_inject_internal_delays: widen the race window around fault handling.
    inner.faults.for_connection(link).internal_delay("fault");
    let events = {
        let mut st = shared.state.lock();
        st.proto.link_failed(link, err, Instant::now());
        drain(&mut st.proto, shared, true)
    };
    handle_events(inner, shared, events);
    // Whatever happened, this socket is done.
    close_link(shared, link);
}

/// Decide an incoming handshake with the session table. Returns the existing session
/// if it adopted the link.
fn accept(
    inner: &Arc<Inner>,
    incoming: &Arc<ConnShared>,
    link: LinkId,
    req: crate::proto::AcceptRequest,
) -> Option<Arc<ConnShared>> {
    inner.faults.for_connection(link).internal_delay("accept");
    let now = Instant::now();
    let key = session_key(&req.peer_addr);
    let my_addr = inner.my_addr();
    let we_are_server = inner.proto.policies.get(req.peer_type).server;
    let mut table = inner.sessions.lock();
    let existing = table
        .get(&key)
        .filter(|e| !Arc::ptr_eq(e, incoming) && !e.is_closed())
        .cloned();
    let view = existing
        .as_ref()
        .and_then(|e| e.state.lock().proto.existing_view());
    let decision = decide(
        view.as_ref(),
        &req.attempt,
        &req.peer_addr,
        &my_addr,
        we_are_server,
    );
    debug!(
        "conn#{} accept {:?} from {}: {decision:?}",
        incoming.id, req.attempt, req.peer_addr
    );
    let mut adopted = None;
    let events = match (decision, existing) {
        (Decision::Adopt { reset }, Some(existing)) => {
            let (handoff, io) = {
                let mut st = incoming.state.lock();
                (st.proto.take_handoff(), st.links.remove(&link))
            };
            incoming.closed.store(true, Ordering::Release);
            incoming.wake();
            let events = {
                let mut st = existing.state.lock();
                if let (Some(h), Some(io)) = (handoff, io) {
                    st.links.insert(link, io);
                    st.proto.adopt(h, reset, now);
                }
                drain(&mut st.proto, &existing, true)
            };
            *existing.peer_hint.lock() = req.peer_addr;
            existing.wake();
            adopted = Some(existing.clone());
            drop(table);
            handle_events(inner, &existing, events);
            return adopted;
        }
        (Decision::Adopt { .. }, None) | (Decision::New, _) => {
            let mut st = incoming.state.lock();
            st.proto.decide_accept(Decision::New, now);
            *incoming.peer_hint.lock() = req.peer_addr;
            table.insert(key, incoming.clone());
            drain(&mut st.proto, incoming, true)
        }
        (other, _) => {
            let mut st = incoming.state.lock();
            st.proto.decide_accept(other, now);
            drain(&mut st.proto, incoming, true)
        }
    };
    drop(table);
    incoming.wake();
    handle_events(inner, incoming, events);
    adopted
}

/// The session's writer: connect when due, write what the state machine produces,
/// run its timers; until the session closes.
pub(crate) fn writer_loop(inner: Arc<Inner>, shared: Arc<ConnShared>) {
    let target = shared.target;
    let mut out = Transmit::new();
    loop {
        if inner.is_shutdown() || shared.is_closed() {
            // Flush nothing more; the links are shut by mark_down / shutdown.
            let links: Vec<Arc<LinkIo>> = shared
                .state
                .lock()
                .links
                .drain()
                .map(|(_, io)| io)
                .collect();
            for io in links {
                io.close();
            }
            session_ended(&inner, &shared);
            return;
        }
        let now = Instant::now();
        // Bytes are taken from the state machine and the link's write lock is taken
        // before the session lock is released, so that two threads (e.g. around an
        // adoption) can never write one link's bytes out of order.
        // The write lock is only *tried* while the session lock is held: a user thread
        // may be writing (see `ConnectionRef::send`), and waiting for it here would
        // block every other user of the session. If it is busy, that thread wakes us
        // when it is done.
        let mut io: Option<(LinkId, Arc<LinkIo>)> = None;
        let mut guard = None;
        let (events, connect, deadline) = {
            let mut st = shared.state.lock();
            if st.proto.poll_timeout().is_some_and(|t| t <= now) {
                st.proto.handle_timeout(now);
            }
            let connect = std::mem::take(&mut st.connect_due);
            // Only take bytes for a link whose socket is attached: bytes taken with
            // nowhere to go would be lost.
            if let Some(link) = st.proto.link_id() {
                io = st.links.get(&link).cloned().map(|io| (link, io));
            }
            if let Some((link, lio)) = &io {
                guard = lio.write.try_lock();
                let has_pending = guard.as_ref().is_some_and(|w| !w.pending.is_empty());
                if guard.is_none() || !(st.proto.poll_transmit(*link, now, &mut out) || has_pending)
                {
                    guard = None;
                }
            }
            (
                drain(&mut st.proto, &shared, true),
                connect,
                st.proto.poll_timeout(),
            )
        };
        if let (Some((link, _)), Some(mut w)) = (&io, guard.take()) {
            // (the lock was taken before the session lock was released: bytes go out in
            // the order they were produced)
            let len = out.len() as u64;
            let r = w.write_all(&mut out);
            drop(w);
            out.clear();
            match r {
                Ok(()) => inner.stats.add_bytes_out(len),
                Err(e) => fail(
                    &inner,
                    &shared,
                    *link,
                    ProtoError::Transport(format!("write: {e}")),
                ),
            }
            handle_events(&inner, &shared, events);
            continue;
        }
        drop(guard);
        handle_events(&inner, &shared, events);
        out.clear();
        if connect {
            if let Some(addr) = target {
                do_connect(&inner, &shared, addr);
            }
            continue;
        }
        let wait = deadline.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
        });
        shared.wake.wait(wait.min(Duration::from_secs(1)));
    }
}

fn do_connect(inner: &Arc<Inner>, shared: &Arc<ConnShared>, addr: SocketAddr) {
    let link = inner.next_link_id();
    inner
        .faults
        .for_connection(shared.id)
        .internal_delay("connect");
    let result = transport::connect(addr, inner.config.handshake_timeout, &inner.config)
        .and_then(Transport::new)
        .map_err(|e| e.to_string());
    let events = {
        let mut st = shared.state.lock();
        if let Some(m) = inner.method_cache.lock().get(&addr) {
            st.proto.set_preferred_method(Some(*m));
        }
        st.proto.start_link(link, Instant::now());
        drain(&mut st.proto, shared, true)
    };
    handle_events(inner, shared, events);
    match result {
        Ok(t) => attach_link(inner, shared, link, t),
        Err(e) => {
            info!("conn#{}: connect to {addr} failed: {e}", shared.id);
            fail(
                inner,
                shared,
                link,
                ProtoError::Transport(format!("connect to {addr}: {e}")),
            );
        }
    }
    shared.wake();
}
